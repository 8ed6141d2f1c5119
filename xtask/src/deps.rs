//! What the tasks and tests need from Debian and rustup, installed when missing.

use std::process::Command;

use anyhow::Result;

use crate::util::{as_root, exec};

/// Debian packages the tests use: the registry, compressors, disk tools.
pub const PACKAGES: &[&str] = &[
    "docker-registry",
    "ca-certificates",
    "gzip",
    "pigz",
    "zstd",
    "fdisk",
    "e2fsprogs",
    "util-linux",
    "mount",
    "bsdutils",
    "qemu-system-x86",
    "qemu-system-arm",
    "openssl",
    "apache2-utils",
    "gdisk",
    "ipxe-qemu",
    "ovmf",
    "qemu-efi-aarch64",
    "grub-efi-amd64-bin",
    "pxelinux",
    "syslinux-common",
    "tinyproxy",
    "skopeo",
    // The image-convention tests: other producers' disk images (xz, qemu-img's qcow2), and
    // a Python virtual environment for the ORAS SDK and Ironic from PyPI.
    "xz-utils",
    "qemu-utils",
    "python3-venv",
    // The network boot tests: DHCPv4, router advertisements and DHCPv6; an NTP server.
    "dnsmasq-base",
    "chrony",
    "iproute2",
    // The seed tests: config drives made as Ironic's users make them, read back as
    // cloud-init's tools read them.
    "genisoimage",
    "mtools",
    "dosfstools",
    // The installed system the boot tests make: Debian's signed shim and GRUB on its ESP.
    "shim-signed",
    "grub-efi-amd64-signed",
    // Its unified kernel images: systemd's stub, and sbattach to remove a kernel's signature.
    "systemd-boot-efi",
    "sbsigntool",
];

/// Installs the missing ones among `packages`.
pub fn ensure_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    exec(as_root("apt-get").args(["update", "-qq"]))?;
    exec(
        as_root("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

pub fn install() -> Result<()> {
    ensure_packages(PACKAGES)?;
    exec(Command::new("rustup").args(["component", "add", "rustfmt", "clippy"]))
}

/// Lets apt install and download packages of another architecture (`arm64`).
pub fn enable_foreign_arch(arch: &str) -> Result<()> {
    let foreign = crate::util::output(Command::new("dpkg").arg("--print-foreign-architectures"))?;
    if foreign.lines().any(|a| a.trim() == arch) {
        return Ok(());
    }
    exec(as_root("dpkg").args(["--add-architecture", arch]))?;
    exec(as_root("apt-get").args(["update", "-qq"]))
}
