//! ocidd as the initramfs's `/init`: the boot sequence, the consoles, kernel modules, the
//! network, and kexec into the installed system.

pub mod console;
pub mod init;
pub mod kexec;
pub mod modules;
pub mod network;

pub use init::{is_init, run};
