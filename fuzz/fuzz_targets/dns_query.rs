//! A DNS query from a container, answered from a small zone over UDP and
//! TCP. Nothing panics; a reply is a response to the query (same ID, QR
//! set), never larger than the transport allows; a query that does not
//! parse is dropped, never answered.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weave_rs::core::dns::answer::{answer, servfail, Outcome, Transport, MAX_UDP_PAYLOAD};
use weave_rs::core::dns::zone::Zone;

fuzz_target!(|data: &[u8]| {
    let zone = Zone::build(
        "weave.local.",
        1,
        1,
        [
            ("db.weave.local.", [10, 32, 0, 1].into()),
            ("web.weave.local.", [10, 32, 0, 2].into()),
            ("web.weave.local.", "fd00::2".parse().unwrap()),
        ],
    );
    for t in [Transport::Udp, Transport::Tcp] {
        let rotation = data.first().copied().unwrap_or(0) as usize;
        match answer(data, &zone, rotation, t) {
            Ok(Outcome::Reply(r)) => {
                assert!(r.len() >= 12);
                assert_eq!(r[..2], data[..2], "same ID");
                assert!(r[2] & 0x80 != 0, "a response");
                if t == Transport::Udp {
                    assert!(r.len() <= usize::from(MAX_UDP_PAYLOAD));
                }
            }
            Ok(Outcome::Forward) => {
                if let Some(r) = servfail(data, t) {
                    assert_eq!(r[..2], data[..2]);
                }
            }
            Err(_) => {}
        }
    }
});
