//! Talking to an OCI registry: the pull protocol and the resumable blob reader.

pub mod blob;
pub mod client;

pub use client::{
    ANNOTATION_IMAGE_DIGEST, ANNOTATION_IMAGE_SIZE, BlobResponse, Registry, entry_platform,
    http_client, install_crypto_provider, interpret_manifest, short_reason,
};
pub(crate) use client::{Credentials, lookup_credentials};
