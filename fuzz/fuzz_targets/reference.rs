//! Image references, digests and platforms.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ocidd::digest::Digest;
use ocidd::reference::{Platform, parse_blob, parse_tag};

fuzz_target!(|text: &str| {
    if let Ok(source) = parse_tag(text) {
        // What parses prints as something that parses again.
        let again = source.to_string();
        assert!(parse_tag(&again).is_ok(), "{text:?} -> {again:?}");
    }
    let _ = parse_blob(text);
    let _ = text.parse::<Platform>();
    if let Ok(digest) = text.parse::<Digest>() {
        assert_eq!(digest.to_string(), text);
    }
});
