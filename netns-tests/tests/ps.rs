//! `weave-rs ps` lists exactly what is attached, with the MAC each ethwe
//! really has and its addresses; a namespace that disappears (as a removed
//! container's does) drops out of the listing, and its host veth is gone.

use netns_tests::*;

/// (target, mac, addresses) per `ps` line, the `weave:expose` line skipped.
fn ps(h: &Host) -> Vec<(String, String, Vec<String>)> {
    h.weave_ok(&["ps"])
        .lines()
        .filter(|l| !l.starts_with("weave:expose"))
        .map(|l| {
            let mut f = l.split_whitespace().map(str::to_string);
            let target = f.next().unwrap_or_default();
            let mac = f.next().unwrap_or_default();
            (target, mac, f.collect())
        })
        .collect()
}

fn ethwe_mac(c: &Container) -> String {
    let out = c.ns().ip(&["-br", "link", "show", "ethwe"]);
    out.split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_string()
}

#[test]
fn ps_lists_attached_namespaces() {
    let lab = Lab::new();
    let h1 = lab.switched_host("h1");
    h1.launch(NO_ARGS);
    assert!(ps(&h1).is_empty(), "ps lists something before any attach");

    let c1 = Container::new(&h1);
    let c2 = Container::new(&h1);
    h1.attach(&c1, "10.2.1.1/24");
    h1.weave_ok(&["attach", "10.2.1.2/24", "fd00:77::2/64", &c2.path()]);
    h1.weave_ok(&["expose", "10.2.1.254/24"]);

    let mut want = vec![
        (c1.path(), ethwe_mac(&c1), vec!["10.2.1.1/24".to_string()]),
        (
            c2.path(),
            ethwe_mac(&c2),
            vec!["10.2.1.2/24".to_string(), "fd00:77::2/64".to_string()],
        ),
    ];
    want.sort();
    let mut got = ps(&h1);
    got.sort();
    assert_eq!(got, want, "ps output:\n{}", h1.weave_ok(&["ps"]));
    assert!(
        h1.weave_ok(&["ps"])
            .contains("weave:expose weave 10.2.1.254/24"),
        "ps does not show the exposed address"
    );

    // The namespace goes away, as a removed container's does.
    let gone = c2.path();
    drop(c2);
    wait_until(secs(10), "c2's host veth disappears", || {
        h1.ns()
            .links()
            .iter()
            .filter(|l| l.starts_with("vethwr"))
            .count()
            == 1
    });
    let got = ps(&h1);
    assert_eq!(got.len(), 1, "ps still lists a vanished namespace: {got:?}");
    assert_ne!(got[0].0, gone);

    // Detaching the last address removes ethwe and the listing.
    h1.weave_ok(&["detach", "10.2.1.1/24", &c1.path()]);
    assert!(!c1.ns().has_link("ethwe"), "ethwe left after detach");
    assert!(ps(&h1).is_empty(), "ps lists a detached namespace");
}
