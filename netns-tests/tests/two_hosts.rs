//! Two hosts on one switch, a container on each: IPv4 both ways, TCP
//! throughput, IPv6, and both reports show the connection established.

use netns_tests::*;

#[test]
fn two_hosts() {
    let lab = Lab::new();
    let hosts = lab.switched_hosts(2);
    let (h1, h2) = (&hosts[0], &hosts[1]);

    lab.step("launch h1, h2");
    h1.launch(NO_ARGS);
    h2.launch(&[h1.addr_for(h2).to_string()]);

    let c1 = Container::new(h1);
    let c2 = Container::new(h2);
    h1.attach(&c1, "10.2.1.1/24");
    h2.attach(&c2, "10.2.1.2/24");

    lab.step("wait for the connection");
    wait_full_mesh(&hosts, secs(30));

    lab.step("IPv4 ping");
    wait_ping(&c1, "10.2.1.2", secs(20));
    lab.step("c1 reached c2; 5 pings each way");
    assert_pings(&c1, "10.2.1.2", 5);
    assert_pings(&c2, "10.2.1.1", 5);

    lab.step("iperf3 TCP for 3 s");
    let server = Iperf3Server::start(&c2, "10.2.1.2");
    let r = iperf3_client(&c1, &server, 3, &[]);
    eprintln!(
        "iperf3 c1 -> c2: sent {:.1} Mbit/s, received {:.1} Mbit/s, retransmits {:?}",
        r.sent_bps / 1e6,
        r.received_bps / 1e6,
        r.retransmits
    );
    assert!(
        r.received_bps > 0.0,
        "iperf3 moved no data: {}",
        r.raw.pointer("/end").cloned().unwrap_or_default()
    );
    drop(server);

    lab.step("IPv6 ping (IPv6 CIDRs added by `weave-rs attach`)");
    h1.attach(&c1, "fd00:77::1/64");
    h2.attach(&c2, "fd00:77::2/64");
    wait_ping(&c1, "fd00:77::2", secs(20));
    assert_pings(&c1, "fd00:77::2", 5);
    assert_pings(&c2, "fd00:77::1", 5);

    lab.step("reports");
    // Still established after the traffic, on both sides.
    let (r1, r2) = (h1.status_json(), h2.status_json());
    assert!(r1.established_to(h2), "h1 report:\n{}", r1.summary());
    assert!(r2.established_to(h1), "h2 report:\n{}", r2.summary());
}
