//! A second Docker engine, inside one test host's network namespace, so
//! that two "hosts" can each have a container with the same Docker name.
//!
//! [`DockerEngine::start`] runs `dockerd` (and the containerd it manages)
//! in the host's network namespace and in a private mount namespace, with
//! everything it owns under a scratch directory of the lab:
//!
//! ```text
//! nsenter --net=/var/run/netns/HOST unshare --mount --propagation private sh -c '
//!   mkdir -p /run/docker/plugins; mount --bind DIR/plugins /run/docker/plugins
//!   exec dockerd --data-root DIR/data --exec-root DIR/exec --pidfile DIR/docker.pid \
//!     -H unix://DIR/docker.sock --iptables=false --ip6tables=false --bridge=none ...'
//! ```
//!
//! It waits until `docker -H unix://DIR/docker.sock info` answers, loads
//! the images the test asks for from the machine's engine, and sets
//! `DOCKER_HOST` on the host ([`Host::set_env`]): the host's router, once
//! launched, and its `weave-rs run` commands use this engine.
//!
//! With `--bridge=none` containers get no `eth0` (their network mode is
//! `none`); `weave-rs run` gives them `ethwe`. The private mount namespace
//! is a copy of the machine's, so the engine sees `/var/lib/weave-rs/run`
//! where `weave-rs run` puts the waiter it bind-mounts.
//!
//! Dropping the engine (also when the test panics) removes its containers,
//! stops dockerd and containerd, kills whatever of theirs is left and
//! deletes the directory. Make it after the host (so it drops first): the
//! host's namespace guard SIGKILLs every process in the namespace, dockerd
//! included; the drop then still kills the containers (their pids are in
//! the engine's state), but the engine cannot remove them cleanly.
//!
//! The engine's processes live in the host's namespace, so
//! [`Host::router_pids`], [`Host::router_running`] and
//! [`Host::kill_router`] see (and kill) them too.
//!
//! # With the weave-rs Docker plugin
//!
//! [`DockerEngine::start_with_plugin`] starts the same engine, and also:
//!
//! * sets `WEAVE_RS_PLUGIN_SOCKET=DIR/plugins/weave-rs.sock` on the host,
//!   so its router (launched afterwards: the variable is read at launch)
//!   serves the `weave-rs` network and IPAM drivers in this engine's
//!   plugin directory. The engine sees `DIR/plugins` as
//!   `/run/docker/plugins` (the bind mount above, in its private mount
//!   namespace), so it finds `/run/docker/plugins/weave-rs.sock`; the
//!   router, in the machine's mount namespace, binds the socket by its
//!   real path. Each host's router serves its own engine, and nothing of
//!   the machine's engine (whose /run/docker/plugins is the real one) is
//!   touched.
//! * starts dockerd with `--dns 10.53.0.53` ([`HOST_RESOLVER`]), an
//!   address the test owns and nothing answers: it stands for the host's
//!   resolvers, which the engine's embedded resolver (127.0.0.11) asks,
//!   from the container's own namespace, for every name it does not know
//!   (the containers of other engines). The plugin routes that address
//!   through weave-rs DNS and the host redirects the queries to it, so
//!   names resolve with no engine setting pointing at weave-rs (the
//!   machine's own resolvers must not be queried by a test: launch the
//!   router with a resolv.conf naming [`HOST_RESOLVER`]).
//!
//! Dropping such an engine removes, while the router still serves the
//! plugin, the containers, then the networks (`docker network rm`), then
//! stops dockerd: a remote driver's network left behind makes dockerd look
//! the plugin up again, 15 s a lookup, once the router is gone. When the
//! plugin socket no longer answers (the router died), it skips the
//! removals (each would wait those 15 s) and stops dockerd at once.

use std::fs::File;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cmd::{run_cmd, Output, DEFAULT_TIMEOUT};
use crate::host::Host;
use crate::lab::require_images;
use crate::lab::Ctx;

/// How long dockerd may take to answer `docker info`.
pub const ENGINE_START_TIMEOUT: Duration = Duration::from_secs(60);
/// Name of an engine's directory below the lab's scratch directory:
/// `<lab dir>/dockerd-<host>-<n>` (the stale sweep looks for this prefix).
pub(crate) const ENGINE_DIR_PREFIX: &str = "dockerd-";
/// The weave-rs DNS address: the upstream server of an engine started
/// with [`DockerEngine::start_with_plugin`].
pub const WEAVE_DNS: &str = "169.254.53.53";
/// The "host's resolver" of a plugin engine (`dockerd --dns`): never
/// answered; see the module documentation.
pub const HOST_RESOLVER: &str = "10.53.0.53";
/// The name the weave-rs plugin's drivers go by (`docker network create
/// -d weave-rs --ipam-driver weave-rs`), and its socket's file name.
pub const PLUGIN_NAME: &str = "weave-rs";

/// A dockerd of the test's in one host's network namespace. See the module
/// documentation.
pub struct DockerEngine {
    ctx: Arc<Ctx>,
    dir: PathBuf,
    host: String,
    child: Option<Child>,
    started_in: Duration,
    /// `DIR/plugins/weave-rs.sock` when the host's router serves the
    /// plugin ([`DockerEngine::start_with_plugin`]).
    plugin: Option<PathBuf>,
    /// The host's network namespace and the `sh -c` script that starts
    /// dockerd ([`DockerEngine::kill9_and_restart`] runs it again).
    ns_path: PathBuf,
    script: String,
}

impl std::fmt::Debug for DockerEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "docker engine of {} ({})", self.host, self.dir.display())
    }
}

impl DockerEngine {
    /// Starts an engine in `host`'s network namespace, waits until it
    /// answers (60 s, else panics with its log), loads `images` from the
    /// machine's engine, and sets `DOCKER_HOST` on `host` (for its router,
    /// once launched, and every weave-rs command it runs).
    #[track_caller]
    pub fn start(host: &Host, images: &[&str]) -> DockerEngine {
        Self::start_opts(host, images, false)
    }

    /// Like [`DockerEngine::start`], for the weave-rs Docker plugin (see the
    /// module documentation): also sets `WEAVE_RS_PLUGIN_SOCKET` on `host`
    /// to `DIR/plugins/weave-rs.sock` (this engine's plugin directory), and
    /// runs dockerd with `--dns 10.53.0.53` ([`HOST_RESOLVER`]). Call it before launching
    /// `host`'s router (the router reads the variable at launch); panics
    /// when something already runs in `host`'s namespace.
    #[track_caller]
    pub fn start_with_plugin(host: &Host, images: &[&str]) -> DockerEngine {
        let pids = host.router_pids();
        assert!(
            pids.is_empty(),
            "start the plugin's engine of {} before its router is launched \
             (it reads WEAVE_RS_PLUGIN_SOCKET at launch); processes already \
             in its namespace: {pids:?}",
            host.name()
        );
        Self::start_opts(host, images, true)
    }

    #[track_caller]
    fn start_opts(host: &Host, images: &[&str], plugin: bool) -> DockerEngine {
        require_images(images);
        let ctx = host.ctx();
        let dir = ctx
            .dir
            .join(format!("{ENGINE_DIR_PREFIX}{}-{}", host.name(), ctx.next()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("plugins"))
            .unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        // Not the machine's /etc/docker/daemon.json.
        std::fs::write(dir.join("daemon.json"), "{}\n")
            .unwrap_or_else(|e| panic!("write {}/daemon.json: {e}", dir.display()));
        let d = dir.display().to_string();
        let plugin = plugin.then(|| dir.join("plugins").join(format!("{PLUGIN_NAME}.sock")));
        // Names of other engines' containers: see the module documentation.
        let dns = if plugin.is_some() {
            format!(" --dns {HOST_RESOLVER}")
        } else {
            String::new()
        };
        let script = format!(
            "mkdir -p /run/docker/plugins && mount --bind '{d}/plugins' /run/docker/plugins && \
             exec dockerd --config-file '{d}/daemon.json' --data-root '{d}/data' \
             --exec-root '{d}/exec' --pidfile '{d}/docker.pid' -H 'unix://{d}/docker.sock' \
             --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
             --bridge=none{dns}"
        );
        let started = Instant::now();
        let ns_path = PathBuf::from(host.ns().path());
        let child = spawn_dockerd(&ns_path, &script, &dir);
        let mut engine = DockerEngine {
            ctx: ctx.clone(),
            dir,
            host: host.name().to_string(),
            child: Some(child),
            started_in: Duration::ZERO,
            plugin,
            ns_path,
            script,
        };
        // From here a panic drops `engine`, which cleans up.
        engine.wait_ready(started, ENGINE_START_TIMEOUT);
        engine.started_in = started.elapsed();
        engine.load_images(images);
        host.set_env("DOCKER_HOST", &engine.docker_host());
        if let Some(sock) = &engine.plugin {
            host.set_env("WEAVE_RS_PLUGIN_SOCKET", &sock.display().to_string());
        }
        engine
    }

    /// SIGKILLs dockerd (not its containerd nor the containers' shims),
    /// waits until it is gone, removes the pid file it left, and starts it
    /// again with the same directories and flags (in a new private mount
    /// namespace of the same host). Waits until `docker info` answers,
    /// for up to `timeout` (a restart without the plugin spends 15 s on
    /// each plugin lookup before the API answers); returns how long that
    /// took from the new start. The log goes on in the same file.
    #[track_caller]
    pub fn kill9_and_restart(&mut self, timeout: Duration) -> Duration {
        if let Some(mut child) = self.child.take() {
            // nsenter, unshare and sh exec: the child is dockerd.
            let _ = child.kill();
            let _ = child.wait();
        }
        // Whatever the pid file names must be gone too (it is the child).
        let pidfile = self.dir.join("docker.pid");
        if let Some(pid) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Path::new(&format!("/proc/{pid}")).exists() {
                assert!(
                    Instant::now() < deadline,
                    "dockerd {pid} of {} survives SIGKILL",
                    self.host
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_file(&pidfile);
        // The containerd dockerd started outlives it; the new dockerd uses
        // it again, unless it is dead or a zombie nobody reaps (orphans go
        // to the machine's init): then its pid file must go, or dockerd
        // waits for it and gives up.
        let cpid = self.dir.join("exec/containerd/containerd.pid");
        if let Some(pid) = std::fs::read_to_string(&cpid)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let state = proc_state(pid);
            eprintln!(
                "netns-tests: {self:?}: dockerd killed; its containerd {pid} is {}",
                state.map_or("gone".to_string(), |c| format!("in state {c}"))
            );
            if matches!(state, None | Some('Z') | Some('X')) {
                let _ = std::fs::remove_file(&cpid);
            }
        }
        let started = Instant::now();
        self.child = Some(spawn_dockerd(&self.ns_path, &self.script, &self.dir));
        if let Err(exited) = self.try_wait_ready(started, timeout) {
            // A loaded machine: the surviving containerd did not answer the
            // new dockerd in time, and it gave up. Once more, as a
            // supervisor would.
            let log = self.log_tail(60);
            assert!(
                log.contains("timeout waiting for containerd"),
                "dockerd for {} exited ({exited}) before it answered\n{log}",
                self.host
            );
            eprintln!("netns-tests: {self:?}: dockerd gave up on containerd; starting it again");
            self.child = Some(spawn_dockerd(&self.ns_path, &self.script, &self.dir));
            self.wait_ready(started, timeout);
        }
        started.elapsed()
    }

    #[track_caller]
    fn wait_ready(&mut self, started: Instant, timeout: Duration) {
        if let Err(status) = self.try_wait_ready(started, timeout) {
            panic!(
                "dockerd for {} exited ({status}) before it answered\n{}",
                self.host,
                self.log_tail(60)
            );
        }
    }

    /// Waits until `docker info` answers; Err(its exit status) if dockerd
    /// exits first. Panics after `timeout`.
    #[track_caller]
    fn try_wait_ready(&mut self, started: Instant, timeout: Duration) -> Result<(), String> {
        let mut last = None;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(status.to_string());
                }
            }
            let out = self.docker_timeout(
                &["info", "--format", "{{.ServerVersion}}"],
                Duration::from_secs(10),
            );
            if out.success() {
                return Ok(());
            }
            if started.elapsed() > timeout {
                panic!(
                    "dockerd for {} did not answer `docker info` within {timeout:?}\n\
                     last try:\n{}\n{}",
                    self.host,
                    last.unwrap_or(out),
                    self.log_tail(60)
                );
            }
            last = Some(out);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `docker save IMAGES` from the machine's engine, loaded into this one.
    #[track_caller]
    pub fn load_images(&self, images: &[&str]) {
        if images.is_empty() {
            return;
        }
        let tar = self.dir.join("images.tar");
        let tar_s = tar.display().to_string();
        let mut save = Command::new("docker");
        save.args(["save", "-o", &tar_s]).args(images);
        run_cmd(save, Duration::from_secs(120)).ok();
        let loaded = self.docker_timeout(&["load", "-i", &tar_s], Duration::from_secs(120));
        let _ = std::fs::remove_file(&tar);
        if !loaded.success() {
            panic!(
                "loading {images:?} into the engine of {} failed:\n{loaded}\n{}",
                self.host,
                self.log_tail(30)
            );
        }
    }

    /// The engine's directory (data, exec root, socket, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The engine's API socket: `DIR/docker.sock`.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// `unix://DIR/docker.sock`, for `docker -H` or `DOCKER_HOST`.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// The plugin socket the host's router serves for this engine
    /// (`DIR/plugins/weave-rs.sock`), when started with
    /// [`DockerEngine::start_with_plugin`].
    pub fn plugin_socket(&self) -> Option<&Path> {
        self.plugin.as_deref()
    }

    /// Does something accept connections on the plugin socket? (False for
    /// an engine without the plugin.)
    pub fn plugin_answers(&self) -> bool {
        self.plugin
            .as_deref()
            .is_some_and(|p| UnixStream::connect(p).is_ok())
    }

    /// How long dockerd took from its start until `docker info` answered.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The command `docker -H unix://DIR/docker.sock ARGS...`.
    pub fn docker_command<S: AsRef<str>>(&self, args: &[S]) -> Command {
        let mut c = Command::new("docker");
        c.args(["-H", &self.docker_host()]);
        c.args(args.iter().map(|s| s.as_ref()));
        c
    }

    /// Runs `docker -H ... ARGS...` (30 s timeout); returns its output.
    #[track_caller]
    pub fn docker<S: AsRef<str>>(&self, args: &[S]) -> Output {
        self.docker_timeout(args, DEFAULT_TIMEOUT)
    }

    /// Runs `docker -H ... ARGS...` with a timeout.
    #[track_caller]
    pub fn docker_timeout<S: AsRef<str>>(&self, args: &[S], timeout: Duration) -> Output {
        run_cmd(self.docker_command(args), timeout)
    }

    /// Runs `docker -H ... ARGS...`; it must succeed. Returns stdout.
    #[track_caller]
    pub fn docker_ok<S: AsRef<str>>(&self, args: &[S]) -> String {
        self.docker(args).ok().stdout
    }

    /// The last `n` lines of dockerd's log.
    pub fn log_tail(&self, n: usize) -> String {
        let path = self.dir.join("dockerd.log");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(n);
        let mut s = format!("  --- {} (last {n} lines) ---\n", path.display());
        for l in &lines[from..] {
            s.push_str("    ");
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for DockerEngine {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The routers' state before this engine's containers go.
            self.ctx.dump_all_once();
            eprintln!(
                "\n===== netns-tests: docker engine of {} at failure =====\n{}",
                self.host,
                self.log_tail(20)
            );
        }
        // Without its plugin, every removal below waits 15 s per plugin
        // lookup before it fails: skip them, dockerd is killed anyway.
        let plugin_gone = self.plugin.is_some() && !self.plugin_answers();
        if plugin_gone {
            eprintln!(
                "netns-tests: {self:?}: nothing answers on the plugin socket; \
                 stopping it without removing its containers and networks"
            );
        }
        if self.running() && !plugin_gone {
            let ids = self.docker_timeout(&["ps", "-aq"], Duration::from_secs(10));
            let ids: Vec<&str> = ids.stdout.split_whitespace().collect();
            if !ids.is_empty() {
                let mut argv = vec!["rm", "-f"];
                argv.extend(ids);
                let out = self.docker(&argv);
                if !out.success() {
                    eprintln!("netns-tests: removing the containers of {self:?}:\n{out}");
                }
            }
            // Networks after their containers, before dockerd stops (while
            // the router still serves the plugin).
            let nets = self.docker_timeout(
                &["network", "ls", "-q", "--filter", "type=custom"],
                Duration::from_secs(10),
            );
            let nets: Vec<&str> = nets.stdout.split_whitespace().collect();
            if !nets.is_empty() {
                let mut argv = vec!["network", "rm"];
                argv.extend(nets);
                let out = self.docker(&argv);
                if !out.success() {
                    eprintln!("netns-tests: removing the networks of {self:?}:\n{out}");
                }
            }
        }
        if let Some(mut child) = self.child.take() {
            // dockerd stops the containerd it started on SIGTERM.
            let pid = Pid::from_raw(child.id() as i32);
            let _ = kill(pid, Signal::SIGTERM);
            let wait = if plugin_gone { 5 } else { 20 };
            let deadline = Instant::now() + Duration::from_secs(wait);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        eprintln!("netns-tests: dockerd of {} ignored SIGTERM", self.host);
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        kill_leftovers(&self.dir);
        for attempt in 0..10 {
            match std::fs::remove_dir_all(&self.dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if attempt == 9 => {
                    eprintln!("netns-tests: cannot remove {}: {e}", self.dir.display())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

/// The state letter of process `pid` (`R`, `S`, `Z`...), if it exists.
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": the comm may hold spaces and parentheses.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Starts dockerd: `nsenter --net=NS unshare --mount --propagation private
/// sh -c SCRIPT` (each execs the next: the child is dockerd), its output
/// appended to `dir/dockerd.log`.
#[track_caller]
fn spawn_dockerd(ns_path: &Path, script: &str, dir: &Path) -> Child {
    let log = File::options()
        .create(true)
        .append(true)
        .open(dir.join("dockerd.log"))
        .unwrap_or_else(|e| panic!("open {}/dockerd.log: {e}", dir.display()));
    Command::new("nsenter")
        .arg(format!("--net={}", ns_path.display()))
        .args(["unshare", "--mount", "--propagation", "private"])
        .args(["sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().expect("dup log")))
        .stderr(Stdio::from(log))
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start dockerd (nsenter): {e}"))
}

/// Kills what an engine under `dir` may have left: its containers' main
/// processes (pids from the engine's state, checked against their cgroup)
/// and every process whose command line names `dir` (dockerd, containerd,
/// shims). Waits up to 5 s for them to go, then removes the containers'
/// cgroups that no runtime cleaned up (killed without `runc delete`).
pub(crate) fn kill_leftovers(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut pids = container_pids(dir);
        pids.extend(pids_naming(dir));
        if pids.is_empty() {
            remove_cgroups(dir);
            return;
        }
        if Instant::now() > deadline {
            eprintln!(
                "netns-tests: processes of the engine in {} survive: {pids:?}",
                dir.display()
            );
            return;
        }
        for p in pids {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Live main processes of the containers of the engine under `dir`.
fn container_pids(dir: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir.join("data/containers")) else {
        return pids;
    };
    for e in rd.flatten() {
        let id = e.file_name().to_string_lossy().into_owned();
        let Ok(text) = std::fs::read_to_string(e.path().join("config.v2.json")) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let Some(pid) = v["State"]["Pid"].as_i64().filter(|p| *p > 0) else {
            continue;
        };
        // Still that container's process (not a reused pid)?
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        if cgroup.contains(&id) {
            pids.push(pid as i32);
        }
    }
    pids
}

/// Empty cgroups (`<hierarchy>/docker/<id>`) of the engine's containers.
fn remove_cgroups(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir.join("data/containers")) else {
        return;
    };
    let ids: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    if ids.is_empty() {
        return;
    }
    let root = Path::new("/sys/fs/cgroup");
    let mut parents = vec![root.join("docker")];
    if let Ok(rd) = std::fs::read_dir(root) {
        parents.extend(rd.flatten().map(|e| e.path().join("docker")));
    }
    for parent in &parents {
        for id in &ids {
            // Fails (and is left alone) unless it exists and is empty.
            let _ = std::fs::remove_dir(parent.join(id));
        }
    }
}

/// Processes whose command line names a file under `dir`.
fn pids_naming(dir: &Path) -> Vec<i32> {
    // "DIR/": not another engine whose directory starts with this name.
    let mut needle = dir.as_os_str().as_encoded_bytes().to_vec();
    needle.push(b'/');
    let me = std::process::id() as i32;
    let mut pids = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if cmdline
            .windows(needle.len())
            .any(|w| w == needle.as_slice())
        {
            pids.push(pid);
        }
    }
    pids
}

/// For a dead test process's scratch directory: kills what its engines
/// left (called before the stale namespaces, dockerd's included, go).
pub(crate) fn sweep_stale_engines(lab_dir: &Path) {
    let Ok(rd) = std::fs::read_dir(lab_dir) else {
        return;
    };
    for e in rd.flatten() {
        if e.file_name()
            .to_string_lossy()
            .starts_with(ENGINE_DIR_PREFIX)
        {
            eprintln!(
                "netns-tests: stopping the stale docker engine in {}",
                e.path().display()
            );
            kill_leftovers(&e.path());
        }
    }
}
