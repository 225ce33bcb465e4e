//! The lab: unique names, the underlay (a switch or point-to-point links),
//! hosts and containers, all removed when their guards drop.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use crate::cmd;
use crate::container::Container;
use crate::host::{Host, LinkInfo};
use crate::netns::Netns;
use crate::tools::{wait_ping, wait_until};

/// Prefix of every namespace the harness makes: `wrt<pid>x<n>`.
pub const NAME_PREFIX: &str = "wrt";

static LABS: AtomicU32 = AtomicU32::new(0);
static STALE: Once = Once::new();

/// What hosts and containers share with their lab (kept alive by them).
pub(crate) struct Ctx {
    pub prefix: String,
    pub started: std::time::Instant,
    /// Scratch directory (router state dirs live below it).
    pub dir: PathBuf,
    counter: AtomicU32,
    /// (short name, netns, state dir) of every host, for failure dumps.
    hosts: Mutex<Vec<(String, String, PathBuf)>>,
    dumped: AtomicBool,
}

impl Ctx {
    pub fn next(&self) -> u32 {
        self.counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn register_host(&self, short: &str, ns: &str, state_dir: &Path) {
        self.hosts.lock().unwrap_or_else(|e| e.into_inner()).push((
            short.into(),
            ns.into(),
            state_dir.into(),
        ));
    }

    /// Prints the report and log of every host, once: called by the first
    /// guard dropped while the test panics, so the state is the one the
    /// test failed in (no router has been torn down yet).
    pub fn dump_all_once(&self) {
        if self.dumped.swap(true, Ordering::SeqCst) {
            return;
        }
        let hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (short, ns, dir) in hosts {
            eprintln!("{}", crate::host::dump_host(&short, &ns, &dir));
        }
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Switch {
    ns: Netns,
    ports: u32,
}

/// One test's world. Make it first in a test (so it drops last).
pub struct Lab {
    ctx: Arc<Ctx>,
    switch: Mutex<Option<Switch>>,
    links: AtomicU32,
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

impl Lab {
    /// A new lab with a unique prefix. Checks that we are root and removes
    /// namespaces left behind by test processes that no longer exist.
    #[track_caller]
    pub fn new() -> Lab {
        if !nix::unistd::Uid::effective().is_root() {
            panic!("netns-tests need root (network namespaces, veth, bridges)");
        }
        STALE.call_once(remove_stale_namespaces);
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("{NAME_PREFIX}{}x{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("weave-rs-tests-{prefix}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        Lab {
            ctx: Arc::new(Ctx {
                prefix,
                started: std::time::Instant::now(),
                dir,
                counter: AtomicU32::new(0),
                hosts: Mutex::new(Vec::new()),
                dumped: AtomicBool::new(false),
            }),
            switch: Mutex::new(None),
            links: AtomicU32::new(0),
        }
    }

    /// The unique prefix of this lab's namespaces.
    pub fn prefix(&self) -> &str {
        &self.ctx.prefix
    }

    /// Scratch directory of this lab (removed at the end).
    pub fn dir(&self) -> &Path {
        &self.ctx.dir
    }

    /// Logs a step of the test with the time since the lab was made (shown
    /// by the test runner when the test fails, or with --nocapture).
    pub fn step(&self, what: &str) {
        eprintln!(
            "[{:7.2}s {}] {what}",
            self.ctx.started.elapsed().as_secs_f64(),
            self.ctx.prefix
        );
    }

    /// A full namespace name for a short one: `<prefix><short>`.
    pub fn ns_name(&self, short: &str) -> String {
        format!("{}{short}", self.ctx.prefix)
    }

    /// A host with no underlay link yet (`short` like "h1").
    #[track_caller]
    pub fn host(&self, short: &str) -> Host {
        Host::new(self.ctx.clone(), short)
    }

    /// A host plugged into the lab's switch (made on first use), with the
    /// next address of 10.77.0.0/24 (.1, .2, ...) on its interface `ul0`...
    #[track_caller]
    pub fn switched_host(&self, short: &str) -> Host {
        let host = self.host(short);
        self.plug(&host);
        host
    }

    /// `n` hosts h1..hn on one switch: 10.77.0.1 .. 10.77.0.n.
    #[track_caller]
    pub fn switched_hosts(&self, n: usize) -> Vec<Host> {
        (1..=n)
            .map(|i| self.switched_host(&format!("h{i}")))
            .collect()
    }

    /// Plugs `host` into the switch; returns its address there.
    #[track_caller]
    pub fn plug(&self, host: &Host) -> Ipv4Addr {
        let mut guard = self.switch.lock().unwrap_or_else(|e| e.into_inner());
        let sw = guard.get_or_insert_with(|| {
            let ns = Netns::create(&self.ns_name("sw"));
            ns.ip(&["link", "add", "br0", "type", "bridge"]);
            // No STP delay: ports forward as soon as they are up.
            ns.ip(&["link", "set", "br0", "type", "bridge", "forward_delay", "0"]);
            ns.ip(&["link", "set", "br0", "up"]);
            Switch { ns, ports: 0 }
        });
        sw.ports += 1;
        assert!(sw.ports < 250, "switch full");
        let port = format!("p{}", sw.ports);
        let addr = Ipv4Addr::new(10, 77, 0, sw.ports as u8);
        let ifname = host.next_ifname();
        sw.ns.ip(&[
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            &ifname,
            "netns",
            host.ns().name(),
        ]);
        sw.ns.ip(&["link", "set", &port, "master", "br0", "up"]);
        host.ns()
            .ip(&["addr", "add", &format!("{addr}/24"), "dev", &ifname]);
        host.ns().ip(&["link", "set", &ifname, "up"]);
        host.add_link(LinkInfo {
            peer: None,
            addr,
            ifname,
        });
        addr
    }

    /// A point-to-point link between two hosts on its own /24
    /// (10.77.K.1 on `a`, 10.77.K.2 on `b`, K = 1, 2, ...). Neither host
    /// forwards, so a link is reachable only from its two ends.
    #[track_caller]
    pub fn link(&self, a: &Host, b: &Host) -> (Ipv4Addr, Ipv4Addr) {
        let k = self.links.fetch_add(1, Ordering::Relaxed) + 1;
        assert!(k < 250, "too many links");
        let (ia, ib) = (a.next_ifname(), b.next_ifname());
        let (aa, ab) = (
            Ipv4Addr::new(10, 77, k as u8, 1),
            Ipv4Addr::new(10, 77, k as u8, 2),
        );
        a.ns().ip(&[
            "link",
            "add",
            &ia,
            "type",
            "veth",
            "peer",
            "name",
            &ib,
            "netns",
            b.ns().name(),
        ]);
        a.ns().ip(&["addr", "add", &format!("{aa}/24"), "dev", &ia]);
        b.ns().ip(&["addr", "add", &format!("{ab}/24"), "dev", &ib]);
        a.ns().ip(&["link", "set", &ia, "up"]);
        b.ns().ip(&["link", "set", &ib, "up"]);
        a.add_link(LinkInfo {
            peer: Some(b.ns().name().to_string()),
            addr: aa,
            ifname: ia,
        });
        b.add_link(LinkInfo {
            peer: Some(a.ns().name().to_string()),
            addr: ab,
            ifname: ib,
        });
        (aa, ab)
    }

    /// `n` hosts h1..hn in a line: h1-h2 on one link, h2-h3 on another...
    /// No host forwards IP, so h1 cannot reach h3 on the underlay.
    #[track_caller]
    pub fn chain(&self, n: usize) -> Vec<Host> {
        let hosts: Vec<Host> = (1..=n).map(|i| self.host(&format!("h{i}"))).collect();
        for w in hosts.windows(2) {
            self.link(&w[0], &w[1]);
        }
        hosts
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // The switch (hosts and containers have their own guards).
        let sw = self.switch.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(sw);
    }
}

/// Launches routers on `hosts` so that they form a full mesh: h1 alone, then
/// every next host with the addresses of all previous ones; waits until every
/// pair reports an established connection (30 s). Returns the peer names.
#[track_caller]
pub fn launch_mesh(hosts: &[Host]) -> Vec<String> {
    let mut names = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let peers: Vec<String> = hosts[..i]
            .iter()
            .map(|p| p.addr_for(h).to_string())
            .collect();
        names.push(h.launch(&peers));
    }
    wait_full_mesh(hosts, Duration::from_secs(30));
    names
}

/// A container on each of the first two of `hosts` (whose routers run), at
/// `<net>.1/24` and `<net>.2/24` (`net` like "10.2.1"); returns once the two
/// routers are connected and the first container pings the second.
#[track_caller]
pub fn connected_containers(hosts: &[Host], net: &str) -> (Container, Container) {
    let [h1, h2, ..] = hosts else {
        panic!("connected_containers needs two hosts, got {}", hosts.len());
    };
    let c1 = Container::new(h1);
    let c2 = Container::new(h2);
    h1.attach(&c1, &format!("{net}.1/24"));
    h2.attach(&c2, &format!("{net}.2/24"));
    wait_full_mesh(&hosts[..2], Duration::from_secs(30));
    wait_ping(&c1, &format!("{net}.2"), Duration::from_secs(20));
    (c1, c2)
}

/// Docker containers a test starts with the label `wrt=<lab prefix>`:
/// every one of them is removed when this drops, even on failure.
pub struct DockerContainers(pub String);

impl DockerContainers {
    /// The label to give them (`docker run --label ...`).
    pub fn label(&self) -> String {
        format!("wrt={}", self.0)
    }
}

impl Drop for DockerContainers {
    fn drop(&mut self) {
        let ids = cmd::run(&[
            "docker",
            "ps",
            "-aq",
            "--filter",
            &format!("label={}", self.label()),
        ]);
        for id in ids.stdout.split_whitespace() {
            // `weave-rs run`'s dir for the container: its router removes it
            // on Docker's destroy event, but the routers may be gone by now.
            let dir = cmd::run(&[
                "docker",
                "inspect",
                "--format",
                "{{index .Config.Labels \"weave-rs.run-dir\"}}",
                id,
            ]);
            let _ = cmd::run(&["docker", "rm", "-f", id]);
            let dir = dir.stdout.trim();
            if dir.starts_with("/var/lib/weave-rs/run/") && !dir.contains("..") {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// Fails the test unless Docker has `images` (scripts/test.sh builds them).
#[track_caller]
pub fn require_images(images: &[&str]) {
    for image in images {
        let info = cmd::run(&["docker", "image", "inspect", image]);
        assert!(
            info.success(),
            "image {image} missing: run scripts/docker-up.sh and scripts/build-images.sh \
             (scripts/test.sh does)\n{}",
            info.stderr
        );
    }
}

/// Waits until every host reports an established connection to every other.
#[track_caller]
pub fn wait_full_mesh(hosts: &[Host], timeout: Duration) {
    wait_until(
        timeout,
        "every pair of hosts has an established connection",
        || {
            hosts.iter().all(|a| {
                let r = a.status_json();
                hosts
                    .iter()
                    .filter(|b| b.ns().name() != a.ns().name())
                    .all(|b| r.established_to(b))
            })
        },
    );
}

/// Deletes namespaces named `wrt<pid>x...` whose test process is gone (a
/// test killed by a timeout never ran its guards).
fn remove_stale_namespaces() {
    // Docker engines of dead tests first: their containers' processes are
    // found through the engines' state, before the lab dirs go below.
    for dir in stale_scratch_dirs() {
        crate::docker_engine::sweep_stale_engines(&dir);
    }
    let out = cmd::run(&["ip", "netns", "list"]);
    if !out.success() {
        return;
    }
    for line in out.stdout.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(NAME_PREFIX) else {
            continue;
        };
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        if digits.is_empty() || !rest[digits.len()..].starts_with('x') {
            continue;
        }
        if Path::new(&format!("/proc/{digits}")).exists() {
            continue;
        }
        eprintln!("netns-tests: removing stale namespace {name}");
        // Netns's Drop kills its processes and deletes it.
        drop(Netns::adopt(name));
    }
    // Scratch directories of dead test processes.
    for dir in stale_scratch_dirs() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Scratch directories (`weave-rs-tests-wrt<pid>x...`) of dead test processes.
fn stale_scratch_dirs() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    let mut dirs = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&format!("weave-rs-tests-{NAME_PREFIX}")) else {
            continue;
        };
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        if !digits.is_empty() && !Path::new(&format!("/proc/{digits}")).exists() {
            dirs.push(e.path());
        }
    }
    dirs
}
