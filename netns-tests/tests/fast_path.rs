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

/// Packets the router handled: what the sleeve costs.
fn router_packets(h: &Host) -> u64 {
    let r = h.status_json();
    r.stat("frames_from_tap") + r.stat("datagrams_received")
}

#[test]
fn two_hosts_carry_traffic_on_the_fast_path() {
    let lab = Lab::new();
    let hosts = lab.switched_hosts(2);
    let (h1, h2) = (&hosts[0], &hosts[1]);
    launch_mesh(&hosts);
    let (c1, c2) = connected_containers(&hosts, "10.21.1");

    lab.step("both ends confirm the fast path and say so");
    wait_path(h1, h2, true, secs(10));
    wait_path(h2, h1, true, secs(10));
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
