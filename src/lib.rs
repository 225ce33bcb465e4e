//! weave-rs: a userspace overlay router that gives containers on many Linux
//! hosts one flat layer-2 network.
//!
//! `core` is pure (no I/O, no tokio) and decides everything that can be
//! decided without the kernel; `net` is the host plumbing (netlink, TAP,
//! iptables); `daemon` is the tokio shell that runs a router; `api` is the
//! local control socket between the CLI and its host's router.

pub mod api;
pub mod cli;
pub mod cni;
pub mod core;
pub mod daemon;
pub mod docker;
pub mod files;
pub mod net;
pub mod waiter;
