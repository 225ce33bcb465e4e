//! The sleeve's packet rate (issue 15): a burst of small UDP datagrams
//! leaves the router in fewer system calls than datagrams (several TAP
//! reads per wake-up, UDP GSO per neighbour), reaches the receiving
//! container in fewer TAP writes than datagrams (runs of one flow joined,
//! the kernel cutting them again) and whole, and what the kernel drops on
//! the way (the TAP's queue, the UDP socket's buffer) is in `report`.

use std::net::UdpSocket;
use std::time::Duration;

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
    let (runs, joined) = (
        h2.status_json().stat("tap_udp_runs"),
        h2.status_json().stat("tap_udp_run_datagrams"),
    );
    eprintln!("h2 wrote {joined} datagrams to its TAP in {runs} joined runs");
    assert!(
        runs > 0 && joined > 2 * runs,
        "h2 joined no runs of datagrams: {joined} in {runs}"
    );

    lab.step("20,000 numbered datagrams of 20 to 1400 bytes, c1 to c2: all whole");
    let to = "10.22.1.2:7000";
    let rx = c2.ns().in_netns(move || UdpSocket::bind(to).unwrap());
    let tx = c1.ns().in_netns(|| UdpSocket::bind("10.22.1.1:0").unwrap());
    rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let reader = std::thread::spawn(move || {
        let (mut whole, mut broken) = (0u32, Vec::new());
        let mut buf = [0u8; 2048];
        while let Ok(n) = rx.recv(&mut buf) {
            let got = &buf[..n];
            let seq = u32::from_be_bytes(got[..4].try_into().unwrap());
            if got == numbered(seq).as_slice() {
                whole += 1;
            } else {
                broken.push(seq);
            }
        }
        (whole, broken)
    });
    let runs_before = h2.status_json().stat("tap_udp_runs");
    const COUNT: u32 = 20_000;
    for seq in 0..COUNT {
        tx.send_to(&numbered(seq), to).unwrap();
        if seq % 32 == 31 {
            // Bursts of 32, paced so that queues rarely overflow (the
            // loss asserted on is not the point; whole datagrams are).
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let (whole, broken) = reader.join().unwrap();
    let runs = h2.status_json().stat("tap_udp_runs") - runs_before;
    eprintln!(
        "{whole} of {COUNT} whole, {} broken; {runs} runs joined",
        broken.len()
    );
    assert!(
        broken.is_empty(),
        "datagrams changed on the way: {broken:?}"
    );
    assert!(
        whole >= COUNT * 90 / 100,
        "only {whole} of {COUNT} datagrams arrived"
    );
    assert!(runs > 0, "no run joined");
}

/// Datagram `seq`: its number, then bytes made from it; 20 to 1400 bytes,
/// the same length in runs of 100 (so that runs join, and end shorter).
fn numbered(seq: u32) -> Vec<u8> {
    let len = 20 + (seq / 100 % 7) as usize * 230;
    let mut d = seq.to_be_bytes().to_vec();
    d.extend((4..len).map(|i| (seq as usize * 7 + i) as u8));
    d
}
