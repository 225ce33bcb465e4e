//! Which remote MACs the kernel's fast path carries (issue 15).
//!
//! A frame to a MAC behind a fast-path peer reaches the router once, through
//! the bridge's flooding or an entry learned from the sleeve. The router
//! sends that frame on the sleeve and steers the MAC: it asks the shell to
//! point the bridge and the VXLAN device at the peer, after which the kernel
//! carries that MAC's frames and the router no longer sees them. Here is the
//! record of what was steered where, so that it can be undone when the peer
//! falls back to the sleeve or leaves, or when the MAC turns up elsewhere.
//!
//! A steered MAC whose frames still reach the router (an entry the kernel
//! lost, or moved) is steered again, at most once per `REASSERT`. The table
//! is capped: past `CAPACITY`, the entry steered longest ago is undone.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::PeerName;

pub type Mac = [u8; 6];

/// MACs steered at once, over all peers.
pub const CAPACITY: usize = 16_384;
/// A steered MAC whose frames still come to the router is steered again
/// after this long.
pub const REASSERT: Duration = Duration::from_secs(1);

/// What the shell must do to the kernel's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SteerOp {
    /// Point `mac` at `peer` (replacing where it pointed before).
    Steer { mac: Mac, peer: PeerName },
    /// Remove `mac`'s entries that point at `peer`.
    Unsteer { mac: Mac, peer: PeerName },
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    peer: PeerName,
    at: Instant,
}

#[derive(Debug)]
pub struct Steering {
    entries: HashMap<Mac, Entry>,
    capacity: usize,
}

impl Default for Steering {
    fn default() -> Steering {
        Steering::with_capacity(CAPACITY)
    }
}

impl Steering {
    pub fn with_capacity(capacity: usize) -> Steering {
        Steering {
            entries: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A frame to `mac`, which lives behind fast-path peer `peer`, came to
    /// the router: the ops that steer it, if it is not steered there
    /// already (or was, longer than `REASSERT` ago). `out` gets at most two
    /// ops: an eviction, then the steer.
    pub fn want(&mut self, mac: Mac, peer: PeerName, now: Instant, out: &mut Vec<SteerOp>) {
        if let Some(e) = self.entries.get_mut(&mac) {
            if e.peer == peer && now.saturating_duration_since(e.at) < REASSERT {
                return;
            }
            if e.peer != peer {
                out.push(SteerOp::Unsteer { mac, peer: e.peer });
            }
            *e = Entry { peer, at: now };
            out.push(SteerOp::Steer { mac, peer });
            return;
        }
        if self.entries.len() >= self.capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.at)
                .map(|(m, e)| (*m, e.peer));
            if let Some((m, p)) = oldest {
                self.entries.remove(&m);
                out.push(SteerOp::Unsteer { mac: m, peer: p });
            }
        }
        self.entries.insert(mac, Entry { peer, at: now });
        out.push(SteerOp::Steer { mac, peer });
    }

    /// `mac` was seen somewhere else than behind `at` (None: on this host):
    /// undo its steering if it points elsewhere.
    pub fn seen(&mut self, mac: &Mac, at: Option<PeerName>) -> Option<SteerOp> {
        let e = self.entries.get(mac)?;
        if Some(e.peer) == at {
            return None;
        }
        let peer = e.peer;
        self.entries.remove(mac);
        Some(SteerOp::Unsteer { mac: *mac, peer })
    }

    /// `peer` left the fast path (or the mesh): undo all its MACs.
    pub fn drop_peer(&mut self, peer: PeerName, out: &mut Vec<SteerOp>) {
        self.entries.retain(|mac, e| {
            if e.peer == peer {
                out.push(SteerOp::Unsteer { mac: *mac, peer });
                false
            } else {
                true
            }
        });
    }

    /// The MACs steered at `peer`.
    pub fn count_for(&self, peer: PeerName) -> usize {
        self.entries.values().filter(|e| e.peer == peer).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: PeerName = PeerName([2, 0, 0, 0, 0, 1]);
    const Q: PeerName = PeerName([2, 0, 0, 0, 0, 2]);

    fn mac(i: u8) -> Mac {
        [2, 0x42, 0, 0, 0, i]
    }

    #[test]
    fn a_mac_is_steered_once_then_again_only_after_the_reassert_delay() {
        let mut s = Steering::default();
        let t0 = Instant::now();
        let mut ops = Vec::new();
        s.want(mac(1), P, t0, &mut ops);
        assert_eq!(
            ops,
            [SteerOp::Steer {
                mac: mac(1),
                peer: P
            }]
        );
        ops.clear();
        s.want(mac(1), P, t0 + Duration::from_millis(500), &mut ops);
        assert!(ops.is_empty(), "frames in flight do not steer again");
        s.want(mac(1), P, t0 + REASSERT, &mut ops);
        assert_eq!(
            ops,
            [SteerOp::Steer {
                mac: mac(1),
                peer: P
            }]
        );
    }

    #[test]
    fn a_mac_that_moves_is_unsteered_from_its_old_peer() {
        let mut s = Steering::default();
        let t0 = Instant::now();
        let mut ops = Vec::new();
        s.want(mac(1), P, t0, &mut ops);
        ops.clear();
        s.want(mac(1), Q, t0, &mut ops);
        assert_eq!(
            ops,
            [
                SteerOp::Unsteer {
                    mac: mac(1),
                    peer: P
                },
                SteerOp::Steer {
                    mac: mac(1),
                    peer: Q
                }
            ]
        );
        assert_eq!(s.seen(&mac(1), Some(Q)), None, "seen where it is steered");
        assert_eq!(
            s.seen(&mac(1), None),
            Some(SteerOp::Unsteer {
                mac: mac(1),
                peer: Q
            }),
            "now on this host"
        );
        assert!(s.is_empty());
        assert_eq!(s.seen(&mac(1), None), None);
    }

    #[test]
    fn a_peer_that_falls_back_takes_all_its_macs_with_it() {
        let mut s = Steering::default();
        let t0 = Instant::now();
        let mut ops = Vec::new();
        for i in 0..5 {
            s.want(mac(i), if i % 2 == 0 { P } else { Q }, t0, &mut ops);
        }
        ops.clear();
        s.drop_peer(P, &mut ops);
        assert_eq!(ops.len(), 3);
        assert!(ops
            .iter()
            .all(|op| matches!(op, SteerOp::Unsteer { peer, .. } if *peer == P)));
        assert_eq!(s.count_for(P), 0);
        assert_eq!(s.count_for(Q), 2);
    }

    #[test]
    fn the_table_is_capped_by_undoing_the_oldest() {
        let mut s = Steering::with_capacity(3);
        let t0 = Instant::now();
        let mut ops = Vec::new();
        for i in 0..3u8 {
            s.want(mac(i), P, t0 + Duration::from_secs(u64::from(i)), &mut ops);
        }
        ops.clear();
        s.want(mac(9), Q, t0 + Duration::from_secs(9), &mut ops);
        assert_eq!(
            ops,
            [
                SteerOp::Unsteer {
                    mac: mac(0),
                    peer: P
                },
                SteerOp::Steer {
                    mac: mac(9),
                    peer: Q
                }
            ]
        );
        assert_eq!(s.len(), 3);
    }
}
