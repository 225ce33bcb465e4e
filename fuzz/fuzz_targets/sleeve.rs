//! A UDP datagram from a neighbour, through the forwarding core.
#![no_main]
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use weave_rs::core::router::Router;
use weave_rs::core::routes::Routes;
use weave_rs::core::topology::{PeerEntry, Topology};
use weave_rs::core::PeerName;

fuzz_target!(|data: &[u8]| {
    let me = PeerName([2, 0, 0, 0, 0, 1]);
    let t = Topology::new(PeerEntry {
        name: me,
        nickname: String::new(),
        uid: 1,
        version: 1,
        connections: vec![],
    });
    let mut router = Router::new(me, Routes::compute(&t));
    let mut d = data.to_vec();
    let _ = router.datagram(&mut d, Instant::now());
    let _ = router.frame_from_tap(data, Instant::now());
});
