//! qcow2 files and containerDisk tars, as a layer may hold them: read to the end or refused,
//! never a panic, never more memory than the reader's bound.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use ocidd::install::content;

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    let _ = content::with_image(&mut input, &mut |image| {
        // An image's size comes from the header: read a bounded prefix.
        let mut sink = Vec::new();
        image.take(64 << 20).read_to_end(&mut sink)?;
        Ok(())
    });
});
