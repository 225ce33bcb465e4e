//! Several `weave-rs launch` at once on one host: exactly one wins, the
//! others fail with one line naming the lock's holder and touch nothing,
//! so the winner's TAP stays intact and traffic flows through it.
//!
//! Eight at once, forty times: on c153852 (no lock) a loser deleted the
//! TAP of a router that had started ("TAP pump: File descriptor in bad
//! state") in 3 runs of 4, often within ten rounds. The losers' messages
//! are checked after the last round, so such a failure shows as what it is.

use netns_tests::*;

const ROUNDS: usize = 40;
const AT_ONCE: usize = 8;

#[test]
fn concurrent_launches() {
    let lab = Lab::new();
    let hosts = lab.switched_hosts(2);
    let (h1, h2) = (&hosts[0], &hosts[1]);
    h2.launch(NO_ARGS);
    let (c1, c2) = (Container::new(h1), Container::new(h2));
    h2.attach(&c2, "10.2.1.2/24");
    let args = [h2.addr_for(h1).to_string()];

    let mut losers = Vec::new();
    for round in 1..=ROUNDS {
        lab.step(&format!("round {round}: {AT_ONCE} launches at once on h1"));
        let outs: Vec<Output> = std::thread::scope(|s| {
            let runs: Vec<_> = (0..AT_ONCE)
                .map(|_| s.spawn(|| h1.try_launch(&args)))
                .collect();
            runs.into_iter()
                .map(|r| r.join().expect("launch thread"))
                .collect()
        });
        let all = outs
            .iter()
            .map(|o| o.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        let winners = outs.iter().filter(|o| o.success()).count();
        assert_eq!(winners, 1, "round {round}: want exactly one winner:\n{all}");
        if round == 1 {
            h1.attach(&c1, "10.2.1.1/24");
        } // later rounds: the router re-attaches c1 from its state dir
        assert!(h1.ns().has_link("weave-tap"), "round {round}: TAP gone");
        wait_ping(&c1, "10.2.1.2", secs(20));
        losers.extend(
            outs.into_iter()
                .filter(|o| !o.success())
                .map(|o| (round, o)),
        );
        h1.weave_ok(&["stop"]);
    }

    lab.step("every loser said, in one line, who holds the lock");
    for (round, o) in &losers {
        let lines: Vec<&str> = o.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "round {round}: want one line:\n{o}");
        let line = lines[0];
        if *round == 1 {
            eprintln!("loser: {line}");
        }
        assert!(
            line.starts_with("weave-rs:")
                && line.contains("already running")
                && line.contains("holds the lock")
                && line.contains("pid "),
            "round {round}: want the lock error naming its holder:\n{o}"
        );
    }
}
