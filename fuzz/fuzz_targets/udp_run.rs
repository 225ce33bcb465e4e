//! Frames from a peer, as a hostile neighbour could send them, through the
//! joiner of UDP runs for the TAP: nothing panics, and a joined run is the
//! joined frames' payloads, in order, behind a header the kernel accepts,
//! every datagram but the last of the announced size.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weave_rs::core::wire::udp_run::{Taken, UdpRun, HEADERS, MAX_DATAGRAMS};
use weave_rs::core::wire::vnet::{self, VnetHdr};

fuzz_target!(|data: &[u8]| {
    let mut run = UdpRun::default();
    let mut joined: Vec<Vec<u8>> = Vec::new();
    let mut rest = data;
    // Each record: length u16be, then a virtio-net header and the frame.
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let len = usize::from(u16::from_be_bytes(*len)).min(tail.len());
        let (record, tail) = tail.split_at(len);
        rest = tail;
        let Ok(hdr) = VnetHdr::parse(record) else {
            continue;
        };
        let frame = &record[vnet::LEN..];
        if run.join(hdr, frame) {
            joined.push(frame.to_vec());
            continue;
        }
        check(&mut run, &joined);
        joined.clear();
        if run.join(hdr, frame) {
            joined.push(frame.to_vec());
        }
    }
    check(&mut run, &joined);
});

fn check(run: &mut UdpRun, joined: &[Vec<u8>]) {
    match run.take() {
        Taken::Nothing => assert!(joined.is_empty()),
        Taken::Single(w) => {
            assert_eq!(joined.len(), 1);
            assert_eq!(&w[vnet::LEN..], &joined[0][..]);
        }
        Taken::Joined(w, count) => {
            assert!((2..=MAX_DATAGRAMS).contains(&joined.len()));
            assert_eq!(count, joined.len());
            let hdr = VnetHdr::parse(w).unwrap();
            hdr.validate(w.len() - vnet::LEN).unwrap();
            let seg = hdr.gso_size;
            assert!(w.len() - vnet::LEN - 14 <= 65_535);
            let payloads: Vec<&[u8]> = joined.iter().map(|f| &f[HEADERS..]).collect();
            let (last, rest) = payloads.split_last().unwrap();
            assert!(rest.iter().all(|p| p.len() == usize::from(seg)));
            assert!(last.len() <= usize::from(seg));
            assert_eq!(&w[vnet::LEN + HEADERS..], payloads.concat().as_slice());
            assert_eq!(&w[vnet::LEN..vnet::LEN + 14], &joined[0][..14]);
        }
    }
}
