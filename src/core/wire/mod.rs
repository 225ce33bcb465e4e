//! Wire formats as typed views over byte slices: each parser validates
//! lengths once and never panics on short or hostile input.

pub mod control;
pub mod gossip;
pub mod handshake;
pub mod sleeve;
