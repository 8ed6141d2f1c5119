//! Talking to an OCI registry: the pull protocol ([`client`]), authentication ([`auth`]),
//! what manifests say ([`manifest`]), the mirrors tried before the registry ([`mirror`]), the proxies
//! ([`proxy`]), an OCI image layout on a local medium served as the first source
//! ([`layout`]), and the resumable reader every blob fetch goes through ([`blob`]).

pub mod auth;
pub mod blob;
pub mod client;
pub mod layout;
pub mod manifest;
pub mod mirror;
pub mod proxy;

pub use client::{Registry, http_client};
