//! Four fully meshed hosts, a container on each. A broadcast ping from c1
//! reaches every other container exactly once: one echo reply from each, no
//! duplicate (a broadcast crossing a peer twice would make two).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use netns_tests::*;

#[test]
fn broadcast_once() {
    let lab = Lab::new();
    let hosts = lab.switched_hosts(4);
    lab.step("launch a full mesh of 4");
    launch_mesh(&hosts);

    let containers: Vec<Container> = hosts.iter().map(Container::new).collect();
    for (i, (h, c)) in hosts.iter().zip(&containers).enumerate() {
        h.attach(c, &format!("10.2.1.{}/24", i + 1));
        c.ns().sysctl("net.ipv4.icmp_echo_ignore_broadcasts", "0");
    }
    let c1 = &containers[0];
    lab.step("unicast first");
    // Unicast works first, so a failure below is about broadcast.
    for i in 2..=4 {
        wait_ping(c1, &format!("10.2.1.{i}"), secs(20));
    }

    for round in 1..=2 {
        lab.step(&format!("broadcast ping, round {round}"));
        // ping itself exits at the first reply (c1's own, on lo), so the
        // replies are counted on a raw ICMP socket in c1 for the whole -W 3
        // window (and a little more).
        let sniffer = icmp_echo_reply_sniffer(c1, secs(4));
        let out = c1
            .netns()
            .run(&["ping", "-n", "-b", "-c", "1", "-W", "3", "10.2.1.255"]);
        let replies = sniffer.join().expect("sniffer thread");

        let mut per_source: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
        for src in replies {
            if src != Ipv4Addr::new(10, 2, 1, 1) {
                *per_source.entry(src).or_default() += 1;
            }
        }
        let expected: BTreeMap<Ipv4Addr, usize> =
            (2..=4).map(|i| (Ipv4Addr::new(10, 2, 1, i), 1)).collect();
        assert_eq!(
            per_source, expected,
            "round {round}: echo replies per source (want exactly one from each other \
             container)\n{out}"
        );
    }
}
