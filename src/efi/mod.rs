//! UEFI: boot entries (`Boot####`, `BootOrder`, `BootNext`) and the variables that hold
//! them. What entry to write for an installed disk is [`crate::install::boot_entry`]'s.

pub mod load_option;
pub mod variables;
