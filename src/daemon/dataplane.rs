//! The pumps between the TAP, the UDP socket and the forwarding core.
//!
//! Each pump takes the data-plane lock only to ask the core for a decision
//! and to look up neighbour addresses, then sends without holding it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tracing::debug;

use super::Shared;
use crate::core::router::{DatagramDecision, Relay, Router, TapDecision};
use crate::core::wire::sleeve::{self, Header, Kind};
use crate::core::PeerName;

/// Receive buffer wanted on the UDP socket (set with SO_RCVBUFFORCE as root).
const UDP_BUFFER: usize = 8 << 20;
/// Largest datagram we accept.
const MAX_DATAGRAM: usize = 65_535;

/// The forwarding core plus where each usable neighbour is.
pub struct DataPlane {
    pub router: Router,
    peer_addrs: HashMap<PeerName, SocketAddr>,
    addr_peers: HashMap<SocketAddr, PeerName>,
    routes_epoch: u64,
}

impl DataPlane {
    pub fn new(router: Router) -> DataPlane {
        DataPlane {
            router,
            peer_addrs: HashMap::new(),
            addr_peers: HashMap::new(),
            routes_epoch: 0,
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

/// Frames from our bridge to peers.
pub async fn tap_loop(shared: Arc<Shared>) -> anyhow::Result<()> {
    let ourself = shared.ourself();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut datagram = Vec::with_capacity(MAX_DATAGRAM);
    let mut dests: Vec<SocketAddr> = Vec::with_capacity(16);
    loop {
        let n = shared.tap.recv(&mut buf).await?;
        let Some(frame) = buf.get(..n) else { continue };
        dests.clear();
        datagram.clear();
        {
            let mut guard = shared.data();
            let DataPlane {
                router, peer_addrs, ..
            } = &mut *guard;
            let now = Instant::now();
            let dst = match router.frame_from_tap(frame, now) {
                TapDecision::Drop(reason) => {
                    debug!("frame from TAP dropped: {reason:?}");
                    continue;
                }
                TapDecision::Unicast { dst, next_hop } => {
                    dests.extend(peer_addrs.get(&next_hop));
                    if dests.is_empty() {
                        // Routed to a neighbour whose UDP address we lack.
                        router.stats.dropped_no_route += 1;
                    }
                    dst
                }
                TapDecision::Broadcast { next_hops } => {
                    dests.extend(next_hops.iter().filter_map(|p| peer_addrs.get(p)));
                    PeerName::NONE
                }
            };
            if dests.is_empty() {
                continue;
            }
            Header {
                kind: Kind::Frames,
                hops: 0,
                src: ourself,
                dst,
            }
            .emit(&mut datagram);
            sleeve::push_frame(&mut datagram, frame);
        }
        for addr in &dests {
            if let Err(e) = shared.udp.send_to(&datagram, *addr).await {
                debug!("send to {addr}: {e}");
            }
        }
    }
}

/// Datagrams from peers: heartbeats to the control plane, frames to our
/// TAP and on to further peers.
pub async fn udp_loop(shared: Arc<Shared>) -> anyhow::Result<()> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut relay_to: Vec<SocketAddr> = Vec::with_capacity(16);
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
        let Some(datagram) = buf.get_mut(..n) else {
            continue;
        };
        relay_to.clear();
        let (heartbeat, inject) = {
            let mut guard = shared.data();
            let DataPlane {
                router,
                peer_addrs,
                addr_peers,
                ..
            } = &mut *guard;
            // Only a heartbeat may come from an address we do not know yet
            // (that is how we learn it); the header is parsed here only then.
            let acceptable = addr_peers.contains_key(&from)
                || matches!(Header::parse(datagram), Ok((h, _)) if h.kind == Kind::Heartbeat);
            if !acceptable {
                router.stats.dropped_unknown_sender += 1;
                continue;
            }
            match router.datagram(datagram, Instant::now()) {
                DatagramDecision::Drop(reason) => {
                    debug!("datagram from {from} dropped: {reason:?}");
                    continue;
                }
                DatagramDecision::Heartbeat { src, uid } => (Some((src, uid)), false),
                DatagramDecision::Frames { inject, relay, .. } => {
                    match relay {
                        Relay::None => {}
                        Relay::To(p) => relay_to.extend(peer_addrs.get(&p)),
                        Relay::Many(ps) => {
                            relay_to.extend(ps.iter().filter_map(|p| peer_addrs.get(p)))
                        }
                    }
                    (None, inject)
                }
            }
        };
        if let Some((src, uid)) = heartbeat {
            super::connection::udp_heartbeat(&shared, src, uid, from);
            continue;
        }
        for addr in &relay_to {
            if *addr != from {
                if let Err(e) = shared.udp.send_to(datagram, *addr).await {
                    debug!("relay to {addr}: {e}");
                }
            }
        }
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
