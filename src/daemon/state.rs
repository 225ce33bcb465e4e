//! The router's control-plane state: connections, dial targets, topology.
//! One mutex guards it; every critical section is short and never awaits.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use tokio::sync::mpsc;

use super::connection::ConnError;
use super::dataplane::{DataPlane, LinkCrypto};
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
    /// Close: a connection from the other side replaced this one.
    Replaced,
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
    /// When it was registered.
    pub since: Instant,
    pub encryption: Encryption,
    /// Fingerprint of the peer's long-term Noise key (encrypted only).
    pub remote_key: Option<String>,
    /// The peer runs the kernel fast path.
    pub fastdp: bool,
    pub tx: mpsc::Sender<ConnCmd>,
}

impl Conn {
    /// Whether a UDP heartbeat from `from` may become this peer's UDP
    /// address. A sealed heartbeat proved itself (it opened under this
    /// link's keys), from wherever it came (NAT); a plain one could come
    /// from anybody, so it must come from the control connection's IP.
    pub fn udp_source_allowed(&self, from: SocketAddr) -> bool {
        match self.encryption {
            Encryption::Full => true,
            Encryption::None | Encryption::ControlOnly => {
                from.ip().to_canonical() == self.remote.ip().to_canonical()
            }
        }
    }
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
    /// Where a peer listened when this router last ran (`known_peers`);
    /// dialled for a while after launch.
    Remembered(PeerName),
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

impl TargetStatus {
    /// One word for status lines and error messages.
    pub fn word(&self) -> &'static str {
        match self {
            TargetStatus::Connecting => "connecting",
            TargetStatus::Connected { .. } => "connected",
            TargetStatus::Retrying { .. } => "retrying",
            TargetStatus::Failed { .. } => "failed",
        }
    }
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
    /// Inbound connections still in their handshake, by remote IP.
    handshaking: HashMap<IpAddr, usize>,
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
            handshaking: HashMap::new(),
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

    /// Enter `conn`, whose handshake completed, with its datagram keys
    /// `link`; returns its id. The connection and its keys go in together,
    /// under both locks (state, then data plane): a connection that loses
    /// to a duplicate installs nothing, and one that is replaced loses its
    /// keys in the same step, so no connection can overwrite, or later
    /// remove, the keys of the one that is kept.
    pub fn register(
        &mut self,
        data: &mut DataPlane,
        mut conn: Conn,
        link: LinkCrypto,
        ourself: PeerName,
        conn_limit: usize,
    ) -> Result<u64, ConnError> {
        let peer = conn.peer;
        if let Some(existing) = self.conns.get(&peer) {
            // Both ends apply the same rule, so they keep the same
            // connection: the one dialled by the peer with the smaller name.
            let smaller_dials = ourself < peer;
            let new_wins = conn.outbound == smaller_dials && existing.outbound != smaller_dials;
            if !new_wins {
                return Err(ConnError::Duplicate(peer));
            }
            let _ = existing.tx.try_send(ConnCmd::Replaced);
        } else if self.conns.len() >= conn_limit {
            return Err(ConnError::Limit(conn_limit));
        }
        conn.id = self.next_conn_id();
        let id = conn.id;
        data.install_link(peer, id, link);
        self.conns.insert(peer, conn);
        Ok(id)
    }

    /// Take connection `id` to `peer` out, with its keys and the peer's UDP
    /// address, unless a newer connection replaced it. Returns whether it
    /// was still registered.
    pub fn unregister(&mut self, data: &mut DataPlane, peer: PeerName, id: u64) -> bool {
        data.remove_link(peer, id);
        if self.conns.get(&peer).is_none_or(|c| c.id != id) {
            return false;
        }
        self.conns.remove(&peer);
        data.remove_neighbour(peer);
        true
    }

    /// Admit an inbound connection from `ip` to its handshake, unless that
    /// address already has `per_ip` unproven connections: handshakes in
    /// flight, and registered connections whose UDP heartbeats never
    /// arrived. Strangers cannot then take the slots a real peer needs, nor
    /// the memory of many connections. Call `handshake_over` when the
    /// handshake ends (after registering, if it succeeded).
    pub fn admit(&mut self, ip: IpAddr, per_ip: usize) -> bool {
        let ip = ip.to_canonical();
        let registered = self
            .conns
            .values()
            .filter(|c| c.last_udp.is_none() && c.remote.ip().to_canonical() == ip)
            .count();
        let handshaking = self.handshaking.entry(ip).or_default();
        if *handshaking + registered >= per_ip {
            if *handshaking == 0 {
                self.handshaking.remove(&ip);
            }
            return false;
        }
        *handshaking += 1;
        true
    }

    pub fn handshake_over(&mut self, ip: IpAddr) {
        let ip = ip.to_canonical();
        if let Some(n) = self.handshaking.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.handshaking.remove(&ip);
            }
        }
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

    mod registration {
        use super::*;
        use crate::core::crypto::keys::{Receiver, Sender};
        use crate::core::router::Router;
        use crate::core::topology::Topology;
        use crate::daemon::secure::LinkKeys;
        use std::time::Duration;

        /// We are 02:..:01; the peer's name is greater, so both sides keep
        /// the connection we dialled.
        const PEER: PeerName = PeerName([2, 0, 0, 0, 0, 9]);

        fn data_plane(st: &State) -> DataPlane {
            let routes = Routes::compute(&Topology::new(st.topology.our_entry().clone()));
            DataPlane::new(Router::new(st.topology.ourself(), routes), true)
        }

        fn conn(outbound: bool) -> (Conn, mpsc::Receiver<ConnCmd>) {
            let (tx, rx) = mpsc::channel(4);
            let addr: SocketAddr = ([10, 0, 0, 9], 6783).into();
            let conn = Conn {
                id: 0,
                peer: PEER,
                nickname: String::new(),
                uid: 7,
                remote: addr,
                listen_addr: addr,
                udp_addr: addr,
                outbound,
                udp_ok: false,
                last_udp: None,
                since: Instant::now(),
                encryption: Encryption::Full,
                remote_key: None,
                fastdp: true,
                tx,
            };
            (conn, rx)
        }

        fn keys(our_session: u32) -> LinkCrypto {
            let secret = zeroize::Zeroizing::new([our_session as u8; 32]);
            LinkCrypto::Sealed(Box::new(LinkKeys {
                tx: Sender::new(secret.clone(), Instant::now(), Duration::from_secs(60)),
                rx: Receiver::new(secret),
                our_session,
                peer_session: our_session + 1,
            }))
        }

        fn register(
            st: &mut State,
            data: &mut DataPlane,
            outbound: bool,
            session: u32,
        ) -> Result<u64, ConnError> {
            let me = st.topology.ourself();
            st.register(data, conn(outbound).0, keys(session), me, 10)
        }

        #[test]
        fn the_replaced_connection_can_neither_keep_nor_remove_the_winners_keys() {
            let mut st = state();
            let mut data = data_plane(&st);
            // The peer's dial arrives first, then ours: ours replaces it.
            let inbound = register(&mut st, &mut data, false, 10).unwrap();
            let outbound = register(&mut st, &mut data, true, 20).unwrap();
            assert_eq!(data.link_owner(PEER), Some(outbound));
            assert_eq!(data.session_peer(20), Some(PEER));
            assert_eq!(data.session_peer(10), None, "the loser's session must go");
            // The replaced connection's task ends afterwards.
            assert!(!st.unregister(&mut data, PEER, inbound));
            assert_eq!(data.link_owner(PEER), Some(outbound));
            assert_eq!(data.session_peer(20), Some(PEER));
            assert_eq!(st.conns.get(&PEER).map(|c| c.id), Some(outbound));
            // The kept one ending takes everything out.
            assert!(st.unregister(&mut data, PEER, outbound));
            assert_eq!(data.link_owner(PEER), None);
            assert_eq!(data.session_peer(20), None);
            assert!(st.conns.is_empty());
        }

        #[test]
        fn plain_heartbeats_must_come_from_the_control_connections_ip() {
            let (mut c, _rx) = conn(true);
            let same_ip_other_port: SocketAddr = ([10, 0, 0, 9], 40000).into();
            let mapped: SocketAddr = "[::ffff:10.0.0.9]:6783".parse().unwrap();
            let spoofer: SocketAddr = ([10, 0, 0, 66], 6783).into();
            for enc in [Encryption::None, Encryption::ControlOnly] {
                c.encryption = enc;
                assert!(
                    c.udp_source_allowed(same_ip_other_port),
                    "{enc:?}: NAT'd port"
                );
                assert!(c.udp_source_allowed(mapped), "{enc:?}: v4-mapped");
                assert!(!c.udp_source_allowed(spoofer), "{enc:?}: spoofed");
            }
            // Sealed heartbeats authenticated themselves: NAT may move them.
            c.encryption = Encryption::Full;
            assert!(c.udp_source_allowed(spoofer));
        }

        #[test]
        fn a_losing_duplicate_installs_nothing() {
            let mut st = state();
            let mut data = data_plane(&st);
            let outbound = register(&mut st, &mut data, true, 20).unwrap();
            let late = register(&mut st, &mut data, false, 10);
            assert!(matches!(late, Err(ConnError::Duplicate(p)) if p == PEER));
            assert_eq!(data.link_owner(PEER), Some(outbound));
            assert_eq!(data.session_peer(10), None);
            assert_eq!(data.session_peer(20), Some(PEER));
        }

        #[test]
        fn the_connection_limit_refuses_new_peers_only() {
            let mut st = state();
            let mut data = data_plane(&st);
            let me = st.topology.ourself();
            let (c, _rx) = conn(true);
            assert!(st.register(&mut data, c, keys(20), me, 1).is_ok());
            let (mut other, _rx2) = conn(true);
            other.peer = PeerName([2, 0, 0, 0, 0, 8]);
            assert!(matches!(
                st.register(&mut data, other, keys(30), me, 1),
                Err(ConnError::Limit(1))
            ));
            assert_eq!(data.session_peer(30), None);
        }
    }

    #[test]
    fn each_address_gets_a_bounded_share_of_unproven_connections() {
        use std::net::Ipv4Addr;
        let mut st = state();
        let x = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 66));
        let real = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        for _ in 0..4 {
            assert!(st.admit(x, 4));
        }
        assert!(!st.admit(x, 4), "a fifth handshake from one address");
        assert!(st.admit(real, 4), "another address is not affected");
        // A v4-mapped address is the same address.
        assert!(!st.admit("::ffff:10.0.0.66".parse().unwrap(), 4));
        st.handshake_over(x);
        assert!(st.admit(x, 4));
        // A registered connection without UDP yet still counts; once its
        // heartbeats arrive, it is proven and frees the share.
        for _ in 0..4 {
            st.handshake_over(x);
        }
        let peer = PeerName([2, 0, 0, 0, 0, 7]);
        let (tx, _rx) = mpsc::channel(1);
        let addr = SocketAddr::new(x, 40000);
        st.conns.insert(
            peer,
            Conn {
                id: 1,
                peer,
                nickname: String::new(),
                uid: 1,
                remote: addr,
                listen_addr: addr,
                udp_addr: addr,
                outbound: false,
                udp_ok: false,
                last_udp: None,
                since: Instant::now(),
                encryption: Encryption::None,
                remote_key: None,
                fastdp: true,
                tx,
            },
        );
        for _ in 0..3 {
            assert!(st.admit(x, 4));
        }
        assert!(!st.admit(x, 4));
        if let Some(c) = st.conns.get_mut(&peer) {
            c.last_udp = Some(Instant::now());
        }
        assert!(st.admit(x, 4));
        assert!(
            st.handshaking.len() <= 2,
            "the map holds live addresses only"
        );
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
