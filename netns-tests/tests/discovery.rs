//! Discovery: h2 is launched with h1, h3 with h2, all on one switch. h1 and
//! h3 learn of each other through gossip and connect directly within 15 s.

use std::time::Instant;

use netns_tests::*;

#[test]
fn discovery() {
    let lab = Lab::new();
    let hosts = lab.switched_hosts(3);
    let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);

    h1.launch(NO_ARGS);
    h2.launch(&[h1.addr_for(h2).to_string()]);
    wait_full_mesh(&hosts[..2], secs(30));

    lab.step("launch h3 with h2");
    h3.launch(&[h2.addr_for(h3).to_string()]);
    let t = Instant::now();
    wait_until(
        secs(15),
        "h1 and h3 both report a direct established connection",
        || h1.status_json().established_to(h3) && h3.status_json().established_to(h1),
    );
    eprintln!("h1 <-> h3 established {:?} after h3's launch", t.elapsed());

    // h3 keeps its configured peer too (its UDP heartbeats may still be on
    // their way when the discovered connection is up).
    wait_until(
        secs(10),
        "h3's connection to h2, its configured peer, established",
        || h3.status_json().established_to(h2),
    );
}
