//! `--mesh-name` (or `WEAVE_MESH_NAME`) salts the password: routers with
//! the same password and different mesh names refuse each other
//! ("authentication failed"), routers with the same password and the same
//! mesh name connect. `report` and `status` show the mesh name.

use netns_tests::*;

const PASSWORD: &str = "correct horse battery staple";

/// Does `h` give `reason` for a connection with `peer`: a line of
/// `status connections`, or an entry of its report naming `peer`'s address?
fn reason_visible(h: &Host, peer: &Host, reason: &str) -> bool {
    let ip = peer.addr_for(h).to_string();
    let status = h.weave_ok(&["status", "connections"]).to_ascii_lowercase();
    status
        .lines()
        .any(|l| l.contains(&ip) && l.contains(reason))
        || !h
            .status_json()
            .entries_mentioning(&[&ip, reason])
            .is_empty()
}

#[track_caller]
fn mesh_name_of(h: &Host) -> String {
    let r = h.status_json();
    r.raw
        .pointer("/router/mesh_name")
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("{}'s report has no router.mesh_name:\n{}", h.name(), r.raw))
        .to_string()
}

#[test]
fn same_password_other_mesh_name_is_refused() {
    let lab = Lab::new();
    let hosts = lab.switched_hosts(3);
    let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);
    h1.launch(&["--password", PASSWORD, "--mesh-name", "prod"]);
    h2.launch(&[
        "--password",
        PASSWORD,
        "--mesh-name",
        "staging",
        &h1.addr_for(h2).to_string(),
    ]);
    // Same mesh as h1, named through the environment.
    h3.launch_env(
        &[("WEAVE_MESH_NAME", "prod")],
        &["--password", PASSWORD, &h1.addr_for(h3).to_string()],
    );

    let reason = "authentication failed";
    wait_until(
        secs(20),
        "h1 refuses h2 (other mesh name): `authentication failed`",
        || reason_visible(h1, h2, reason),
    );
    wait_until(
        secs(20),
        "h2 is refused by h1 (other mesh name): `authentication failed`",
        || reason_visible(h2, h1, reason),
    );
    wait_until(secs(20), "h3 (same mesh name) connects to h1", || {
        h3.status_json().established_to(h1)
    });

    let c1 = Container::new(h1);
    let c2 = Container::new(h2);
    let c3 = Container::new(h3);
    h1.attach(&c1, "10.2.1.1/24");
    h2.attach(&c2, "10.2.1.2/24");
    h3.attach(&c3, "10.2.1.3/24");
    wait_ping(&c3, "10.2.1.1", secs(20));
    assert!(
        !ping(&c2, "10.2.1.1", 3),
        "c2 (mesh staging) reached c1 (mesh prod)"
    );
    assert!(
        !h2.status_json().established_to(h1),
        "h2 (mesh staging) holds an established connection to h1 (mesh prod)"
    );

    assert_eq!(mesh_name_of(h1), "prod");
    assert_eq!(mesh_name_of(h2), "staging");
    assert_eq!(mesh_name_of(h3), "prod");
    let status = h3.weave_ok(&["status"]);
    assert!(
        status
            .lines()
            .any(|l| l.trim_start().starts_with("MeshName:") && l.trim_end().ends_with("prod")),
        "`status` of h3 does not show the mesh name:\n{status}"
    );
}

#[test]
fn default_mesh_name_reported_and_bad_ones_refused() {
    let lab = Lab::new();
    let h1 = lab.switched_host("h1");
    for (name, why) in [("", "is empty"), ("a\u{1b}[31m", "control character")] {
        let out = h1.try_launch(&["--password", PASSWORD, "--mesh-name", name]);
        assert!(
            !out.success() && out.stderr.contains("--mesh-name") && out.stderr.contains(why),
            "launch --mesh-name {name:?} should fail naming the option and `{why}`:\n{out}"
        );
        assert!(!h1.router_running(), "a router runs after a refused launch");
    }
    h1.launch(&["--password", PASSWORD]);
    assert_eq!(mesh_name_of(&h1), "weave-rs");
}
