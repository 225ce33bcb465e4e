//! Hostile input against a router with a password, from a namespace on the
//! underlay with no router ("x"): sealed-looking datagrams with random
//! sessions, plain datagrams that a password forbids, a peer that announces
//! encryption but cannot finish the Noise handshake, broken records. Each is
//! counted or refused with a reason, the router keeps running and the
//! encrypted containers keep talking.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use netns_tests::wire::{self, connect, read_until_closed, Hello, Rng};
use netns_tests::*;

const PASSWORD: &str = "hostile-test-password";
const FEATURE_ENCRYPTION: u32 = 1;

/// Reads until the router closes (true) or 10 s pass (false).
fn closed_by_router(s: &mut TcpStream) -> (Vec<u8>, bool) {
    read_until_closed(s, Duration::from_secs(10))
}

fn record(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut r = vec![kind];
    r.extend_from_slice(&(body.len() as u16).to_be_bytes());
    r.extend_from_slice(body);
    r
}

fn encrypted_hello(last: u8) -> Vec<u8> {
    let mut h = Hello::fake(last);
    h.features = FEATURE_ENCRYPTION;
    wire::handshake(wire::VERSION, wire::VERSION, &h)
}

/// Returns the TCP attacks' outcomes: (what, router closed it).
fn tcp_attacks(to: SocketAddr, seed: u64) -> Vec<(String, bool)> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    // A peer that announces encryption but does not speak Noise: a random
    // first message (an ephemeral key and a tag that cannot verify).
    for i in 0..3u8 {
        let mut s = connect(to);
        let _ = s.write_all(&encrypted_hello(0x40 + i));
        let _ = s.write_all(&record(1, &rng.bytes(48)));
        let (got, closed) = closed_by_router(&mut s);
        let refusal = String::from_utf8_lossy(&got).contains("authentication failed");
        out.push((
            format!("random Noise message 1 (refusal sent: {refusal})"),
            closed,
        ));
    }
    // Unknown record kind, a sealed record during the handshake, a record
    // claiming 64 KiB then EOF, random bytes after the hello.
    let bad: [(&str, Vec<u8>); 4] = [
        ("record kind 9", record(9, &rng.bytes(10))),
        ("sealed record in the handshake", record(3, &rng.bytes(40))),
        ("truncated 64 KiB record", {
            let mut r = vec![1, 0xff, 0xff];
            r.extend_from_slice(&rng.bytes(100));
            r
        }),
        ("random bytes", rng.bytes(3000)),
    ];
    for (i, (what, bytes)) in bad.into_iter().enumerate() {
        let mut s = connect(to);
        let _ = s.write_all(&encrypted_hello(0x50 + i as u8));
        let _ = s.write_all(&bytes);
        let _ = s.shutdown(Shutdown::Write);
        out.push((what.to_string(), closed_by_router(&mut s).1));
    }
    out
}

fn udp_attacks(to: SocketAddr, seed: u64, router: [u8; 6]) {
    let mut rng = Rng::new(seed);
    let sock = UdpSocket::bind("0.0.0.0:0").expect("udp bind");
    for _ in 0..300 {
        // Sealed-looking: magic, random epoch/session/counter, random body.
        let n = 16 + 16 + rng.below(1400) as usize;
        let mut d = rng.bytes(n);
        d[0] = 0xE8;
        let _ = sock.send_to(&d, to);
    }
    for i in 0..100u8 {
        // Plain: a heartbeat in a stranger's name, and frames to the router.
        let kind = if i % 2 == 0 { 2 } else { 1 };
        let mut d = wire::sleeve_header(kind, 0, 0, [0x02, 0, 0, 0, 0x77, i], router);
        let n = 8 + rng.below(100) as usize;
        d.extend_from_slice(&rng.bytes(n));
        let _ = sock.send_to(&d, to);
    }
}

#[test]
fn hostile_input_with_password() {
    let lab = Lab::new();
    let hosts = lab.switched_hosts(2);
    let (h1, h2) = (&hosts[0], &hosts[1]);
    let x = lab.switched_host("x");

    let name = h1.launch(&["--password", PASSWORD]);
    h2.launch(&["--password", PASSWORD, &h1.addr_for(h2).to_string()]);
    let (c1, c2) = connected_containers(&hosts, "10.6.1");
    let pids = h1.router_pids();
    let before = h1.status_json();

    let target = SocketAddr::from((h1.addr_for(&x), wire::PORT));
    let seed = Rng::from_time().seed();
    eprintln!("seed: {seed}");

    lab.step("UDP: sealed-looking and plain datagrams");
    let router: [u8; 6] = {
        let mut b = [0u8; 6];
        for (i, p) in name.trim().split(':').enumerate().take(6) {
            b[i] = u8::from_str_radix(p, 16).expect("peer name");
        }
        b
    };
    x.ns().in_netns(move || udp_attacks(target, seed, router));
    wait_until(secs(10), "h1 counts the UDP attacks", || {
        let r = h1.status_json();
        r.stat("dropped_unknown_session") >= before.stat("dropped_unknown_session") + 250
            && r.stat("dropped_unencrypted") >= before.stat("dropped_unencrypted") + 80
    });

    lab.step("TCP: failed handshakes and broken records");
    let results = x.ns().in_netns(move || tcp_attacks(target, seed));
    for (what, closed) in &results {
        assert!(closed, "router did not close the connection after: {what}");
    }
    assert!(
        results
            .iter()
            .any(|(w, _)| w.contains("refusal sent: true")),
        "no refusal record with the reason reached the failed handshakes: {results:?}"
    );
    let x_ip = x.ip().to_string();
    wait_until(
        secs(10),
        "h1 lists the stranger's connection as refused for \"authentication failed\"",
        || {
            !h1.status_json()
                .entries_mentioning(&[&x_ip, "authentication failed"])
                .is_empty()
        },
    );

    lab.step("the router survived and the containers still talk");
    let alive = h1.router_pids();
    assert!(
        pids.iter().all(|p| alive.contains(p)),
        "router process on h1 died (before {pids:?}, now {alive:?})"
    );
    assert_pings(&c1, "10.6.1.2", 5);
    assert_pings(&c2, "10.6.1.1", 5);
    let r = h1.status_json();
    assert!(r.established_to(h2), "h1 lost h2:\n{}", r.summary());
    assert_eq!(
        r.stat("dropped_auth_failed"),
        before.stat("dropped_auth_failed"),
        "random sessions must not reach a key (counted as unknown session)"
    );
}
