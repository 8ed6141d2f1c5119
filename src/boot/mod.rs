//! ocidd as the initramfs's `/init`: the boot sequence, the consoles, kernel modules and the
//! network.

pub mod console;
pub mod init;
pub mod modules;
pub mod network;

pub use init::{is_init, run};
