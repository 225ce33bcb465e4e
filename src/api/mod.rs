//! The local control API between the CLI and its host's router.

pub mod client;
pub mod http;
pub mod protocol;
pub mod server;
