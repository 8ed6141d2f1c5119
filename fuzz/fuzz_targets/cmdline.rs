//! The kernel command line: splitting, and every parameter's parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ocidd::cmdline::{parse_size, parse_words, split_kernel_cmdline, text_words};
use ocidd::boot::network::parse_ip_param;

fuzz_target!(|line: &[u8]| {
    let Ok(words) = text_words(&split_kernel_cmdline(line)) else {
        return;
    };
    if let Ok(params) = parse_words(&words) {
        let _ = parse_ip_param(params.boot.ip.as_deref());
    }
    if let Ok(line) = std::str::from_utf8(line) {
        let _ = parse_size(line);
    }
});
