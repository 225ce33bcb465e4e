//! DNS gossip (control kind 5) from a peer: parsed, re-encoded, and merged
//! into a peer's records, with the sender's incarnation known, unknown or
//! another. Nothing panics, what parses re-encodes to the same records,
//! merging again changes nothing, caps hold, and a record about us that we
//! never made is answered with a higher version of our own.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weave_rs::core::dns::records::{Records, MAX_ORIGINS, MAX_PER_ORIGIN};
use weave_rs::core::wire::dns as wire;
use weave_rs::core::PeerName;

const ME: PeerName = PeerName([2, 0, 0, 0, 0, 1]);
const MY_UID: u64 = 77;

fuzz_target!(|data: &[u8]| {
    let Ok(recs) = wire::parse(data) else {
        return;
    };
    let again: Vec<_> = wire::emit(&recs)
        .iter()
        .flat_map(|m| {
            assert!(m.len() <= wire::MAX_BODY);
            wire::parse(m).expect("what we emit parses")
        })
        .collect();
    assert_eq!(again.len(), recs.len());

    for current in [None, Some(0u64), Some(1)] {
        let mut r = Records::new(ME, MY_UID);
        r.add(
            weave_rs::core::dns::records::Key {
                name: "db.weave.local.".into(),
                addr: [10, 0, 0, 1].into(),
            },
            "",
            0,
        )
        .unwrap();
        let first = r.merge(recs.clone(), |_| current, 1);
        for re in &first.reissued {
            assert_eq!((re.origin, re.uid), (ME, MY_UID));
            let claimed = recs
                .iter()
                .filter(|x| x.origin == ME && x.uid == MY_UID && x.key == re.key)
                .map(|x| x.version)
                .max()
                .unwrap();
            assert!(re.version > claimed, "our answer outranks the claim");
        }
        let before = r.all();
        let second = r.merge(recs.clone(), |_| current, 2);
        assert!(second.new.is_empty(), "merging again adds nothing");
        assert_eq!(r.all().len(), before.len());
        assert!(r.len() <= MAX_ORIGINS * MAX_PER_ORIGIN);
        r.expire(u64::MAX);
        r.retain(|_, u| Some(u) == current);
    }
});
