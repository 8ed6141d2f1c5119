//! The kernel command line: splitting, and every parameter's parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ocidd::cmdline::{parse_size, parse_words, split_kernel_cmdline};
use ocidd::boot::network::parse_ip_param;

fuzz_target!(|line: &str| {
    let words = split_kernel_cmdline(line);
    if let Ok(params) = parse_words(&words) {
        let _ = parse_ip_param(params.boot.ip.as_deref());
    }
    let _ = parse_size(line);
});
