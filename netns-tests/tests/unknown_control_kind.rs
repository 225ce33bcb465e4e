//! A control frame of a kind this version does not know (a newer router's
//! gossip of a kind yet to come) is skipped and counted, and the connection that carried
//! it stays up. On c153852 the router closed it ("unknown control message
//! type"). Malformed IPAM and DNS gossip frames (kinds 4 and 5) are
//! dropped and counted, and the connection stays up too.

use std::io::Write;
use std::net::SocketAddr;

use netns_tests::wire::{self, Hello};
use netns_tests::*;

const UNKNOWN: [u8; 3] = [6, 9, 200];
const IPAM: u8 = 4;
const DNS: u8 = 5;

#[test]
fn unknown_control_kinds_are_skipped() {
    let lab = Lab::new();
    let h1 = lab.switched_host("h1");
    let v = lab.switched_host("v"); // a newer peer, faked: no router
    h1.launch(NO_ARGS);
    let to = SocketAddr::from((h1.addr_for(&v), wire::PORT));

    lab.step("a peer sends frames of unknown kinds after its hello");
    let mut s = v.ns().in_netns(move || {
        let mut s = wire::connect(to);
        let mut out = wire::handshake(wire::VERSION, wire::VERSION, &Hello::fake(0x42));
        for kind in UNKNOWN {
            out.extend(wire::control_frame(kind, b"from a newer version"));
        }
        out.extend(wire::control_frame(IPAM, b"not IPAM gossip"));
        out.extend(wire::control_frame(DNS, b"not DNS gossip"));
        out.extend(wire::control_frame(1, &[])); // a heartbeat
        s.write_all(&out).expect("send to h1");
        s
    });

    wait_until(secs(10), "h1 counts the skipped frames", || {
        let r = h1.status_json();
        r.stat("control_frames_skipped") >= UNKNOWN.len() as u64
            && r.stat("dropped_ipam_gossip") >= 1
            && r.stat("dropped_dns_gossip") >= 1
    });
    let report = h1.status_json();
    assert_eq!(
        report.stat("control_frames_skipped"),
        UNKNOWN.len() as u64,
        "{}",
        report.summary()
    );
    assert!(
        report.connections_with(&v).count() == 1,
        "the newer peer's connection is gone from h1's report:\n{}",
        report.summary()
    );
    let (_, closed) = wire::read_until_closed(&mut s, secs(1));
    assert!(
        !closed,
        "h1 closed the connection that carried unknown kinds"
    );
}
