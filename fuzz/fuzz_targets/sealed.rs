//! Encrypted-connection input from outside, short of the Noise handshake
//! (fuzzed apart, in `noise`, as each of its inputs costs public-key
//! operations): sealed datagram headers and bodies through the receive
//! keys, a resync to any epoch, TCP record headers, confirmations.
#![no_main]
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use weave_rs::core::crypto::keys::Receiver;
use weave_rs::core::wire::sealed::{self, Confirm, DatagramHeader};

fuzz_target!(|data: &[u8]| {
    let mut d = data.to_vec();
    if let Ok(h) = DatagramHeader::parse(&d) {
        let now = Instant::now();
        let mut rx = Receiver::new(zeroize::Zeroizing::new([9u8; 32]));
        // Whatever epoch a peer claims, following it is bounded.
        let _ = rx.resync(h.session, now, 64);
        let (aad, body) = d.split_at_mut(sealed::HEADER_LEN);
        // A random tag never verifies.
        assert!(rx.open(now, (h.epoch, h.counter), aad, body).is_err());
    }
    let _ = Confirm::parse(data);
    if let Some(h) = data.first_chunk::<{ sealed::RECORD_HEADER_LEN }>() {
        let _ = sealed::record_header(*h);
    }
});
