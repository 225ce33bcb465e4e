//! A UDP datagram from a neighbour, through the forwarding core.
//!
//! One router takes every input, as a running router takes every datagram:
//! building one per input (its MAC table is preallocated) cost most of the
//! time. What inputs leave behind is bounded state, MACs learned.
#![no_main]
use std::cell::RefCell;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use weave_rs::core::router::Router;
use weave_rs::core::routes::Routes;
use weave_rs::core::topology::{PeerEntry, Topology};
use weave_rs::core::PeerName;

fn router() -> Router {
    let me = PeerName([2, 0, 0, 0, 0, 1]);
    let t = Topology::new(PeerEntry {
        name: me,
        nickname: String::new(),
        uid: 1,
        version: 1,
        connections: vec![],
    });
    Router::new(me, Routes::compute(&t))
}

thread_local! {
    static ROUTER: RefCell<Router> = RefCell::new(router());
}

fuzz_target!(|data: &[u8]| {
    ROUTER.with_borrow_mut(|router| {
        let mut d = data.to_vec();
        let _ = router.datagram(&mut d, Instant::now());
        let _ = router.frame_from_tap(data, Instant::now());
    });
});
