//! The boot-loader snippets of the README and docs/, booted as written through the firmware's own network
//! boot, as every real machine boots: QEMU's iPXE ROM under SeaBIOS and under OVMF (UEFI)
//! running the iPXE script over HTTP, PXELINUX over TFTP, GRUB under UEFI, Debian's signed
//! chain under Secure Boot on OVMF and on arm64's AAVMF, and a UKI by UEFI HTTP Boot; and the
//! boot ISO, customized per node, from virtual media and a USB stick. Only the example host
//! names are replaced (and the test registry, plain HTTP, allowed).

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::files::FileServer;
use common::lab::{Lab, Port, Switch, mac};
use common::vm::{
    Boot, Bus, Firmware, Medium, Options, Vm, boot_files, boot_iso, copy_signed_loaders,
};
use common::*;

const BOOT_LIMIT: Duration = Duration::from_secs(400);

/// The fenced code block of the README and docs/ that contains `marker`. Where several do
/// (the README's quick start repeats the booting page's iPXE script), they must be the same,
/// so that booting one boots what every page shows.
fn doc_snippet(marker: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages = vec![root.join("README.md")];
    let mut docs: Vec<_> = fs::read_dir(root.join("docs"))
        .expect("reading docs/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    let mut found: Vec<(String, String)> = Vec::new();
    for page in &pages {
        let text = fs::read_to_string(page).expect("reading a page");
        for block in text.split("```").skip(1).step_by(2) {
            if block.contains(marker) {
                found.push((
                    page.display().to_string(),
                    block.trim_start_matches('\n').to_string(),
                ));
            }
        }
    }
    let (_, first) = found
        .first()
        .unwrap_or_else(|| panic!("no snippet with {marker:?} in the README or docs/"));
    for (page, block) in &found {
        assert_eq!(block, first, "{page} shows another snippet with {marker:?}");
    }
    first.clone()
}

/// The install finished and rebooted, and `disk` holds `image` (its first 1 KiB, the
/// protective MBR and the GPT header, is rewritten for the disk's size).
fn assert_installed(console: &str, disk: &Path, image: &[u8], what: &str) {
    assert!(
        console.contains(&format!(
            "ocidd: installed {:.2} MiB",
            image.len() as f64 / MIB as f64
        )),
        "{what}:\n{console}"
    );
    assert!(
        console.contains("reboot: Restarting system"),
        "{what}:\n{console}"
    );
    let on_disk = read_prefix(disk, image.len());
    assert!(
        on_disk[1024..] == image[1024..],
        "{what}: the disk does not hold the image"
    );
    assert_gpt_consistent(disk);
}

/// ocidd ran under Secure Boot, locked down.
fn assert_locked_down(console: &str) {
    assert!(
        console.contains("EFI stub: UEFI Secure Boot is enabled."),
        "{console}"
    );
    assert!(
        console.contains(
            "ocidd: Secure Boot is on; kernel lockdown: integrity (only signed modules and kernels load)"
        ),
        "{console}"
    );
}

/// A GPT disk image pushed as `disks/base:v1`, the docs' example image.
struct Setup {
    registry: Registry,
    dir: tempfile::TempDir,
    image: Vec<u8>,
}

fn setup() -> Setup {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("base.raw");
    fs::write(&path, image_bytes(16 * MIB, 70)).unwrap();
    gpt_label(&path);
    let image = fs::read(&path).unwrap();
    push(&path, &format!("{}/disks/base:v1", registry.host()), "gzip");
    Setup {
        registry,
        dir,
        image,
    }
}

impl Setup {
    /// `snippet` with the example hosts replaced: boot files from `files` (10.0.2.2 is the
    /// host from inside QEMU's user network), the image from the test registry.
    fn localize(&self, snippet: &str, files: Option<&FileServer>) -> String {
        let mut text = snippet.replace(
            "oci.tag=registry.example.com/",
            &format!("oci.allow_no_tls oci.tag=10.0.2.2:{}/", self.registry.port),
        );
        if let Some(files) = files {
            text = text.replace("boot.example.com", &format!("10.0.2.2:{}", files.port));
        }
        assert!(!text.contains("example.com"), "{text}");
        text
    }

    /// A directory with the amd64 boot files, for HTTP or TFTP.
    fn boot_root(&self) -> std::path::PathBuf {
        self.boot_root_for("amd64")
    }

    /// A directory with the boot files for `arch`.
    fn boot_root_for(&self, arch: &str) -> std::path::PathBuf {
        let root = self.dir.path().join("boot");
        fs::create_dir_all(&root).unwrap();
        let (kernel, initramfs) = boot_files(arch);
        fs::copy(kernel, root.join(format!("vmlinuz-{arch}"))).unwrap();
        fs::copy(initramfs, root.join(format!("initramfs-{arch}.img"))).unwrap();
        root
    }

    /// Boots an amd64 machine, waits for the install and the reboot, and checks the disk;
    /// the console.
    fn boot_and_check(&self, bus: Bus, boot: Boot, what: &str) -> String {
        self.boot_and_check_on("amd64", bus, boot, what)
    }

    /// The same on a machine of `arch`.
    fn boot_and_check_on(&self, arch: &str, bus: Bus, boot: Boot, what: &str) -> String {
        let disk = self.dir.path().join("disk.img");
        fs::write(&disk, vec![0xAAu8; 64 * MIB]).unwrap();
        let mut vm = Vm::start(arch, &disk, bus, boot);
        let seconds = vm.wait_exit(BOOT_LIMIT);
        let console = vm.console();
        assert_installed(&console, &disk, &self.image, what);
        eprintln!("{what}: power-on to reboot {seconds:.1} s");
        console
    }

    /// A TFTP root for Debian's signed chain on `arch`: the boot files, shim and GRUB, and
    /// the docs' snippet with `marker` as GRUB's `grub/grub.cfg`.
    fn signed_chain_root(&self, arch: &str, marker: &str) -> std::path::PathBuf {
        let root = self.boot_root_for(arch);
        copy_signed_loaders(arch, &root);
        let config = self.localize(&doc_snippet(marker), None);
        fs::create_dir_all(root.join("grub")).unwrap();
        fs::write(root.join("grub/grub.cfg"), config).unwrap();
        root
    }

    fn ipxe(&self, firmware: Firmware, what: &str) {
        let root = self.boot_root();
        let files = FileServer::start(&root);
        let script = self.localize(
            &doc_snippet("initrd=initramfs-amd64.img oci.tag="),
            Some(&files),
        );
        fs::write(root.join("ocidd.ipxe"), script).unwrap();
        let bootfile = format!("http://10.0.2.2:{}/ocidd.ipxe", files.port);
        self.boot_and_check(
            Bus::Sata,
            Boot::Network {
                firmware,
                bootfile: &bootfile,
                tftp: None,
            },
            what,
        );
    }
}

#[test]
fn the_readme_ipxe_script_boots_under_bios() {
    setup().ipxe(Firmware::Bios, "iPXE under SeaBIOS");
}

#[test]
fn the_readme_ipxe_script_boots_under_uefi() {
    setup().ipxe(Firmware::Uefi, "iPXE under OVMF");
}

#[test]
fn the_readme_pxelinux_config_boots_under_bios() {
    let setup = setup();
    let root = setup.boot_root();
    add_pxelinux(&root);
    let config = setup.localize(&doc_snippet("DEFAULT ocidd"), None);
    fs::write(root.join("pxelinux.cfg/default"), config).unwrap();
    setup.boot_and_check(
        Bus::Sata,
        Boot::Network {
            firmware: Firmware::Bios,
            bootfile: "pxelinux.0",
            tftp: Some(&root),
        },
        "PXELINUX",
    );
}

#[test]
fn the_readme_grub_config_boots_under_uefi() {
    let setup = setup();
    let root = setup.boot_root();
    let files = FileServer::start(&root);
    add_grub(&root);
    let config = setup.localize(
        &doc_snippet("menuentry \"Install base:v1 with ocidd\" {"),
        Some(&files),
    );
    fs::write(root.join("boot/grub/grub.cfg"), config).unwrap();
    setup.boot_and_check(
        Bus::Nvme,
        Boot::Network {
            firmware: Firmware::Uefi,
            bootfile: "boot/grub/x86_64-efi/core.efi",
            tftp: Some(&root),
        },
        "GRUB under OVMF",
    );
}

/// The Secure Boot chain `cargo xtask pxe` lays out (Debian's signed shim, then its signed
/// network GRUB, then Debian's kernel), in the TFTP root with the docs' grub.cfg, under OVMF's
/// Secure Boot build with Microsoft's keys: ocidd runs locked down and installs.
#[test]
fn the_secure_boot_grub_config_boots_through_the_signed_shim() {
    let setup = setup();
    let root = setup.signed_chain_root(
        "amd64",
        "menuentry \"Install base:v1 with ocidd under Secure Boot\" {",
    );
    let console = setup.boot_and_check(
        Bus::Nvme,
        Boot::Network {
            firmware: Firmware::SecureBoot,
            bootfile: "shimx64.efi",
            tftp: Some(&root),
        },
        "shim and GRUB under OVMF with Secure Boot",
    );
    assert_locked_down(&console);
}

/// arm64 through its firmware: AAVMF with Microsoft's keys enrolled boots Debian's signed
/// arm64 shim and network GRUB from TFTP with the docs' grub.cfg, then Debian's arm64 kernel,
/// locked down, and installs. One boot: TCG emulates arm64 slowly.
#[test]
fn the_arm64_grub_config_boots_under_aavmf_with_secure_boot() {
    let setup = setup();
    let root = setup.signed_chain_root(
        "arm64",
        "menuentry \"Install base:v1 with ocidd on arm64\" {",
    );
    let console = setup.boot_and_check_on(
        "arm64",
        Bus::Nvme,
        Boot::Network {
            firmware: Firmware::SecureBoot,
            bootfile: "shimaa64.efi",
            tftp: Some(&root),
        },
        "shim and GRUB under AAVMF with Secure Boot",
    );
    assert!(
        console.contains("NBP filename is shimaa64.efi")
            && console.contains("Fetching Netboot Image grubaa64.efi"),
        "{console}"
    );
    assert!(console.contains("-arm64"), "{console}");
    assert_locked_down(&console);
}

/// UEFI HTTP Boot as the docs set it up: the docs' `ocidd uki` command makes the UKI, dnsmasq
/// with the docs' settings offers its URL to HTTP Boot clients, and OVMF's own HTTP Boot
/// fetches and starts it. It installs with only the words inside it: nothing else gives any.
#[test]
fn the_http_boot_settings_start_the_uki_ocidd_made() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("base.raw");
    fs::write(&source, image_bytes(16 * MIB, 71)).unwrap();
    gpt_label(&source);
    let image = fs::read(&source).unwrap();
    let mut lab = Lab::new();
    let uplink = lab.tap("up0", &["10.0.2.2/24", "fd00:2::1/64"]);
    let registry = lab.run(|| {
        let registry = Registry::start_at("10.0.2.2", None);
        push(
            &source,
            &format!("{}/disks/base:v1", registry.host()),
            "gzip",
        );
        registry
    });
    let root = dir.path().join("http");
    fs::create_dir_all(&root).unwrap();
    let files = lab.run(|| FileServer::start_on(&root, "10.0.2.2:0"));

    let (kernel, _) = boot_files("amd64");
    let snippet = doc_snippet("ocidd uki --linux");
    let command = snippet
        .strip_prefix("sh\n")
        .unwrap_or(&snippet)
        .replace("\\\n", " ")
        .replace(
            " out/",
            &format!(" {}/", kernel.parent().unwrap().display()),
        )
        .replace("/srv/http/", &format!("{}/", root.display()))
        .replace(
            "oci.tag=registry.example.com/",
            &format!("oci.allow_no_tls oci.tag=10.0.2.2:{}/", registry.port),
        );
    assert!(!command.contains("example.com"), "{command}");
    let args: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(args[..2], ["ocidd", "uki"], "{command}");
    let made = Run::from(ocidd().args(&args[1..]).output().unwrap());
    assert_eq!(made.code, 0, "{}", made.stderr);
    assert!(
        made.stdout.starts_with("ocidd: wrote ") && !made.stdout.contains("disks/base"),
        "{}",
        made.stdout
    );

    let settings = doc_snippet("dhcp-vendorclass=set:httpboot,HTTPClient")
        .replace("boot.example.com", &format!("10.0.2.2:{}", files.port));
    let mut settings: Vec<&str> = settings.lines().filter(|l| !l.is_empty()).collect();
    // Not the docs': DHCPv6 and router advertisements, so that OVMF's PXE over IPv6, which it
    // tries before HTTP Boot, gives up at once instead of after its timeout; and no DNS.
    settings.extend(["dhcp-range=fd00:2::10,fd00:2::ff,64", "enable-ra", "port=0"]);
    lab.dnsmasq("up0", &settings);
    let switch = Switch::start(vec![uplink], &[Port::default()]);
    let disk = dir.path().join("disk.img");
    fs::write(&disk, vec![0xAAu8; 64 * MIB]).unwrap();
    let mut vm = Vm::start_with(
        "amd64",
        &[],
        &[(&disk, "ide-hd,bus=ide.0")],
        Boot::Network {
            firmware: Firmware::HttpBoot,
            bootfile: "",
            tftp: None,
        },
        Options {
            nics: vec![(switch.netdev(0), mac(0))],
            ..Options::default()
        },
    );
    let seconds = vm.wait_exit(BOOT_LIMIT);
    let console = vm.console();
    assert!(
        console.contains(">>Start HTTP Boot over IPv4")
            && console.contains(&format!(
                "URI: http://10.0.2.2:{}/ocidd-amd64.efi",
                files.port
            )),
        "{console}"
    );
    assert!(
        console.contains("EFI stub: Loaded initrd from LINUX_EFI_INITRD_MEDIA_GUID device path"),
        "{console}"
    );
    assert_installed(&console, &disk, &image, "UEFI HTTP Boot");
    assert!(
        lab.dnsmasq_log("up0").contains("tags: httpboot"),
        "{}",
        lab.dnsmasq_log("up0")
    );
    eprintln!("UEFI HTTP Boot of the UKI: power-on to reboot {seconds:.1} s");
}

/// The negative control: the same firmware refuses the unsigned GRUB of `grub-mknetdir`.
#[test]
fn secure_boot_refuses_the_unsigned_grub() {
    let setup = setup();
    let root = setup.boot_root();
    add_grub(&root);
    let disk = setup.dir.path().join("disk.img");
    fs::write(&disk, vec![0u8; 64 * MIB]).unwrap();
    let mut vm = Vm::start(
        "amd64",
        &disk,
        Bus::Virtio,
        Boot::Network {
            firmware: Firmware::SecureBoot,
            bootfile: "boot/grub/x86_64-efi/core.efi",
            tftp: Some(&root),
        },
    );
    vm.wait_for("Access Denied", BOOT_LIMIT);
    let console = vm.console();
    assert!(
        console.contains("UEFI PXEv4") && !console.contains("Welcome to GRUB"),
        "{console}"
    );
}

/// PXELINUX and the module it needs next to it, in the TFTP root, and its config folder.
fn add_pxelinux(root: &Path) {
    for file in [
        "/usr/lib/PXELINUX/pxelinux.0",
        "/usr/lib/syslinux/modules/bios/ldlinux.c32",
    ] {
        let name = Path::new(file).file_name().unwrap();
        fs::copy(file, root.join(name))
            .expect("pxelinux (apt-get install pxelinux syslinux-common)");
    }
    fs::create_dir_all(root.join("pxelinux.cfg")).unwrap();
}

/// GRUB for UEFI network boot in the TFTP root: `boot/grub/x86_64-efi/core.efi`, reading
/// `boot/grub/grub.cfg`.
fn add_grub(root: &Path) {
    let made = std::process::Command::new("grub-mknetdir")
        .arg(format!("--net-directory={}", root.display()))
        .arg("--subdir=boot/grub")
        .args(["-d", "/usr/lib/grub/x86_64-efi"])
        .output()
        .expect("running grub-mknetdir (apt-get install grub-efi-amd64-bin)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
}

/// A site as docs/fleets.md sets it up: a registry that serves HTTPS and
/// demands a password, and boot files plus an overlay (made by `ocidd overlay`) whose
/// /etc/ocidd/cmdline names the CA and credentials it carries. The boot entries name only
/// the reference and `dd.*`.
struct Site {
    registry: Registry,
    dir: tempfile::TempDir,
    image: Vec<u8>,
    /// The boot files and `site.img`, for HTTP or TFTP.
    root: std::path::PathBuf,
}

/// Pushes `image` as `disks/base:v1` to a registry that serves HTTPS and demands a password.
fn push_to_site(ca: &Path, auth: &Path, image: &Path, registry: &Registry) {
    let pushed = Run::from(
        ocidd()
            .args(["push", "--ca"])
            .arg(ca)
            .arg("--auth")
            .arg(auth)
            .arg(image)
            .arg(format!("{}/disks/base:v1", registry.host()))
            .output()
            .unwrap(),
    );
    assert_eq!(pushed.code, 0, "push: {}", pushed.stderr);
}

fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let (ca, certificate, key) = certificates(dir.path());
    let htpasswd = htpasswd(dir.path(), "site", "fleet pass");
    let registry = Registry::start_with_htpasswd(&certificate, &key, &htpasswd);
    let auth = |host: &str| docker_config(host, "site:fleet pass");
    let host_auth = write_file(
        dir.path(),
        "host-auth.json",
        auth(&registry.host()).as_bytes(),
    );
    let path = dir.path().join("base.raw");
    fs::write(&path, image_bytes(16 * MIB, 71)).unwrap();
    gpt_label(&path);
    let image = fs::read(&path).unwrap();
    push_to_site(&ca, &host_auth, &path, &registry);

    // The site's files, as an operator writes them: the registry is 10.0.2.2 from inside.
    // Words that are not ocidd's (one long, one not UTF-8) and a comment after words are
    // taken as /init takes them, and the console names only ocidd's words.
    let mut text = b"# site defaults\noci.ca=/etc/ocidd/ca.pem oci.auth=/etc/ocidd/auth.json # oci.tga=commented out\n".to_vec();
    text.extend_from_slice(b"quiet vendor.opt=\xff\xfe junk=");
    text.extend(std::iter::repeat_n(b'j', 64 << 10));
    text.extend_from_slice(b"\noci.retries=20 oci.retries=20\n");
    let words = write_file(dir.path(), "cmdline", &text);
    let guest_auth = write_file(
        dir.path(),
        "auth.json",
        auth(&format!("10.0.2.2:{}", registry.port)).as_bytes(),
    );
    let root = dir.path().join("boot");
    fs::create_dir_all(&root).unwrap();
    let (kernel, initramfs) = boot_files("amd64");
    fs::copy(kernel, root.join("vmlinuz-amd64")).unwrap();
    fs::copy(initramfs, root.join("initramfs-amd64.img")).unwrap();
    let overlay = Run::from(
        ocidd()
            .args(["overlay", "--output"])
            .arg(root.join("site.img"))
            .arg(format!("{}=/etc/ocidd/cmdline", words.display()))
            .arg(format!("{}=/etc/ocidd/ca.pem", ca.display()))
            .arg(format!("{}=/etc/ocidd/auth.json", guest_auth.display()))
            .output()
            .unwrap(),
    );
    assert_eq!(overlay.code, 0, "overlay: {}", overlay.stderr);
    assert!(overlay.stdout.contains("3 files"), "{}", overlay.stdout);
    Site {
        registry,
        dir,
        image,
        root,
    }
}

impl Site {
    /// `snippet` with the example hosts replaced (HTTPS stays: no oci.allow_no_tls).
    fn localize(&self, snippet: &str, files: Option<&FileServer>) -> String {
        let mut text = snippet.replace(
            "oci.tag=registry.example.com/",
            &format!("oci.tag=10.0.2.2:{}/", self.registry.port),
        );
        if let Some(files) = files {
            text = text.replace("boot.example.com", &format!("10.0.2.2:{}", files.port));
        }
        assert!(!text.contains("example.com"), "{text}");
        assert!(!text.contains("oci.ca") && !text.contains("oci.auth"));
        text
    }

    /// Boots, waits for the install and the reboot, and checks the console and the disk.
    fn boot_and_check(&self, bus: Bus, boot: Boot, what: &str) {
        let disk = self.dir.path().join("disk.img");
        fs::write(&disk, vec![0xAAu8; 64 * MIB]).unwrap();
        let mut vm = Vm::start("amd64", &disk, bus, boot);
        let seconds = vm.wait_exit(BOOT_LIMIT);
        let console = vm.console();
        let site_line = console
            .lines()
            .find(|l| l.contains("ocidd: site defaults from"))
            .unwrap_or_default();
        assert!(
            site_line.trim_end().ends_with(
                "ocidd: site defaults from /etc/ocidd/cmdline: oci.ca oci.auth oci.retries"
            ),
            "{what}: {site_line:?}\n{console}"
        );
        assert!(
            console.contains("ocidd: installed 16.00 MiB"),
            "{what}:\n{console}"
        );
        assert!(!console.contains("fleet pass"), "{what}:\n{console}");
        let on_disk = read_prefix(&disk, self.image.len());
        assert!(
            on_disk[1024..] == self.image[1024..],
            "{what}: the disk does not hold the image"
        );
        eprintln!("{what} with a site overlay: power-on to reboot {seconds:.1} s");
    }
}

/// The fleet iPXE script (docs/fleets.md): two initrd lines.
#[test]
fn the_readme_fleet_ipxe_script_boots_with_a_site_overlay() {
    let site = site();
    let files = FileServer::start(&site.root);
    let script = site.localize(&doc_snippet("initrd=site.img"), Some(&files));
    fs::write(site.root.join("ocidd.ipxe"), script).unwrap();
    let bootfile = format!("http://10.0.2.2:{}/ocidd.ipxe", files.port);
    site.boot_and_check(
        Bus::Sata,
        Boot::Network {
            firmware: Firmware::Bios,
            bootfile: &bootfile,
            tftp: None,
        },
        "iPXE under SeaBIOS",
    );
}

/// The fleet PXELINUX config (docs/fleets.md): `INITRD main,site`.
#[test]
fn the_readme_fleet_pxelinux_config_boots_with_a_site_overlay() {
    let site = site();
    add_pxelinux(&site.root);
    let config = site.localize(&doc_snippet("INITRD initramfs-amd64.img,site.img"), None);
    fs::write(site.root.join("pxelinux.cfg/default"), config).unwrap();
    site.boot_and_check(
        Bus::Sata,
        Boot::Network {
            firmware: Firmware::Bios,
            bootfile: "pxelinux.0",
            tftp: Some(&site.root),
        },
        "PXELINUX",
    );
}

/// The fleet GRUB entry (docs/fleets.md): `initrd main site`.
#[test]
fn the_readme_fleet_grub_config_boots_with_a_site_overlay() {
    let site = site();
    let files = FileServer::start(&site.root);
    add_grub(&site.root);
    let config = site.localize(&doc_snippet("/site.img\n}"), Some(&files));
    fs::write(site.root.join("boot/grub/grub.cfg"), config).unwrap();
    site.boot_and_check(
        Bus::Nvme,
        Boot::Network {
            firmware: Firmware::Uefi,
            bootfile: "boot/grub/x86_64-efi/core.efi",
            tftp: Some(&site.root),
        },
        "GRUB under OVMF",
    );
}

/// A copy of the boot ISO customized with `words` for the docs' image at `setup`'s registry.
fn customized_iso(setup: &Setup, words: &[&str]) -> std::path::PathBuf {
    let iso = setup.dir.path().join("node.iso");
    let made = Run::from(
        ocidd()
            .args(["iso", "customize", "--output"])
            .arg(&iso)
            .arg(boot_iso())
            .arg("oci.allow_no_tls")
            .arg(format!(
                "oci.tag=10.0.2.2:{}/disks/base:v1",
                setup.registry.port
            ))
            .args(words)
            .output()
            .unwrap(),
    );
    assert_eq!(made.code, 0, "{}", made.stderr);
    iso
}

/// Boots `iso` as `medium` under `firmware` with a virtio disk, waits for the install and
/// the reboot, and checks the disk; the console.
fn boot_media(setup: &Setup, iso: &Path, firmware: Firmware, medium: Medium, what: &str) -> String {
    setup.boot_and_check(
        Bus::Virtio,
        Boot::Media {
            firmware,
            iso,
            medium,
        },
        what,
    )
}

/// The ISO as virtual media on a BIOS machine: GRUB's El Torito image, the words embedded.
#[test]
fn a_customized_iso_installs_as_a_cd_under_bios() {
    let setup = setup();
    let iso = customized_iso(&setup, &["dd.of=/dev/vda", "dd.bs=4M"]);
    let console = boot_media(
        &setup,
        &iso,
        Firmware::Bios,
        Medium::Cd,
        "ISO as a CD under SeaBIOS",
    );
    assert!(console.contains("GRUB"), "{console}");
}

/// The same ISO under UEFI with Secure Boot on: shim, the signed CD GRUB, locked down.
#[test]
fn a_customized_iso_installs_as_a_cd_under_secure_boot() {
    let setup = setup();
    let iso = customized_iso(&setup, &["dd.of=/dev/vda", "dd.bs=4M"]);
    let console = boot_media(
        &setup,
        &iso,
        Firmware::SecureBoot,
        Medium::Cd,
        "ISO as a CD under OVMF with Secure Boot",
    );
    assert_locked_down(&console);
}

/// A copy customized with an image layout (skopeo's copy of the docs' image) carries it:
/// attached as a read-only disk, `oci.layout=medium` finds it there and installs from it with
/// the registry gone, through the chunked path.
#[test]
fn an_iso_with_a_layout_installs_from_the_medium_with_the_registry_gone() {
    let mut setup = setup();
    let reference = format!("{}/disks/base:v1", setup.registry.host());
    let layout = setup.dir.path().join("layout");
    copy_to_layout(&reference, &layout, "v1");
    setup.registry.stop();
    let iso = setup.dir.path().join("offline.iso");
    let made = Run::from(
        ocidd()
            .args(["iso", "customize", "--output"])
            .arg(&iso)
            .arg("--layout")
            .arg(&layout)
            .arg(boot_iso())
            .arg(format!("oci.tag={reference}"))
            .output()
            .unwrap(),
    );
    assert_eq!(made.code, 0, "{}", made.stderr);
    assert!(made.stdout.contains("image layout"), "{}", made.stdout);
    let shown = Run::from(ocidd().args(["iso", "show"]).arg(&iso).output().unwrap());
    assert!(
        shown.stdout.contains("oci.layout=medium") && shown.stdout.contains("image layout: "),
        "{}",
        shown.stdout
    );
    let again = setup.dir.path().join("again.iso");
    let remade = Run::from(
        ocidd()
            .args(["iso", "customize", "--output"])
            .arg(&again)
            .arg("--layout")
            .arg(&layout)
            .arg(&iso)
            .arg(format!("oci.tag={reference}"))
            .output()
            .unwrap(),
    );
    assert_eq!(remade.code, 0, "{}", remade.stderr);
    assert!(
        fs::read(&again).unwrap() == fs::read(&iso).unwrap(),
        "a customized copy customized again differs"
    );

    let medium = LoopDevice::read_only(&iso);
    let target = target_file(setup.dir.path(), "disk.img", 32 * MIB);
    let run = install_tag(&reference, &target, &["oci.layout=medium", "oci.retries=0"]);
    run.assert_installed();
    assert!(
        run.stderr.contains(&format!(
            "ocidd: the image layout is on {}",
            medium.device.display()
        )) && run
            .stderr
            .contains("manifest v1 from the boot medium's layout"),
        "{}",
        run.stderr
    );
    // The first 1 KiB, the protective MBR and the GPT header, is rewritten for the disk.
    assert!(read_prefix(&target, setup.image.len())[1024..] == setup.image[1024..]);
}

/// The docs' offline flow: skopeo copies the image into a layout, `ocidd iso customize
/// --layout` appends it to a copy, and the copy installs as a CD in a machine with no NIC,
/// with the registry gone.
#[test]
fn the_docs_offline_iso_installs_with_no_network() {
    let mut setup = setup();
    let out = boot_iso().parent().unwrap().display().to_string();
    let snippet = doc_snippet("ocidd iso customize --output node-7.iso --layout");
    let snippet = snippet.replace(
        "docker://registry.example.com/",
        &format!(
            "--src-tls-verify=false docker://127.0.0.1:{}/",
            setup.registry.port
        ),
    );
    let commands = setup
        .localize(snippet.strip_prefix("sh\n").unwrap_or(&snippet), None)
        .replace("\\\n", " ")
        .replace(" out/", &format!(" {out}/"));
    assert!(!commands.contains("example.com"), "{commands}");
    let lines: Vec<&str> = commands.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 2, "{commands}");
    for line in &lines {
        let args: Vec<&str> = line.split_whitespace().collect();
        let mut command = match args[0] {
            "ocidd" => ocidd(),
            program => std::process::Command::new(program),
        };
        let ran = command
            .args(&args[1..])
            .current_dir(setup.dir.path())
            .output()
            .unwrap();
        assert!(
            ran.status.success(),
            "{line}: {}",
            String::from_utf8_lossy(&ran.stderr)
        );
    }
    setup.registry.stop();
    let iso = setup.dir.path().join("node-7.iso");
    let disk = setup.dir.path().join("disk.img");
    fs::write(&disk, vec![0xAAu8; 64 * MIB]).unwrap();
    let mut vm = Vm::start_with(
        "amd64",
        &[],
        &[(&disk, "virtio-blk-pci")],
        Boot::Media {
            firmware: Firmware::Bios,
            iso: &iso,
            medium: Medium::Cd,
        },
        Options {
            no_nic: true,
            ..Options::default()
        },
    );
    let seconds = vm.wait_exit(BOOT_LIMIT);
    let console = vm.console();
    assert!(
        console.contains("ocidd: the image layout is on /dev/sr0"),
        "{console}"
    );
    assert!(
        console.contains("manifest v1 from the boot medium's layout"),
        "{console}"
    );
    assert_installed(&console, &disk, &setup.image, "offline ISO");
    eprintln!("offline ISO as a CD under SeaBIOS, no NIC: power-on to reboot {seconds:.1} s");
}

/// Bad words and overlays are refused before anything is written, naming the limit.
#[test]
fn iso_customize_refuses_what_the_areas_cannot_hold() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("node.iso");
    let customize = |args: &[&str]| {
        Run::from(
            ocidd()
                .args(["iso", "customize", "--output"])
                .arg(&output)
                .arg(boot_iso())
                .args(args)
                .output()
                .unwrap(),
        )
    };
    let long = format!("vendor.opt={}", "b".repeat(1100));
    customize(&[&long]).assert_failed(2, "the ISO's words area holds 1024");
    customize(&["oci.proxy=http://a b@p"]).assert_failed(2, "cannot be embedded");
    customize(&["oci.tga=r.example/a:b"]).assert_failed(2, "unknown parameter oci.tga");
    let big = write_file(dir.path(), "big.img", &vec![7u8; (1 << 20) + 1]);
    customize(&["--overlay", big.to_str().unwrap()])
        .assert_failed(2, "the ISO's overlay area holds 1048576 (1 MiB)");
    customize(&["--overlay", "/etc/hostname"]).assert_failed(2, "not a site overlay");
    customize(&["--layout", dir.path().to_str().unwrap()])
        .assert_failed(2, "is not an OCI image layout");
    assert!(!output.exists());
    let not_iso = Run::from(
        ocidd()
            .args(["iso", "customize", "--output"])
            .arg(&output)
            .arg("/etc/hostname")
            .output()
            .unwrap(),
    );
    not_iso.assert_failed(2, "is not an ocidd boot ISO");
    let base = boot_iso();
    let onto_base = Run::from(
        ocidd()
            .args(["iso", "customize", "--output"])
            .arg(&base)
            .arg(&base)
            .output()
            .unwrap(),
    );
    onto_base.assert_failed(2, "is the base ISO");
    let shown = Run::from(ocidd().args(["iso", "show"]).arg(&base).output().unwrap());
    assert_eq!(
        shown.stdout, "words (0 of 1024 bytes):\noverlay: none\n",
        "{}",
        shown.stderr
    );
}

/// The docs' customize flow, as a provisioning system runs it: the docs' `ocidd iso
/// customize` gives a node a static address and the site's overlay (the CA and credentials of
/// a registry that serves HTTPS and demands a password). Run twice, it writes the same bytes.
/// The copy boots as a USB stick under OVMF, on a network with no DHCP server, and installs.
#[test]
fn the_docs_iso_installs_from_a_usb_stick_with_no_dhcp() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, certificate, key) = certificates(dir.path());
    let htpasswd = htpasswd(dir.path(), "site", "fleet pass");
    let source = dir.path().join("base.raw");
    fs::write(&source, image_bytes(16 * MIB, 72)).unwrap();
    gpt_label(&source);
    let image = fs::read(&source).unwrap();
    let lab = Lab::new();
    let uplink = lab.tap("up0", &["10.0.2.2/24"]);
    let registry =
        lab.run(|| Registry::start_with_htpasswd_at("10.0.2.2", &certificate, &key, &htpasswd));
    let auth = write_file(
        dir.path(),
        "auth.json",
        docker_config(&registry.host(), "site:fleet pass").as_bytes(),
    );
    lab.run(|| push_to_site(&ca, &auth, &source, &registry));
    let words = write_file(
        dir.path(),
        "cmdline",
        b"oci.ca=/etc/ocidd/ca.pem oci.auth=/etc/ocidd/auth.json\n",
    );
    let overlay = Run::from(
        ocidd()
            .args(["overlay", "--output"])
            .arg(dir.path().join("site.img"))
            .arg(format!("{}=/etc/ocidd/cmdline", words.display()))
            .arg(format!("{}=/etc/ocidd/ca.pem", ca.display()))
            .arg(format!("{}=/etc/ocidd/auth.json", auth.display()))
            .output()
            .unwrap(),
    );
    assert_eq!(overlay.code, 0, "overlay: {}", overlay.stderr);

    let out = boot_iso().parent().unwrap().display().to_string();
    let snippet = doc_snippet("--overlay site.img out/ocidd-amd64.iso");
    let commands = snippet
        .strip_prefix("sh\n")
        .unwrap_or(&snippet)
        .replace("\\\n", " ")
        .replace(" out/", &format!(" {out}/"))
        .replace(
            "oci.tag=registry.example.com/",
            &format!("oci.tag={}/", registry.host()),
        );
    assert!(!commands.contains("example.com"), "{commands}");
    let run = |line: &str| {
        let args: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(args[0], "ocidd", "{line}");
        let ran = Run::from(
            ocidd()
                .args(&args[1..])
                .current_dir(dir.path())
                .output()
                .unwrap(),
        );
        assert_eq!(ran.code, 0, "{line}: {}", ran.stderr);
        ran
    };
    let lines: Vec<&str> = commands.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 2, "{commands}");
    let iso = dir.path().join("node-7.iso");
    let made = run(lines[0]);
    assert!(!made.stdout.contains("disks/base"), "{}", made.stdout);
    let first = fs::read(&iso).unwrap();
    run(lines[0]);
    assert!(
        fs::read(&iso).unwrap() == first,
        "customize gave other bytes the second time"
    );
    drop(first);
    let shown = run(lines[1]);
    let expected =
        doc_snippet("of 1048576 bytes):").replace("registry.example.com", &registry.host());
    // The sizes differ with the registry's address and the site's keys.
    let sizes_hidden = |text: &str| {
        text.split(" of ")
            .map(|part| match part.rsplit_once('(') {
                Some((before, number)) if number.parse::<u32>().is_ok() => format!("{before}(N"),
                _ => part.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" of ")
    };
    assert_eq!(
        sizes_hidden(&shown.stdout),
        sizes_hidden(expected.trim_start_matches('\n')),
        "{}",
        shown.stdout
    );

    let switch = Switch::start(vec![uplink], &[Port::default()]);
    let disk = dir.path().join("disk.img");
    fs::write(&disk, vec![0xAAu8; 64 * MIB]).unwrap();
    let mut vm = Vm::start_with(
        "amd64",
        &[],
        &[(&disk, "nvme,serial=ocidd-test")],
        Boot::Media {
            firmware: Firmware::Uefi,
            iso: &iso,
            medium: Medium::Usb,
        },
        Options {
            nics: vec![(switch.netdev(0), mac(0))],
            ..Options::default()
        },
    );
    let seconds = vm.wait_exit(BOOT_LIMIT);
    let console = vm.console();
    assert!(
        console.contains("ocidd: site defaults from /etc/ocidd/cmdline: oci.ca oci.auth"),
        "{console}"
    );
    assert!(
        !console.contains("fleet pass") && !console.contains("DHCP"),
        "{console}"
    );
    assert_installed(&console, &disk, &image, "ISO as a USB stick under OVMF");
    eprintln!(
        "ISO as a USB stick under OVMF, static ip=, TLS and a password: power-on to reboot {seconds:.1} s"
    );
}
