//! Host plumbing: netlink, network namespaces, TAP, iptables, gratuitous ARP.
//!
//! Everything here talks to the kernel. Code that must act inside another
//! network namespace does so on a short-lived std thread that called
//! `setns` ([`netns::run_in_netns`]); a tokio worker thread is never moved.

pub mod ebtables;
pub mod error;
pub mod garp;
pub mod heartbeat;
pub mod iptables;
pub mod netlink;
pub mod netns;
pub mod tap;
pub mod udp_drops;

pub use error::NetError;
pub use netlink::{Attached, Netlink, VxlanSpec};
pub use netns::{run_in_netns, NetnsTarget};
pub use tap::open_tap;

/// Name of the container end of the veth pair, inside the target netns.
pub const CONTAINER_IFNAME: &str = "ethwe";

/// Prefix of the host end of a container veth pair: `vethwr` + 8 hex chars.
pub const HOST_VETH_PREFIX: &str = "vethwr";

/// Default name of the bridge.
pub const DEFAULT_BRIDGE: &str = "weave";

/// Default name of the router's TAP port on the bridge.
pub const DEFAULT_TAP: &str = "weave-tap";
