//! A container floods its router with 200,000 random source MACs (more if
//! too few reached the router to fill its table), more than the MAC table
//! holds (65,536). Right after, a newly attached container on the same host
//! pings across within 10 s; both routers are still up and their tables
//! stay at or under the cap.

use netns_tests::*;

/// The routers' MAC table cap (`core::router::MAC_TABLE_CAPACITY`).
const MAC_TABLE_CAP: u64 = 65_536;
const FLOOD: usize = 200_000;

/// A broadcast frame from `src` with a local experimental EtherType: every
/// router learns its source, and containers ignore it.
fn flood_frame(src: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.resize(60, 0);
    f
}

#[test]
fn mac_flood() {
    let lab = Lab::new();
    let hosts = lab.switched_hosts(2);
    let (h1, h2) = (&hosts[0], &hosts[1]);

    lab.step("launch h1, h2; containers c1 (h1) and c2 (h2)");
    launch_mesh(&hosts);
    let (c1, _c2) = connected_containers(&hosts, "10.2.9");

    lab.step("c1 sends 200,000 frames with random source MACs");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let flood = |from: usize, count: usize| {
        let started = std::time::Instant::now();
        eth_send(&c1, "ethwe", count, move |i| {
            flood_frame(random_local_mac(seed, from + i))
        });
        eprintln!("{count} frames sent in {:.2?}", started.elapsed());
    };
    flood(0, FLOOD);
    // Frames the router cannot read in time are dropped at its TAP: flood
    // on until its table is full, or the test would prove nothing.
    let mut sent = FLOOD;
    let entries = |h: &Host| h.status_json().mac_table_entries().unwrap_or(0);
    while entries(h1) < MAC_TABLE_CAP && sent < 5 * FLOOD {
        flood(sent, FLOOD / 4);
        sent += FLOOD / 4;
    }
    assert_eq!(
        entries(h1),
        MAC_TABLE_CAP,
        "{sent} random source MACs did not fill h1's MAC table"
    );

    lab.step("a container attached now pings c2 within 10 s");
    let c3 = Container::new(h1);
    h1.attach(&c3, "10.2.9.3/24");
    wait_ping(&c3, "10.2.9.2", secs(10));

    lab.step("both routers are up, their MAC tables within the cap");
    for h in [h1, h2] {
        assert!(h.router_running(), "router on {} died", h.name());
        let r = h.status_json();
        let entries = r
            .mac_table_entries()
            .unwrap_or_else(|| panic!("no mac_table_entries in the report of {}", h.name()));
        eprintln!(
            "{}: {entries} MAC entries, {} evictions, {} frames from the TAP",
            h.name(),
            r.stat("mac_evictions"),
            r.stat("frames_from_tap")
        );
        assert!(
            entries <= MAC_TABLE_CAP,
            "{}: {entries} MAC entries, over the cap of {MAC_TABLE_CAP}",
            h.name()
        );
    }
    assert!(
        h1.status_json().stat("mac_evictions") > 0,
        "h1's table is full, yet it counted no mac_evictions"
    );
}
