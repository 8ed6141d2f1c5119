//! The kernel command line: splitting, and every parameter's parser (the network words'
//! among them, which parse_words runs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ocidd::cmdline::network::{parse_bond, parse_ip, parse_route, parse_vlan};
use ocidd::cmdline::{parse_size, parse_words, split_kernel_cmdline, text_words};

fuzz_target!(|line: &[u8]| {
    let Ok(words) = text_words(&split_kernel_cmdline(line)) else {
        return;
    };
    let _ = parse_words(&words);
    if let Ok(line) = std::str::from_utf8(line) {
        let _ = parse_size(line);
        let _ = parse_ip(line);
        let _ = parse_vlan(line);
        let _ = parse_bond(line);
        let _ = parse_route(line);
    }
});
