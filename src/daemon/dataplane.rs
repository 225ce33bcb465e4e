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
use std::time::{Duration, Instant};

use tracing::debug;

use super::secure::LinkKeys;
use super::Shared;
use crate::core::crypto::keys::{OpenError, Resync};
use crate::core::icmp;
use crate::core::reassembly::Reassembler;
use crate::core::router::{DatagramDecision, Relay, Router, Stats, TapDecision};
use crate::core::steering::SteerOp;
use crate::core::wire::sealed::{self, DatagramHeader};
use crate::core::wire::sleeve::{self, Header, Kind};
use crate::core::wire::udp_run::{Taken, UdpRun};
use crate::core::wire::vnet::{self, VnetHdr};
use crate::core::PeerName;

mod tap_pump;
mod udp_pump;
pub use tap_pump::tap_loop;
pub use udp_pump::udp_loop;

/// Receive buffer wanted on the UDP socket (set with SO_RCVBUFFORCE as root).
const UDP_BUFFER: usize = 8 << 20;
/// Largest datagram we accept.
const MAX_DATAGRAM: usize = 65_535;
/// A TAP read: a virtio-net header and a frame of up to 64 KiB.
const TAP_BUFFER: usize = vnet::LEN + 65_550;
/// Bytes one GSO send may carry.
const GSO_MAX_BYTES: usize = 64_000;
/// Datagrams (or GRO runs of them) taken per receive call.
const RECV_BATCH: usize = 8;
/// Frames read from the TAP per wake-up.
const TAP_BATCH: usize = 32;
/// Rekeys a receiver follows at once after an outage (an HKDF each, under
/// the data-plane lock; about 34 hours at the default interval). Further
/// behind, the connection starts over with fresh keys.
const MAX_RESYNC_STEPS: u32 = 1024;

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

/// A batch of datagrams for one address, in `out[slot]`; all `stride`
/// bytes long but the last.
struct Send {
    addr: SocketAddr,
    slot: usize,
    stride: usize,
}
type Sends = Vec<Send>;

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

    /// Every neighbour with a UDP address: where it is, and whether its
    /// data travels unsealed (no password, or a trusted link).
    pub fn neighbours(&self) -> Vec<(PeerName, SocketAddr, bool)> {
        self.peer_addrs
            .iter()
            .map(|(p, a)| (*p, *a, !self.seals_for(*p)))
            .collect()
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

    /// The epoch of our datagram key to `peer` on connection `conn_id`, if
    /// that link is sealed (told to the peer in TCP heartbeats).
    pub fn tx_epoch(&self, peer: PeerName, conn_id: u64) -> Option<u32> {
        match self.links.get(&peer) {
            Some(Link {
                conn_id: id,
                crypto: LinkCrypto::Sealed(k),
            }) if *id == conn_id => Some(k.tx.epoch()),
            _ => None,
        }
    }

    /// The peer's TCP heartbeat on connection `conn_id` says its datagram
    /// key to us is at `epoch`: follow it (see `Receiver::resync`).
    pub fn resync_rx(&mut self, peer: PeerName, conn_id: u64, epoch: u32, now: Instant) -> Resync {
        match self.links.get_mut(&peer) {
            Some(Link {
                conn_id: id,
                crypto: LinkCrypto::Sealed(k),
            }) if *id == conn_id => k.rx.resync(epoch, now, MAX_RESYNC_STEPS),
            _ => Resync::Current,
        }
    }

    /// The connection whose keys are installed for `peer`, and the peer a
    /// session id leads to (what the interleaving tests look at).
    #[cfg(test)]
    pub(crate) fn link_owner(&self, peer: PeerName) -> Option<u64> {
        self.links.get(&peer).map(|l| l.conn_id)
    }

    #[cfg(test)]
    pub(crate) fn session_peer(&self, session: u32) -> Option<PeerName> {
        self.sessions.get(&session).copied()
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

    /// Seal `inner` for `peer`, appended to `out`, when the link is sealed.
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

    /// Queue a batch of plain datagrams (`batch`, each `stride` bytes but
    /// the last) for each of `peers`: a sealed or plain copy per peer in
    /// `out` (reusing its buffers).
    #[allow(clippy::too_many_arguments)]
    fn fan_out(
        &mut self,
        peers: impl Iterator<Item = PeerName>,
        batch: &[u8],
        stride: usize,
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
            let slot = sends.len();
            if out.len() <= slot {
                out.push(Vec::with_capacity(2 * MAX_DATAGRAM));
            }
            let buf = &mut out[slot];
            buf.clear();
            let mut wrap = Wrap::Refused;
            for inner in batch.chunks(stride.max(1)) {
                wrap = self.seal_for(peer, inner, now, buf);
                if !matches!(wrap, Wrap::Sealed) {
                    break;
                }
            }
            match wrap {
                Wrap::Sealed => sends.push(Send {
                    addr,
                    slot,
                    stride: stride + sealed::OVERHEAD,
                }),
                Wrap::Plain => {
                    buf.extend_from_slice(batch);
                    sends.push(Send { addr, slot, stride })
                }
                Wrap::Refused => {}
            }
        }
    }

    /// Seal, where they lie, a batch of datagrams laid out for
    /// `seal_in_place` (`stride` bytes each but the last), for `peer`, whose
    /// link must be sealed. Returns where to send them.
    fn seal_batch_for(
        &mut self,
        peer: PeerName,
        batch: &mut [u8],
        stride: usize,
        now: Instant,
    ) -> Option<SocketAddr> {
        let Self {
            links,
            router,
            peer_addrs,
            ..
        } = self;
        let addr = *peer_addrs.get(&peer)?;
        let Some(LinkCrypto::Sealed(k)) = links.get_mut(&peer).map(|l| &mut l.crypto) else {
            return None;
        };
        for d in batch.chunks_mut(stride.max(1)) {
            seal_in_place(k, d, now, &mut router.stats);
        }
        Some(addr)
    }

    /// Whether datagrams to `peer` are sealed (and so 32 bytes longer).
    fn seals_for(&self, peer: PeerName) -> bool {
        match self.links.get(&peer) {
            Some(l) => matches!(l.crypto, LinkCrypto::Sealed(_)),
            None => self.encrypted,
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

/// Append `inner` sealed to `out`: header, ciphertext, tag.
fn seal(k: &mut LinkKeys, inner: &[u8], now: Instant, out: &mut Vec<u8>, stats: &mut Stats) {
    let start = out.len();
    out.extend_from_slice(&[0; sealed::HEADER_LEN]);
    out.extend_from_slice(inner);
    out.extend_from_slice(&[0; sealed::TAG_LEN]);
    seal_in_place(k, &mut out[start..], now, stats);
}

/// Seal a datagram laid out as 16 free bytes, the sleeve datagram, 16 free
/// bytes: the header and the tag go in the free bytes, the rest is
/// encrypted where it lies.
fn seal_in_place(k: &mut LinkKeys, d: &mut [u8], now: Instant, stats: &mut Stats) {
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
    let Some((head, rest)) = d.split_first_chunk_mut::<{ sealed::HEADER_LEN }>() else {
        return;
    };
    let Some((body, tag)) = rest.split_last_chunk_mut::<{ sealed::TAG_LEN }>() else {
        return;
    };
    *head = header;
    *tag = k.tx.seal(n, head, body);
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

/// The UDP socket's batching state (GSO on send, GRO on receive), and back
/// to letting the kernel fragment: quinn-udp forbids it, as QUIC probes the
/// path MTU itself, but a router must still work over a path with a smaller
/// MTU than it assumed.
pub fn udp_state(udp: &tokio::net::UdpSocket) -> std::io::Result<quinn_udp::UdpSocketState> {
    use std::os::fd::AsRawFd;
    let state = quinn_udp::UdpSocketState::new(udp.into())?;
    let fd = udp.as_raw_fd();
    let dont: libc::c_int = libc::IP_PMTUDISC_DONT;
    for (level, name) in [
        (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER),
        (libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER),
    ] {
        // SAFETY: fd is a live socket; the option value is a c_int.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&dont as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    Ok(state)
}

/// Largest UDP payload that fits a 1500-byte underlay packet.
fn max_udp_payload(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 1472,
        SocketAddr::V6(a) if a.ip().to_ipv4_mapped().is_some() => 1472,
        SocketAddr::V6(_) => 1452,
    }
}

/// Send each batch, with one system call per batch where the kernel can
/// cut it (UDP GSO).
async fn send_all(shared: &Shared, sends: &Sends, out: &[Vec<u8>]) -> SendCounts {
    let max_segments = shared.udp_state.max_gso_segments().max(1);
    let mut counts = SendCounts::default();
    for s in sends {
        let bytes = out.get(s.slot).map(Vec::as_slice).unwrap_or_default();
        // The kernel takes at most 64 KiB, and `max_segments`, per send.
        let per_send = (max_segments.min(GSO_MAX_BYTES / s.stride.max(1))).max(1) * s.stride;
        for chunk in bytes.chunks(per_send.max(1)) {
            let transmit = quinn_udp::Transmit {
                destination: s.addr,
                ecn: None,
                contents: chunk,
                segment_size: (chunk.len() > s.stride).then_some(s.stride),
                src_ip: None,
            };
            let sent = shared
                .udp
                .async_io(tokio::io::Interest::WRITABLE, || {
                    shared.udp_state.try_send((&shared.udp).into(), &transmit)
                })
                .await;
            match sent {
                Ok(()) => {
                    counts.calls += 1;
                    counts.datagrams += chunk.len().div_ceil(s.stride.max(1)) as u64;
                }
                Err(e) => debug!("send to {}: {e}", s.addr),
            }
        }
    }
    counts
}

/// What `send_all` sent: system calls, and the datagrams they carried.
#[derive(Debug, Default, Clone, Copy)]
struct SendCounts {
    calls: u64,
    datagrams: u64,
}

/// Hand the core's steering decisions to the fast path's task
/// (`super::fastpath`), which writes them into the kernel's tables.
fn pass_steer_ops(shared: &Shared, data: &mut DataPlane, ops: &mut Vec<SteerOp>) {
    if !data.router.has_steer_ops() {
        return;
    }
    data.router.take_steer_ops(ops);
    for op in ops.drain(..) {
        if shared.steer.try_send(op).is_err() {
            data.router.stats.fastpath_steer_queue_full += 1;
        }
    }
}
