//! Topology gossip from a peer, parsed and merged into a topology: nothing
//! panics, what parses re-encodes to the same entries, and whatever the
//! merge keeps stays within the caps and goes out again in bodies of at
//! most `gossip::MAX_BODY` bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weave_rs::core::topology::{
    PeerEntry, Topology, MAX_CONNECTIONS_PER_PEER, MAX_NICKNAME_LEN, MAX_PEERS,
    MAX_VERSION_AHEAD_MS,
};
use weave_rs::core::wire::gossip;
use weave_rs::core::PeerName;

const NOW_MS: u64 = 1_700_000_000_000;

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
    let merged = t.merge(entries, NOW_MS);
    assert!(t.len() <= MAX_PEERS);
    for e in t.entries() {
        assert!(e.name != PeerName::NONE);
        assert!(e.nickname.len() <= MAX_NICKNAME_LEN);
        assert!(e.connections.len() <= MAX_CONNECTIONS_PER_PEER);
        assert!(e.version <= NOW_MS + MAX_VERSION_AHEAD_MS + 1);
    }
    for e in &merged.changed {
        assert_eq!(t.get(&e.name), Some(e));
    }
    let bodies = gossip::emit_split(&t.entries_vec(), gossip::MAX_BODY).unwrap();
    assert!(bodies.iter().all(|b| b.len() <= gossip::MAX_BODY));
    t.gc();
    let _ = weave_rs::core::routes::Routes::compute(&t);
});
