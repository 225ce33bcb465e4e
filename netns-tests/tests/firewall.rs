//! The router touches the host's FORWARD chains only where they could drop
//! its bridge's frames, and keeps its accept rule there as the firewall
//! changes: a firewall started after the router (Docker sets the policy to
//! DROP), or flushed by an admin, does not cut the containers off.
//! (This kernel has br_netfilter built in: bridged frames pass FORWARD.)

use netns_tests::*;

const FIREWALLS: [&str; 2] = ["iptables", "ip6tables"];

#[test]
fn forward_rule_follows_the_firewall() {
    let lab = Lab::new();
    let h1 = lab.switched_host("h1");
    h1.launch(NO_ARGS);
    let c1 = Container::new(&h1);
    let c2 = Container::new(&h1);
    h1.attach(&c1, "10.2.7.1/24");
    h1.attach(&c2, "10.2.7.2/24");
    assert_pings(&c1, "10.2.7.2", 3);

    // No firewall: the router made no table (whose hooks every packet of
    // the host would pass) and no rule.
    for fw in FIREWALLS {
        // `iptables-save` (or `ip6tables-save`): the tables that exist.
        let tables = h1.ns().run(&[format!("{fw}-save")]).ok().stdout;
        assert!(
            !tables.contains("*filter"),
            "{fw}: the router created the filter table on a host without one:\n{tables}"
        );
        assert_eq!(h1.forward_chain(fw).trim(), "-P FORWARD ACCEPT");
    }

    // A firewall starts after the router and drops what it forwards.
    for fw in FIREWALLS {
        h1.ns().run(&[fw, "-w", "-P", "FORWARD", "DROP"]).ok();
    }
    for fw in FIREWALLS {
        wait_until(
            secs(8),
            &format!("the router adds its {fw} FORWARD rule once the policy is DROP"),
            || h1.has_forward_rule(fw),
        );
    }
    assert_pings(&c1, "10.2.7.2", 3);
    let log = h1.log_tail(200);
    assert!(
        log.contains(
            "iptables FORWARD chain has the policy DROP: accept rule for bridge weave added"
        ),
        "no log line saying why the rule was added:\n{log}"
    );

    // An admin flushes the chain (the policy stays DROP): the rule returns.
    h1.ns().run(&["iptables", "-w", "-F", "FORWARD"]).ok();
    wait_until(
        secs(8),
        "the router restores its iptables FORWARD rule after a flush",
        || h1.has_forward_rule("iptables"),
    );
    assert_pings(&c1, "10.2.7.2", 3);
    assert_eq!(
        h1.forward_chain("iptables")
            .lines()
            .filter(|l| l.starts_with("-A"))
            .count(),
        1,
        "one rule, not a copy per check:\n{}",
        h1.forward_chain("iptables")
    );
}
