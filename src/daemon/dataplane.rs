//! The pumps between the TAP, the UDP socket and the forwarding core.
//!
//! Each pump takes the data-plane lock to ask the core for a decision, look
//! up neighbours and seal or open datagrams, then sends without holding it.
//!
//! With `--password`, every datagram to or from a neighbour is sealed with
//! that link's keys (`core::wire::sealed`), unless the link is trusted
//! (`--trusted-subnets`); a relay opens and re-seals, hop by hop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tracing::debug;

use super::secure::LinkKeys;
use super::Shared;
use crate::core::crypto::keys::OpenError;
use crate::core::router::{DatagramDecision, Relay, Router, Stats, TapDecision};
use crate::core::wire::sealed::{self, DatagramHeader};
use crate::core::wire::sleeve::{self, Header, Kind};
use crate::core::PeerName;

/// Receive buffer wanted on the UDP socket (set with SO_RCVBUFFORCE as root).
const UDP_BUFFER: usize = 8 << 20;
/// Largest datagram we accept.
const MAX_DATAGRAM: usize = 65_535;

/// How datagrams to and from one neighbour are protected.
pub enum LinkCrypto {
    Plain,
    Sealed(Box<LinkKeys>),
}

struct Link {
    conn_id: u64,
    crypto: LinkCrypto,
}

/// The forwarding core plus where each usable neighbour is and its keys.
pub struct DataPlane {
    pub router: Router,
    peer_addrs: HashMap<PeerName, SocketAddr>,
    addr_peers: HashMap<SocketAddr, PeerName>,
    routes_epoch: u64,
    /// Whether this router has a password: plain datagrams are then only
    /// taken from trusted links.
    encrypted: bool,
    /// One per registered connection (so bounded by the connection limit).
    links: HashMap<PeerName, Link>,
    /// Our session ids, to find the link of a sealed datagram.
    sessions: HashMap<u32, PeerName>,
}

/// Where a datagram goes: the bytes are `out[i]`, or the plain datagram.
type Sends = Vec<(SocketAddr, Option<usize>)>;

impl DataPlane {
    pub fn new(router: Router, encrypted: bool) -> DataPlane {
        DataPlane {
            router,
            peer_addrs: HashMap::new(),
            addr_peers: HashMap::new(),
            routes_epoch: 0,
            encrypted,
            links: HashMap::new(),
            sessions: HashMap::new(),
        }
    }

    /// Install routes unless newer ones are already in place.
    pub fn set_routes(&mut self, epoch: u64, routes: crate::core::routes::Routes) {
        if epoch > self.routes_epoch {
            self.routes_epoch = epoch;
            self.router.set_routes(routes);
        }
    }

    pub fn set_neighbour(&mut self, peer: PeerName, addr: SocketAddr) {
        if let Some(old) = self.peer_addrs.insert(peer, addr) {
            if old != addr {
                self.addr_peers.remove(&old);
            }
        }
        self.addr_peers.insert(addr, peer);
    }

    pub fn remove_neighbour(&mut self, peer: PeerName) {
        if let Some(addr) = self.peer_addrs.remove(&peer) {
            self.addr_peers.remove(&addr);
        }
    }

    /// A fresh, unused, non-zero session id.
    pub fn new_session_id(&self) -> u32 {
        loop {
            let id: u32 = rand::random();
            if id != 0 && !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }

    /// The keys of connection `conn_id` to `peer`, replacing any older
    /// connection's.
    pub fn install_link(&mut self, peer: PeerName, conn_id: u64, crypto: LinkCrypto) {
        if let LinkCrypto::Sealed(k) = &crypto {
            self.sessions.insert(k.our_session, peer);
        }
        if let Some(old) = self.links.insert(peer, Link { conn_id, crypto }) {
            self.forget_session(&old);
        }
    }

    /// Forget connection `conn_id`'s keys, unless a newer one replaced them.
    pub fn remove_link(&mut self, peer: PeerName, conn_id: u64) {
        if self.links.get(&peer).is_some_and(|l| l.conn_id == conn_id) {
            if let Some(old) = self.links.remove(&peer) {
                self.forget_session(&old);
            }
        }
    }

    fn forget_session(&mut self, link: &Link) {
        if let LinkCrypto::Sealed(k) = &link.crypto {
            self.sessions.remove(&k.our_session);
        }
    }

    /// `inner` as it must travel to neighbour `peer`: sealed for it, or as
    /// is; `None` if we may not send to it (no keys yet).
    pub fn wrap_for(&mut self, peer: PeerName, inner: &[u8], now: Instant) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        match self.seal_for(peer, inner, now, &mut out) {
            Wrap::Sealed => Some(out),
            Wrap::Plain => Some(inner.to_vec()),
            Wrap::Refused => None,
        }
    }

    /// Seal `inner` for `peer` into `out` when the link is sealed.
    fn seal_for(&mut self, peer: PeerName, inner: &[u8], now: Instant, out: &mut Vec<u8>) -> Wrap {
        let Self {
            links,
            router,
            encrypted,
            ..
        } = self;
        match links.get_mut(&peer).map(|l| &mut l.crypto) {
            Some(LinkCrypto::Sealed(k)) => {
                seal(k, inner, now, out, &mut router.stats);
                Wrap::Sealed
            }
            Some(LinkCrypto::Plain) => Wrap::Plain,
            None if !*encrypted => Wrap::Plain,
            None => Wrap::Refused,
        }
    }

    /// Queue `inner` for each of `peers`: sealed copies go to `out` (reusing
    /// its buffers), plain ones refer to `inner` itself.
    fn fan_out(
        &mut self,
        peers: impl Iterator<Item = PeerName>,
        inner: &[u8],
        now: Instant,
        skip: Option<SocketAddr>,
        out: &mut Vec<Vec<u8>>,
        sends: &mut Sends,
    ) {
        for peer in peers {
            let Some(&addr) = self.peer_addrs.get(&peer) else {
                continue;
            };
            if Some(addr) == skip {
                continue;
            }
            let slot = sends.iter().filter(|(_, i)| i.is_some()).count();
            if out.len() <= slot {
                out.push(Vec::with_capacity(MAX_DATAGRAM));
            }
            match self.seal_for(peer, inner, now, &mut out[slot]) {
                Wrap::Sealed => sends.push((addr, Some(slot))),
                Wrap::Plain => sends.push((addr, None)),
                Wrap::Refused => {}
            }
        }
    }

    /// Check a received datagram's protection. Returns the range of `d`
    /// holding the sleeve datagram and the neighbour it is known to come
    /// from (sealed datagrams), or None if it was dropped (and counted).
    fn unwrap(
        &mut self,
        d: &mut [u8],
        from: SocketAddr,
        now: Instant,
    ) -> Option<(std::ops::Range<usize>, Option<PeerName>)> {
        let Self {
            router,
            links,
            sessions,
            addr_peers,
            encrypted,
            ..
        } = self;
        let stats = &mut router.stats;
        if d.first() == Some(&sealed::MAGIC) {
            let Ok(h) = DatagramHeader::parse(d) else {
                stats.dropped_malformed += 1;
                return None;
            };
            let Some(&peer) = sessions.get(&h.session) else {
                stats.dropped_unknown_session += 1;
                return None;
            };
            let Some(LinkCrypto::Sealed(k)) = links.get_mut(&peer).map(|l| &mut l.crypto) else {
                stats.dropped_unknown_session += 1;
                return None;
            };
            let (aad, body) = d.split_at_mut(sealed::HEADER_LEN);
            match k.rx.open(now, (h.epoch, h.counter), aad, body) {
                Ok(o) => {
                    if o.rotated {
                        stats.rekeys_received += 1;
                    }
                    let len = o.plain.len();
                    Some((sealed::HEADER_LEN..sealed::HEADER_LEN + len, Some(peer)))
                }
                Err(OpenError::AuthFailed) => {
                    stats.dropped_auth_failed += 1;
                    None
                }
                Err(OpenError::Replayed | OpenError::StaleKey) => {
                    stats.dropped_replayed += 1;
                    None
                }
            }
        } else {
            let plain_link = |p: &PeerName| {
                links
                    .get(p)
                    .is_some_and(|l| matches!(l.crypto, LinkCrypto::Plain))
            };
            let known = addr_peers.get(&from);
            // Only a heartbeat may come from an address we do not know yet
            // (that is how we learn it); the header is parsed here only then.
            let heartbeat_src = || match Header::parse(d) {
                Ok((h, _)) if h.kind == Kind::Heartbeat => Some(h.src),
                _ => None,
            };
            let ok = if *encrypted {
                known.is_some_and(plain_link) || heartbeat_src().is_some_and(|p| plain_link(&p))
            } else {
                known.is_some() || heartbeat_src().is_some()
            };
            if !ok {
                if *encrypted {
                    stats.dropped_unencrypted += 1;
                } else {
                    stats.dropped_unknown_sender += 1;
                }
                return None;
            }
            Some((0..d.len(), None))
        }
    }
}

enum Wrap {
    Sealed,
    Plain,
    Refused,
}

/// Seal `inner` into `out` (cleared first): header, ciphertext, tag.
fn seal(k: &mut LinkKeys, inner: &[u8], now: Instant, out: &mut Vec<u8>, stats: &mut Stats) {
    let n = k.tx.reserve(now);
    if n.rotated {
        stats.rekeys_sent += 1;
    }
    let header = DatagramHeader {
        epoch: n.epoch,
        session: k.peer_session,
        counter: n.counter,
    }
    .emit();
    out.clear();
    out.extend_from_slice(&header);
    out.extend_from_slice(inner);
    let tag = k.tx.seal(n, &header, &mut out[sealed::HEADER_LEN..]);
    out.extend_from_slice(&tag);
}

pub fn tune_udp_socket(udp: &tokio::net::UdpSocket) {
    use std::os::fd::AsFd;
    let fd = udp.as_fd();
    if nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::RcvBufForce, &UDP_BUFFER)
        .is_err()
    {
        let _ = nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::RcvBuf, &UDP_BUFFER);
    }
    let _ = nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::SndBuf, &UDP_BUFFER);
}

async fn send_all(shared: &Shared, sends: &Sends, plain: &[u8], out: &[Vec<u8>]) {
    for (addr, slot) in sends {
        let bytes = match slot {
            Some(i) => out.get(*i).map(Vec::as_slice).unwrap_or_default(),
            None => plain,
        };
        if let Err(e) = shared.udp.send_to(bytes, *addr).await {
            debug!("send to {addr}: {e}");
        }
    }
}

/// Frames from our bridge to peers.
pub async fn tap_loop(shared: Arc<Shared>) -> anyhow::Result<()> {
    let ourself = shared.ourself();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut datagram = Vec::with_capacity(MAX_DATAGRAM);
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut sends: Sends = Vec::with_capacity(16);
    let mut hops: Vec<PeerName> = Vec::with_capacity(16);
    loop {
        let n = shared.tap.recv(&mut buf).await?;
        let Some(frame) = buf.get(..n) else { continue };
        sends.clear();
        hops.clear();
        datagram.clear();
        {
            let mut guard = shared.data();
            let data = &mut *guard;
            let now = Instant::now();
            let dst = match data.router.frame_from_tap(frame, now) {
                TapDecision::Drop(reason) => {
                    debug!("frame from TAP dropped: {reason:?}");
                    continue;
                }
                TapDecision::Unicast { dst, next_hop } => {
                    hops.push(next_hop);
                    dst
                }
                TapDecision::Broadcast { next_hops } => {
                    hops.extend_from_slice(next_hops);
                    PeerName::NONE
                }
            };
            Header {
                kind: Kind::Frames,
                hops: 0,
                src: ourself,
                dst,
            }
            .emit(&mut datagram);
            sleeve::push_frame(&mut datagram, frame);
            data.fan_out(
                hops.iter().copied(),
                &datagram,
                now,
                None,
                &mut out,
                &mut sends,
            );
            if sends.is_empty() && dst != PeerName::NONE {
                // Routed to a neighbour whose UDP address or keys we lack.
                data.router.stats.dropped_no_route += 1;
            }
        }
        send_all(&shared, &sends, &datagram, &out).await;
    }
}

/// Datagrams from peers: heartbeats to the control plane, frames to our
/// TAP and on to further peers.
pub async fn udp_loop(shared: Arc<Shared>) -> anyhow::Result<()> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut sends: Sends = Vec::with_capacity(16);
    let mut relay_to: Vec<PeerName> = Vec::with_capacity(16);
    loop {
        let (n, from) = match shared.udp.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors surface here as ECONNREFUSED and similar.
                debug!("UDP receive: {e}");
                continue;
            }
        };
        let from = SocketAddr::new(from.ip().to_canonical(), from.port());
        let Some(received) = buf.get_mut(..n) else {
            continue;
        };
        sends.clear();
        relay_to.clear();
        let (heartbeat, inject, range) = {
            let mut guard = shared.data();
            let data = &mut *guard;
            let now = Instant::now();
            let Some((range, neighbour)) = data.unwrap(received, from, now) else {
                continue;
            };
            let Some(datagram) = received.get_mut(range.clone()) else {
                continue;
            };
            let (heartbeat, inject) = match data.router.datagram(datagram, now) {
                DatagramDecision::Drop(reason) => {
                    debug!("datagram from {from} dropped: {reason:?}");
                    continue;
                }
                DatagramDecision::Heartbeat { src, uid } => {
                    if neighbour.is_some_and(|p| p != src) {
                        // Sealed by one neighbour in another's name.
                        data.router.stats.dropped_unknown_sender += 1;
                        continue;
                    }
                    (Some((src, uid)), false)
                }
                DatagramDecision::Frames { inject, relay, .. } => {
                    match relay {
                        Relay::None => {}
                        Relay::To(p) => relay_to.push(p),
                        Relay::Many(ps) => relay_to.extend_from_slice(ps),
                    }
                    (None, inject)
                }
            };
            if !relay_to.is_empty() {
                let datagram = &received[range.clone()];
                data.fan_out(
                    relay_to.iter().copied(),
                    datagram,
                    now,
                    Some(from),
                    &mut out,
                    &mut sends,
                );
            }
            (heartbeat, inject, range)
        };
        if let Some((src, uid)) = heartbeat {
            super::connection::udp_heartbeat(&shared, src, uid, from);
            continue;
        }
        let datagram = buf.get(range).unwrap_or_default();
        send_all(&shared, &sends, datagram, &out).await;
        if inject {
            let payload = datagram.get(sleeve::HEADER_LEN..).unwrap_or_default();
            for frame in sleeve::frames(payload).flatten() {
                if let Err(e) = shared.tap.send(frame).await {
                    debug!("TAP write: {e}");
                }
            }
        }
    }
}
