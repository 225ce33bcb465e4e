//! The forwarding state machine: where each frame goes.
//!
//! Two inputs, both plain function calls: a frame read from our TAP, and a
//! datagram received from a neighbour. Each returns a decision the shell
//! carries out (send to these peers, inject into the TAP, drop and why).
//! MAC learning happens here; routes come from `routes::Routes`. So does
//! the choice of carrier: a unicast frame to a MAC behind a neighbour on
//! the kernel's fast path goes out on the sleeve once and steers that MAC
//! to the kernel (`steering`), which carries the rest.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

mod stats;

pub use stats::Stats;

use super::mac_table::{Learned, MacLocation, MacTable};
use super::routes::Routes;
use super::steering::{SteerOp, Steering};
use super::wire::sleeve::{self, Header, Kind, SleeveError};
use super::wire::vnet;
use super::PeerName;

pub const MAC_TABLE_CAPACITY: usize = 65_536;
pub const MAC_TTL: Duration = Duration::from_secs(300);

/// Why a frame or datagram was dropped; each has a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Shorter than an Ethernet header, or a malformed datagram.
    Malformed(SleeveError),
    /// A frame from the TAP whose source MAC is multicast.
    BadSourceMac,
    /// The destination MAC lives on this host's bridge.
    LocalDestination,
    /// No route to the destination peer.
    NoRoute,
    /// Relayed too often (a routing loop while topology settles).
    TooManyHops,
    /// Our own datagram came back to us.
    OwnDatagram,
    /// ARP about an address every host has for itself (the DNS address).
    HostOnly,
}

/// What to do with a frame read from the TAP.
#[derive(Debug, PartialEq, Eq)]
pub enum TapDecision<'r> {
    Drop(DropReason),
    /// Send to `dst` via `next_hop`.
    Unicast {
        dst: PeerName,
        next_hop: PeerName,
    },
    /// Flood along our broadcast tree (may be no peer at all).
    Broadcast {
        next_hops: &'r [PeerName],
    },
}

/// Where a received datagram goes on from here.
#[derive(Debug, PartialEq, Eq)]
pub enum Relay<'r> {
    None,
    To(PeerName),
    Many(&'r [PeerName]),
}

/// What to do with a datagram received from a neighbour.
#[derive(Debug, PartialEq, Eq)]
pub enum DatagramDecision<'r> {
    Drop(DropReason),
    /// A UDP heartbeat from `src` (incarnation `uid`).
    Heartbeat {
        src: PeerName,
        uid: u64,
    },
    /// Frames: inject the payload's frames into the TAP if `inject`; send the
    /// datagram on (its hop count already raised) per `relay`.
    Frames {
        origin: PeerName,
        inject: bool,
        relay: Relay<'r>,
    },
}

pub struct Router {
    ourself: PeerName,
    macs: MacTable,
    routes: Routes,
    /// An address each host answers for itself: ARP about it stays here.
    host_only: Option<Ipv4Addr>,
    steer: Steer,
    pub stats: Stats,
}

/// The fast path's side of the decision.
#[derive(Debug, Default)]
struct Steer {
    /// Neighbours whose frames the kernel carries.
    fast: HashSet<PeerName>,
    table: Steering,
    /// Kernel changes decided, not yet taken by the shell.
    ops: Vec<SteerOp>,
}

impl Steer {
    /// `mac` was seen at `at` (None: here).
    fn seen(&mut self, mac: &[u8; 6], at: Option<PeerName>) {
        if self.table.is_empty() {
            return;
        }
        if let Some(op) = self.table.seen(mac, at) {
            self.ops.push(op);
        }
    }
}

fn is_multicast(mac: &[u8; 6]) -> bool {
    mac[0] & 1 == 1
}

/// Destination and source MACs of a frame, if it is long enough.
fn macs_of(frame: &[u8]) -> Option<([u8; 6], [u8; 6])> {
    let dst = frame.get(0..6)?.try_into().ok()?;
    let src = frame.get(6..12)?.try_into().ok()?;
    frame.get(..sleeve::MIN_FRAME_LEN)?;
    Some((dst, src))
}

impl Router {
    pub fn new(ourself: PeerName, routes: Routes) -> Router {
        Router {
            ourself,
            macs: MacTable::new(MAC_TABLE_CAPACITY, MAC_TTL),
            routes,
            host_only: None,
            steer: Steer::default(),
            stats: Stats::default(),
        }
    }

    /// Keeps ARP about `addr` off the overlay.
    pub fn set_host_only(&mut self, addr: Option<Ipv4Addr>) {
        self.host_only = addr;
    }

    pub fn ourself(&self) -> PeerName {
        self.ourself
    }

    pub fn set_routes(&mut self, routes: Routes) {
        self.routes = routes;
    }

    /// The neighbour through which `peer` is reached.
    pub fn next_hop(&self, peer: PeerName) -> Option<PeerName> {
        self.routes.next_hop(peer)
    }

    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    pub fn macs(&self) -> &MacTable {
        &self.macs
    }

    /// A peer left the mesh: its MACs are no longer where we thought.
    pub fn forget_peer(&mut self, peer: PeerName) {
        self.macs.forget_peer(peer);
        // The shell clears the kernel's entries for a peer that went.
        self.set_fast(peer, false);
    }

    /// Whether the kernel's fast path carries frames to neighbour `peer`.
    /// Off forgets every MAC steered to it and returns those: the shell
    /// removes their kernel entries.
    pub fn set_fast(&mut self, peer: PeerName, on: bool) -> Vec<SteerOp> {
        let mut undone = Vec::new();
        if on {
            self.steer.fast.insert(peer);
        } else {
            self.steer.fast.remove(&peer);
            self.steer.table.drop_peer(peer, &mut undone);
        }
        undone
    }

    pub fn is_fast(&self, peer: PeerName) -> bool {
        self.steer.fast.contains(&peer)
    }

    /// MACs steered to `peer`.
    pub fn steered_to(&self, peer: PeerName) -> usize {
        self.steer.table.count_for(peer)
    }

    /// Whether decisions left kernel changes for the shell.
    pub fn has_steer_ops(&self) -> bool {
        !self.steer.ops.is_empty()
    }

    /// The kernel changes decided since the last call, appended to `out`.
    pub fn take_steer_ops(&mut self, out: &mut Vec<SteerOp>) {
        out.append(&mut self.steer.ops);
    }

    pub fn expire(&mut self, now: Instant) {
        self.macs.expire(now);
    }

    /// A frame our bridge handed to the router.
    pub fn frame_from_tap(&mut self, frame: &[u8], now: Instant) -> TapDecision<'_> {
        self.stats.frames_from_tap += 1;
        if self
            .host_only
            .is_some_and(|a| super::arp::mentions(frame, a))
        {
            self.stats.count_drop(DropReason::HostOnly);
            return TapDecision::Drop(DropReason::HostOnly);
        }
        let d = decide_tap(
            self.ourself,
            &mut self.macs,
            &self.routes,
            &mut self.stats,
            &mut self.steer,
            frame,
            now,
        );
        match d {
            TapDecision::Drop(r) => self.stats.count_drop(r),
            TapDecision::Unicast { dst, next_hop }
                if dst == next_hop && self.steer.fast.contains(&dst) =>
            {
                if let Some((mac, _)) = macs_of(frame) {
                    self.steer.table.want(mac, dst, now, &mut self.steer.ops);
                }
            }
            _ => {}
        }
        d
    }

    /// A datagram a neighbour sent us. `datagram` is mutable so that a relay
    /// can raise its hop count in place before sending it on.
    pub fn datagram(&mut self, datagram: &mut [u8], now: Instant) -> DatagramDecision<'_> {
        self.stats.datagrams_received += 1;
        let d = decide_datagram(
            self.ourself,
            &mut self.macs,
            &self.routes,
            &mut self.stats,
            &mut self.steer,
            datagram,
            now,
        );
        match d {
            DatagramDecision::Drop(r) => self.stats.count_drop(r),
            DatagramDecision::Frames { ref relay, .. } if *relay != Relay::None => {
                self.stats.datagrams_relayed += 1
            }
            _ => {}
        }
        d
    }
}

fn count_learned(stats: &mut Stats, learned: Learned) {
    match learned {
        Learned::Moved { .. } => stats.mac_moves += 1,
        Learned::Evicted { .. } => stats.mac_evictions += 1,
        Learned::New | Learned::Refreshed => {}
    }
}

fn decide_tap<'r>(
    ourself: PeerName,
    macs: &mut MacTable,
    routes: &'r Routes,
    stats: &mut Stats,
    steer: &mut Steer,
    frame: &[u8],
    now: Instant,
) -> TapDecision<'r> {
    let Some((dst, src)) = macs_of(frame) else {
        return TapDecision::Drop(DropReason::Malformed(SleeveError::RuntFrame(frame.len())));
    };
    if is_multicast(&src) {
        return TapDecision::Drop(DropReason::BadSourceMac);
    }
    count_learned(stats, macs.learn(src, MacLocation::Local, now));
    steer.seen(&src, None);
    if !is_multicast(&dst) {
        match macs.lookup(&dst, now) {
            Some(MacLocation::Local) => return TapDecision::Drop(DropReason::LocalDestination),
            Some(MacLocation::Peer(p)) => {
                if let Some(next_hop) = routes.next_hop(p) {
                    return TapDecision::Unicast { dst: p, next_hop };
                }
                // The peer is gone from our routes: flood, as for an unknown MAC.
            }
            None => {}
        }
    }
    TapDecision::Broadcast {
        next_hops: routes.broadcast_next_hops(ourself),
    }
}

fn decide_datagram<'r>(
    ourself: PeerName,
    macs: &mut MacTable,
    routes: &'r Routes,
    stats: &mut Stats,
    steer: &mut Steer,
    datagram: &mut [u8],
    now: Instant,
) -> DatagramDecision<'r> {
    let (header, payload) = match Header::parse(datagram) {
        Ok(x) => x,
        Err(e) => return DatagramDecision::Drop(DropReason::Malformed(e)),
    };
    if header.kind == Kind::Heartbeat {
        return match sleeve::parse_heartbeat(payload) {
            Ok(uid) => DatagramDecision::Heartbeat {
                src: header.src,
                uid,
            },
            Err(e) => DatagramDecision::Drop(DropReason::Malformed(e)),
        };
    }
    if header.src == ourself {
        return DatagramDecision::Drop(DropReason::OwnDatagram);
    }
    let inject = header.is_broadcast() || header.dst == ourself;
    // Validate every frame before acting on any of them: a datagram that is
    // dropped must teach us nothing.
    let mut sources = [None; 1];
    let mut count = 0u64;
    if header.kind == Kind::Fragment {
        let (frag, bytes) = match sleeve::parse_fragment(payload) {
            Ok(x) => x,
            Err(e) => return DatagramDecision::Drop(DropReason::Malformed(e)),
        };
        // The first fragment starts with the virtio-net header and the
        // Ethernet header: learn the sender's MAC from it, once per frame.
        if frag.offset == 0 {
            sources[0] = bytes.get(vnet::LEN..).and_then(macs_of).map(|(_, src)| src);
            count = 1;
        }
    } else {
        for f in sleeve::frames(payload) {
            if let Err(e) = f {
                return DatagramDecision::Drop(DropReason::Malformed(e));
            }
            count += 1;
        }
        if count == 0 {
            // A header with no frame after it: never sent, only ever truncated.
            return DatagramDecision::Drop(DropReason::Malformed(SleeveError::TruncatedFrame));
        }
    }
    if inject {
        let frame_sources = if header.kind == Kind::Fragment {
            None
        } else {
            Some(
                sleeve::frames(payload)
                    .flatten()
                    .filter_map(|f| macs_of(f).map(|(_, s)| s)),
            )
        };
        for src in sources
            .into_iter()
            .flatten()
            .chain(frame_sources.into_iter().flatten())
        {
            if !is_multicast(&src) {
                count_learned(stats, macs.learn(src, MacLocation::Peer(header.src), now));
                steer.seen(&src, Some(header.src));
            }
        }
        stats.frames_to_tap += count;
    }
    let relay = if header.is_broadcast() {
        Relay::Many(routes.broadcast_next_hops(header.src))
    } else if header.dst == ourself {
        Relay::None
    } else {
        match routes.next_hop(header.dst) {
            Some(hop) => Relay::To(hop),
            None => return DatagramDecision::Drop(DropReason::NoRoute),
        }
    };
    let relay = match relay {
        Relay::Many([]) => Relay::None,
        r => r,
    };
    if relay != Relay::None && !sleeve::bump_hops(datagram) {
        if inject {
            // Delivered here, but the copy we would have relayed is dropped:
            // count it, or a looping broadcast would never show.
            stats.count_drop(DropReason::TooManyHops);
            return DatagramDecision::Frames {
                origin: header.src,
                inject,
                relay: Relay::None,
            };
        }
        return DatagramDecision::Drop(DropReason::TooManyHops);
    }
    DatagramDecision::Frames {
        origin: header.src,
        inject,
        relay,
    }
}

#[cfg(test)]
mod tests;
