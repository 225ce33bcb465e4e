//! A frame arriving on the fast path's heartbeat socket (anyone on the
//! underlay can send one). Nothing panics; what parses re-encodes to a
//! frame that parses the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weave_rs::core::wire::fastpath::{payload_len, Heartbeat};

fuzz_target!(|data: &[u8]| {
    if let Some(hb) = Heartbeat::parse(data) {
        let again = hb.frame([2; 6], [4; 6], payload_len(data.len()));
        assert_eq!(Heartbeat::parse(&again), Some(hb));
    }
});
