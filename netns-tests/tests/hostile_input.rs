//! Hostile input on TCP and UDP 6783, sent from another namespace on the
//! underlay (a host "x" with no router): random bytes, truncated handshakes,
//! oversized length prefixes, broken datagrams. The router keeps running and
//! the containers keep talking. A fake peer speaking protocol version 99 is
//! refused both when it dials the router and when the router dials it, and
//! the reason ("protocol version") is visible.

use std::io::{ErrorKind, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netns_tests::wire::{self, connect, read_until_closed, Hello, Rng};
use netns_tests::*;

const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Writes, ignoring errors (the router may close first: that is fine).
fn send(s: &mut TcpStream, bytes: &[u8]) {
    let _ = s.write_all(bytes);
}

#[track_caller]
fn expect_closed(s: &mut TcpStream, what: &str) {
    let (_, closed) = read_until_closed(s, CLOSE_WAIT);
    assert!(
        closed,
        "router did not close the connection within {CLOSE_WAIT:?} after {what}"
    );
}

/// TCP abuse. Returns connections left hanging mid-handshake (kept open
/// while the router is checked).
fn tcp_attacks(to: SocketAddr, seed: u64) -> Vec<TcpStream> {
    let mut rng = Rng::new(seed);
    let mut held = Vec::new();

    // Random bytes, at least a header's worth: the magic is wrong, so the
    // router must close without waiting for us.
    for _ in 0..20 {
        let mut s = connect(to);
        let n = 12 + rng.below(4096) as usize;
        let mut junk = rng.bytes(n);
        junk[0] = b'X'; // never "weave-rs" by chance
        send(&mut s, &junk);
        expect_closed(&mut s, "random bytes");
    }
    // A few random bytes, then our side closes.
    for _ in 0..10 {
        let mut s = connect(to);
        let n = 1 + rng.below(11) as usize;
        send(&mut s, &rng.bytes(n));
        let _ = s.shutdown(Shutdown::Write);
        expect_closed(&mut s, "a few random bytes and EOF");
    }
    // A long random stream.
    {
        let mut s = connect(to);
        for _ in 0..64 {
            if s.write_all(&rng.bytes(16 * 1024)).is_err() {
                break;
            }
        }
        let _ = s.shutdown(Shutdown::Write);
        expect_closed(&mut s, "1 MiB of random bytes");
    }

    // Truncated handshakes, then EOF.
    let valid = wire::handshake(wire::VERSION, wire::VERSION, &Hello::fake(1));
    for cut in [1, 7, 8, 9, 10, 11, 12, 13, 18, valid.len() - 1] {
        let mut s = connect(to);
        send(&mut s, &valid[..cut]);
        let _ = s.shutdown(Shutdown::Write);
        expect_closed(&mut s, &format!("a handshake cut at {cut} bytes and EOF"));
    }
    // Truncated handshakes left hanging (the router must not wait on them).
    for cut in [0, 5, 12, valid.len() - 1] {
        let mut s = connect(to);
        send(&mut s, &valid[..cut]);
        held.push(s);
    }
    // Wrong magic with a right-looking header.
    {
        let mut bad = valid.clone();
        bad[..8].copy_from_slice(b"weave-rz");
        let mut s = connect(to);
        send(&mut s, &bad);
        expect_closed(&mut s, "a handshake with the wrong magic");
    }

    // Oversized handshake body length, only part of it sent, then EOF.
    {
        let mut s = connect(to);
        send(&mut s, &wire::handshake_raw(1, 1, 0xffff, &rng.bytes(100)));
        let _ = s.shutdown(Shutdown::Write);
        expect_closed(&mut s, "a handshake claiming a 65535-byte body, then EOF");
    }
    // A version range that ends below it starts.
    {
        let mut s = connect(to);
        send(&mut s, &wire::handshake(5, 1, &Hello::fake(2)));
        expect_closed(&mut s, "a handshake with min_version > max_version");
    }

    // Complete v1 handshakes, then control frames with lying lengths: the
    // router must close at once, not wait for (or allocate) the body.
    for (i, len) in [u32::MAX, wire::MAX_FRAME + 1, 0].into_iter().enumerate() {
        let mut s = connect(to);
        send(
            &mut s,
            &wire::handshake(wire::VERSION, wire::VERSION, &Hello::fake(10 + i as u8)),
        );
        let mut frame = len.to_be_bytes().to_vec();
        frame.push(2); // gossip
        frame.extend_from_slice(&rng.bytes(64));
        send(&mut s, &frame);
        expect_closed(
            &mut s,
            &format!("a control frame with length prefix {len:#x}"),
        );
    }
    // Garbage inside well-framed control messages.
    for kind in [0u8, 2, 3, 200] {
        let mut s = connect(to);
        send(
            &mut s,
            &wire::handshake(wire::VERSION, wire::VERSION, &Hello::fake(20 + kind)),
        );
        let n = rng.below(300) as usize;
        send(&mut s, &wire::control_frame(kind, &rng.bytes(n)));
        let _ = s.shutdown(Shutdown::Write);
        expect_closed(
            &mut s,
            &format!("a garbage control frame of type {kind} and EOF"),
        );
    }
    held
}

/// UDP abuse: random, truncated, oversized and inconsistent datagrams.
fn udp_attacks(to: SocketAddr, seed: u64, router: [u8; 6]) {
    let mut rng = Rng::new(seed ^ 0x5555);
    let sock = UdpSocket::bind("0.0.0.0:0").expect("udp bind");
    let tx = |b: &[u8]| {
        let _ = sock.send_to(b, to);
    };
    let fake = [0x02, 0xfa, 0x4e, 0x00, 0x00, 0x77];
    let bcast = [0u8; 6];

    for _ in 0..500 {
        let n = rng.below(1500) as usize;
        tx(&rng.bytes(n));
    }
    // Random bodies behind a valid magic.
    for _ in 0..500 {
        let n = 1 + rng.below(1500) as usize;
        let mut b = rng.bytes(n);
        b[0] = wire::SLEEVE_MAGIC;
        if n > 1 {
            b[1] = 1 + (rng.below(2) as u8);
        }
        tx(&b);
    }
    // Truncated headers.
    let header = wire::sleeve_header(1, 0, 0, fake, router);
    for cut in 0..header.len() {
        tx(&header[..cut]);
    }
    // Frame length fields that lie.
    for len in [0u16, 1, 13, 14, 1500, 0xffff] {
        let mut b = wire::sleeve_header(1, 0, 0, fake, router);
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(&rng.bytes(10));
        tx(&b);
    }
    // Heartbeats too short and too long.
    for extra in [0usize, 3, 7, 9, 1000] {
        let mut b = wire::sleeve_header(2, 0, 0, fake, router);
        b.extend_from_slice(&rng.bytes(extra));
        tx(&b);
    }
    // Unknown kinds, huge hop counts, broadcast from an unknown peer.
    for (kind, hops, dst) in [
        (0u8, 0u8, router),
        (3, 0, router),
        (255, 0, router),
        (1, 255, bcast),
        (1, 0, bcast),
    ] {
        let mut b = wire::sleeve_header(kind, hops, 0xff, fake, dst);
        let frame = rng.bytes(60);
        b.extend_from_slice(&(frame.len() as u16).to_be_bytes());
        b.extend_from_slice(&frame);
        tx(&b);
    }
    // Oversized datagrams (fragmented on the way, reassembled by the kernel).
    let mut big = wire::sleeve_header(1, 0, 0, fake, router);
    while big.len() + 1502 < 65_000 {
        big.extend_from_slice(&1500u16.to_be_bytes());
        big.extend_from_slice(&rng.bytes(1500));
    }
    tx(&big);
    tx(&rng.bytes(65_507));
}

fn name_bytes(name: &str) -> [u8; 6] {
    let mut b = [0u8; 6];
    for (i, p) in name.split(':').take(6).enumerate() {
        b[i] = u8::from_str_radix(p, 16).unwrap_or(0);
    }
    b
}

/// Does h's `status connections` (a line) or report (an entry) give the
/// reason "protocol version" for a connection with `addr` (an IP, or
/// "ip:port")?
fn reason_visible(h: &Host, addr: &str) -> bool {
    let status = h.weave_ok(&["status", "connections"]).to_ascii_lowercase();
    let in_status = status
        .lines()
        .any(|l| l.contains(addr) && l.contains("protocol version"));
    in_status
        || !h
            .status_json()
            .entries_mentioning(&[addr, "protocol version"])
            .is_empty()
}

#[test]
fn hostile_input() {
    let lab = Lab::new();
    let hosts = lab.switched_hosts(2);
    let (h1, h2) = (&hosts[0], &hosts[1]);
    let x = lab.switched_host("x"); // the attacker: no router
    let v = lab.switched_host("v"); // the version-99 fake peer: no router

    let h1_name = h1.launch(NO_ARGS);
    h2.launch(&[h1.addr_for(h2).to_string()]);
    let (c1, c2) = connected_containers(&hosts, "10.2.1");
    let pids = h1.router_pids();

    let target = SocketAddr::from((h1.addr_for(&x), wire::PORT));
    let seed = Rng::from_time().seed();
    eprintln!("hostile input seed: {seed}");

    lab.step("TCP attacks");
    let held = x.ns().in_netns(move || tcp_attacks(target, seed));
    lab.step("UDP attacks");
    let router = name_bytes(&h1_name);
    x.ns().in_netns(move || udp_attacks(target, seed, router));

    lab.step("check the router survived");
    // The router survived, with stalled handshakes still open.
    let alive = h1.router_pids();
    assert!(
        pids.iter().all(|p| alive.contains(p)),
        "router process on h1 died (before {pids:?}, now {alive:?})"
    );
    wait_ping(&c1, "10.2.1.2", secs(15));
    assert_pings(&c1, "10.2.1.2", 5);
    assert_pings(&c2, "10.2.1.1", 5);
    assert!(
        h1.status_json().established_to(h2),
        "h1 lost h2 under hostile input"
    );
    drop(held);

    lab.step("a version-99 peer dials h1");
    let v_target = SocketAddr::from((h1.addr_for(&v), wire::PORT));
    let hello99 = wire::handshake(99, 99, &Hello::fake(0x99));
    let h = hello99.clone();
    let (got, closed) = v.ns().in_netns(move || {
        let mut s = connect(v_target);
        send(&mut s, &h);
        read_until_closed(&mut s, CLOSE_WAIT)
    });
    assert!(
        closed,
        "router kept a version-99 peer's connection open (read {} bytes)",
        got.len()
    );
    let v_ip: Ipv4Addr = v.ip();
    wait_until(
        secs(10),
        "h1's `status connections` or report gives the reason (\"protocol version\") for the \
         version-99 peer that dialled it",
        || reason_visible(h1, &v_ip.to_string()),
    );

    lab.step("h1 dials a version-99 peer");
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel();
    let (conn_tx, conn_rx) = mpsc::channel::<(SocketAddr, Vec<u8>, bool)>();
    let stop2 = stop.clone();
    let listener = v.ns().spawn(move || {
        let l = TcpListener::bind((v_ip, wire::PORT)).expect("fake peer bind");
        l.set_nonblocking(true).unwrap();
        ready_tx.send(()).unwrap();
        while !stop2.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((mut s, from)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
                    send(&mut s, &hello99);
                    let (got, closed) = read_until_closed(&mut s, CLOSE_WAIT);
                    let _ = conn_tx.send((from, got, closed));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("fake peer accept: {e}"),
            }
        }
    });
    ready_rx
        .recv_timeout(secs(10))
        .expect("fake peer listening");
    h1.weave_ok(&["connect", &v_ip.to_string()]);

    let h1_ips = h1.ips();
    let deadline = Instant::now() + secs(20);
    let (got, closed) = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match conn_rx.recv_timeout(left) {
            Ok((from, got, closed)) => match from.ip() {
                std::net::IpAddr::V4(ip) if h1_ips.contains(&ip) => break (got, closed),
                _ => continue, // another router found the fake peer by gossip
            },
            Err(_) => panic!("h1 did not dial the fake peer at {v_ip} within 20 s"),
        }
    };
    assert!(
        got.starts_with(wire::MAGIC),
        "h1 did not open with a weave-rs handshake: {:02x?}",
        &got[..got.len().min(32)]
    );
    assert!(closed, "h1 kept its connection to a version-99 peer open");
    wait_until(
        secs(15),
        "h1's `status connections` or report gives the reason (\"protocol version\") for its \
         connection to the version-99 peer",
        || reason_visible(h1, &format!("{v_ip}:{}", wire::PORT)),
    );
    let r = h1.status_json();
    assert!(
        !r.connections
            .iter()
            .any(|c| c.is_established() && c.ip() == Some(v_ip.into())),
        "h1 reports an established connection to the version-99 peer:\n{}",
        r.summary()
    );
    stop.store(true, Ordering::Relaxed);
    listener.join().expect("fake peer thread");

    lab.step("final check");
    assert!(h1.router_running(), "h1's router died");
    assert_pings(&c1, "10.2.1.2", 5);
}
