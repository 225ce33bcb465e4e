//! Encrypted-connection input from outside: sealed datagram headers and
//! bodies through the receive keys, TCP record headers, confirmations, and
//! Noise handshake messages at both roles.
#![no_main]
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use weave_rs::core::crypto::keys::Receiver;
use weave_rs::core::crypto::noise::{Handshake, StaticKey};
use weave_rs::core::wire::sealed::{self, Confirm, DatagramHeader};

fuzz_target!(|data: &[u8]| {
    let mut d = data.to_vec();
    if let Ok(h) = DatagramHeader::parse(&d) {
        let mut rx = Receiver::new(zeroize::Zeroizing::new([9u8; 32]));
        let (aad, body) = d.split_at_mut(sealed::HEADER_LEN);
        // A random tag never verifies.
        assert!(rx
            .open(Instant::now(), (h.epoch, h.counter), aad, body)
            .is_err());
    }
    let _ = Confirm::parse(data);
    if let Some(h) = data.first_chunk::<{ sealed::RECORD_HEADER_LEN }>() {
        let _ = sealed::record_header(*h);
    }
    let Ok(key) = StaticKey::generate() else {
        return;
    };
    if let Ok(mut r) = Handshake::new(false, &key, &[1; 32], b"") {
        let _ = r.read(data);
    }
    if let Ok(mut i) = Handshake::new(true, &key, &[1; 32], b"") {
        if i.write(&[]).is_ok() {
            let _ = i.read(data);
        }
    }
});
