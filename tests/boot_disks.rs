//! Choosing the disk on a machine with four, on four buses (virtio, NVMe, SATA behind AHCI,
//! SCSI behind virtio-scsi), each with a serial and two with a WWN, at boot, where there is
//! no udev: by serial, by WWN (as Ironic's JSON hints), by size, and by a /dev/disk/by-id
//! name. Only the chosen disk receives the image; the others are untouched. Ambiguous hints
//! and a dd.of that disagrees with them write nothing, do not reboot, and show the table.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::vm::{Boot, Vm};
use common::*;

const BOOT_LIMIT: Duration = Duration::from_secs(300);

/// The four disks: (file, QEMU device, size in MiB).
const DISKS: [(&str, &str, usize); 4] = [
    ("virtio", "virtio-blk-pci,serial=virtio-serial-1", 96),
    ("nvme", "nvme,serial=nvme-serial-1", 64),
    (
        "sata",
        "ide-hd,bus=ahci1.0,serial=sata-serial-1,wwn=0x5000c50015ea71ac",
        80,
    ),
    (
        "scsi",
        "scsi-hd,bus=scsi0.0,serial=scsi-serial-1,wwn=0x5000c500a1b2c3d4",
        72,
    ),
];

struct Machine {
    registry: Registry,
    dir: tempfile::TempDir,
    image: Vec<u8>,
}

fn machine() -> Machine {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = image_bytes(8 * MIB, 77);
    let source = write_file(dir.path(), "disk.raw", &image);
    push(
        &source,
        &format!("{}/disks/pick:v1", registry.host()),
        "zstd",
    );
    Machine {
        registry,
        dir,
        image,
    }
}

impl Machine {
    fn disk(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.img"))
    }

    /// Boots with fresh disks (0xAA) and `words`; returns the VM.
    fn boot(&self, words: &str) -> Vm {
        for (name, _, size) in DISKS {
            fs::write(self.disk(name), vec![0xAAu8; size * MIB]).unwrap();
        }
        let files: Vec<PathBuf> = DISKS.iter().map(|(name, ..)| self.disk(name)).collect();
        let disks: Vec<(&Path, &str)> = files
            .iter()
            .zip(DISKS)
            .map(|(file, (_, device, _))| (file.as_path(), device))
            .collect();
        let append = format!(
            "console=ttyS0 oci.tag=10.0.2.2:{}/disks/pick:v1 oci.allow_no_tls dd.bs=1M ocidd.reboot_delay=0 {words}",
            self.registry.port
        );
        Vm::start_with_disks(
            "amd64",
            &["ahci,id=ahci1", "virtio-scsi-pci,id=scsi0"],
            &disks,
            Boot::Kernel { append: &append },
        )
    }

    /// Boots with `words`; checks that `chosen` alone received the image.
    fn installs_onto(&self, words: &str, chosen: &str) {
        let mut vm = self.boot(words);
        vm.wait_exit(BOOT_LIMIT);
        let console = vm.console();
        assert!(
            console.contains("ocidd: installed 8.00 MiB"),
            "{words}:\n{console}"
        );
        for (name, ..) in DISKS {
            let data = read_prefix(&self.disk(name), self.image.len());
            if name == chosen {
                assert!(
                    data == self.image,
                    "{words}: {name} does not hold the image"
                );
            } else {
                assert!(
                    fs::read(self.disk(name))
                        .unwrap()
                        .iter()
                        .all(|&b| b == 0xAA),
                    "{words}: {name} was written to"
                );
            }
        }
    }

    /// Boots with `words`; checks that nothing was written, that the machine stays up in the
    /// emergency shell, and that the console shows `error` and the table.
    fn refuses(&self, words: &str, error: &str) {
        let mut vm = self.boot(words);
        vm.wait_for("starting an emergency shell", BOOT_LIMIT);
        let console = vm.ocidd_output();
        assert!(console.contains(error), "{words}:\n{console}");
        assert!(!console.contains("rebooting"), "{words}:\n{console}");
        // (sda and sdb are the SATA and the SCSI disk in either order: probing is
        // asynchronous, which is why names are no way to choose.)
        for expected in [
            "ocidd: disks here (each NAME=VALUE works as a dd.match= word):",
            "ocidd:   /dev/nvme0n1   size=64M tran=nvme rotational=0 model=\"QEMU NVMe Ctrl\" serial=nvme-serial-1",
            "size=80M tran=sata rotational=1 vendor=ATA model=\"QEMU HARDDISK\" serial=sata-serial-1",
            "wwn=0x5000c50015ea71ac hctl=",
            "size=72M tran=scsi rotational=1 vendor=QEMU model=\"QEMU HARDDISK\" serial=scsi-serial-1",
            "wwn=0x5000c500a1b2c3d4 hctl=",
            "ocidd:   /dev/vda       size=96M tran=virtio rotational=1 serial=virtio-serial-1",
            "/dev/disk/by-id/ata-QEMU_HARDDISK_sata-serial-1",
            "/dev/disk/by-id/scsi-35000c500a1b2c3d4",
        ] {
            assert!(
                console.contains(expected),
                "{words}: no {expected:?}:\n{console}"
            );
        }
        drop(vm);
        for (name, ..) in DISKS {
            assert!(
                fs::read(self.disk(name))
                    .unwrap()
                    .iter()
                    .all(|&b| b == 0xAA),
                "{words}: {name} was written to"
            );
        }
        eprintln!("{words}: refused, and the console showed:\n{console}");
    }
}

#[test]
fn the_disk_is_chosen_by_what_it_is() {
    let machine = machine();
    machine.installs_onto("dd.match=serial=NVME-SERIAL-1", "nvme");
    // Ironic's hints, verbatim: {"wwn": "0x5000c500a1b2c3d4"}.
    machine.installs_onto(
        "dd.hints=b64:eyJ3d24iOiAiMHg1MDAwYzUwMGExYjJjM2Q0In0=",
        "scsi",
    );
    machine.installs_onto("dd.match=size=80M", "sata");
    machine.installs_onto(
        "dd.of=/dev/disk/by-id/ata-QEMU_HARDDISK_sata-serial-1",
        "sata",
    );
    machine.installs_onto("dd.match=tran!=nvme dd.pick=largest", "virtio");
}

#[test]
fn ambiguous_hints_and_a_disagreeing_target_write_nothing() {
    let machine = machine();
    machine.refuses(
        "dd.match=tran!=nvme",
        "3 disks match the hints tran!=nvme: /dev/sda, /dev/sdb, /dev/vda",
    );
    machine.refuses(
        "dd.of=/dev/vda dd.match=serial=nvme-serial-1",
        "the target /dev/vda does not match the hints serial=nvme-serial-1",
    );
}
