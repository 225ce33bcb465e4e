//! An exposed address (on the `weave` bridge) stays reachable from a
//! container while other containers come and go.
//!
//! A bridge without a MAC of its own takes the lowest MAC of its ports, so
//! attaching a container whose veth has a lower MAC, or removing the port
//! that had the lowest, changed the bridge's MAC; containers kept sending
//! to the old MAC (their ARP entry) and lost the host for 8-30 s. The
//! router now gives the bridge a fixed MAC. Here the containers' host-side
//! veths get MACs lower than any random one, so that a bridge without a
//! fixed MAC would change MAC at each step.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};

use netns_tests::*;

const EXPOSED: &str = "10.2.1.254";
/// Ping interval, seconds.
const INTERVAL: f64 = 0.1;
/// Longest tolerated run of lost replies (~1 s).
const MAX_LOST_IN_A_ROW: u32 = 10;
/// Host-side veth MACs lower than any the kernel picks at random.
const LOW_MACS: [&str; 2] = ["02:00:00:00:00:01", "02:00:00:00:00:02"];

/// What a running `ping -O` has shown: sequence numbers answered, and the
/// highest one sent.
#[derive(Default)]
struct Seen {
    answered: BTreeSet<u32>,
    sent: u32,
}

/// `ping -O -i 0.1` from a namespace, read line by line as it runs;
/// killed on drop.
struct ContinuousPing {
    child: Child,
    seen: Arc<Mutex<Seen>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

fn seq_of(line: &str) -> Option<u32> {
    let rest = &line[line.find("icmp_seq=")? + "icmp_seq=".len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

impl ContinuousPing {
    fn start(from: &impl AsNetns, to_ip: &str) -> ContinuousPing {
        let mut cmd = from.netns().command(&[
            "ping",
            "-n",
            "-O",
            "-i",
            &INTERVAL.to_string(),
            "-W",
            "1",
            to_ip,
        ]);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start ping (is iputils-ping installed?): {e}"));
        let stdout = child.stdout.take().expect("ping stdout");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s = seen.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Some(seq) = seq_of(&line) else { continue };
                let mut s = s.lock().unwrap();
                s.sent = s.sent.max(seq);
                if line.contains("bytes from") {
                    s.answered.insert(seq);
                }
            }
        });
        ContinuousPing {
            child,
            seen,
            reader: Some(reader),
        }
    }

    fn sent(&self) -> u32 {
        self.seen.lock().unwrap().sent
    }

    /// Waits until `n` more echo requests went out (each answered or not).
    #[track_caller]
    fn wait_more(&self, n: u32) {
        let target = self.sent() + n;
        wait_until(secs(30), &format!("ping sent request {target}"), || {
            self.sent() >= target
        });
    }

    /// The longest run of consecutive unanswered requests, and where it
    /// started; the last second's requests are left out (their replies may
    /// be on the way).
    fn longest_loss(&self) -> (u32, u32) {
        let s = self.seen.lock().unwrap();
        let last = s.sent.saturating_sub(MAX_LOST_IN_A_ROW);
        let (mut best, mut best_at, mut run, mut run_at) = (0, 0, 0, 0);
        for seq in 1..=last {
            if s.answered.contains(&seq) {
                run = 0;
            } else {
                if run == 0 {
                    run_at = seq;
                }
                run += 1;
                if run > best {
                    (best, best_at) = (run, run_at);
                }
            }
        }
        (best, best_at)
    }
}

impl Drop for ContinuousPing {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// The host-side veth (on the bridge) of container `c`, from `report`.
#[track_caller]
fn host_veth(h: &Host, c: &Container) -> String {
    let r = h.status_json();
    r.raw
        .get("attached")
        .and_then(|a| a.as_array())
        .into_iter()
        .flatten()
        .find(|a| {
            a.get("target")
                .and_then(|t| t.as_str())
                .is_some_and(|t| t.contains(c.name()))
        })
        .and_then(|a| a.get("host_veth").and_then(|v| v.as_str()))
        .unwrap_or_else(|| panic!("{} is not in attached of the report:\n{}", c.name(), r.raw))
        .to_string()
}

/// Attaches `c` at `cidr` and gives its host-side veth the MAC `mac`.
#[track_caller]
fn attach_low(h: &Host, c: &Container, cidr: &str, mac: &str) -> String {
    h.attach(c, cidr);
    let veth = host_veth(h, c);
    h.ns().ip(&["link", "set", "dev", &veth, "address", mac]);
    veth
}

fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[test]
fn exposed_address_reachable_while_containers_come_and_go() {
    let lab = Lab::new();
    let h1 = lab.host("h1");
    h1.launch(NO_ARGS);
    h1.weave_ok(&["expose", &format!("{EXPOSED}/24")]);
    let a = Container::new(&h1);
    h1.attach(&a, "10.2.1.1/24");
    wait_ping(&a, EXPOSED, secs(10));
    let bridge_mac = mac_of(&h1, "weave");

    let ping = ContinuousPing::start(&a, EXPOSED);
    ping.wait_more(10);

    lab.step("b (lower veth MAC) attached");
    let b = Container::new(&h1);
    attach_low(&h1, &b, "10.2.1.2/24", LOW_MACS[0]);
    ping.wait_more(20);

    lab.step("b detached");
    h1.weave_ok(&["detach", &b.path()]);
    ping.wait_more(20);

    lab.step("c (lower veth MAC) attached");
    let c = Container::new(&h1);
    let c_veth = attach_low(&h1, &c, "10.2.1.3/24", LOW_MACS[1]);
    ping.wait_more(20);

    lab.step("c removed (its namespace deleted)");
    drop(c);
    wait_until(secs(10), "c's veth gone with its namespace", || {
        !h1.ns().has_link(&c_veth)
    });
    ping.wait_more(20 + MAX_LOST_IN_A_ROW);

    let (lost, from) = ping.longest_loss();
    let now = mac_of(&h1, "weave");
    assert!(
        lost <= MAX_LOST_IN_A_ROW,
        "a lost {lost} echo replies in a row from the exposed {EXPOSED} (from icmp_seq={from}, \
         {:.1} s at one per {INTERVAL} s) while containers came and went; \
         bridge MAC {} at the start, {} now",
        f64::from(lost) * INTERVAL,
        mac_text(bridge_mac),
        mac_text(now)
    );
    assert_eq!(
        mac_text(now),
        mac_text(bridge_mac),
        "the bridge's MAC changed"
    );
}

/// A bridge left by an older router (or made by hand) without a MAC set
/// gets the fixed one at launch; one whose MAC the user set keeps it.
#[test]
fn existing_bridge_gets_a_fixed_mac_and_a_user_set_one_is_kept() {
    let lab = Lab::new();
    let h1 = lab.host("h1");
    let h2 = lab.host("h2");
    h1.ns().ip(&["link", "add", "weave", "type", "bridge"]);
    let user_mac = "02:77:65:61:76:65";
    h2.ns().ip(&[
        "link", "add", "weave", "address", user_mac, "type", "bridge",
    ]);
    h1.launch(NO_ARGS);
    h2.launch(NO_ARGS);

    for h in [&h1, &h2] {
        let t = h.ns().sh(&["cat", "/sys/class/net/weave/addr_assign_type"]);
        assert_eq!(
            t.trim(),
            "3",
            "{}: the bridge's MAC is not fixed (addr_assign_type 3 = set)",
            h.name()
        );
    }
    assert_eq!(mac_text(mac_of(&h2, "weave")), user_mac);

    let before = mac_of(&h1, "weave");
    let c = Container::new(&h1);
    attach_low(&h1, &c, "10.2.1.1/24", LOW_MACS[0]);
    assert_eq!(
        mac_text(mac_of(&h1, "weave")),
        mac_text(before),
        "h1's bridge took the MAC of a new port"
    );
}
