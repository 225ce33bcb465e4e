//! Three meshed hosts. The router on h1 dies (SIGKILL); h2 and h3, which
//! were launched with h1's address, show it as not established (retrying).
//! h1's router is launched again with the same arguments: container traffic
//! to and from h1 works again within 15 s, with no re-attach.

use std::time::Instant;

use netns_tests::*;

#[test]
fn restart() {
    let lab = Lab::new();
    let hosts = lab.switched_hosts(3);
    let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);

    h1.launch(NO_ARGS);
    h2.launch(&[h1.addr_for(h2).to_string()]);
    h3.launch(&[h1.addr_for(h3).to_string(), h2.addr_for(h3).to_string()]);
    wait_full_mesh(&hosts, secs(30));

    let containers: Vec<Container> = hosts.iter().map(Container::new).collect();
    for (i, (h, c)) in hosts.iter().zip(&containers).enumerate() {
        h.attach(c, &format!("10.2.1.{}/24", i + 1));
    }
    let (c1, c2, c3) = (&containers[0], &containers[1], &containers[2]);
    wait_ping(c2, "10.2.1.1", secs(20));
    wait_ping(c3, "10.2.1.1", secs(20));

    lab.step("kill -9 the router on h1");
    let killed = h1.kill_router();
    eprintln!("killed router on h1: pids {killed:?}");

    for other in [h2, h3] {
        wait_until(
            secs(15),
            &format!(
                "{} shows h1 as retrying (and nothing established with it)",
                other.name()
            ),
            || {
                let r = other.status_json();
                let with_h1: Vec<&Conn> = r.connections_with(h1).collect();
                with_h1.iter().any(|c| c.state == "retrying")
                    && with_h1.iter().all(|c| !c.is_established())
            },
        );
    }
    assert!(
        !ping(c2, "10.2.1.1", 2),
        "c2 still reaches c1 with h1's router dead"
    );

    lab.step("relaunch h1");
    h1.relaunch();
    let t = Instant::now();
    wait_until(
        secs(15),
        "c2 and c3 reach c1 again after the relaunch",
        || ping(c2, "10.2.1.1", 1) && ping(c3, "10.2.1.1", 1),
    );
    eprintln!("traffic back {:?} after relaunch", t.elapsed());
    assert_pings(c1, "10.2.1.2", 5);
    assert_pings(c1, "10.2.1.3", 5);
    wait_full_mesh(&hosts, secs(15));
}

/// The first host, launched with no peers, restarts while the others'
/// redial backoff has grown: it dials the peers it remembers at once
/// instead of waiting for them (up to 12.5 s before).
#[test]
fn a_relaunched_router_dials_the_peers_it_knew() {
    let lab = Lab::new();
    let hosts = lab.switched_hosts(2);
    let (h1, h2) = (&hosts[0], &hosts[1]);
    h1.launch(NO_ARGS);
    h2.launch(&[h1.addr_for(h2).to_string()]);
    wait_full_mesh(&hosts, secs(30));

    lab.step("stop h1 until h2's next redial is at least 4 s away");
    h1.weave_ok(&["stop"]);
    wait_until(
        secs(60),
        "h2's redial of h1 backs off to 4 s or more",
        || {
            h2.status_json().connections_with(h1).any(|c| {
                c.state == "retrying"
                    && c.last_error
                        .as_deref()
                        .and_then(|e| {
                            e.rsplit_once("next attempt in ")?
                                .1
                                .strip_suffix("s)")?
                                .parse::<f64>()
                                .ok()
                        })
                        .is_some_and(|s| s >= 4.0)
            })
        },
    );

    lab.step("relaunch h1 with no peer: connected again within 2 s");
    h1.relaunch();
    let t = Instant::now();
    wait_full_mesh(&hosts, secs(15));
    let took = t.elapsed();
    eprintln!("mesh again {:.2}s after h1's relaunch", took.as_secs_f64());
    assert!(
        took < secs(2),
        "reconnected after {took:?}: h1 waited for h2's redial"
    );
    let targets = h1.status_json().raw["connections"].to_string();
    assert!(
        targets.contains(&h2.addr_for(h1).to_string()),
        "h1 does not show its remembered peer: {targets}"
    );
}
