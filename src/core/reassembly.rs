//! Reassembly of offloaded frames that arrived in fragments
//! (`wire::sleeve::Kind::Fragment`).
//!
//! A fixed number of slots, each reusing its buffer: a peer that sends
//! fragments and never completes them costs at most `SLOTS` buffers of
//! 64 KiB, and each incomplete frame is dropped (and counted) when its slot
//! is needed or after `MAX_AGE`.

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
    started: Instant,
    buf: Vec<u8>,
}

pub struct Reassembler {
    slots: Vec<Slot>,
    /// Frames given up on: a fragment never came, or they disagreed.
    pub dropped_incomplete: u64,
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
        }
    }

    /// Frames being reassembled.
    pub fn pending(&self) -> usize {
        self.slots.iter().filter(|s| s.key.is_some()).count()
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
        let i = match self.slots.iter().position(|s| s.key == Some(key)) {
            Some(i) => {
                let s = &self.slots[i];
                if s.total != total || s.count != h.count {
                    // Fragments of one frame that disagree: give it up.
                    self.slots[i].key = None;
                    self.dropped_incomplete += 1;
                    return None;
                }
                i
            }
            None => {
                let i = self.free_slot(now);
                let s = &mut self.slots[i];
                s.key = Some(key);
                s.total = total;
                s.count = h.count;
                s.got = 0;
                s.started = now;
                s.buf.clear();
                s.buf.resize(total, 0);
                i
            }
        };
        let s = &mut self.slots[i];
        let offset = h.offset as usize;
        let dst = s.buf.get_mut(offset..offset + bytes.len())?;
        dst.copy_from_slice(bytes);
        s.got |= 1u128 << h.index;
        let all = if s.count as usize >= 128 {
            u128::MAX
        } else {
            (1u128 << s.count) - 1
        };
        if s.got != all {
            return None;
        }
        s.key = None;
        Some(&s.buf[..s.total])
    }

    /// A slot for a new frame: a free one, else a new one, else the
    /// oldest (whose frame is then dropped).
    fn free_slot(&mut self, now: Instant) -> usize {
        for s in &mut self.slots {
            if s.key.is_some() && now.duration_since(s.started) > MAX_AGE {
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
                started: now,
                buf: Vec::new(),
            });
            return self.slots.len() - 1;
        }
        let oldest = (0..self.slots.len())
            .min_by_key(|&i| self.slots[i].started)
            .unwrap_or(0);
        self.slots[oldest].key = None;
        self.dropped_incomplete += 1;
        oldest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::wire::sleeve;

    const A: PeerName = PeerName([2, 0, 0, 0, 0, 0xa]);
    const B: PeerName = PeerName([2, 0, 0, 0, 0, 0xb]);

    /// `frame` cut into fragments of `chunk` bytes.
    fn cut(id: u32, frame: &[u8], chunk: usize) -> Vec<(FragHeader, Vec<u8>)> {
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
        assert_eq!(r.dropped_incomplete, 1);
        assert!(r.push(A, parts[2].0, &parts[2].1, now).is_none());
    }
}
