//! The local control API between the CLI and its host's router.

pub mod accept;
pub mod client;
pub mod http;
pub mod peer;
pub mod protocol;
pub mod server;
pub mod slots;
