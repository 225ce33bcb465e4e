//! Topology gossip from a peer, parsed and merged into a topology.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weave_rs::core::topology::{PeerEntry, Topology};
use weave_rs::core::wire::gossip;
use weave_rs::core::PeerName;

fuzz_target!(|data: &[u8]| {
    let Ok(entries) = gossip::parse(data) else {
        return;
    };
    let bytes = gossip::emit(&entries).unwrap();
    assert_eq!(gossip::parse(&bytes).as_ref(), Ok(&entries));
    let mut t = Topology::new(PeerEntry {
        name: PeerName([2, 0, 0, 0, 0, 1]),
        nickname: "fuzz".into(),
        uid: 1,
        version: 1,
        connections: vec![],
    });
    let before = t.len();
    if t.merge(entries).is_err() {
        assert_eq!(t.len(), before);
    }
    t.gc();
    let _ = weave_rs::core::routes::Routes::compute(&t);
});
