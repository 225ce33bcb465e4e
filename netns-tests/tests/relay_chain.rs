//! A chain h1 - h2 - h3 (h1 reaches only h2 on the underlay, h3 only h2, and
//! h2 does not forward IP): the overlay relays c1 <-> c3 through h2.

use netns_tests::*;

#[test]
fn relay_chain() {
    let lab = Lab::new();
    let hosts = lab.chain(3);
    let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);

    // The underlay really is a chain.
    assert!(
        ping(h1, &h2.addr_for(h1).to_string(), 1),
        "h1 cannot reach h2"
    );
    assert!(
        ping(h3, &h2.addr_for(h3).to_string(), 1),
        "h3 cannot reach h2"
    );
    let h3_addr = h3.ip().to_string();
    assert!(
        !ping(h1, &h3_addr, 1),
        "testbed broken: h1 reaches h3 on the underlay"
    );

    lab.step("launch h1; h2 with h1; h3 with h2");
    h1.launch(NO_ARGS);
    h2.launch(&[h1.addr_for(h2).to_string()]);
    h3.launch(&[h2.addr_for(h3).to_string()]);

    let c1 = Container::new(h1);
    let c3 = Container::new(h3);
    h1.attach(&c1, "10.2.1.1/24");
    h3.attach(&c3, "10.2.1.3/24");

    lab.step("wait until h2 is connected to both");
    wait_until(
        secs(30),
        "h2 has established connections to h1 and h3",
        || {
            let r = h2.status_json();
            r.established_to(h1) && r.established_to(h3)
        },
    );

    lab.step("wait until c1 reaches c3 (relayed)");
    wait_ping(&c1, "10.2.1.3", secs(30));
    lab.step("c1 reached c3");
    assert_pings(&c1, "10.2.1.3", 5);
    assert_pings(&c3, "10.2.1.1", 5);

    // The traffic was relayed: h1 and h3 have no direct connection.
    let r1 = h1.status_json();
    assert!(
        !r1.established_to(h3),
        "h1 claims a direct connection to h3, which it cannot reach:\n{}",
        r1.summary()
    );
}
