//! The kernel fast path (issue 15): VXLAN between hosts, chosen per
//! connection by heartbeats, with the sleeve as fallback and the reason
//! shown in `status`.

use std::time::{Duration, Instant};

use netns_tests::*;

/// The data path `h` reports for its connection with `other`.
fn data_path(h: &Host, other: &Host) -> (bool, String) {
    let r = h.status_json();
    let found = r
        .connections_with(other)
        .find(|c| c.is_established())
        .map(|c| (c.on_fast_path(), c.data_path().to_string()));
    found.unwrap_or((false, "no established connection".into()))
}

/// Waits until `h`'s connection with `other` is on the fast path (or, with
/// `fast` false, on the sleeve); returns how long that took.
#[track_caller]
fn wait_path(h: &Host, other: &Host, fast: bool, timeout: Duration) -> Duration {
    let start = Instant::now();
    let mut last = String::new();
    let ok = try_wait_until(timeout, || {
        let (on_fast, text) = data_path(h, other);
        last = text;
        on_fast == fast
    });
    assert!(
        ok,
        "{} to {}: not on the {} after {timeout:?}; last: {last}",
        h.name(),
        other.name(),
        if fast { "fast path" } else { "sleeve" }
    );
    start.elapsed()
}

/// Two meshed hosts with a container each at `<net>.1` and `<net>.2`,
/// their connection on the fast path both ways.
fn fast_pair(lab: &Lab, net: &str) -> (Vec<Host>, Container, Container) {
    let hosts = lab.switched_hosts(2);
    launch_mesh(&hosts);
    let (c1, c2) = connected_containers(&hosts, net);
    wait_path(&hosts[0], &hosts[1], true, secs(10));
    wait_path(&hosts[1], &hosts[0], true, secs(10));
    (hosts, c1, c2)
}

/// Packets the router handled: what the sleeve costs.
fn router_packets(h: &Host) -> u64 {
    let r = h.status_json();
    r.stat("frames_from_tap") + r.stat("datagrams_received")
}

#[test]
fn two_hosts_carry_traffic_on_the_fast_path() {
    let lab = Lab::new();
    lab.step("both ends confirm the fast path and say so");
    let (hosts, c1, c2) = fast_pair(&lab, "10.21.1");
    let (h1, h2) = (&hosts[0], &hosts[1]);
    let (_, text) = data_path(h1, h2);
    assert!(text.starts_with("fast path (mtu 1376)"), "{text}");
    let summary = h1.weave_ok(&["status"]);
    assert!(
        summary.contains("FastPath: weave-vxlan") && summary.contains("(1 connections on it)"),
        "{summary}"
    );
    let conns = h1.weave_ok(&["status", "connections"]);
    assert!(conns.contains("fast path (mtu 1376)"), "{conns}");

    lab.step("iperf3: VXLAN on the underlay, the routers hardly involved");
    assert_pings(&c1, "10.21.1.2", 3);
    let server = Iperf3Server::start(&c2, "10.21.1.2");
    let pcap_path = lab.dir().join("fast.pcap");
    let capture = Capture::start(h1.ns(), &h1.ifname_for(h2), "udp port 6784", &pcap_path);
    let before = (router_packets(h1), router_packets(h2));
    let result = iperf3_client(&c1, &server, 3, &[]);
    let after = (router_packets(h1), router_packets(h2));
    let pcap = capture.stop();
    let vxlan = pcap.udp().len();
    let segments = result.received_bps * 3.0 / 8.0 / 1376.0;
    assert!(
        result.received_bps > 100e6,
        "only {:.0} Mbit/s",
        result.received_bps / 1e6
    );
    let entries = || {
        [h1, h2]
            .map(|h| {
                let r = h.status_json();
                format!(
                    "{}: steered {}, unsteered {}, failures {}\n{}",
                    h.name(),
                    r.stat("fastpath_macs_steered"),
                    r.stat("fastpath_macs_unsteered"),
                    r.stat("fastpath_entry_failures"),
                    h.ns().sh(&["bridge", "fdb", "show", "dev", "weave-vxlan"])
                )
            })
            .join("\n")
    };
    assert!(
        vxlan > 1000,
        "{vxlan} VXLAN packets on the underlay for {segments:.0} segments\n{}",
        entries()
    );
    let handled = (after.0 - before.0) + (after.1 - before.1);
    assert!(
        (handled as f64) < segments / 100.0,
        "the routers handled {handled} packets of about {segments:.0}\n{}",
        entries()
    );
    eprintln!(
        "fast path: {:.2} Gbit/s, {vxlan} VXLAN packets captured, {handled} handled by the routers",
        result.received_bps / 1e9
    );
}

/// The ping sequence numbers `out` (ping -n) got replies for.
fn answered(out: &str) -> std::collections::BTreeSet<u64> {
    out.lines()
        .filter_map(|l| {
            let rest = l.split("icmp_seq=").nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .collect()
}

#[test]
fn blocked_vxlan_falls_back_to_the_sleeve_and_comes_back() {
    let lab = Lab::new();
    let (hosts, c1, _c2) = fast_pair(&lab, "10.21.2");
    let (h1, h2) = (&hosts[0], &hosts[1]);

    lab.step("a ping every 100 ms across both switches");
    const PINGS: u64 = 240;
    let ping_ns = c1.ns().name().to_string();
    let started = Instant::now();
    let pinger = std::thread::spawn(move || {
        run(&[
            "ip",
            "netns",
            "exec",
            &ping_ns,
            "ping",
            "-n",
            "-i",
            "0.1",
            "-c",
            "240",
            "-W",
            "1",
            "10.21.2.2",
        ])
    });
    // Traffic on the fast path first (a schedule, not a wait for a state).
    std::thread::sleep(secs(2));

    lab.step("block UDP 6784 between the hosts");
    let block = [
        IptablesRule::insert(
            h1.ns(),
            &["INPUT", "-p", "udp", "--dport", "6784", "-j", "DROP"],
        ),
        IptablesRule::insert(
            h1.ns(),
            &["OUTPUT", "-p", "udp", "--dport", "6784", "-j", "DROP"],
        ),
    ];
    let blocked_at = started.elapsed();
    let fell = wait_path(h1, h2, false, secs(3));
    wait_path(h2, h1, false, secs(3));
    let fell_at = started.elapsed();
    let (_, why) = data_path(h1, h2);
    assert!(
        why.starts_with("sleeve: fast-path heartbeats lost since") && why.contains("udp 6784"),
        "{why}"
    );
    let conns = h1.weave_ok(&["status", "connections"]);
    assert!(conns.contains("heartbeats lost since"), "{conns}");
    eprintln!("on the sleeve {fell:?} after the block");
    std::thread::sleep(secs(3));

    lab.step("unblock: back on the fast path within 10 s");
    drop(block);
    let unblocked_at = started.elapsed();
    let back = wait_path(h1, h2, true, secs(10));
    wait_path(h2, h1, true, secs(10));
    let back_at = started.elapsed();
    eprintln!("back on the fast path {back:?} after the unblock");

    let out = pinger.join().expect("ping thread");
    let got = answered(&out.stdout);
    let lost: Vec<u64> = (1..=PINGS).filter(|s| !got.contains(s)).collect();
    // Ping n goes out about (n - 1) * 100 ms after the start.
    let window = |from: Duration, to: Duration| {
        let first = from.as_millis() as u64 / 100;
        let last = to.as_millis() as u64 / 100 + 2;
        lost.iter().filter(|s| (first..=last).contains(*s)).count()
    };
    let around_fall = window(blocked_at.saturating_sub(secs(1)), fell_at + secs(1));
    let around_return = window(unblocked_at.saturating_sub(secs(1)), back_at + secs(1));
    assert!(
        around_fall <= 5 && around_return <= 5,
        "lost {around_fall} pings across the fall and {around_return} across the return; \
         all lost: {lost:?}\n{}",
        out.stdout
    );
    eprintln!(
        "pings lost: {around_fall} across the fall, {around_return} across the return, {} in all",
        lost.len()
    );
}

#[test]
fn a_mixed_mesh_uses_each_path_where_status_says() {
    let lab = Lab::new();
    let hosts = lab.switched_hosts(3);
    let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);
    // h4 hangs off h3 alone: h1 and h2 reach it only through h3.
    let h4 = lab.host("h4");
    lab.link(h3, &h4);

    lab.step("h1 and h2 with the fast path, h3 without, h4 behind h3");
    h1.launch(NO_ARGS);
    h2.launch(&[h1.addr_for(h2).to_string()]);
    h3.launch(&[
        "--no-fastdp".to_string(),
        h1.addr_for(h3).to_string(),
        h2.addr_for(h3).to_string(),
    ]);
    h4.launch(&[h3.addr_for(&h4).to_string()]);
    let all = [h1, h2, h3, &h4];
    let containers: Vec<Container> = all.iter().map(|h| Container::new(h)).collect();
    for (i, (h, c)) in all.iter().zip(&containers).enumerate() {
        h.attach(c, &format!("10.21.3.{}/24", i + 1));
        c.ns().sysctl("net.ipv4.icmp_echo_ignore_broadcasts", "0");
    }
    wait_full_mesh(&hosts, secs(30));
    wait_until(secs(30), "h4 connected to h3", || {
        h4.status_json().established_to(h3)
    });

    lab.step("every pair pings");
    for (i, a) in containers.iter().enumerate() {
        for j in 0..containers.len() {
            if i != j {
                wait_ping(a, &format!("10.21.3.{}", j + 1), secs(20));
            }
        }
    }

    lab.step("status: h1-h2 fast; h3's connections on the sleeve, saying why; h4 relayed");
    wait_path(h1, h2, true, secs(10));
    wait_path(h2, h1, true, secs(10));
    for (a, b, why) in [
        (
            h1,
            h3,
            "no fast path on the peer (--no-fastdp, or no VXLAN there)",
        ),
        (h3, h1, "fast path off here (--no-fastdp)"),
        (
            &h4,
            h3,
            "no fast path on the peer (--no-fastdp, or no VXLAN there)",
        ),
    ] {
        let (fast, text) = data_path(a, b);
        assert!(
            !fast && text == format!("sleeve: {why}"),
            "{} to {}: {text}",
            a.name(),
            b.name()
        );
    }
    let h4_name = h4.peer_name().expect("h4's name");
    let via_h3 = h1.status_json().peer_data_path(&h4_name);
    assert!(
        via_h3.starts_with("sleeve: reached through a relay via"),
        "h1's path to h4: {via_h3:?}"
    );
    let peers = h1.weave_ok(&["status", "peers"]);
    assert!(
        peers.contains("data: sleeve: reached through a relay"),
        "{peers}"
    );

    lab.step("the capture agrees: VXLAN to h2 only");
    let pcap_path = lab.dir().join("mixed.pcap");
    let ul = h1.ifname_for(h2);
    let capture = Capture::start(h1.ns(), &ul, "udp", &pcap_path);
    for to in ["10.21.3.2", "10.21.3.3", "10.21.3.4"] {
        assert_pings(&containers[0], to, 5);
    }
    let pcap = capture.stop();
    let (h2_ip, h3_ip) = (h2.addr_for(h1), h3.addr_for(h1));
    let vxlan_to = |ip: std::net::Ipv4Addr| {
        pcap.udp()
            .iter()
            .filter(|s| *s.dst.ip() == ip && s.dst.port() == 6784)
            .count()
    };
    let sleeve_to = |ip: std::net::Ipv4Addr| {
        pcap.udp()
            .iter()
            .filter(|s| *s.dst.ip() == ip && s.dst.port() == 6783)
            .count()
    };
    assert!(vxlan_to(h2_ip) >= 5, "no VXLAN to h2");
    assert_eq!(vxlan_to(h3_ip), 0, "VXLAN to h3, which has no fast path");
    assert!(
        sleeve_to(h3_ip) >= 10,
        "the pings to h3 and h4 took the sleeve through h3"
    );

    lab.step("a broadcast ping gets exactly one reply from each other host");
    let c1 = &containers[0];
    for round in 1..=2 {
        let sniffer = icmp_echo_reply_sniffer(c1, secs(4));
        let out = c1
            .netns()
            .run(&["ping", "-n", "-b", "-c", "1", "-W", "3", "10.21.3.255"]);
        let replies = sniffer.join().expect("sniffer thread");
        let mut per_source = std::collections::BTreeMap::new();
        for src in replies {
            if src != std::net::Ipv4Addr::new(10, 21, 3, 1) {
                *per_source.entry(src).or_insert(0) += 1;
            }
        }
        let expected: std::collections::BTreeMap<_, _> = (2..=4)
            .map(|i| (std::net::Ipv4Addr::new(10, 21, 3, i), 1))
            .collect();
        assert_eq!(per_source, expected, "round {round}\n{out}");
    }
}

#[test]
fn an_encrypted_mesh_stays_on_the_sleeve_unless_the_underlay_is_trusted() {
    let lab = Lab::new();
    let hosts = lab.switched_hosts(2);
    let (h1, h2) = (&hosts[0], &hosts[1]);

    lab.step("--password: the sleeve, and status says why");
    h1.launch(&["--password", "s3cret"]);
    h2.launch(&["--password", "s3cret", &h1.addr_for(h2).to_string()]);
    let (c1, _c2) = connected_containers(&hosts, "10.21.4");
    for (a, b) in [(h1, h2), (h2, h1)] {
        let (fast, text) = data_path(a, b);
        assert!(
            !fast && text.starts_with("sleeve: encrypted mesh"),
            "{}: {text}",
            a.name()
        );
    }
    let conns = h1.weave_ok(&["status", "connections"]);
    assert!(conns.contains("sleeve: encrypted mesh"), "{conns}");

    lab.step("--trusted-subnets covering the underlay: the fast path");
    for h in [h1, h2] {
        h.weave_ok(&["stop"]);
    }
    let trusted = ["--password", "s3cret", "--trusted-subnets", "10.77.0.0/24"];
    h1.launch(&trusted);
    let mut args = trusted.map(String::from).to_vec();
    args.push(h1.addr_for(h2).to_string());
    h2.launch(&args);
    wait_full_mesh(&hosts, secs(30));
    wait_path(h1, h2, true, secs(10));
    wait_path(h2, h1, true, secs(10));
    wait_ping(&c1, "10.21.4.2", secs(20));
    let pcap_path = lab.dir().join("trusted.pcap");
    let capture = Capture::start(h1.ns(), &h1.ifname_for(h2), "udp port 6784", &pcap_path);
    assert_pings(&c1, "10.21.4.2", 5);
    let icmp = capture.stop().udp().len();
    assert!(
        icmp >= 10,
        "{icmp} VXLAN packets for 5 pings and heartbeats"
    );
}

#[test]
fn a_jumbo_frame_underlay_gives_a_jumbo_overlay_on_the_fast_path() {
    let lab = Lab::new();
    let (h1, h2) = (lab.host("h1"), lab.host("h2"));
    lab.link(&h1, &h2);
    for (a, b) in [(&h1, &h2), (&h2, &h1)] {
        a.ns().ip(&["link", "set", &a.ifname_for(b), "mtu", "9000"]);
    }
    lab.step("no --mtu: the overlay takes what VXLAN leaves of 9000");
    h1.launch(NO_ARGS);
    h2.launch(&[h1.addr_for(&h2).to_string()]);
    let hosts = [h1, h2];
    let (h1, h2) = (&hosts[0], &hosts[1]);
    let (c1, _c2) = connected_containers(&hosts, "10.21.5");
    for h in [h1, h2] {
        let mtu = h.status_json().raw["router"]["mtu"].as_u64().unwrap_or(0);
        assert!(mtu > 8900, "{}: overlay MTU {mtu}", h.name());
    }
    wait_path(h1, h2, true, secs(10));
    wait_path(h2, h1, true, secs(10));
    let (_, text) = data_path(h1, h2);
    assert!(text.starts_with("fast path (mtu 8950)"), "{text}");

    lab.step("8900-byte pings, unfragmented, cross as single VXLAN packets");
    let pcap_path = lab.dir().join("jumbo.pcap");
    let capture = Capture::start(h1.ns(), &h1.ifname_for(h2), "udp port 6784", &pcap_path);
    let out = c1.ns().run(&[
        "ping",
        "-n",
        "-M",
        "do",
        "-s",
        "8900",
        "-c",
        "3",
        "-W",
        "2",
        "10.21.5.2",
    ]);
    assert!(out.success(), "{out}");
    let pcap = capture.stop();
    let jumbo = pcap.udp().iter().filter(|s| s.declared_len > 8900).count();
    assert!(
        jumbo >= 6,
        "{jumbo} VXLAN packets above 8900 bytes for 3 pings"
    );

    lab.step("bigger than the overlay MTU: refused at the source, with the MTU");
    let out = c1.ns().run(&[
        "ping",
        "-n",
        "-M",
        "do",
        "-s",
        "9000",
        "-c",
        "1",
        "-W",
        "2",
        "10.21.5.2",
    ]);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(!out.success() && text.contains("mtu=8950"), "{text}");
}

/// The kernel entries a host's fast path has towards `ip` (besides the
/// one its heartbeats take).
fn entries_to(h: &Host, ip: std::net::Ipv4Addr) -> Vec<String> {
    h.ns()
        .sh(&["bridge", "fdb", "show", "dev", "weave-vxlan"])
        .lines()
        .filter(|l| l.contains(&format!("dst {ip} ")))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_dead_router_is_left_at_once_and_its_relaunch_taken_back() {
    let lab = Lab::new();
    let (hosts, c1, c2) = fast_pair(&lab, "10.21.6");
    let (h1, h2) = (&hosts[0], &hosts[1]);
    assert_pings(&c2, "10.21.6.1", 3);
    let h1_ip = h1.addr_for(h2);
    assert!(
        entries_to(h2, h1_ip).len() >= 2,
        "c1's MAC steered and the heartbeats' entry"
    );

    lab.step("kill -9 h1's router: h2 removes what it sent to h1 over VXLAN");
    h1.kill_router();
    wait_until(secs(3), "h2's entries to h1 gone", || {
        entries_to(h2, h1_ip).len() <= 1
    });
    assert!(
        !ping(&c2, "10.21.6.1", 2),
        "c2 reaches c1 with h1's router dead"
    );

    lab.step("relaunch: the fast path again");
    h1.relaunch();
    wait_path(h2, h1, true, secs(15));
    wait_path(h1, h2, true, secs(15));
    assert_pings(&c2, "10.21.6.1", 3);
    assert_pings(&c1, "10.21.6.2", 3);
}

#[test]
fn no_vxlan_here_means_one_log_line_and_the_sleeve() {
    let lab = Lab::new();
    let hosts = lab.switched_hosts(2);
    let (h1, h2) = (&hosts[0], &hosts[1]);
    lab.step("UDP 6784 taken in h1: its VXLAN device cannot come up");
    let squatter = h1
        .ns()
        .in_netns(|| std::net::UdpSocket::bind("0.0.0.0:6784").expect("bind 6784"));
    launch_mesh(&hosts);
    let (c1, _c2) = connected_containers(&hosts, "10.21.7");
    assert_pings(&c1, "10.21.7.2", 3);
    let (fast, why) = data_path(h1, h2);
    assert!(
        !fast && why.starts_with("sleeve: no fast path on this host: "),
        "{why}"
    );
    let (fast, why) = data_path(h2, h1);
    assert!(
        !fast && why == "sleeve: no fast path on the peer (--no-fastdp, or no VXLAN there)",
        "h2 sees h1 as without a fast path: {why}"
    );
    let summary = h1.weave_ok(&["status"]);
    assert!(
        summary.contains("FastPath: off: no fast path on this host"),
        "{summary}"
    );
    let log = h1.log_tail(200);
    let lines = log
        .lines()
        .filter(|l| l.contains("fast path unavailable"))
        .count();
    assert_eq!(lines, 1, "one log line says why:\n{log}");
    assert!(h1.router_running());
    drop(squatter);
}
