//! Noise handshake messages from outside, at both roles: whatever a peer
//! sends as message 1 (to a responder) or message 2 (to an initiator) is
//! refused or accepted without a panic. The first byte picks the role, so
//! that an input costs one role's public-key operations, not both.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use weave_rs::core::crypto::noise::{Handshake, StaticKey};

fn key() -> Option<&'static StaticKey> {
    static KEY: OnceLock<Option<StaticKey>> = OnceLock::new();
    KEY.get_or_init(|| StaticKey::generate().ok()).as_ref()
}

fuzz_target!(|data: &[u8]| {
    let (Some(key), Some((&role, msg))) = (key(), data.split_first()) else {
        return;
    };
    if role & 1 == 0 {
        if let Ok(mut r) = Handshake::new(false, key, &[1; 32], b"") {
            let _ = r.read(msg);
        }
    } else if let Ok(mut i) = Handshake::new(true, key, &[1; 32], b"") {
        if i.write(&[]).is_ok() {
            let _ = i.read(msg);
        }
    }
});
