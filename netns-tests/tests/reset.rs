//! `weave-rs reset` removes everything the router made on the host: the
//! bridge, the TAP, the container veths, the iptables and ip6tables
//! FORWARD rules, and the router.

use netns_tests::*;

fn weave_links(h: &Host) -> Vec<String> {
    h.ns()
        .links()
        .into_iter()
        .filter(|l| l == "weave" || l == "weave-tap" || l.starts_with("vethwr"))
        .collect()
}

const FIREWALLS: [&str; 2] = ["iptables", "ip6tables"];

#[test]
fn reset() {
    let lab = Lab::new();
    let h1 = lab.switched_host("h1");
    // A firewall that drops what it forwards (Docker's policy): the router
    // must let its bridge's frames through.
    for fw in FIREWALLS {
        h1.ns().run(&[fw, "-w", "-P", "FORWARD", "DROP"]).ok();
    }
    h1.launch(NO_ARGS);
    let c1 = Container::new(&h1);
    let c2 = Container::new(&h1);
    h1.attach(&c1, "10.2.1.1/24");
    h1.attach(&c2, "10.2.1.2/24");
    for fw in FIREWALLS {
        wait_until(
            secs(5),
            &format!("launch adds the {fw} FORWARD accept rule for weave"),
            || h1.has_forward_rule(fw),
        );
    }
    assert_pings(&c1, "10.2.1.2", 3);

    let before = weave_links(&h1);
    assert!(
        before.iter().any(|l| l == "weave"),
        "no bridge `weave`: {before:?}"
    );
    assert!(
        before.iter().any(|l| l == "weave-tap"),
        "no `weave-tap`: {before:?}"
    );
    assert_eq!(
        before.iter().filter(|l| l.starts_with("vethwr")).count(),
        2,
        "want one vethwr* per container: {before:?}"
    );

    h1.weave_ok(&["reset"]);

    wait_until(secs(10), "no weave-rs process left in h1", || {
        !h1.router_running()
    });
    let after = weave_links(&h1);
    assert!(after.is_empty(), "links left after reset: {after:?}");
    assert!(!c1.ns().has_link("ethwe"), "c1 still has ethwe after reset");
    for fw in FIREWALLS {
        assert!(
            !h1.has_forward_rule(fw),
            "{fw} FORWARD rule for weave left after reset"
        );
    }

    // A reset host can be launched again from scratch.
    h1.launch(NO_ARGS);
    let r = h1.status_json();
    assert!(
        r.connections.is_empty(),
        "fresh router has connections:\n{}",
        r.summary()
    );
}
