//! UEFI: boot entries (`Boot####`, `BootOrder`, `BootNext`) and the variables that hold
//! them; unified kernel images. What entry to write for an installed disk is
//! [`crate::install::boot_entry`]'s.

pub mod load_option;
pub mod uki;
pub mod variables;
