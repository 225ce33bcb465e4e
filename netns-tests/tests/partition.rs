//! Three meshed hosts; the underlay between h1 and h2 is cut (iptables DROP
//! in h1). Both notice within seconds, traffic between their containers
//! goes around through h3, and once the cut heals h1 and h2 connect
//! directly again by themselves.

use std::time::Instant;

use netns_tests::*;

#[test]
fn partition() {
    let lab = Lab::new();
    let hosts = lab.switched_hosts(3);
    let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);
    launch_mesh(&hosts);
    let containers: Vec<Container> = hosts.iter().map(Container::new).collect();
    for (i, (h, c)) in hosts.iter().zip(&containers).enumerate() {
        h.attach(c, &format!("10.2.1.{}/24", i + 1));
    }
    let (c1, c2) = (&containers[0], &containers[1]);
    wait_ping(c1, "10.2.1.2", secs(20));
    wait_ping(c1, "10.2.1.3", secs(20));

    let h2_ip = h2.addr_for(h1).to_string();
    lab.step("cut the underlay between h1 and h2");
    let cut = IptablesRule::cut_off(h1, &h2_ip);
    let t = Instant::now();
    for (a, b) in [(h1, h2), (h2, h1)] {
        wait_until(
            secs(12),
            &format!("{} no longer shows {} as established", a.name(), b.name()),
            || !a.status_json().established_to(b),
        );
    }
    eprintln!("cut noticed after {:?}", t.elapsed());
    wait_until(secs(10), "c1 reaches c2 around the cut, via h3", || {
        ping(c1, "10.2.1.2", 1)
    });
    assert_pings(c1, "10.2.1.2", 5);
    assert_pings(c2, "10.2.1.1", 5);
    let relayed = h3.status_json().raw["stats"]["datagrams_relayed"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        relayed > 0,
        "h3 relayed nothing: traffic did not go around the cut"
    );

    lab.step("heal the cut");
    drop(cut);
    let t = Instant::now();
    wait_full_mesh(&hosts, secs(30));
    eprintln!("direct connection back {:?} after healing", t.elapsed());
    assert_pings(c1, "10.2.1.2", 5);
}
