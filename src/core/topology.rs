//! The mesh's shared picture: every peer's own entry (name, incarnation,
//! version, its established connections), merged from gossip.
//!
//! Merging keeps, per peer name, the entry with the greater
//! `(version, uid)`; so it is idempotent, commutative and associative, and
//! gossip may be repeated, reordered or lost.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::PeerName;

/// Caps on what gossip from outside may make us hold.
pub const MAX_PEERS: usize = 1024;
pub const MAX_CONNECTIONS_PER_PEER: usize = 1024;
pub const MAX_NICKNAME_LEN: usize = 64;

/// One established connection, as its owner reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ConnectionInfo {
    pub peer: PeerName,
    /// Where `peer` listens (its IP as seen by the owner, its advertised
    /// port): what discovery dials.
    pub addr: SocketAddr,
    /// True when the owner dialled the connection.
    pub outbound: bool,
}

/// A peer's own account of itself.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PeerEntry {
    pub name: PeerName,
    pub nickname: String,
    /// Random per incarnation (router process start).
    pub uid: u64,
    /// Grows with every change the owner makes; starts from the wall clock
    /// in milliseconds at launch so a restarted router outranks its past.
    pub version: u64,
    pub connections: Vec<ConnectionInfo>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TopologyError {
    #[error("gossip names {0} peers, more than the limit of {MAX_PEERS}")]
    TooManyPeers(usize),
    #[error("peer {0} lists {1} connections, more than the limit of {MAX_CONNECTIONS_PER_PEER}")]
    TooManyConnections(PeerName, usize),
    #[error("peer {0} has a nickname longer than {MAX_NICKNAME_LEN} bytes")]
    NicknameTooLong(PeerName),
    #[error("gossip carries the reserved all-zero peer name")]
    ReservedName,
}

/// The merged topology as seen from `ourself`.
#[derive(Clone, Debug)]
pub struct Topology {
    ourself: PeerName,
    peers: BTreeMap<PeerName, PeerEntry>,
}

impl Topology {
    /// A topology holding only our own entry.
    pub fn new(ours: PeerEntry) -> Topology {
        let ourself = ours.name;
        let mut peers = BTreeMap::new();
        peers.insert(ourself, ours);
        Topology { ourself, peers }
    }

    pub fn ourself(&self) -> PeerName {
        self.ourself
    }

    pub fn our_entry(&self) -> &PeerEntry {
        &self.peers[&self.ourself]
    }

    pub fn get(&self, name: &PeerName) -> Option<&PeerEntry> {
        self.peers.get(name)
    }

    pub fn entries(&self) -> impl Iterator<Item = &PeerEntry> {
        self.peers.values()
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}
