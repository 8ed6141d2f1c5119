//! ocidd: install a machine by streaming a verified raw disk image from an OCI registry onto
//! its disk. Also the `/init` of the PXE initramfs.
//!
//! # From the registry to the disk
//!
//! 1. [`cmdline`] reads kernel words (`oci.tag=`, `dd.of=`, …) into the install's
//!    [`cmdline::Params`] and /init's [`cmdline::BootParams`]; `ocidd install`'s flags fill the
//!    same `Params`; a site overlay's `/etc/ocidd/cmdline` ([`overlay`] writes it) gives
//!    defaults. [`install::prompt`] asks for what is missing, and chooses the target disk
//!    first: [`disks`] reads the machine's disks from sysfs, and [`disks::hints`] matches
//!    them against `dd.match=`/`dd.hints=` or resolves a /dev/disk/by-id name as udev would.
//! 2. [`install`] plans: [`registry::client`] fetches the manifest (what a digest names
//!    from the [`registry::mirror`]s first, then the registry), [`registry::manifest`] reads
//!    it (the disk layer in ocidd's shape or another tool's; an image index's entries are
//!    chosen by [`reference::Platform::selects`] and ranked by `disktype`; with
//!    `oci.layout=`, [`registry::layout`] serves an OCI image layout on loopback as the first
//!    source, [`iso::find_layout`] finding the boot medium's), and
//!    [`registry::auth`] answers the challenges. With `oci.verify.key=`, [`signature`] then
//!    requires a cosign signature over what the tag named. A chunked image's index
//!    ([`chunks`]: the manifest's config, or a second layer as earlier pushes had it) comes
//!    through [`registry::blob::read_small_blob`], and is read only if its
//!    chunks add up to the image hash it names ([`chunks::tree`]).
//! 3. [`install::target`] opens the disk or file and refuses one in use or too small.
//! 4. Every blob byte comes through [`registry::blob::BlobReader`], which resumes broken
//!    downloads with Range requests. Then either
//!    - [`install::stream`]: one stream, in threads joined by [`install::pipe`]: fetch with
//!      the [`digest`] check, decompress ([`install::decompress`]: gzip, zstd, xz), and when
//!      the layer's type does not say what it holds, take the image out of it
//!      ([`install::content`]: a containerDisk's tar, or qcow2 expanded by
//!      [`install::qcow2`]), write; or
//!    - [`install::chunked`]: range fetchers, an in-order hash of the blob, and workers that
//!      decompress chunks, check each ([`chunks::ChunkIndex::holds`]), and write it in place;
//!      with `dd.delta`, a read pass first checks the target's chunks, only the chunks it
//!      lacks come, and the ones it held are checked again before the image is committed.
//!
//!    Both write through [`install::writer`]: aligned blocks, runs of zeros zeroed, the
//!    target's old tables cleared before the first write ([`install::target`]), and the
//!    image's first and last MiB held back ([`install::writer::Held`]) and written last, once
//!    the image verified (with a GPT's backup moved to the disk's end, [`install::gpt`]).
//!    [`install::interrupt`] stops on SIGTERM/SIGINT/SIGHUP saying what the target holds.
//!    With `ocidd.configdrive=` or `ocidd.nocloud=`, [`seed`] fetches and checks the
//!    machine's config drive (or builds its NoCloud seed) before anything is written, and the
//!    commit adds its partition at the disk's end ([`install::seed_partition`]) and writes it
//!    before the tables. On a machine booted by UEFI, [`install::boot_entry`] then finds the
//!    loader on the installed ESP and writes its `Boot####` entry and `BootNext` or
//!    `BootOrder` ([`efi`]: load options, and variables through efivarfs).
//! 5. [`error`] tags each failure with its exit status, [`retry`] waits out transient ones,
//!    [`progress`] shows how far it got, and [`report`] tells the provisioning system each
//!    phase's start and end (`ocidd.report=`, `--json`).
//!
//! # The other paths
//!
//! - [`push`]: compress the raw image on all cores while uploading it, upload the chunk index,
//!   push the manifest (one layer, the index as its config), or merge it into the image index
//!   at the tag (entries marked `disktype: raw`); each request is bounded
//!   by the stall timeout and retried as pulls are ([`retry`]).
//! - [`boot`]: `/init`: mount the kernel's file systems, copy output to every console, load
//!   modules, bring the network up as dracut's words ([`cmdline::network`]) say
//!   ([`boot::network`]: names, bonds and VLANs, DHCPv4, IPv6 from router advertisements and
//!   DHCPv6, static addresses; with `ocidd.copy_network`, [`boot::network::handoff`] writes
//!   it as the NoCloud seed's network-config), set the clock from NTP, install, then reboot
//!   (or start the installed kernel, [`boot::kexec`]).
//! - [`overlay`]: a site's files (default words, CA, credentials) as an initramfs that boot
//!   loaders load after the main one.
//! - [`efi::uki`]: a unified kernel image (systemd's stub with the kernel, the initrds and the
//!   words) for UEFI HTTP Boot, which starts one file with no arguments.
//! - [`iso`]: the embed areas of ocidd's boot ISO (a node's words on GRUB's kernel line, a
//!   site overlay), patched in a copy by `ocidd iso customize`, which can also append an
//!   image layout for offline installs.
//! - [`compression`] and [`registry::manifest::media_type`] are shared by push and install.
//! - [`sync`]: locks and condition variables that go on after a thread panicked, used by
//!   every thread that shares state.

pub mod boot;
pub mod chunks;
pub mod cmdline;
pub mod compression;
pub mod digest;
pub mod disks;
pub mod efi;
pub mod error;
pub mod install;
pub mod iso;
pub mod output;
pub mod overlay;
pub mod progress;
pub mod push;
pub mod reference;
pub mod registry;
pub mod report;
pub mod retry;
pub mod seed;
pub mod signature;
pub mod sync;
