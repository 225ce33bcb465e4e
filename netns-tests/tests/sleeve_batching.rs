//! The sleeve's packet rate (issue 15): a burst of small UDP datagrams
//! leaves the router in fewer system calls than datagrams (several TAP
//! reads per wake-up, UDP GSO per neighbour), and what the kernel drops on
//! the way (the TAP's queue, the UDP socket's buffer) is in `report`.

use netns_tests::*;

#[test]
fn a_burst_of_small_datagrams_leaves_in_batches_and_drops_are_counted() {
    let lab = Lab::new();
    let hosts = lab.switched_hosts(2);
    let (h1, h2) = (&hosts[0], &hosts[1]);
    h1.launch(&["--no-fastdp"]);
    h2.launch(&["--no-fastdp", &h1.addr_for(h2).to_string()]);
    let (c1, c2) = connected_containers(&hosts, "10.22.1");

    let before = h1.status_json();
    for key in ["dropped_tap_queue", "dropped_udp_buffer", "udp_sends"] {
        assert!(before.has_stat(key), "report lacks {key}");
    }
    lab.step("iperf3 -u -b 0 -l 1000 for 3 s, c1 to c2, on the sleeve");
    let server = Iperf3Server::start(&c2, "10.22.1.2");
    let result = iperf3_client(&c1, &server, 3, &["-u", "-b", "0", "-l", "1000"]);
    let after = h1.status_json();
    let delta = |k: &str| after.stat(k) - before.stat(k);
    let (calls, datagrams) = (delta("udp_sends"), delta("udp_datagrams_sent"));
    let lost = result
        .raw
        .pointer("/end/sum/lost_percent")
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(f64::NAN);
    eprintln!(
        "UDP 1000 B on the sleeve: {:.3} Gbit/s received, {lost:.1} % lost; \
         {datagrams} datagrams in {calls} sends; TAP queue drops {}, UDP buffer drops {} (h2)",
        result.received_bps / 1e9,
        delta("dropped_tap_queue"),
        h2.status_json().stat("dropped_udp_buffer")
    );
    assert!(datagrams > 10_000, "only {datagrams} datagrams sent");
    assert!(
        datagrams as f64 / calls as f64 > 2.0,
        "{datagrams} datagrams in {calls} sends: no batching"
    );
}
