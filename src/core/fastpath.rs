//! Which carrier takes a connection's frames: the kernel's VXLAN device
//! (the fast path) or the router's own UDP sleeve. Decided per connection,
//! from heartbeats sent over the fast path itself (issue 15; the daemon's
//! side, the device and its forwarding entries, comes next).
//!
//! A link starts on the sleeve. It moves to the fast path only once
//! `CONFIRMATIONS` heartbeats in a row came over it, each of the full MTU
//! and each saying the peer hears ours too. It falls back when no such
//! heartbeat came for `dead_after`. It comes back after the fast path has
//! worked again for a hold-down that doubles with each fall (capped), so a
//! flapping path does not flap the traffic. Why a link is on the sleeve is
//! always known, for `status` (never a silent fallback).
//!
//! Pure: time is passed in as milliseconds.

use std::fmt;

/// Heartbeats in a row that move a link to the fast path.
pub const CONFIRMATIONS: u32 = 3;

/// How heartbeats are judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// A heartbeat is sent this often (both ways, always: they are small
    /// next to the traffic, and they are how a fallen path is seen to work
    /// again).
    pub interval_ms: u64,
    /// With no confirming heartbeat for this long, the link falls back.
    pub dead_after_ms: u64,
    /// Hold-down before going back to the fast path after the first fall;
    /// doubles with each further fall, up to `max_hold_ms`.
    pub hold_ms: u64,
    pub max_hold_ms: u64,
    /// The fast path's UDP port, named when heartbeats do not come.
    pub port: u16,
}

impl Default for Timing {
    /// A ping every 100 ms loses at most about 5 across a fall (0.4 s of
    /// silence, judged every 50 ms, to notice); back within 10 s after the
    /// path works again (hold-down at most 8 s, plus the confirmations).
    fn default() -> Timing {
        Timing {
            interval_ms: 100,
            dead_after_ms: 400,
            hold_ms: 1_000,
            max_hold_ms: 8_000,
            port: 6784,
        }
    }
}

/// Why a link does not try the fast path at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ineligible {
    /// `--no-fastdp` here, or on the peer.
    Disabled { here: bool },
    /// The mesh is encrypted and the kernel has no encrypted fast path; the
    /// peer is not in `--trusted-subnets`.
    Encrypted,
    /// The peer is reached through a relay, not directly.
    Relayed,
    /// No VXLAN device here (the kernel or underlay lacks it), with why.
    Unavailable(String),
}

impl fmt::Display for Ineligible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ineligible::Disabled { here: true } => f.write_str("fast path off here (--no-fastdp)"),
            Ineligible::Disabled { here: false } => {
                f.write_str("no fast path on the peer (--no-fastdp, or no VXLAN there)")
            }
            Ineligible::Encrypted => f.write_str(
                "encrypted mesh: the kernel has no encrypted fast path (peer not in --trusted-subnets)",
            ),
            Ineligible::Relayed => f.write_str("reached through a relay"),
            Ineligible::Unavailable(why) => write!(f, "no fast path on this host: {why}"),
        }
    }
}

/// The carrier a link uses now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Sleeve,
    Fast,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Off(Ineligible),
    /// Not (yet, or again) on the fast path. `falls`: how often it fell.
    Sleeve {
        since_ms: u64,
        /// Confirming heartbeats in a row, and since when they come.
        streak: u32,
        streak_since_ms: u64,
        falls: u32,
        /// The last heartbeat that came but was too small for the MTU.
        short: Option<usize>,
    },
    Fast {
        since_ms: u64,
        last_ms: u64,
        falls: u32,
    },
}

/// One connection's choice of carrier.
#[derive(Debug, Clone)]
pub struct Link {
    timing: Timing,
    /// The frame size a heartbeat must have to prove the path's MTU.
    mtu: usize,
    state: State,
}

/// What `heard` or `tick` changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    ToFast,
    ToSleeve,
}

impl Link {
    /// A new connection: `eligible` says whether the fast path may be
    /// tried; `mtu` is what heartbeats must carry.
    pub fn new(eligible: Result<(), Ineligible>, mtu: usize, now_ms: u64, timing: Timing) -> Link {
        let state = match eligible {
            Err(why) => State::Off(why),
            Ok(()) => State::Sleeve {
                since_ms: now_ms,
                streak: 0,
                streak_since_ms: now_ms,
                falls: 0,
                short: None,
            },
        };
        Link { timing, mtu, state }
    }

    pub fn path(&self) -> Path {
        match self.state {
            State::Fast { .. } => Path::Fast,
            _ => Path::Sleeve,
        }
    }

    /// Whether heartbeats should be sent over the fast path.
    pub fn probing(&self) -> bool {
        !matches!(self.state, State::Off(_))
    }

    /// A heartbeat came over the fast path: `size` bytes, and whether the
    /// peer says it hears ours.
    pub fn heard(&mut self, now_ms: u64, size: usize, hears_us: bool) -> Option<Switch> {
        let full = size >= self.mtu;
        match &mut self.state {
            State::Off(_) => None,
            State::Fast { last_ms, .. } => {
                if full && hears_us {
                    *last_ms = now_ms;
                }
                None
            }
            State::Sleeve {
                streak,
                streak_since_ms,
                falls,
                short,
                ..
            } => {
                if !full {
                    *short = Some(size);
                    *streak = 0;
                    return None;
                }
                *short = None;
                if !hears_us {
                    *streak = 0;
                    return None;
                }
                if *streak == 0 {
                    *streak_since_ms = now_ms;
                }
                *streak += 1;
                let held = now_ms.saturating_sub(*streak_since_ms);
                if *streak >= CONFIRMATIONS && held >= hold_for(&self.timing, *falls) {
                    let falls = *falls;
                    self.state = State::Fast {
                        since_ms: now_ms,
                        last_ms: now_ms,
                        falls,
                    };
                    return Some(Switch::ToFast);
                }
                None
            }
        }
    }

    /// Time passes: a fast link with no confirming heartbeat for
    /// `dead_after` falls back; a streak broken by silence starts over.
    pub fn tick(&mut self, now_ms: u64) -> Option<Switch> {
        let t = self.timing;
        match &mut self.state {
            State::Fast { last_ms, falls, .. } => {
                if now_ms.saturating_sub(*last_ms) > t.dead_after_ms {
                    let falls = falls.saturating_add(1);
                    let since = *last_ms;
                    self.state = State::Sleeve {
                        since_ms: since,
                        streak: 0,
                        streak_since_ms: now_ms,
                        falls,
                        short: None,
                    };
                    return Some(Switch::ToSleeve);
                }
                None
            }
            State::Sleeve {
                streak,
                streak_since_ms,
                ..
            } => {
                // A gap of more than two intervals breaks the streak.
                let expected = *streak_since_ms
                    + u64::from(*streak).saturating_mul(t.interval_ms)
                    + 2 * t.interval_ms;
                if *streak > 0 && now_ms > expected.max(*streak_since_ms + t.dead_after_ms) {
                    *streak = 0;
                }
                None
            }
            State::Off(_) => None,
        }
    }

    /// For `status`: the carrier, and on the sleeve, why.
    pub fn describe(&self, now_ms: u64) -> String {
        let secs = |since: u64| now_ms.saturating_sub(since) / 1000;
        match &self.state {
            State::Off(why) => format!("sleeve: {why}"),
            State::Fast { since_ms, .. } => {
                format!("fast path (mtu {}) since {}s", self.mtu, secs(*since_ms))
            }
            State::Sleeve {
                since_ms,
                falls,
                short,
                streak,
                ..
            } => match (short, falls, streak) {
                (Some(size), _, _) => format!(
                    "sleeve: fast-path heartbeats arrive at {size} bytes, not the {} the MTU needs",
                    self.mtu
                ),
                (None, 0, 0) => format!(
                    "sleeve: no fast-path heartbeat from the peer yet ({}s; udp {} blocked?)",
                    secs(*since_ms),
                    self.timing.port
                ),
                (None, 0, _) => "sleeve: confirming the fast path".to_string(),
                (None, _, 0) => format!(
                    "sleeve: fast-path heartbeats lost since {}s (udp {} blocked?)",
                    secs(*since_ms),
                    self.timing.port
                ),
                (None, _, _) => format!(
                    "sleeve: fast path works again, holding {}s before going back (it fell {falls} times)",
                    hold_for(&self.timing, *falls) / 1000
                ),
            },
        }
    }
}

/// The hold-down after `falls` falls: none before the first.
fn hold_for(t: &Timing, falls: u32) -> u64 {
    if falls == 0 {
        return 0;
    }
    let factor = 1u64.checked_shl(falls - 1).unwrap_or(u64::MAX);
    t.hold_ms.saturating_mul(factor).min(t.max_hold_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MTU: usize = 1450;

    fn link() -> Link {
        Link::new(Ok(()), MTU, 0, Timing::default())
    }

    /// Heartbeats every interval from `from` to `to` (exclusive); the
    /// switches they caused, with when.
    fn beat(l: &mut Link, from: u64, to: u64, size: usize) -> Vec<(u64, Switch)> {
        let mut out = Vec::new();
        let mut t = from;
        while t < to {
            if let Some(s) = l.heard(t, size, true) {
                out.push((t, s));
            }
            if let Some(s) = l.tick(t) {
                out.push((t, s));
            }
            t += l.timing.interval_ms;
        }
        out
    }

    /// Silence from `from` to `to`, ticking every 10 ms.
    fn silence(l: &mut Link, from: u64, to: u64) -> Vec<(u64, Switch)> {
        (from..to)
            .step_by(10)
            .filter_map(|t| l.tick(t).map(|s| (t, s)))
            .collect()
    }

    #[test]
    fn confirmed_heartbeats_move_a_link_to_the_fast_path() {
        let mut l = link();
        assert_eq!(l.path(), Path::Sleeve);
        assert!(l.describe(0).contains("no fast-path heartbeat"));
        let s = beat(&mut l, 0, 1_000, MTU);
        assert_eq!(s, [(200, Switch::ToFast)], "the third heartbeat");
        assert_eq!(l.path(), Path::Fast);
        assert_eq!(l.describe(3_000), "fast path (mtu 1450) since 2s");
    }

    #[test]
    fn heartbeats_the_peer_does_not_confirm_or_too_small_keep_the_sleeve() {
        let mut l = link();
        for t in (0..2_000).step_by(100) {
            assert_eq!(l.heard(t, MTU, false), None);
        }
        assert_eq!(l.path(), Path::Sleeve);
        let s = beat(&mut l, 2_000, 3_000, 1_400);
        assert!(s.is_empty());
        assert!(
            l.describe(3_000)
                .contains("arrive at 1400 bytes, not the 1450"),
            "{}",
            l.describe(3_000)
        );
    }

    #[test]
    fn silence_falls_back_within_half_a_second_and_says_why() {
        let mut l = link();
        beat(&mut l, 0, 1_000, MTU);
        assert_eq!(l.path(), Path::Fast);
        // The last heartbeat at 900 ms; the path is then blocked.
        let s = silence(&mut l, 1_000, 5_000);
        assert_eq!(s.len(), 1, "{s:?}");
        let (at, sw) = s[0];
        assert_eq!(sw, Switch::ToSleeve);
        assert!(
            at - 900 <= 460,
            "fell back {} ms after the last heartbeat",
            at - 900
        );
        assert_eq!(
            l.describe(13_000),
            "sleeve: fast-path heartbeats lost since 12s (udp 6784 blocked?)"
        );
    }

    #[test]
    fn back_on_the_fast_path_within_ten_seconds_after_repeated_falls() {
        let mut l = link();
        let mut t = 0;
        for fall in 1..=6u32 {
            let s = beat(&mut l, t, t + 20_000, MTU);
            let back = s
                .iter()
                .find(|(_, s)| *s == Switch::ToFast)
                .map(|(at, _)| at - t);
            let back = back.unwrap_or_else(|| panic!("never back after fall {}", fall - 1));
            assert!(back <= 10_000, "back after {back} ms (fall {})", fall - 1);
            t += 20_000;
            let s = silence(&mut l, t, t + 2_000);
            assert_eq!(s.len(), 1);
            t += 2_000;
        }
        assert_eq!(hold_for(&l.timing, 6), 8_000);
        assert!(l.describe(t).contains("lost since"));
    }

    #[test]
    fn a_broken_streak_starts_over() {
        let mut l = link();
        l.heard(0, MTU, true);
        l.heard(100, MTU, true);
        silence(&mut l, 110, 1_000);
        assert_eq!(
            l.heard(1_000, MTU, true),
            None,
            "one after a gap is not the third"
        );
        assert_eq!(l.heard(1_100, MTU, true), None);
        assert_eq!(l.heard(1_200, MTU, true), Some(Switch::ToFast));
    }

    #[test]
    fn ineligible_links_never_probe_and_say_why() {
        for (why, text) in [
            (
                Ineligible::Disabled { here: true },
                "off here (--no-fastdp)",
            ),
            (
                Ineligible::Disabled { here: false },
                "no fast path on the peer",
            ),
            (Ineligible::Encrypted, "encrypted mesh"),
            (Ineligible::Relayed, "through a relay"),
            (Ineligible::Unavailable("no vxlan".into()), "no vxlan"),
        ] {
            let mut l = Link::new(Err(why), MTU, 0, Timing::default());
            assert!(!l.probing());
            assert!(beat(&mut l, 0, 1_000, MTU).is_empty());
            assert_eq!(l.path(), Path::Sleeve);
            let d = l.describe(0);
            assert!(d.starts_with("sleeve: ") && d.contains(text), "{d}");
        }
    }

    #[test]
    fn hold_down_doubles_and_is_capped() {
        let t = Timing::default();
        let holds: Vec<u64> = (0..8).map(|f| hold_for(&t, f)).collect();
        assert_eq!(holds, [0, 1_000, 2_000, 4_000, 8_000, 8_000, 8_000, 8_000]);
        assert_eq!(hold_for(&t, u32::MAX), 8_000);
    }
}
