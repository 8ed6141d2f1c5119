//! Manifests and image indexes, as a registry may send them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ocidd::reference::Platform;
use ocidd::registry::manifest::interpret_manifest;

fuzz_target!(|data: &[u8]| {
    let platform = Platform::current();
    let _ = interpret_manifest(data, None, &platform);
    let _ = interpret_manifest(data, Some("application/vnd.oci.image.index.v1+json"), &platform);
});
