//! `forget` on a peer we are connected to closes that connection on both
//! sides, and a later `connect` makes it again. (A dial cancelled by
//! `forget`, or by discovery finding the peer connected another way, used
//! to leave its connection registered with nothing serving it: the peer's
//! new connections were refused as duplicates for ever.)

use netns_tests::*;

#[test]
fn forget_closes_the_connection_and_connect_makes_it_again() {
    let lab = Lab::new();
    let hosts = lab.switched_hosts(2);
    let (h1, h2) = (&hosts[0], &hosts[1]);
    let h1_addr = h1.addr_for(h2).to_string();

    // No discovery: only the user's targets dial, so nothing but `connect`
    // may bring the connection back.
    h1.launch(&["--no-discovery"]);
    h2.launch(&["--no-discovery", h1_addr.as_str()]);
    wait_full_mesh(&hosts, secs(30));

    lab.step("h2 forgets h1");
    h2.weave_ok(&["forget", h1_addr.as_str()]);
    wait_until(
        secs(10),
        "neither router lists a connection with the other",
        || {
            h1.status_json().connections_with(h2).count() == 0
                && h2.status_json().connections_with(h1).count() == 0
        },
    );

    lab.step("h2 connects to h1 again");
    h2.weave_ok(&["connect", h1_addr.as_str()]);
    wait_full_mesh(&hosts, secs(15));
}
