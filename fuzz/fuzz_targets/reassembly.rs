//! Fragments of offloaded frames, as a hostile neighbour could send them:
//! any mix of ids, offsets, counts and lengths, through the parser and the
//! reassembler. Nothing panics, memory stays bounded, and whatever comes out
//! complete has the length its fragments announced.
#![no_main]
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
        if let Some(whole) = r.push(PeerName([2, 0, 0, 0, 0, origin]), h, bytes, now) {
            assert_eq!(whole.len(), h.total as usize);
        }
        assert!(r.pending() <= SLOTS);
    }
});
