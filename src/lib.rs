//! ocidd: install a machine by streaming a verified raw disk image from an OCI registry onto
//! its disk. Also the `/init` of the PXE initramfs.
//!
//! A byte goes from the registry to the disk through, in order: [`registry`] (protocol,
//! authentication, manifests), [`source`] (the blob as a resumable `Read`), [`digest`] (the
//! digest check), [`decompress`], and [`blockdev`] (the target and the block writer), driven by
//! [`install`].

#[path = "install/target.rs"]
pub mod blockdev;
#[path = "install/chunked.rs"]
pub mod chunked;
pub mod chunks;
pub mod cmdline;
#[path = "boot/console.rs"]
pub mod console;
#[path = "install/decompress.rs"]
pub mod decompress;
#[path = "boot/dhcp.rs"]
pub mod dhcp;
pub mod digest;
pub mod error;
#[path = "boot/init.rs"]
pub mod init;
#[path = "install/mod.rs"]
pub mod install;
#[path = "boot/modules.rs"]
pub mod modules;
#[path = "boot/network.rs"]
pub mod network;
#[path = "install/pipe.rs"]
pub mod pipeline;
pub mod progress;
#[path = "install/prompt.rs"]
pub mod prompt;
#[path = "push/mod.rs"]
pub mod push;
pub mod reference;
#[path = "registry/client.rs"]
pub mod registry;
pub mod retry;
#[path = "install/stream.rs"]
pub mod sequential;
#[path = "registry/blob.rs"]
pub mod source;
