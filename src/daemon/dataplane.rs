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
use crate::core::wire::udp_run::{self, Taken, UdpRun};
use crate::core::wire::vnet::{self, VnetHdr};
use crate::core::PeerName;

mod tap_pump;
pub use tap_pump::tap_loop;

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

/// What the data-plane lock decided for one received datagram.
struct Received {
    heartbeat: Option<(PeerName, u64)>,
    inject: bool,
    /// Where the sleeve datagram lies in the received bytes.
    range: std::ops::Range<usize>,
}

/// Decide one datagram (under the data-plane lock); queue its relays.
fn receive_one(
    data: &mut DataPlane,
    d: &mut [u8],
    from: SocketAddr,
    now: Instant,
    out: &mut Vec<Vec<u8>>,
    sends: &mut Sends,
    relay_to: &mut Vec<PeerName>,
) -> Option<Received> {
    let (range, neighbour) = data.unwrap(d, from, now)?;
    let datagram = d.get_mut(range.clone())?;
    relay_to.clear();
    let (heartbeat, inject) = match data.router.datagram(datagram, now) {
        DatagramDecision::Drop(reason) => {
            debug!("datagram from {from} dropped: {reason:?}");
            return None;
        }
        DatagramDecision::Heartbeat { src, uid } => {
            if neighbour.is_some_and(|p| p != src) {
                // Sealed by one neighbour in another's name.
                data.router.stats.dropped_unknown_sender += 1;
                return None;
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
        let datagram = &d[range.clone()];
        data.fan_out(
            relay_to.iter().copied(),
            datagram,
            datagram.len(),
            now,
            Some(from),
            out,
            sends,
        );
    }
    Some(Received {
        heartbeat,
        inject,
        range,
    })
}

/// Datagrams from peers: heartbeats to the control plane, frames to our
/// TAP and on to further peers. One receive call takes several datagrams,
/// and the kernel may hand over a run of same-sized ones as one (GRO).
pub async fn udp_loop(shared: Arc<Shared>) -> anyhow::Result<()> {
    // A GRO run is one socket buffer, at most 64 KiB; room for two.
    let mut bufs: [Vec<u8>; RECV_BATCH] = std::array::from_fn(|_| vec![0u8; 2 * MAX_DATAGRAM]);
    let mut meta = [quinn_udp::RecvMeta::default(); RECV_BATCH];
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut sends: Sends = Vec::with_capacity(16);
    let mut relay_to: Vec<PeerName> = Vec::with_capacity(16);
    let mut rx = RxState {
        reassembly: Reassembler::new(),
        to_tap: Vec::with_capacity(MAX_DATAGRAM),
        run: UdpRun::default(),
        icmp_window: (Instant::now(), 0),
        reply: Vec::new(),
        out: Vec::new(),
        sends: Vec::new(),
    };
    let mut decided: Vec<(usize, Received)> = Vec::with_capacity(64);
    let mut steer_ops = Vec::new();
    let panic_on_cue = test_panic_cue();
    loop {
        let n = {
            let mut slices = bufs.each_mut().map(|b| std::io::IoSliceMut::new(b));
            match shared
                .udp
                .async_io(tokio::io::Interest::READABLE, || {
                    shared
                        .udp_state
                        .recv((&shared.udp).into(), &mut slices, &mut meta)
                })
                .await
            {
                Ok(n) => n,
                Err(e) => {
                    // ICMP errors surface here as ECONNREFUSED and similar.
                    debug!("UDP receive: {e}");
                    continue;
                }
            }
        };
        for (buf, m) in bufs.iter_mut().zip(&meta).take(n) {
            let from = SocketAddr::new(m.addr.ip().to_canonical(), m.addr.port());
            let Some(received) = buf.get_mut(..m.len) else {
                continue;
            };
            if panic_on_cue.is_some_and(|cue| received.starts_with(cue)) {
                panic!("test-injected data-plane panic");
            }
            let stride = m.stride.max(1);
            // One lock, one clock read, one batch of sends per GRO run.
            sends.clear();
            decided.clear();
            {
                let mut data = shared.data();
                let now = Instant::now();
                for (i, d) in received.chunks_mut(stride).enumerate() {
                    let r =
                        receive_one(&mut data, d, from, now, &mut out, &mut sends, &mut relay_to);
                    decided.extend(r.map(|r| (i, r)));
                }
                pass_steer_ops(&shared, &mut data, &mut steer_ops);
            }
            send_all(&shared, &sends, &out).await;
            for (i, r) in decided.drain(..) {
                if let Some((src, uid)) = r.heartbeat {
                    // Control work (routes, dialling) is the control plane's.
                    if shared.heartbeats.try_send((src, uid, from)).is_err() {
                        debug!("UDP heartbeat from {src} at {from}: queue full, dropped");
                    }
                    continue;
                }
                if r.inject {
                    let datagram = received
                        .get(i * stride..)
                        .and_then(|d| d.get(r.range))
                        .unwrap_or_default();
                    inject(&shared, datagram, &mut rx).await;
                }
            }
        }
        write_run(&shared, &mut rx.run).await;
    }
}

/// Debug builds only, for the tests: with `WEAVE_RS_TEST_PANIC_CUE` set,
/// a datagram starting with its bytes makes the data plane panic (how the
/// tests check that a dead data plane ends the router).
fn test_panic_cue() -> Option<&'static [u8]> {
    if !cfg!(debug_assertions) {
        return None;
    }
    let cue = std::env::var("WEAVE_RS_TEST_PANIC_CUE").ok()?;
    (!cue.is_empty()).then(|| &*cue.into_bytes().leak())
}

/// Hand a datagram's frames to our TAP, each behind a virtio-net header.
async fn inject(shared: &Shared, datagram: &[u8], rx: &mut RxState) {
    let Ok((header, payload)) = Header::parse(datagram) else {
        return;
    };
    let mtu = shared.config.mtu;
    if header.kind == Kind::Fragment {
        let Ok((frag, bytes)) = sleeve::parse_fragment(payload) else {
            return;
        };
        let before = rx.reassembly.dropped_incomplete;
        let whole = if frag.count == 1 {
            (frag.offset == 0 && bytes.len() == frag.total as usize).then_some(bytes)
        } else {
            rx.reassembly.push(header.src, frag, bytes, Instant::now())
        };
        let mut bad_offload = false;
        let mut too_big = None;
        if let Some(w) = whole {
            let frame = &w[vnet::LEN.min(w.len())..];
            match VnetHdr::parse(w).and_then(|h| h.validate(frame.len()).map(|()| h)) {
                Ok(h) => {
                    let gso = (h.gso_type != vnet::GSO_NONE).then_some((h.hdr_len, h.gso_size));
                    if icmp::exceeds(frame.len(), gso, mtu) {
                        too_big = icmp::too_big_reply(frame, mtu).map(Some).or(Some(None));
                    } else if gso.is_some() || !gather(shared, &mut rx.run, h, frame).await {
                        write_run(shared, &mut rx.run).await;
                        if let Err(e) = shared.tap.send(w).await {
                            debug!("TAP write: {e}");
                        }
                    }
                }
                Err(e) => {
                    debug!("offloaded frame from {}: {e}", header.src);
                    bad_offload = true;
                }
            }
        }
        let dropped = rx.reassembly.dropped_incomplete - before;
        if dropped > 0 || bad_offload {
            let mut data = shared.data();
            data.router.stats.dropped_incomplete += dropped;
            data.router.stats.dropped_bad_offload += u64::from(bad_offload);
        }
        if let Some(reply) = too_big {
            answer_too_big(shared, header.src, reply, rx).await;
        }
        return;
    }
    for frame in sleeve::frames(payload).flatten() {
        if icmp::exceeds(frame.len(), None, mtu) {
            write_run(shared, &mut rx.run).await;
            let reply = icmp::too_big_reply(frame, mtu);
            answer_too_big(shared, header.src, reply, rx).await;
            continue;
        }
        if gather(shared, &mut rx.run, VnetHdr::default(), frame).await {
            continue;
        }
        rx.to_tap.clear();
        rx.to_tap.extend_from_slice(&vnet::PLAIN);
        rx.to_tap.extend_from_slice(frame);
        if let Err(e) = shared.tap.send(&rx.to_tap).await {
            debug!("TAP write: {e}");
        }
    }
}

/// Adds `frame` to the UDP run, writing the run first if the frame does
/// not join it. False: the frame joins no run (the caller writes it).
async fn gather(shared: &Shared, run: &mut UdpRun, vnet: VnetHdr, frame: &[u8]) -> bool {
    if run.join(vnet, frame) {
        return true;
    }
    write_run(shared, run).await;
    run.join(vnet, frame)
}

/// Writes the UDP datagrams gathered in `run` to the TAP: one write
/// for the lot (`core::wire::udp_run`). Called at the end of each receive
/// batch and before any other frame, so that frames keep their order.
async fn write_run(shared: &Shared, run: &mut UdpRun) {
    let (w, joined) = match run.take() {
        Taken::Nothing => return,
        Taken::Single(w) => (w, None),
        Taken::Joined(w, seg) => (w, Some(seg)),
    };
    if let Some(seg) = joined {
        let payload = w.len().saturating_sub(vnet::LEN + udp_run::HEADERS);
        let mut data = shared.data();
        data.router.stats.tap_udp_runs += 1;
        data.router.stats.tap_udp_run_datagrams += payload.div_ceil(usize::from(seg).max(1)) as u64;
    }
    if let Err(e) = shared.tap.send(w).await {
        debug!("TAP write: {e}");
    }
}

/// The receive pump's own state.
struct RxState {
    reassembly: Reassembler,
    to_tap: Vec<u8>,
    /// UDP datagrams for the TAP, gathered to be written as one.
    run: UdpRun,
    /// ICMP errors sent in the current second, at most `ICMP_PER_SECOND`.
    icmp_window: (Instant, u32),
    reply: Vec<u8>,
    out: Vec<Vec<u8>>,
    sends: Sends,
}

const ICMP_PER_SECOND: u32 = 100;

/// A frame from `origin` was too big for us: count it, and send its
/// sender `reply` (an ICMP error), rate-limited, back through the overlay.
async fn answer_too_big(
    shared: &Shared,
    origin: PeerName,
    reply: Option<Vec<u8>>,
    rx: &mut RxState,
) {
    let now = Instant::now();
    if now.duration_since(rx.icmp_window.0) >= Duration::from_secs(1) {
        rx.icmp_window = (now, 0);
    }
    let allowed = reply.is_some() && rx.icmp_window.1 < ICMP_PER_SECOND;
    rx.sends.clear();
    {
        let mut data = shared.data();
        data.router.stats.dropped_too_big += 1;
        let hop = data.router.next_hop(origin);
        if let (true, Some(reply), Some(hop)) = (allowed, &reply, hop) {
            rx.icmp_window.1 += 1;
            data.router.stats.icmp_too_big_sent += 1;
            rx.reply.clear();
            Header {
                kind: Kind::Frames,
                hops: 0,
                src: shared.ourself(),
                dst: origin,
            }
            .emit(&mut rx.reply);
            sleeve::push_frame(&mut rx.reply, reply);
            let stride = rx.reply.len();
            data.fan_out(
                std::iter::once(hop),
                &rx.reply,
                stride,
                now,
                None,
                &mut rx.out,
                &mut rx.sends,
            );
        }
    }
    send_all(shared, &rx.sends, &rx.out).await;
}
