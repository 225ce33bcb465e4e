//! Peers launched with different overlay MTUs: a packet that fits the
//! sender's MTU but not the receiver's is not silently dropped. The sender
//! gets ICMP "fragmentation needed" (IPv4) or "packet too big" (IPv6) with
//! the receiver's MTU, its kernel learns the path MTU, and smaller packets
//! then pass. TCP works both ways.

use netns_tests::*;

const BIG_MTU: &str = "4000";
const SMALL_MTU: u16 = 1300;

#[test]
fn oversize_packets_get_icmp_too_big() {
    let lab = Lab::new();
    let hosts = lab.switched_hosts(2);
    let (h1, h2) = (&hosts[0], &hosts[1]);
    h1.launch(&["--mtu", BIG_MTU]);
    h2.launch(&[
        "--mtu",
        &SMALL_MTU.to_string(),
        &h1.addr_for(h2).to_string(),
    ]);
    let c1 = Container::new(h1);
    let c2 = Container::new(h2);
    h1.attach(&c1, "10.8.1.1/24");
    h2.attach(&c2, "10.8.1.2/24");
    h1.attach(&c1, "fd00:88::1/64");
    h2.attach(&c2, "fd00:88::2/64");
    wait_full_mesh(&hosts, secs(30));
    wait_ping(&c1, "10.8.1.2", secs(20));

    lab.step("the fast path: only where the peer's heartbeats prove our MTU");
    // h2's 1300-byte heartbeats cannot prove h1's 4000: h1 sends on the
    // sleeve, whose receiver answers oversize frames with ICMP. h1's
    // heartbeats do prove h2's 1300: h2 sends on the fast path.
    wait_until(secs(10), "h2 on the fast path to h1", || {
        h2.status_json()
            .connections_with(h1)
            .any(|c| c.on_fast_path())
    });
    let r = h1.status_json();
    let to_h2 = r
        .connections_with(h2)
        .find(|c| c.is_established())
        .expect("h1's connection to h2");
    assert!(
        !to_h2.on_fast_path()
            && to_h2
                .data_path()
                .contains("arrive at 1300 bytes, not the 4000"),
        "h1's data path to h2: {}",
        to_h2.data_path()
    );

    lab.step("IPv4, don't fragment, 2000 bytes: fragmentation needed, mtu 1300");
    let out = c1.ns().run(&[
        "ping", "-M", "do", "-s", "2000", "-c", "2", "-W", "2", "10.8.1.2",
    ]);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains(&format!("mtu = {SMALL_MTU}")),
        "ping did not report the receiver's MTU:\n{text}"
    );
    let route = c1.ns().sh(&["ip", "route", "get", "10.8.1.2"]);
    assert!(
        route.contains(&format!("mtu {SMALL_MTU}")),
        "c1's kernel did not learn the path MTU: {route}"
    );
    lab.step("packets that fit pass; oversize ones were counted");
    let fits = (SMALL_MTU - 28).to_string();
    let out = c1.ns().run(&[
        "ping", "-M", "do", "-s", &fits, "-c", "3", "-W", "2", "10.8.1.2",
    ]);
    assert!(
        out.success(),
        "ping of {fits} bytes failed:\n{}",
        out.stdout
    );
    let r = h2.status_json();
    assert!(
        r.stat("dropped_too_big") >= 1,
        "h2 did not count the drop:\n{}",
        r.summary()
    );
    assert!(r.stat("icmp_too_big_sent") >= 1, "h2 sent no ICMP error");

    lab.step("IPv6, 2000 bytes: packet too big");
    wait_ping(&c1, "fd00:88::2", secs(20));
    let out = c1.ns().run(&[
        "ping",
        "-6",
        "-M",
        "do",
        "-s",
        "2000",
        "-c",
        "2",
        "-W",
        "2",
        "fd00:88::2",
    ]);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains(&format!("mtu = {SMALL_MTU}"))
            || text.to_lowercase().contains("packet too big"),
        "ping -6 did not report packet too big:\n{text}"
    );

    lab.step("TCP both ways");
    let server = Iperf3Server::start(&c2, "10.8.1.2");
    let r = iperf3_client(&c1, &server, 2, &[]);
    assert!(r.received_bps > 0.0, "iperf3 c1 -> c2 moved nothing");
    drop(server);
    let server = Iperf3Server::start(&c1, "10.8.1.1");
    let r = iperf3_client(&c2, &server, 2, &[]);
    assert!(r.received_bps > 0.0, "iperf3 c2 -> c1 moved nothing");
}
