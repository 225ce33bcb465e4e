//! Fragments of offloaded frames, as a hostile neighbour could send them:
//! any mix of origins, ids, offsets, counts and lengths, through the parser
//! and the reassembler. Nothing panics, memory stays bounded, and whatever
//! comes out complete is its fragments' bytes covering the announced length
//! exactly once, fragment after fragment.
#![no_main]
use std::collections::HashMap;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use weave_rs::core::reassembly::{Reassembler, SLOTS};
use weave_rs::core::wire::sleeve;
use weave_rs::core::PeerName;

fuzz_target!(|data: &[u8]| {
    let mut r = Reassembler::new();
    let t0 = Instant::now();
    let mut rest = data;
    let mut step = 0u64;
    // Every fragment pushed, per (origin, id): (index, offset, bytes).
    let mut sent: HashMap<(u8, u32), Vec<(u8, usize, Vec<u8>)>> = HashMap::new();
    // Each record: origin u8, payload length u16be, payload (a fragment
    // header and bytes).
    while let Some((&origin, tail)) = rest.split_first() {
        let Some((len, tail)) = tail.split_first_chunk::<2>() else {
            break;
        };
        let len = usize::from(u16::from_be_bytes(*len)).min(tail.len());
        let (payload, tail) = tail.split_at(len);
        rest = tail;
        step += 1;
        let Ok((h, bytes)) = sleeve::parse_fragment(payload) else {
            continue;
        };
        let now = t0 + Duration::from_millis(step * 7);
        let pushed = sent.entry((origin, h.id)).or_default();
        pushed.push((h.index, h.offset as usize, bytes.to_vec()));
        if let Some(whole) = r.push(PeerName([2, 0, 0, 0, 0, origin]), h, bytes, now) {
            assert_eq!(whole.len(), h.total as usize);
            // The last copy of each index (earlier ones with other ranges
            // dropped the frame; same ones were duplicates) tiles the frame.
            let mut end = 0;
            for i in 0..h.count {
                let (_, offset, b) = pushed
                    .iter()
                    .rev()
                    .find(|p| p.0 == i)
                    .expect("a delivered frame has every fragment");
                assert_eq!(*offset, end, "fragment {i} does not join the one before");
                end += b.len();
                assert!(end <= whole.len());
            }
            assert_eq!(end, whole.len(), "fragments do not reach the end");
            sent.remove(&(origin, h.id));
        }
        assert!(r.pending() <= SLOTS);
        assert!(r.dropped_inconsistent <= r.dropped_incomplete);
    }
});
