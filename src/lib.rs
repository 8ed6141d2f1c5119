//! ocidd: install a machine by streaming a verified raw disk image from an OCI registry onto
//! its disk. Also the `/init` of the PXE initramfs.
//!
//! A byte goes from the registry to the disk through, in order: [`registry`] (protocol,
//! authentication, manifests), [`source`] (the blob as a resumable `Read`), [`digest`] (the
//! digest check), [`decompress`], and [`blockdev`] (the target and the block writer), driven by
//! [`install`].

pub mod blockdev;
pub mod chunked;
pub mod chunks;
pub mod cmdline;
pub mod console;
pub mod decompress;
pub mod dhcp;
pub mod digest;
pub mod error;
pub mod init;
pub mod install;
pub mod modules;
pub mod network;
pub mod pipeline;
pub mod progress;
pub mod prompt;
pub mod push;
pub mod reference;
pub mod registry;
pub mod retry;
pub mod sequential;
pub mod source;
