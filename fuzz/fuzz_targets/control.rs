//! Control frames after the handshake: length prefix, kind, body, and what
//! the router reads from the bodies of heartbeats (a key epoch) and closes
//! (a reason it logs and shows). Gossip and IPAM bodies have targets of
//! their own.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weave_rs::core::text::sanitize;
use weave_rs::core::wire::control::{self, Kind};

fuzz_target!(|data: &[u8]| {
    if let Some(prefix) = data.first_chunk::<{ control::LEN_PREFIX }>() {
        let _ = control::frame_len(*prefix);
    }
    if let Ok((kind, body)) = control::parse(data) {
        let again = control::emit(kind, body);
        assert_eq!(&again[control::LEN_PREFIX..], data);
        match kind {
            Kind::Heartbeat => {
                if let Some(e) = control::heartbeat_epoch(body) {
                    let hb = control::heartbeat(Some(e));
                    assert_eq!(
                        control::heartbeat_epoch(&hb[control::LEN_PREFIX + 1..]),
                        Some(e)
                    );
                }
            }
            Kind::Close => {
                let shown = sanitize(&String::from_utf8_lossy(body), 200);
                assert!(shown.chars().count() <= 200 && !shown.chars().any(char::is_control));
            }
            // Their bodies have targets of their own (gossip, ipam).
            Kind::Gossip | Kind::Ipam | Kind::Dns => {}
        }
    }
});
