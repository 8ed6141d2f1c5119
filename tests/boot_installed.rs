//! The installed disk boots. A small system made here from Debian's packages (signed shim and
//! GRUB on an ESP, Debian's kernel) is installed by ocidd, booted through OVMF's network boot,
//! and the firmware then starts it from the `Boot####` entry ocidd wrote: the image has
//! nothing on the removable path, so no other way in exists. The variable store is kept across
//! boots, as a machine's NVRAM is: `BootNext` starts the installed system once, the next
//! power-on is the network's again, and a second install leaves one entry for the disk. The
//! installed system prints what it found: the entry it came from, its config drive or
//! NoCloud seed, and the network-config `ocidd.copy_network` made of the boot's static `ip=`.
//! The second install starts the installed system with `ocidd.after=kexec`: no firmware runs
//! in between.

mod common;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::files::FileServer;
use common::vm::{Boot, FRESH_VARS, Firmware, Options, Vm, boot_files, copy_signed_loaders};
use common::*;

/// Firmware, network boot, the install, the firmware again, shim, GRUB and the kernel.
const BOOT_LIMIT: Duration = Duration::from_secs(600);
/// QEMU's NIC when none is given: what `{mac}` is in the guest.
const MAC: &str = "52:54:00:12:34:56";
/// The test system's ESP: its unique GUID, fixed so that the image is the same every time.
const ESP_GUID: &str = "0F3A6B2C-5D1E-4C7B-9A8F-1E2D3C4B5A69";
/// What the installed system's /init does: it reports, and powers off.
const INSTALLED_INIT: &str = r#"#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "installed-system: up (kernel $(uname -r))"
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
echo "installed-system: lockdown $(cat /sys/kernel/security/lockdown 2>/dev/null)"
modprobe -a virtio_pci virtio_blk efivarfs vfat nls_cp437 nls_ascii isofs 2>/dev/null
mount -t efivarfs efivarfs /sys/firmware/efi/efivars
vars=/sys/firmware/efi/efivars
for f in $vars/Boot*-8be4df61-93ca-11d2-aa0d-00e098032b8c; do
    name=${f##*/}
    echo "installed-system: variable ${name%%-*} $(od -An -tx1 -v $f | tr -d ' \n')"
done
for i in 1 2 3 4 5 6 7 8 9 10; do
    [ -e /dev/vda2 ] && break
    sleep 1
done
mkdir -p /seed
for part in /dev/vda[0-9]*; do
    if mount -o ro -t iso9660 $part /seed 2>/dev/null; then
        label=$(dd if=$part bs=1 skip=32808 count=32 2>/dev/null | tr -d ' ')
        echo "installed-system: ISO9660 $label on $part: $(cat /seed/openstack/latest/meta_data.json)"
        umount /seed
    elif mount -o ro -t vfat $part /seed 2>/dev/null; then
        [ -f /seed/meta-data ] &&
            echo "installed-system: FAT on $part: $(cat /seed/meta-data)"
        [ -f /seed/network-config ] &&
            echo "installed-system: network-config $(tr -d ' \n' < /seed/network-config)"
        umount /seed
    fi
done
echo "installed-system: powering off"
poweroff -f
"#;

/// The installed system's initramfs: ocidd's own (busybox and the modules it needs), with
/// the report-and-power-off script as /init after it.
fn installed_initrd() -> Vec<u8> {
    let (_, initramfs) = boot_files("amd64");
    let mut initrd = fs::read(initramfs).unwrap();
    // The kernel looks for the next archive at a multiple of 4 bytes after a compressed one.
    initrd.resize(initrd.len().next_multiple_of(4), 0);
    let script = INSTALLED_INIT.as_bytes();
    let mut overlay = Vec::new();
    let mut writer = cpio::newc::Builder::new("init")
        .mode(0o100755)
        .write(&mut overlay, script.len() as u32);
    writer.write_all(script).unwrap();
    writer.finish().unwrap();
    cpio::newc::trailer(&mut overlay).unwrap();
    initrd.extend_from_slice(&overlay);
    initrd
}

/// A GPT disk image with one partition, an ESP laid out as Debian lays one out
/// (`\EFI\debian\` with shim, GRUB, mokmanager and BOOTX64.CSV), GRUB's config beside it
/// starting the kernel and initrd from the ESP. Nothing in `\EFI\BOOT\`.
fn installed_system_image(dir: &Path) -> PathBuf {
    let tree = dir.join("esp");
    let vendor = tree.join("EFI/debian");
    fs::create_dir_all(&vendor).unwrap();
    for (from, to) in [
        ("/usr/lib/shim/shimx64.efi.signed", "shimx64.efi"),
        ("/usr/lib/shim/mmx64.efi.signed", "mmx64.efi"),
        ("/usr/lib/shim/BOOTX64.CSV", "BOOTX64.CSV"),
        (
            "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
            "grubx64.efi",
        ),
    ] {
        fs::copy(from, vendor.join(to)).unwrap_or_else(|e| {
            panic!("{from} (apt-get install shim-signed grub-efi-amd64-signed): {e}")
        });
    }
    // The signed GRUB's built-in prefix is /EFI/debian on the device it was loaded from.
    fs::write(
        vendor.join("grub.cfg"),
        "echo 'grub: starting the installed system'\n\
         linux /vmlinuz console=ttyS0,115200 panic=-1 loglevel=4\n\
         initrd /initrd.img\n\
         boot\n",
    )
    .unwrap();
    let (kernel, _) = boot_files("amd64");
    fs::copy(kernel, tree.join("vmlinuz")).unwrap();
    fs::write(tree.join("initrd.img"), installed_initrd()).unwrap();
    gpt_with_esp(dir, &tree, "installed.raw")
}

/// A GPT disk image `name` in `dir` with one partition, an ESP holding `tree`'s files.
fn gpt_with_esp(dir: &Path, tree: &Path, name: &str) -> PathBuf {
    let esp = dir.join("esp.img");
    let _ = fs::remove_file(&esp);
    run_tool(
        "mkfs.vfat",
        &["-C", "-n", "ESP", esp.to_str().unwrap(), "65536"],
    );
    let mut copy = vec!["-s", "-i", esp.to_str().unwrap()];
    let entries: Vec<String> = fs::read_dir(tree)
        .unwrap()
        .flatten()
        .map(|e| e.path().display().to_string())
        .collect();
    copy.extend(entries.iter().map(String::as_str));
    copy.push("::/");
    run_tool("mcopy", &copy);

    let image = dir.join(name);
    fs::write(&image, vec![0u8; 70 * MIB]).unwrap();
    run_tool(
        "sgdisk",
        &[
            "-n",
            "1:2048:+64M",
            "-t",
            "1:EF00",
            "-u",
            &format!("1:{ESP_GUID}"),
            "-c",
            "1:EFI System",
            image.to_str().unwrap(),
        ],
    );
    let mut file = fs::OpenOptions::new().write(true).open(&image).unwrap();
    file.seek(SeekFrom::Start(MIB as u64)).unwrap();
    file.write_all(&fs::read(&esp).unwrap()).unwrap();
    image
}

/// A system booted as a unified kernel image: systemd-boot on the removable path, and in
/// `\EFI\Linux` one UKI made with systemd's stub as `objcopy` makes one (Debian's kernel,
/// with its signature or with it removed by `sbattach`, the installed system's initrd, and
/// its command line). No BLS entry and no grub.cfg, so kexec has only the UKI to take.
fn uki_system_image(dir: &Path, signed: bool) -> PathBuf {
    let name = if signed { "signed" } else { "unsigned" };
    let work = dir.join(format!("uki-{name}"));
    let tree = work.join("esp");
    fs::create_dir_all(tree.join("EFI/BOOT")).unwrap();
    fs::create_dir_all(tree.join("EFI/Linux")).unwrap();
    fs::copy(
        "/usr/lib/systemd/boot/efi/systemd-bootx64.efi",
        tree.join("EFI/BOOT/BOOTX64.EFI"),
    )
    .expect("systemd-boot (apt-get install systemd-boot-efi)");
    let (kernel, _) = boot_files("amd64");
    let linux = work.join("linux");
    fs::copy(kernel, &linux).unwrap();
    if !signed {
        run_tool("sbattach", &["--remove", linux.to_str().unwrap()]);
    }
    let initrd = work.join("initrd");
    fs::write(&initrd, installed_initrd()).unwrap();
    let cmdline = work.join("cmdline");
    fs::write(&cmdline, "console=ttyS0,115200 panic=-1 loglevel=4\n").unwrap();
    let osrel = work.join("os-release");
    fs::write(&osrel, "ID=ocidd-test\nVERSION_ID=1\n").unwrap();
    let mut objcopy = Vec::new();
    for (section, file, address) in [
        (".osrel", &osrel, "0x20000"),
        (".cmdline", &cmdline, "0x30000"),
        (".linux", &linux, "0x2000000"),
        (".initrd", &initrd, "0x3000000"),
    ] {
        objcopy.push(format!("--add-section={section}={}", file.display()));
        objcopy.push(format!("--change-section-vma={section}={address}"));
    }
    objcopy.push("/usr/lib/systemd/boot/efi/linuxx64.efi.stub".to_string());
    objcopy.push(tree.join("EFI/Linux/test-1.efi").display().to_string());
    run_tool(
        "objcopy",
        &objcopy.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    gpt_with_esp(&work, &tree, &format!("uki-{name}.raw"))
}

/// What the installed system said of `what`, as the lines after `installed-system: `.
fn said<'a>(console: &'a str, what: &str) -> Vec<&'a str> {
    let prefix = format!("installed-system: {what}");
    console
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').split_once(&prefix).map(|(_, r)| r))
        .collect()
}

/// The global variables named `Boot…` the installed system found, as name and value
/// (without the attributes efivarfs puts first).
fn variables(console: &str) -> Vec<(String, Vec<u8>)> {
    said(console, "variable ")
        .into_iter()
        .filter_map(|line| {
            let (name, hex) = line.split_once(' ')?;
            let bytes: Vec<u8> = (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
                .collect();
            Some((name.to_string(), bytes.get(4..)?.to_vec()))
        })
        .collect()
}

/// `BootCurrent` as an entry's name: `Boot0004`.
fn boot_current(variables: &[(String, Vec<u8>)]) -> Option<String> {
    let (_, value) = variables.iter().find(|(name, _)| name == "BootCurrent")?;
    Some(format!(
        "Boot{:04X}",
        u16::from_le_bytes([value[0], value[1]])
    ))
}

/// The `Boot####` entries by their description (an `EFI_LOAD_OPTION`'s UCS-2 string after
/// its attributes and path length).
fn entries_named(variables: &[(String, Vec<u8>)], description: &str) -> Vec<String> {
    variables
        .iter()
        .filter(|(name, _)| name.len() == 8 && name[4..].bytes().all(|b| b.is_ascii_hexdigit()))
        .filter(|(_, value)| {
            let units: Vec<u16> = value[6.min(value.len())..]
                .chunks_exact(2)
                .map(|p| u16::from_le_bytes([p[0], p[1]]))
                .take_while(|&u| u != 0)
                .collect();
            String::from_utf16_lossy(&units) == description
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// The entry ocidd said it wrote: `Boot0004`.
fn entry_written(console: &str) -> String {
    let at = console
        .find("ocidd: boot entry Boot")
        .unwrap_or_else(|| panic!("ocidd wrote no boot entry:\n{console}"));
    console[at + "ocidd: boot entry ".len()..][..8].to_string()
}

#[test]
fn the_installed_disk_boots_from_its_entry_once_then_the_network_comes_first_again() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = installed_system_image(dir.path());
    let reference = format!("{}/systems/test:v1", registry.host());
    push(&image, &reference, "gzip");

    // One web server for the boot files and the seeds, one file per MAC.
    let root = dir.path().join("www");
    let drives = root.join("configdrives");
    let tree = dir.path().join("drive/openstack/latest");
    fs::create_dir_all(&drives).unwrap();
    fs::create_dir_all(&tree).unwrap();
    fs::write(
        tree.join("meta_data.json"),
        r#"{"uuid": "node-1", "hostname": "node-1"}"#,
    )
    .unwrap();
    run_tool(
        "genisoimage",
        &[
            "-quiet",
            "-R",
            "-J",
            "-V",
            "config-2",
            "-o",
            drives.join(format!("{MAC}.iso")).to_str().unwrap(),
            dir.path().join("drive").to_str().unwrap(),
        ],
    );
    let nocloud = root.join("nocloud").join(MAC);
    fs::create_dir_all(&nocloud).unwrap();
    fs::write(nocloud.join("meta-data"), "instance-id: node-7").unwrap();
    fs::write(
        nocloud.join("user-data"),
        "#cloud-config\nhostname: node-7\n",
    )
    .unwrap();
    let (kernel, initramfs) = boot_files("amd64");
    fs::copy(kernel, root.join("vmlinuz-amd64")).unwrap();
    fs::copy(initramfs, root.join("initramfs-amd64.img")).unwrap();
    let files = FileServer::start(&root);
    let www = format!("http://10.0.2.2:{}", files.port);

    let vars = dir.path().join("OVMF_VARS.fd");
    fs::copy(FRESH_VARS, &vars).unwrap();
    let disk = dir.path().join("disk.img");
    fs::write(&disk, vec![0u8; 200 * MIB]).unwrap();

    let boot = |seed: &str| -> String {
        fs::write(
            root.join("ocidd.ipxe"),
            format!(
                "#!ipxe\nkernel {www}/vmlinuz-amd64 initrd=initramfs-amd64.img \
                 oci.allow_no_tls oci.tag=10.0.2.2:{}/systems/test:v1 dd.of=/dev/vda dd.bs=4M \
                 {seed} ocidd.reboot_delay=0 console=ttyS0,115200\n\
                 initrd {www}/initramfs-amd64.img\nboot\n",
                registry.port
            ),
        )
        .unwrap();
        let bootfile = format!("{www}/ocidd.ipxe");
        let mut vm = Vm::start_with(
            "amd64",
            &[],
            &[(&disk, "virtio-blk-pci")],
            Boot::Network {
                firmware: Firmware::Uefi,
                bootfile: &bootfile,
                tftp: None,
            },
            Options {
                vars: Some(vars.clone()),
                reboot: true,
                ..Options::default()
            },
        );
        let seconds = vm.wait_exit_unless(BOOT_LIMIT, &["emergency shell", "(ocidd) #"]);
        eprintln!("power-on to the installed system's power-off: {seconds:.1} s");
        vm.console().replace("\r\n", "\n")
    };

    // The first power-on: the network boots ocidd, which installs with a config drive and
    // writes the entry; the reboot goes to the installed disk, once.
    let console = boot(&format!("ocidd.configdrive={www}/configdrives/{{mac}}.iso"));
    let first = entry_written(&console);
    let installed = console.find("ocidd: installed").expect(&console);
    let started = console
        .find(&format!("BdsDxe: starting {first}"))
        .unwrap_or_else(|| panic!("the firmware did not start {first}:\n{console}"));
    assert!(installed < started, "{console}");
    assert!(
        console.contains(&format!(
            "ocidd: boot entry {first} \"debian\" written for \\EFI\\debian\\shimx64.efi on partition 1 of /dev/vda (BootNext; BootOrder's first entry stays first)"
        )),
        "{console}"
    );
    assert!(
        console.contains("grub: starting the installed system"),
        "{console}"
    );
    let found = variables(&console);
    assert_eq!(boot_current(&found), Some(first.clone()), "{console}");
    let config_drive = said(&console, "ISO9660 config-2 on ");
    assert!(
        config_drive.len() == 1 && config_drive[0].contains(r#""hostname": "node-1""#),
        "{console}"
    );
    assert_eq!(
        entries_named(&found, "debian"),
        std::slice::from_ref(&first),
        "{console}"
    );

    // The second power-on: BootNext is spent, so the network is first again; the second
    // install (NoCloud now) replaces the entry instead of adding one, and starts the
    // installed system with kexec, without the firmware.
    let console = boot(&format!(
        "ocidd.nocloud={www}/nocloud/{{mac}}/ ocidd.copy_network \
         ip=10.0.2.15::10.0.2.2:255.255.255.0:node-7:eth0:none nameserver=10.0.2.3 \
         ocidd.after=kexec"
    ));
    let ocidd = console.find("ocidd: installed").unwrap_or_else(|| {
        panic!("the second power-on did not boot the network first:\n{console}")
    });
    assert!(!console[..ocidd].contains("installed-system:"), "{console}");
    let second = entry_written(&console);
    assert_eq!(second, first, "{console}");
    let seed = said(&console, "FAT on ");
    assert!(
        seed.len() == 1 && seed[0].contains("instance-id: node-7"),
        "{console}"
    );
    // The static ip= of the boot, handed on: the NIC by its MAC, the address, the gateway
    // and the nameserver.
    let network = said(&console, "network-config ");
    assert_eq!(
        network,
        [concat!(
            r#"{"ethernets":{"eth0":{"addresses":["10.0.2.15/24"],"match":{"macaddress":"52:54:00:12:34:56"},"#,
            r#""nameservers":{"addresses":["10.0.2.3"]},"routes":[{"to":"0.0.0.0/0","via":"10.0.2.2"}]}},"version":2}"#
        )],
        "{console}"
    );
    // kexec: no firmware between the install and the installed system, so the entry the
    // firmware started is still the network's, and BootNext is still the disk's.
    let kexec = console
        .find("ocidd: starting ")
        .filter(|&at| {
            console[at..].lines().next().unwrap_or("").ends_with(
                "vmlinuz from /EFI/debian/grub.cfg on /dev/vda1 with kexec (ocidd.after=kexec)",
            )
        })
        .unwrap_or_else(|| panic!("no kexec:\n{console}"));
    assert!(!console[kexec..].contains("BdsDxe:"), "{console}");
    let found = variables(&console);
    assert_ne!(boot_current(&found), Some(first.clone()), "{console}");
    let next = found
        .iter()
        .find(|(name, _)| name == "BootNext")
        .map(|(_, v)| format!("Boot{:04X}", u16::from_le_bytes([v[0], v[1]])));
    assert_eq!(next, Some(first.clone()), "{console}");
    assert_eq!(
        entries_named(&found, "debian"),
        std::slice::from_ref(&first),
        "{console}"
    );
    eprintln!(
        "the installed system's lines:\n{}",
        console
            .lines()
            .filter(|l| l.contains("installed-system:") || l.contains("BdsDxe: starting"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Under Secure Boot, through Debian's signed shim and network GRUB as `cargo xtask pxe`
/// lays them out, ocidd runs with its kernel locked down. `ocidd.after=kexec` then starts a
/// UKI's kernel when it carries a signature the kernel trusts (Debian's), and when the
/// signature is removed the kernel refuses it: ocidd says so and reboots through the
/// firmware instead.
#[test]
fn under_secure_boot_kexec_starts_a_signed_kernel_and_refuses_an_unsigned_one() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    for signed in [true, false] {
        let image = uki_system_image(dir.path(), signed);
        let tag = if signed { "signed" } else { "unsigned" };
        push(
            &image,
            &format!("{}/systems/uki:{tag}", registry.host()),
            "gzip",
        );
    }
    // The TFTP root: the signed loaders, GRUB's config where its built-in prefix points, and
    // the boot files (Debian's signed network GRUB has no HTTP).
    let root = dir.path().join("tftp");
    fs::create_dir_all(root.join("grub")).unwrap();
    copy_signed_loaders("amd64", &root);
    let (kernel, initramfs) = boot_files("amd64");
    fs::copy(kernel, root.join("vmlinuz-amd64")).unwrap();
    fs::copy(initramfs, root.join("initramfs-amd64.img")).unwrap();
    let disk = dir.path().join("disk.img");
    fs::write(&disk, vec![0u8; 200 * MIB]).unwrap();

    let boot = |tag: &str| -> String {
        fs::write(
            root.join("grub/grub.cfg"),
            format!(
                "set timeout=0\n\
                 menuentry ocidd {{\n\
                 linux /vmlinuz-amd64 oci.allow_no_tls \
                 oci.tag=10.0.2.2:{registry}/systems/uki:{tag} dd.of=/dev/vda dd.bs=4M \
                 ocidd.after=kexec console=ttyS0,115200\n\
                 initrd /initramfs-amd64.img\n}}\n",
                registry = registry.port
            ),
        )
        .unwrap();
        let mut vm = Vm::start_with(
            "amd64",
            &[],
            &[(&disk, "virtio-blk-pci")],
            Boot::Network {
                firmware: Firmware::SecureBoot,
                bootfile: "shimx64.efi",
                tftp: Some(&root),
            },
            Options::default(),
        );
        let seconds = vm.wait_exit_unless(
            BOOT_LIMIT,
            &["emergency shell", "(ocidd) #", "Press any key to continue"],
        );
        eprintln!("Secure Boot power-on to the end ({tag}): {seconds:.1} s");
        vm.console().replace("\r\n", "\n")
    };

    let console = boot("signed");
    assert!(
        console.contains(
            "ocidd: Secure Boot is on; kernel lockdown: integrity (only signed modules and kernels load)"
        ),
        "{console}"
    );
    assert!(console.contains("ocidd: installed"), "{console}");
    let kexec = console
        .find("ocidd: starting the kernel in /EFI/Linux/test-1.efi on /dev/vda1 with kexec (ocidd.after=kexec)")
        .unwrap_or_else(|| panic!("no kexec:\n{console}"));
    assert!(
        console[kexec..].contains("installed-system: up"),
        "{console}"
    );
    // The kernel started by kexec is locked down too: lockdown holds across kexec.
    assert_eq!(
        said(&console, "lockdown "),
        ["none [integrity] confidentiality"],
        "{console}"
    );
    assert!(!console[kexec..].contains("BdsDxe:"), "{console}");
    eprintln!(
        "the installed system's lines:\n{}",
        console
            .lines()
            .filter(|l| l.contains("installed-system:") || l.contains("kexec"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    let console = boot("unsigned");
    assert!(console.contains("ocidd: installed"), "{console}");
    assert!(
        console.contains(
            "ocidd: no kexec: the kernel in /EFI/Linux/test-1.efi on /dev/vda1 is not signed with a key this kernel trusts"
        ) && console.contains("rebooting through the firmware"),
        "{console}"
    );
    assert!(!console.contains("installed-system:"), "{console}");
}
