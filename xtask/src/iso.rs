//! `cargo xtask iso`: one hybrid ISO that boots the amd64 boot files as a CD and as a USB
//! stick, under BIOS (GRUB's El Torito image, GRUB's hybrid MBR) and UEFI (Debian's signed
//! shim and CD GRUB in an EFI System partition, so also with Secure Boot on). BIOS and UEFI
//! read the same `boot/grub/grub.cfg`; its kernel line ends in a fixed-size area of `#` (a
//! GRUB comment) for per-node words, and `ocidd/site.img` is a zero-filled area for a site
//! overlay (the kernel skips zero padding between initramfs archives). Where both are is
//! stamped into the ISO ([`ocidd::iso::stamp`]) for `ocidd iso customize`.

use std::fs;
use std::io::{Cursor, Write};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use ocidd::iso::{Area, Areas, OVERLAY_AREA, OVERLAY_PATH, WORDS_AREA, WORDS_FILL};

use crate::deps;
use crate::pxe::{self, Arch};
use crate::util::{exec, output, root};

/// Where the menu is on the medium.
const GRUB_CONFIG: &str = "/boot/grub/grub.cfg";

/// Builds the amd64 boot files, then `OUT/ocidd-amd64.iso`.
pub fn build(out: &Path) -> Result<()> {
    pxe::build(&pxe::Options::generic(
        Arch::Amd64,
        out.to_path_buf(),
        false,
    ))?;
    pack(out)
}

/// Packs the amd64 boot files `cargo xtask pxe` wrote to `out` as `OUT/ocidd-amd64.iso`.
pub fn pack(out: &Path) -> Result<()> {
    deps::ensure_packages(&["xorriso", "grub-pc-bin"])?;
    // The files' and the volume's times, so that builds of one commit are the same.
    let build_time = pxe::source_date_epoch()?;
    let download = root().join("target/pxe/amd64/download");
    let shim =
        pxe::fetch_package("shim-signed:amd64", &download)?.join("usr/lib/shim/shimx64.efi.signed");
    let grub = pxe::fetch_package("grub-efi-amd64-signed:amd64", &download)?
        .join("usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed");
    let stage = root().join("target/iso/stage");
    let _ = fs::remove_dir_all(&stage);
    for dir in [".disk", "boot/grub/i386-pc", "ocidd"] {
        fs::create_dir_all(stage.join(dir))?;
    }
    // The signed CD GRUB finds its root by this file, and so does the BIOS one.
    fs::write(stage.join(".disk/info"), "ocidd boot media\n")?;
    fs::copy(out.join("vmlinuz-amd64"), stage.join("ocidd/vmlinuz"))?;
    fs::copy(
        out.join("initramfs-amd64.img"),
        stage.join("ocidd/initrd.img"),
    )?;
    fs::write(
        stage.join(OVERLAY_PATH.trim_start_matches('/')),
        vec![0u8; OVERLAY_AREA],
    )?;
    let config = grub_config();
    fs::write(stage.join(GRUB_CONFIG.trim_start_matches('/')), &config)?;

    let early = root().join("target/iso/early.cfg");
    fs::write(
        &early,
        "search --file --set=root /.disk/info\nset prefix=($root)/boot/grub\n",
    )?;
    exec(
        Command::new("grub-mkimage")
            .args(["-O", "i386-pc-eltorito", "-p", "/boot/grub", "-c"])
            .arg(&early)
            .arg("-o")
            .arg(stage.join("boot/grub/i386-pc/eltorito.img"))
            .args([
                "biosdisk",
                "iso9660",
                "part_msdos",
                "part_gpt",
                "search",
                "search_fs_file",
                "normal",
                "linux",
                "configfile",
                "echo",
                "test",
                "serial",
                "terminal",
            ]),
    )?;

    fs::write(
        stage.join("boot/grub/efi.img"),
        efi_image(&[
            ("EFI/BOOT/BOOTX64.EFI", &shim),
            ("EFI/BOOT/grubx64.efi", &grub),
        ])?,
    )?;

    // xorriso stamps each file with its time on disk.
    set_times(&stage, build_time)?;
    let iso = out.join("ocidd-amd64.iso");
    let _ = fs::remove_file(&iso);
    // grub-mkrescue's own layout, with Debian's signed loaders as the EFI image: a GPT with
    // an EFI System partition, which firmware needs to boot the file as a USB stick.
    exec(
        Command::new("xorriso")
            .env("SOURCE_DATE_EPOCH", build_time.to_string())
            .args(["-as", "mkisofs", "-o"])
            .arg(&iso)
            .args(["-R", "-J", "-V", "OCIDD"])
            .args(["--grub2-mbr", "/usr/lib/grub/i386-pc/boot_hybrid.img"])
            .args(["-b", "boot/grub/i386-pc/eltorito.img", "-no-emul-boot"])
            .args([
                "-boot-load-size",
                "4",
                "-boot-info-table",
                "--grub2-boot-info",
            ])
            .args(["--efi-boot", "boot/grub/efi.img", "-efi-boot-part"])
            .args(["--efi-boot-image", "--protective-msdos-label"])
            .arg(&stage),
    )?;
    let words_at = config
        .find(&String::from_utf8(vec![WORDS_FILL; WORDS_AREA])?)
        .context("the menu has no words area")?;
    let areas = Areas {
        words: Area {
            offset: file_offset(&iso, GRUB_CONFIG)? + words_at as u64,
            length: WORDS_AREA as u64,
        },
        overlay: Area {
            offset: file_offset(&iso, OVERLAY_PATH)?,
            length: OVERLAY_AREA as u64,
        },
        layout: None,
    };
    ocidd::iso::stamp(&iso, &areas)?;
    eprintln!(
        "iso: {} ({} MiB): BIOS and UEFI (Secure Boot), CD and USB",
        iso.display(),
        fs::metadata(&iso)?.len() >> 20
    );
    Ok(())
}

/// The EFI System partition's FAT image: `files` (path in it, file on disk). Built with
/// `fatfs`, which stamps every entry with one fixed time, so that builds are the same (mtools
/// stamps directories and creation times with the current time).
fn efi_image(files: &[(&str, &Path)]) -> Result<Vec<u8>> {
    // shim (1 MB) and the CD GRUB (3.8 MB) need more than 4 MiB.
    let mut image = Cursor::new(vec![0u8; 8 << 20]);
    fatfs::format_volume(
        &mut image,
        fatfs::FormatVolumeOptions::new()
            .volume_label(*b"OCIDD_EFI  ")
            .volume_id(0x0c1d_d000),
    )
    .context("formatting the EFI image")?;
    {
        let fat = fatfs::FileSystem::new(&mut image, fatfs::FsOptions::new())?;
        for (name, source) in files {
            let (dirs, _) = name.rsplit_once('/').unwrap_or(("", name));
            let mut dir = fat.root_dir();
            for part in dirs.split('/').filter(|p| !p.is_empty()) {
                dir = dir.create_dir(part)?;
            }
            let mut file = fat.root_dir().create_file(name)?;
            file.truncate()?;
            file.write_all(&fs::read(source).with_context(|| source.display().to_string())?)
                .with_context(|| format!("copying {} into the EFI image", source.display()))?;
        }
        fat.unmount()?;
    }
    Ok(image.into_inner())
}

/// Sets the modification time of `dir` and everything under it to `epoch`.
fn set_times(dir: &Path, epoch: u32) -> Result<()> {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch.into());
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            set_times(&path, epoch)?;
        } else {
            fs::File::options()
                .write(true)
                .open(&path)?
                .set_modified(time)?;
        }
    }
    fs::File::open(dir)?.set_modified(time)?;
    Ok(())
}

/// Where the file at `path` on the medium starts in the ISO file, as xorriso reports it.
fn file_offset(iso: &Path, path: &str) -> Result<u64> {
    let report = output(Command::new("xorriso").arg("-indev").arg(iso).args([
        "-find",
        path,
        "-exec",
        "report_lba",
        "--",
    ]))?;
    // File data lba:  0 ,     4209 ,        1 ,     1314 , '/boot/grub/grub.cfg'
    let line = report
        .lines()
        .find(|l| l.starts_with("File data lba:") && l.ends_with(&format!("'{path}'")))
        .with_context(|| format!("xorriso reports no {path}"))?;
    let lba: u64 = line
        .split(',')
        .nth(1)
        .and_then(|f| f.trim().parse().ok())
        .with_context(|| format!("xorriso's line for {path}: {line}"))?;
    Ok(lba * 2048)
}

/// The menu BIOS and UEFI GRUB both read. GRUB's own console goes to the serial port under
/// BIOS; under UEFI the firmware's console already does.
fn grub_config() -> String {
    format!(
        "if [ \"$grub_platform\" = \"pc\" ]; then\n  serial --unit=0 --speed=115200\n  \
         terminal_input --append serial\n  terminal_output --append serial\nfi\n\
         set timeout=1\nmenuentry \"Install with ocidd\" {{\n  \
         linux /ocidd/vmlinuz console=tty0 console=ttyS0,115200 {}\n  \
         initrd /ocidd/initrd.img /ocidd/site.img\n}}\n",
        "#".repeat(WORDS_AREA)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_words_area_is_one_comment_on_the_kernel_line() {
        let config = grub_config();
        let line = config
            .lines()
            .find(|l| l.trim_start().starts_with("linux "))
            .unwrap();
        assert!(line.ends_with(&format!(" {}", "#".repeat(WORDS_AREA))));
    }
}
