//! The router's control-plane state: connections, dial targets, topology.
//! One mutex guards it; every critical section is short and never awaits.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use tokio::sync::mpsc;

use crate::core::routes::Routes;
use crate::core::topology::{ConnectionInfo, PeerEntry, Topology};
use crate::core::wire::{control, gossip};
use crate::core::PeerName;

/// Discovery dials at most this many addresses per peer, and in all.
const MAX_ADDRS_PER_DISCOVERED_PEER: usize = 4;
const MAX_DISCOVERED_TARGETS: usize = 256;
/// How many refused inbound connections `status` remembers.
const REFUSED_KEPT: usize = 16;

/// A message for a connection's task.
#[derive(Debug)]
pub enum ConnCmd {
    /// A whole control frame to write.
    Send(Vec<u8>),
    /// Close with this reason (sent to the peer, shown in status).
    Close(String),
}

/// A connection whose handshake completed.
#[derive(Debug)]
pub struct Conn {
    pub id: u64,
    pub peer: PeerName,
    pub nickname: String,
    pub uid: u64,
    /// The peer's TCP address as we see it.
    pub remote: SocketAddr,
    /// Where the peer listens: its IP as we see it and its advertised port.
    pub listen_addr: SocketAddr,
    /// Where its UDP heartbeats come from (learned; starts as listen_addr).
    pub udp_addr: SocketAddr,
    pub outbound: bool,
    /// Set while UDP heartbeats arrive: only then is the connection in our
    /// topology entry and used for traffic.
    pub udp_ok: bool,
    pub last_udp: Option<Instant>,
    pub encryption: Encryption,
    /// Fingerprint of the peer's long-term Noise key (encrypted only).
    pub remote_key: Option<String>,
    pub tx: mpsc::Sender<ConnCmd>,
}

/// How a connection's traffic is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encryption {
    /// No password: nothing encrypted.
    None,
    /// Control and data encrypted and authenticated.
    Full,
    /// Control encrypted; data plain, as both sides trust each other's
    /// subnet (`--trusted-subnets`).
    ControlOnly,
}

impl Encryption {
    pub fn as_str(self) -> &'static str {
        match self {
            Encryption::None => "none",
            Encryption::Full => "full",
            Encryption::ControlOnly => "control-only",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetSource {
    /// Named by the user (launch arguments or `connect`).
    User,
    /// Learned from gossip; dropped when the peer leaves the topology.
    Discovered(PeerName),
}

#[derive(Debug, Clone)]
pub enum TargetStatus {
    Connecting,
    Connected {
        conn_id: u64,
    },
    Retrying {
        last_error: String,
        next_attempt: Instant,
    },
    /// Given up on for good (e.g. it is ourselves).
    Failed {
        error: String,
    },
}

#[derive(Debug)]
pub struct Target {
    /// Tells this target's dial loop from an older one for the same
    /// address that has not noticed yet that it was dropped.
    pub id: u64,
    pub source: TargetSource,
    pub status: TargetStatus,
    pub task: tokio::task::AbortHandle,
}

#[derive(Debug)]
pub struct Refused {
    /// The latest connection's address.
    pub addr: SocketAddr,
    pub reason: String,
    /// When the latest was refused.
    pub at: Instant,
    /// How many from that IP were refused for that reason (a peer retrying
    /// with backoff is one entry, not a screenful).
    pub count: u64,
}

pub struct State {
    pub topology: Topology,
    pub conns: HashMap<PeerName, Conn>,
    /// Dial targets by the address as given ("10.0.0.1", "h1:6783").
    pub targets: BTreeMap<String, Target>,
    pub refused: VecDeque<Refused>,
    /// What `attach` put where, by target as given.
    pub attached: BTreeMap<String, super::attachments::Attachment>,
    next_conn_id: u64,
    next_target_id: u64,
    routes_epoch: u64,
}

impl State {
    pub fn new(ours: PeerEntry) -> State {
        State {
            topology: Topology::new(ours),
            conns: HashMap::new(),
            targets: BTreeMap::new(),
            refused: VecDeque::new(),
            attached: BTreeMap::new(),
            next_conn_id: 1,
            next_target_id: 1,
            routes_epoch: 0,
        }
    }

    pub fn next_conn_id(&mut self) -> u64 {
        self.next_conn_id += 1;
        self.next_conn_id
    }

    pub fn next_target_id(&mut self) -> u64 {
        self.next_target_id += 1;
        self.next_target_id
    }

    pub fn refuse(&mut self, addr: SocketAddr, reason: String, now: Instant) {
        let same = |r: &Refused| r.addr.ip() == addr.ip() && r.reason == reason;
        let count = match self.refused.iter().position(same) {
            Some(i) => self
                .refused
                .remove(i)
                .map_or(1, |r| r.count.saturating_add(1)),
            None => 1,
        };
        if self.refused.len() >= REFUSED_KEPT {
            self.refused.pop_front();
        }
        self.refused.push_back(Refused {
            addr,
            reason,
            at: now,
            count,
        });
    }

    /// Our topology entry's connections, from the connections whose UDP works.
    /// Returns true when our entry changed.
    pub fn sync_our_entry(&mut self) -> bool {
        let conns: Vec<ConnectionInfo> = self
            .conns
            .values()
            .filter(|c| c.udp_ok)
            .map(|c| ConnectionInfo {
                peer: c.peer,
                addr: c.listen_addr,
                outbound: c.outbound,
            })
            .collect();
        let mut conns = conns;
        conns.sort_by_key(|c| c.peer);
        self.topology.set_our_connections(conns)
    }

    /// Routes for the topology as it is now, with an epoch that orders
    /// computations (see `Shared::install_routes`).
    pub fn routes_now(&mut self) -> (u64, Routes) {
        self.routes_epoch += 1;
        (self.routes_epoch, Routes::compute(&self.topology))
    }

    /// Send a control frame to every connection except `except`.
    pub fn send_all(&self, frame: &[u8], except: Option<PeerName>) {
        for c in self.conns.values() {
            if Some(c.peer) != except {
                // A full queue means the peer is not reading; its heartbeat
                // timeout closes it, and the periodic full gossip repairs.
                let _ = c.tx.try_send(ConnCmd::Send(frame.to_vec()));
            }
        }
    }

    /// Gossip frames carrying `entries`, split by bytes (at most
    /// `gossip::MAX_BODY` each, whole entries). Entries within the
    /// topology's caps always fit; were one not to, nothing is sent and the
    /// error is logged.
    pub fn gossip_frames(entries: &[PeerEntry]) -> Vec<Vec<u8>> {
        match gossip::emit_split(entries, gossip::MAX_BODY) {
            Ok(bodies) => bodies
                .iter()
                .map(|body| control::emit(control::Kind::Gossip, body))
                .collect(),
            Err(e) => {
                tracing::error!("gossip not sent: {e}");
                Vec::new()
            }
        }
    }

    pub fn full_gossip(&self) -> Vec<Vec<u8>> {
        Self::gossip_frames(&self.topology.entries_vec())
    }

    pub fn our_gossip(&self) -> Vec<Vec<u8>> {
        Self::gossip_frames(std::slice::from_ref(self.topology.our_entry()))
    }

    /// Discovered targets whose peer we should dial: peers in the topology
    /// we have no connection to, at the addresses others report for them.
    /// Bounded: gossip could name any number of addresses.
    pub fn discovery_wanted(&self) -> Vec<(PeerName, SocketAddr)> {
        let me = self.topology.ourself();
        let mut per_peer: HashMap<PeerName, usize> = HashMap::new();
        self.topology
            .discovery_addresses()
            .into_iter()
            .filter(|(p, _)| *p != me && !self.conns.contains_key(p))
            .filter(|(p, _)| {
                let n = per_peer.entry(*p).or_default();
                *n += 1;
                *n <= MAX_ADDRS_PER_DISCOVERED_PEER
            })
            .take(MAX_DISCOVERED_TARGETS)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State::new(PeerEntry {
            name: PeerName([2, 0, 0, 0, 0, 1]),
            nickname: String::new(),
            uid: 1,
            version: 1,
            connections: Vec::new(),
        })
    }

    #[test]
    fn a_full_topology_goes_out_in_frames_of_at_most_64_kib() {
        use crate::core::topology::{MAX_CONNECTIONS_PER_PEER, MAX_PEERS};
        // Every peer at the caps: 1024 entries of 1024 IPv6 connections.
        let entries: Vec<PeerEntry> = (0..MAX_PEERS as u16)
            .map(|i| PeerEntry {
                name: PeerName([6, 0, 0, 0, (i >> 8) as u8, i as u8]),
                nickname: "n".repeat(crate::core::topology::MAX_NICKNAME_LEN),
                uid: u64::from(i),
                version: u64::from(i),
                connections: (0..MAX_CONNECTIONS_PER_PEER as u16)
                    .map(|c| ConnectionInfo {
                        peer: PeerName([6, 0, 0, 1, (c >> 8) as u8, c as u8]),
                        addr: SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), c),
                        outbound: false,
                    })
                    .collect(),
            })
            .collect();
        let frames = State::gossip_frames(&entries);
        assert_eq!(frames.len(), MAX_PEERS / 2);
        let mut back = Vec::new();
        for f in &frames {
            let prefix: [u8; control::LEN_PREFIX] = f[..control::LEN_PREFIX].try_into().unwrap();
            let len = control::frame_len(prefix).unwrap();
            assert!(len <= 64 * 1024, "frame of {len} bytes");
            assert_eq!(len, f.len() - control::LEN_PREFIX);
            let (kind, body) = control::parse(&f[control::LEN_PREFIX..]).unwrap();
            assert_eq!(kind, control::Kind::Gossip);
            back.extend(gossip::parse(body).unwrap());
        }
        assert_eq!(back, entries);
    }

    #[test]
    fn refusals_from_one_ip_for_one_reason_merge_and_stay_bounded() {
        let mut st = state();
        let now = Instant::now();
        for port in 1000..1010u16 {
            st.refuse(
                ([10, 0, 0, 1], port).into(),
                "authentication failed".into(),
                now,
            );
        }
        st.refuse(
            ([10, 0, 0, 1], 2000).into(),
            "peer requires encryption".into(),
            now,
        );
        assert_eq!(st.refused.len(), 2);
        let first = &st.refused[0];
        assert_eq!((first.count, first.addr.port()), (10, 1009));
        for i in 0..100u8 {
            st.refuse(
                ([10, 0, 1, i], 1).into(),
                "too many connections".into(),
                now,
            );
        }
        assert_eq!(st.refused.len(), REFUSED_KEPT);
    }
}
