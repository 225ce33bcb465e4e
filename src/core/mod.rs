//! The pure core: wire formats, topology, routes, MAC table, the forwarding
//! state machine. Nothing here touches a socket, a file or the clock; time is
//! passed in as `Instant`.

pub mod arp;
pub mod backoff;
pub mod cidr;
pub mod cni;
pub mod crypto;
pub mod dns;
pub mod docker_plugin;
pub mod fastpath;
pub mod icmp;
pub mod ipam;
pub mod mac_table;
#[cfg(test)]
mod mesh_sim;
pub mod peer_name;
pub mod reassembly;
pub mod router;
pub mod routes;
pub mod steering;
/// Small topologies for the core's tests and the benchmarks; not an API.
#[doc(hidden)]
pub mod test_fixtures;
pub mod text;
pub mod topology;
pub mod wire;

pub use peer_name::PeerName;
