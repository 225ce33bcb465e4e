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

/// Is the FORWARD accept rule for `weave` in `program`'s (iptables or
/// ip6tables) FORWARD chain of `h`? Fails loudly if `program` is missing.
#[track_caller]
fn forward_rule(h: &Host, program: &str) -> bool {
    let out = h.ns().run(&[program, "-w", "-S", "FORWARD"]);
    assert!(
        out.success(),
        "`{program} -S FORWARD` failed in {} (is {program} installed? scripts/install-deps.sh): {}",
        h.name(),
        out.stderr
    );
    out.stdout
        .lines()
        .any(|l| l.contains("-i weave") && l.contains("-o weave") && l.contains("ACCEPT"))
}

const FIREWALLS: [&str; 2] = ["iptables", "ip6tables"];

#[test]
fn reset() {
    let lab = Lab::new();
    let h1 = lab.switched_host("h1");
    h1.launch(NO_ARGS);
    let c1 = Container::new(&h1);
    let c2 = Container::new(&h1);
    h1.attach(&c1, "10.2.1.1/24");
    h1.attach(&c2, "10.2.1.2/24");
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
    for fw in FIREWALLS {
        assert!(
            forward_rule(&h1, fw),
            "launch did not add the {fw} FORWARD accept rule for weave"
        );
    }

    h1.weave_ok(&["reset"]);

    wait_until(secs(10), "no weave-rs process left in h1", || {
        !h1.router_running()
    });
    let after = weave_links(&h1);
    assert!(after.is_empty(), "links left after reset: {after:?}");
    assert!(!c1.ns().has_link("ethwe"), "c1 still has ethwe after reset");
    for fw in FIREWALLS {
        assert!(
            !forward_rule(&h1, fw),
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
