//! Two routers each launched with the other as its peer: both dial, and
//! one connection is kept (the one the smaller name dialled). The other
//! side's target is reached through that connection: it must show as
//! connected, not as `retrying` with "already connected to peer", and must
//! not be dialled again while that connection lives. (It used to stay
//! listed as retrying and was redialled every few seconds.)

use std::time::{Duration, Instant};

use netns_tests::*;

/// Longer than the dial backoff's cap (10 s), so a redial would show.
const WATCH: Duration = Duration::from_secs(12);

/// What `a` lists with `b`: one established connection and nothing else.
fn only_one_established(a: &Host, b: &Host) -> Result<(), String> {
    let r = a.status_json();
    let with: Vec<String> = r
        .connections_with(b)
        .map(|c| format!("{} {} {:?}", c.addr, c.state, c.last_error))
        .collect();
    if with.len() == 1 && r.established_to(b) {
        Ok(())
    } else {
        Err(format!("{} lists with {}: {with:?}", a.name(), b.name()))
    }
}

#[test]
fn each_names_the_other_and_both_show_one_established_connection() {
    let lab = Lab::new();
    let hosts = lab.switched_hosts(2);
    let (h1, h2) = (&hosts[0], &hosts[1]);
    let h1_addr = h1.addr_for(h2).to_string();
    let h2_addr = h2.addr_for(h1).to_string();

    h1.launch(&["--no-discovery", h2_addr.as_str()]);
    h2.launch(&["--no-discovery", h1_addr.as_str()]);
    wait_until(
        secs(20),
        "h1 and h2 each list one established connection",
        || only_one_established(h1, h2).is_ok() && only_one_established(h2, h1).is_ok(),
    );

    lab.step("the target reached through the peer's connection stays connected");
    let start = Instant::now();
    while start.elapsed() < WATCH {
        for (a, b) in [(h1, h2), (h2, h1)] {
            if let Err(e) = only_one_established(a, b) {
                panic!("{:?} after the mesh formed: {e}", start.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
