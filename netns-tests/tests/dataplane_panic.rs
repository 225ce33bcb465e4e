//! A panic in the data-plane thread ends the router, with a log line that
//! says so and a non-zero exit, so that a supervisor restarts it; launched
//! again, it serves as before. (It used to keep answering `status` with no
//! data path at all.) Debug builds panic on cue: a datagram starting with
//! `WEAVE_RS_TEST_PANIC_CUE`.

use std::process::{Child, Stdio};

use netns_tests::*;

const CUE: &str = "weave-rs test cue: panic now";

/// Kills the foreground router if the test ends early.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_dead_data_plane_ends_the_router_and_a_relaunch_serves_again() {
    let lab = Lab::new();
    let hosts = lab.switched_hosts(2);
    let (h1, h2) = (&hosts[0], &hosts[1]);

    lab.step("h1's router runs in the foreground, as under a supervisor");
    let log_path = h1.state_dir().join("foreground.log");
    let log = std::fs::File::create(&log_path).expect("create foreground.log");
    let mut cmd = h1.weave_command(&["launch", "--foreground"]);
    cmd.env("WEAVE_RS_TEST_PANIC_CUE", CUE)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let mut router = Reaped(cmd.spawn().expect("spawn weave-rs launch --foreground"));
    wait_until(secs(30), "h1's router answers", || {
        h1.weave(&["report"]).success()
    });
    h2.launch(&[h1.addr_for(h2).to_string()]);
    wait_full_mesh(&hosts, secs(30));

    lab.step("a datagram makes h1's data plane panic");
    let h1_udp = std::net::SocketAddr::from((h1.addr_for(h2), 6783));
    udp_send(h2, h1_udp, &[CUE.as_bytes().to_vec()]);
    let mut status = None;
    wait_until(secs(10), "h1's router exits", || {
        status = router.0.try_wait().expect("wait for the router");
        status.is_some()
    });
    let status = status.expect("exit status");
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(!status.success(), "the router exited with {status}\n{log}");
    assert!(
        log.contains("the data-plane thread panicked: test-injected data-plane panic"),
        "the log does not say why the router ended:\n{log}"
    );
    assert!(!h1.router_running(), "a process survived in h1");
    assert!(!h1.weave(&["status"]).success(), "status still answers");

    lab.step("relaunched, as a supervisor would, h1 serves again");
    h1.launch(NO_ARGS);
    wait_full_mesh(&hosts, secs(30));
}
