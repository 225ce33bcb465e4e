//! The forwarding state machine: where each frame goes.
//!
//! Two inputs, both plain function calls: a frame read from our TAP, and a
//! datagram received from a neighbour. Each returns a decision the shell
//! carries out (send to these peers, inject into the TAP, drop and why).
//! MAC learning happens here; routes come from `routes::Routes`.

use std::time::{Duration, Instant};

use super::mac_table::{Learned, MacLocation, MacTable};
use super::routes::Routes;
use super::wire::sleeve::{self, Header, Kind, SleeveError};
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
    /// The MAC table is full.
    MacTableFull,
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

/// Counters a user sees in `report` and metrics.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Stats {
    pub frames_from_tap: u64,
    pub frames_to_tap: u64,
    pub datagrams_received: u64,
    pub datagrams_relayed: u64,
    pub dropped_malformed: u64,
    pub dropped_bad_source_mac: u64,
    pub dropped_local_destination: u64,
    pub dropped_no_route: u64,
    pub dropped_too_many_hops: u64,
    pub dropped_own_datagram: u64,
    pub dropped_mac_table_full: u64,
    pub dropped_unknown_sender: u64,
    pub mac_moves: u64,
}

impl Stats {
    pub fn count_drop(&mut self, r: DropReason) {
        let c = match r {
            DropReason::Malformed(_) => &mut self.dropped_malformed,
            DropReason::BadSourceMac => &mut self.dropped_bad_source_mac,
            DropReason::LocalDestination => &mut self.dropped_local_destination,
            DropReason::NoRoute => &mut self.dropped_no_route,
            DropReason::TooManyHops => &mut self.dropped_too_many_hops,
            DropReason::OwnDatagram => &mut self.dropped_own_datagram,
            DropReason::MacTableFull => &mut self.dropped_mac_table_full,
        };
        *c += 1;
    }
}

pub struct Router {
    ourself: PeerName,
    macs: MacTable,
    routes: Routes,
    pub stats: Stats,
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
            stats: Stats::default(),
        }
    }

    pub fn ourself(&self) -> PeerName {
        self.ourself
    }

    pub fn set_routes(&mut self, routes: Routes) {
        self.routes = routes;
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
    }

    pub fn expire(&mut self, now: Instant) {
        self.macs.expire(now);
    }

    /// A frame our bridge handed to the router.
    pub fn frame_from_tap(&mut self, frame: &[u8], now: Instant) -> TapDecision<'_> {
        self.stats.frames_from_tap += 1;
        let d = decide_tap(
            self.ourself,
            &mut self.macs,
            &self.routes,
            &mut self.stats,
            frame,
            now,
        );
        if let TapDecision::Drop(r) = d {
            self.stats.count_drop(r);
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

fn decide_tap<'r>(
    ourself: PeerName,
    macs: &mut MacTable,
    routes: &'r Routes,
    stats: &mut Stats,
    frame: &[u8],
    now: Instant,
) -> TapDecision<'r> {
    let Some((dst, src)) = macs_of(frame) else {
        return TapDecision::Drop(DropReason::Malformed(SleeveError::RuntFrame(frame.len())));
    };
    if is_multicast(&src) {
        return TapDecision::Drop(DropReason::BadSourceMac);
    }
    match macs.learn(src, MacLocation::Local, now) {
        Learned::Moved { .. } => stats.mac_moves += 1,
        Learned::Full => return TapDecision::Drop(DropReason::MacTableFull),
        Learned::New | Learned::Refreshed => {}
    }
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
    // Validate every frame before acting on any of them.
    let mut count = 0u64;
    for f in sleeve::frames(payload) {
        match f {
            Ok(frame) => {
                count += 1;
                if inject {
                    if let Some((_, src)) = macs_of(frame) {
                        if !is_multicast(&src) {
                            if let Learned::Moved { .. } =
                                macs.learn(src, MacLocation::Peer(header.src), now)
                            {
                                stats.mac_moves += 1;
                            }
                        }
                    }
                }
            }
            Err(e) => return DatagramDecision::Drop(DropReason::Malformed(e)),
        }
    }
    if inject {
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
