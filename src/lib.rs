//! ocidd: install a machine by streaming a verified raw disk image from an OCI registry onto
//! its disk. Also the `/init` of the PXE initramfs.

pub mod boot;
pub mod chunks;
pub mod cmdline;
pub mod compression;
pub mod digest;
pub mod error;
pub mod install;
pub mod progress;
pub mod push;
pub mod reference;
pub mod registry;
pub mod retry;
