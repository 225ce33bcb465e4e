//! Topologies for the core's tests and the benchmarks: peers named by
//! small numbers, joined by symmetric edges.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::topology::{ConnectionInfo, PeerEntry};
use super::PeerName;

/// A wall clock (ms) for merges: fixture entries' versions are far behind.
pub const NOW_MS: u64 = 1_700_000_000_000;

pub fn name(i: u8) -> PeerName {
    PeerName([0x02, 0, 0, 0, 0, i])
}

/// Peer `i`'s own entry: it lists every peer it shares an edge with, so
/// every connection is symmetric.
pub fn entry(i: u8, edges: &[(u8, u8)]) -> PeerEntry {
    let mut conns: Vec<u8> = edges
        .iter()
        .filter_map(|&(a, b)| match (a == i, b == i) {
            (true, false) => Some(b),
            (false, true) => Some(a),
            _ => None,
        })
        .collect();
    conns.sort_unstable();
    conns.dedup();
    PeerEntry {
        name: name(i),
        nickname: format!("host{i}"),
        uid: u64::from(i),
        version: 1,
        connections: conns
            .into_iter()
            .map(|c| ConnectionInfo {
                peer: name(c),
                addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, c)), 6783),
                outbound: c > i,
            })
            .collect(),
    }
}
