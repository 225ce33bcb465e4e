//! Reassembly of offloaded frames that arrived in fragments
//! (`wire::sleeve::Kind::Fragment`).
//!
//! A fixed number of slots, each reusing its buffer: a peer that sends
//! fragments and never completes them costs at most `SLOTS` buffers of
//! 64 KiB, and each incomplete frame is dropped (and counted) when its slot
//! is needed or after `MAX_AGE`. When every slot is busy, a new frame takes
//! the oldest slot of the origin holding the most, so one peer flooding
//! incomplete frames churns its own slots and leaves the others' frames to
//! complete.
//!
//! A frame is delivered only when its fragments cover its `total` bytes
//! exactly once: fragment `i` must start where fragment `i - 1` ends, the
//! first at 0 and the last ending at `total`. Fragments that disagree with
//! that (or with each other about `total` and `count`) drop the frame.

use std::time::{Duration, Instant};

use super::wire::sleeve::FragHeader;
use super::PeerName;

pub const SLOTS: usize = 64;
/// A frame not complete after this long will not be: its slot is reused.
pub const MAX_AGE: Duration = Duration::from_secs(1);

struct Slot {
    /// `None` when free.
    key: Option<(PeerName, u32)>,
    total: usize,
    count: u8,
    got: u128,
    /// Per fragment index (valid where `got` has its bit): the bytes it
    /// covers, `(offset, end)`.
    ranges: Vec<(usize, usize)>,
    started: Instant,
    buf: Vec<u8>,
}

pub struct Reassembler {
    slots: Vec<Slot>,
    /// Frames given up on: a fragment never came, or they disagreed.
    pub dropped_incomplete: u64,
    /// Of those, frames whose fragments disagreed (overlaps, holes,
    /// different totals or counts).
    pub dropped_inconsistent: u64,
}

impl Default for Reassembler {
    fn default() -> Self {
        Reassembler::new()
    }
}

impl Reassembler {
    pub fn new() -> Reassembler {
        Reassembler {
            slots: Vec::new(),
            dropped_incomplete: 0,
            dropped_inconsistent: 0,
        }
    }

    /// Frames being reassembled.
    pub fn pending(&self) -> usize {
        self.slots.iter().filter(|s| s.key.is_some()).count()
    }

    /// Frames being reassembled for `origin`.
    pub fn pending_from(&self, origin: PeerName) -> usize {
        self.slots
            .iter()
            .filter(|s| s.key.is_some_and(|(o, _)| o == origin))
            .count()
    }

    /// Add a fragment (already checked by `sleeve::parse_fragment`) from
    /// `origin`. Returns the whole frame when this was its last missing part.
    pub fn push(
        &mut self,
        origin: PeerName,
        h: FragHeader,
        bytes: &[u8],
        now: Instant,
    ) -> Option<&[u8]> {
        let key = (origin, h.id);
        let total = h.total as usize;
        let offset = h.offset as usize;
        let range = (offset, offset.checked_add(bytes.len())?);
        let index = usize::from(h.index);
        let i = match self.slots.iter().position(|s| s.key == Some(key)) {
            Some(i) => i,
            None => {
                let i = self.free_slot(origin, now);
                let s = &mut self.slots[i];
                s.key = Some(key);
                s.total = total;
                s.count = h.count;
                s.got = 0;
                s.ranges.clear();
                s.ranges.resize(usize::from(h.count), (0, 0));
                s.started = now;
                s.buf.clear();
                s.buf.resize(total, 0);
                i
            }
        };
        let s = &mut self.slots[i];
        let bit = 1u128.checked_shl(u32::from(h.index)).unwrap_or(0);
        let same_frame = s.total == total && s.count == h.count;
        if same_frame && s.got & bit != 0 && s.ranges.get(index) == Some(&range) {
            return None; // a duplicate: the first copy stays
        }
        if !same_frame || s.got & bit != 0 || !fits(s, index, range) {
            // Fragments of one frame that disagree: give it up.
            s.key = None;
            self.dropped_incomplete += 1;
            self.dropped_inconsistent += 1;
            return None;
        }
        s.buf.get_mut(range.0..range.1)?.copy_from_slice(bytes);
        *s.ranges.get_mut(index)? = range;
        s.got |= bit;
        let all = if s.count as usize >= 128 {
            u128::MAX
        } else {
            (1u128 << s.count) - 1
        };
        if s.got != all {
            return None;
        }
        // Every fragment is here and each one joins its neighbours: the
        // frame's bytes are covered exactly once.
        s.key = None;
        Some(&s.buf[..s.total])
    }

    /// A slot for a new frame from `origin`: a free one, else a new one,
    /// else the oldest of the origin holding the most (whose frame is then
    /// dropped).
    fn free_slot(&mut self, origin: PeerName, now: Instant) -> usize {
        for s in &mut self.slots {
            if s.key.is_some() && now.saturating_duration_since(s.started) > MAX_AGE {
                s.key = None;
                self.dropped_incomplete += 1;
            }
        }
        if let Some(i) = self.slots.iter().position(|s| s.key.is_none()) {
            return i;
        }
        if self.slots.len() < SLOTS {
            self.slots.push(Slot {
                key: None,
                total: 0,
                count: 0,
                got: 0,
                ranges: Vec::new(),
                started: now,
                buf: Vec::new(),
            });
            return self.slots.len() - 1;
        }
        // Slots per origin: sorted, so each origin's slots are one run.
        let mut origins: Vec<PeerName> = self
            .slots
            .iter()
            .filter_map(|s| s.key)
            .map(|k| k.0)
            .collect();
        origins.sort_unstable();
        // The newcomer counts its next frame too, and wins ties: it gives
        // up one of its own unless another origin holds more than it would.
        let mut largest = (origins.iter().filter(|&&o| o == origin).count() + 1, origin);
        for run in origins.chunk_by(|a, b| a == b) {
            if run.len() > largest.0 {
                largest = (run.len(), run[0]);
            }
        }
        let victim = (0..self.slots.len())
            .filter(|&i| self.slots[i].key.is_some_and(|(o, _)| o == largest.1))
            .min_by_key(|&i| self.slots[i].started)
            .or_else(|| (0..self.slots.len()).min_by_key(|&i| self.slots[i].started))
            .unwrap_or(0);
        self.slots[victim].key = None;
        self.dropped_incomplete += 1;
        victim
    }
}

/// Does fragment `index` covering `range` join the fragments of `s` that
/// are already here (and the frame's ends)?
fn fits(s: &Slot, index: usize, range: (usize, usize)) -> bool {
    let (start, end) = range;
    let count = usize::from(s.count);
    let have = |i: usize| {
        (s.got & 1u128.checked_shl(i as u32).unwrap_or(0) != 0)
            .then(|| s.ranges.get(i).copied())
            .flatten()
    };
    let joins_prev = match index.checked_sub(1) {
        None => start == 0,
        Some(p) => have(p).is_none_or(|(_, e)| e == start),
    };
    let joins_next = if index + 1 == count {
        end == s.total
    } else {
        have(index + 1).is_none_or(|(b, _)| b == end)
    };
    index < count && start < end && end <= s.total && joins_prev && joins_next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::wire::sleeve;
    use proptest::prelude::*;

    const A: PeerName = PeerName([2, 0, 0, 0, 0, 0xa]);
    const B: PeerName = PeerName([2, 0, 0, 0, 0, 0xb]);

    type Fragment = (FragHeader, Vec<u8>);

    /// `frame` cut into fragments of `chunk` bytes.
    fn cut(id: u32, frame: &[u8], chunk: usize) -> Vec<Fragment> {
        sleeve::fragment_headers(id, frame.len(), chunk)
            .zip(frame.chunks(chunk))
            .map(|(h, c)| (h, c.to_vec()))
            .collect()
    }

    fn frame(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    #[test]
    fn in_order_out_of_order_duplicates_and_interleaved() {
        let now = Instant::now();
        let mut r = Reassembler::new();
        let (f1, f2) = (frame(65_000, 1), frame(3000, 2));
        let mut p1 = cut(1, &f1, 1400);
        let p2 = cut(9, &f2, 1400);
        p1.reverse();
        let (last, rest) = p1.split_first().unwrap();
        for (h, b) in rest {
            assert!(r.push(A, *h, b, now).is_none());
            assert!(r.push(A, *h, b, now).is_none(), "duplicate");
        }
        // Another origin's frame with the same id, interleaved.
        for (i, (h, b)) in cut(1, &f2, 1400).iter().enumerate() {
            let got = r.push(B, *h, b, now).map(<[u8]>::to_vec);
            assert_eq!(got.is_some(), i == 2);
        }
        for (i, (h, b)) in p2.iter().enumerate() {
            let got = r.push(A, *h, b, now).map(<[u8]>::to_vec);
            assert_eq!(got, (i == 2).then(|| f2.clone()));
        }
        assert_eq!(r.push(A, last.0, &last.1, now), Some(&f1[..]));
        assert_eq!(r.pending(), 0);
        assert_eq!(r.dropped_incomplete, 0);
    }

    #[test]
    fn incomplete_frames_are_bounded_and_counted() {
        let t0 = Instant::now();
        let mut r = Reassembler::new();
        for id in 0..1000u32 {
            let (h, b) = cut(id, &frame(5000, 0), 1400).remove(0);
            assert!(r.push(A, h, &b, t0).is_none());
        }
        assert_eq!(r.pending(), SLOTS);
        assert_eq!(r.dropped_incomplete, 1000 - SLOTS as u64);
        // Old ones make way without waiting for the slots to fill.
        let later = t0 + MAX_AGE * 2;
        let parts = cut(5000, &frame(3000, 3), 1400);
        for (h, b) in &parts {
            r.push(B, *h, b, later);
        }
        assert_eq!(r.dropped_incomplete, 1000);
        assert_eq!(r.dropped_inconsistent, 0);
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn disagreeing_fragments_drop_the_frame() {
        let now = Instant::now();
        let mut r = Reassembler::new();
        let parts = cut(4, &frame(3000, 0), 1400);
        r.push(A, parts[0].0, &parts[0].1, now);
        let liar = FragHeader {
            total: 2999,
            ..parts[1].0
        };
        assert!(r.push(A, liar, &parts[1].1[..1399], now).is_none());
        assert_eq!((r.dropped_incomplete, r.dropped_inconsistent), (1, 1));
        assert!(r.push(A, parts[2].0, &parts[2].1, now).is_none());
    }

    /// Pushes `frags` of one frame from A; returns what was delivered.
    fn deliver(frags: &[Fragment]) -> (Option<Vec<u8>>, Reassembler) {
        let now = Instant::now();
        let mut r = Reassembler::new();
        let mut out = None;
        for (h, b) in frags {
            if let Some(w) = r.push(A, *h, b, now) {
                out = Some(w.to_vec());
            }
        }
        (out, r)
    }

    #[test]
    fn overlapping_fragments_never_deliver_a_frame_with_holes() {
        let f = frame(3000, 5);
        let good = cut(7, &f, 1400);
        let at = |i: usize, offset: u32, len: usize| {
            let h = FragHeader {
                offset,
                ..good[i].0
            };
            let o = offset as usize;
            (h, f[o..o + len].to_vec())
        };
        let cases: Vec<(&str, Vec<Fragment>)> = vec![
            // 0..1400, 1300..2700, 2800..3000: an overlap and a hole.
            (
                "overlap and hole",
                vec![good[0].clone(), at(1, 1300, 1400), good[2].clone()],
            ),
            // The same bytes twice under two indices; 1400..2800 never sent.
            (
                "same bytes twice",
                vec![good[0].clone(), at(1, 0, 1400), good[2].clone()],
            ),
            // The last fragment ends short of the total.
            (
                "short tail",
                vec![good[0].clone(), good[1].clone(), at(2, 2700, 200)],
            ),
            // The first fragment starts past 0.
            (
                "late start",
                vec![at(0, 100, 1300), good[1].clone(), good[2].clone()],
            ),
            // Arriving out of order, the middle one does not join either side.
            (
                "middle last",
                vec![good[2].clone(), good[0].clone(), at(1, 1401, 1399)],
            ),
            // One index sent twice with different bytes ranges.
            (
                "index reused",
                vec![good[0].clone(), good[1].clone(), at(1, 1400, 1300)],
            ),
        ];
        for (what, frags) in cases {
            let (out, r) = deliver(&frags);
            assert_eq!(out, None, "{what}: delivered");
            assert_eq!(r.dropped_inconsistent, 1, "{what}");
            assert_eq!(r.dropped_incomplete, 1, "{what}");
        }
        // The honest fragments, any order, with a duplicate: delivered.
        let mut frags = good.clone();
        frags.swap(0, 2);
        frags.insert(1, good[1].clone());
        assert_eq!(deliver(&frags).0, Some(f));
    }

    #[test]
    fn one_origins_flood_does_not_starve_the_others() {
        let t0 = Instant::now();
        let mut r = Reassembler::new();
        let fb = frame(3000, 9);
        let pb = cut(1, &fb, 1400);
        // B has a frame under way when A starts flooding incomplete ones.
        r.push(B, pb[0].0, &pb[0].1, t0);
        for id in 0..10_000u32 {
            let (h, b) = cut(id, &frame(3000, 0), 1400).remove(0);
            r.push(A, h, &b, t0);
        }
        assert_eq!(r.pending(), SLOTS);
        assert_eq!(r.pending_from(B), 1);
        // More of B's frames start and finish meanwhile.
        for id in 2..40u32 {
            let f = frame(3000, id as u8);
            let parts = cut(id, &f, 1400);
            let (first, rest) = parts.split_first().unwrap();
            assert!(r.push(B, first.0, &first.1, t0).is_none());
            let (h, b) = cut(100_000 + id, &frame(3000, 0), 1400).remove(0);
            r.push(A, h, &b, t0);
            let mut out = None;
            for (h, b) in rest {
                out = r.push(B, *h, b, t0).map(<[u8]>::to_vec);
            }
            assert_eq!(out, Some(f), "B's frame {id}");
        }
        // And B's first frame was never evicted.
        r.push(B, pb[1].0, &pb[1].1, t0);
        assert_eq!(r.push(B, pb[2].0, &pb[2].1, t0), Some(&fb[..]));
        assert_eq!(r.dropped_inconsistent, 0);
    }

    #[test]
    fn origins_holding_equal_shares_evict_their_own() {
        let t0 = Instant::now();
        let mut r = Reassembler::new();
        let first = |id: u32| cut(id, &frame(3000, 0), 1400).remove(0);
        for id in 0..(SLOTS / 2) as u32 {
            let (h, b) = first(id);
            r.push(A, h, &b, t0);
            r.push(B, h, &b, t0);
        }
        assert_eq!(
            (r.pending_from(A), r.pending_from(B)),
            (SLOTS / 2, SLOTS / 2)
        );
        for id in 100..200u32 {
            let (h, b) = first(id);
            r.push(A, h, &b, t0 + Duration::from_millis(u64::from(id)));
        }
        assert_eq!(
            (r.pending_from(A), r.pending_from(B)),
            (SLOTS / 2, SLOTS / 2)
        );
    }

    proptest! {
        /// Honest fragments, shuffled and repeated, always deliver the frame.
        #[test]
        fn honest_fragments_deliver_the_frame(
            len in 1usize..20_000,
            chunk in 1usize..3000,
            order in any::<proptest::sample::Index>(),
            dups in proptest::collection::vec(any::<proptest::sample::Index>(), 0..4),
        ) {
            let f = frame(len, 3);
            let mut frags = cut(1, &f, chunk);
            prop_assume!(frags.len() <= sleeve::MAX_FRAGMENTS);
            let k = order.index(frags.len());
            frags.rotate_left(k);
            for d in dups {
                let i = d.index(frags.len());
                frags.insert(i, frags[i].clone());
            }
            let (out, r) = deliver(&frags);
            prop_assert_eq!(out, Some(f));
            prop_assert_eq!(r.dropped_incomplete, 0);
        }

        /// Whatever fragments come, a delivered frame is made of fragments
        /// covering every byte exactly once.
        #[test]
        fn a_delivered_frame_is_covered_exactly_once(
            total in 1u32..200,
            count in 1u8..6,
            frags in proptest::collection::vec((0u8..6, 0u32..200, 1usize..100), 0..12),
        ) {
            let now = Instant::now();
            let mut r = Reassembler::new();
            let mut sent: Vec<(u8, u32, usize)> = Vec::new();
            for (index, offset, len) in frags {
                let mut payload = Vec::new();
                FragHeader { id: 1, total, offset, index, count }.emit(&mut payload);
                payload.extend(std::iter::repeat_n(index + 1, len));
                let Ok((h, b)) = sleeve::parse_fragment(&payload) else {
                    continue;
                };
                sent.push((index, offset, len));
                if let Some(w) = r.push(A, h, b, now) {
                    // The last copy of each index joins the one before.
                    let mut end = 0;
                    for i in 0..count {
                        let &(_, o, l) = sent.iter().rev().find(|s| s.0 == i).unwrap();
                        prop_assert_eq!(o as usize, end);
                        prop_assert!(w[end..end + l].iter().all(|&x| x == i + 1));
                        end += l;
                    }
                    prop_assert_eq!(end, total as usize);
                    sent.clear();
                }
            }
        }
    }
}
