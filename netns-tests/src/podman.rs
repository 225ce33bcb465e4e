//! A podman of the test's, using CNI, in one host's network namespace, with
//! storage, configuration and CNI networks of its own.
//!
//! [`Podman::start`] makes, below a directory it owns (`DIR`):
//!
//! ```text
//! DIR/containers.conf   CONTAINERS_CONF (the only file podman then reads):
//!                         network_backend = "cni", default_ulimits = [],
//!                         network_config_dir = DIR/cni,
//!                         cni_plugin_dirs = [DIR/plugins, /usr/lib/cni],
//!                         tmp_dir = DIR/tmp, file locks, file events,
//!                         cgroupfs, k8s-file logs, [engine] env
//! DIR/storage.conf      CONTAINERS_STORAGE_CONF (overlay in DIR/root)
//! DIR/root              podman --root
//! DIR/runroot           a symlink to podman's --runroot, /run/wrtpm<pid>x<n>
//!                         (podman refuses a runroot longer than 50 bytes)
//! DIR/cni               the CNI network configurations (*.conflist)
//! DIR/plugins           CNI plugins of the test, found before /usr/lib/cni
//! DIR/ipam              host-local's dataDir in Podman::bridge_network
//! ```
//!
//! and imports [`BUSYBOX_IMAGE`] (no registry: `podman import` of a rootfs
//! tar holding Debian's static busybox and its applets as symlinks in
//! /bin: sh, ping, nslookup, sleep, ip, ...).
//!
//! Every podman command runs as
//! `nsenter --net=/var/run/netns/HOST podman --root DIR/root --runroot
//! /run/wrtpm<pid>x<n> ARGS` (`nsenter`, not `ip netns exec`, which remounts /sys
//! and hides the cgroup mounts runc needs). The CNI plugins therefore run
//! in the host's namespace (a bridge plugin makes its bridge there), and so
//! do the conmon processes, whose exit commands (`podman container
//! cleanup`, which calls CNI DEL when a container stops by itself) inherit
//! the namespace and CONTAINERS_CONF. Containers get namespaces of their
//! own, made by podman as /run/netns/netns-<uuid>.
//!
//! What podman 4.3 does with CNI (found by experiment):
//!
//! * ADD on run/start/restart, DEL on stop/kill/exit/rm/restart (`network
//!   reload`: DEL then ADD); never CHECK, GC or STATUS. CNI_ARGS is
//!   `IgnoreUnknown=1;K8S_POD_NAME=<container name>` (the pod's name for a
//!   pod's infra container), then `;MAC=..` (`--mac-address`) and `;IP=..`
//!   (a single `--ip`). CNI_IFNAME eth0 (eth1.. for further networks),
//!   CNI_CONTAINERID the full 64-hex id, CNI_NETNS /run/netns/netns-<uuid>,
//!   CNI_PATH the plugin dirs joined by ':'.
//! * runtimeConfig.aliases = {"<network>": [--network-alias..., short id]}
//!   when the plugin declares the `aliases` capability; with `--ip`, ADD
//!   gets neither the plugin's capabilities nor runtimeConfig (podman 4.3
//!   replaces them with `"capabilities":{"ips":true}`), DEL gets them.
//! * The result's dns.nameservers and dns.search go into
//!   /etc/resolv.conf, followed by the machine's own nameservers (a test
//!   must name the server it queries: `nslookup NAME 169.254.53.53`);
//!   `--dns` replaces all of them and the search list, `--dns-search`
//!   only the search list.
//! * A result's interface without a valid "mac" fails the run ("invalid
//!   MAC address"). The result's IPs show in `podman inspect` and
//!   /etc/hosts.
//! * conflists must say cniVersion 1.0.0 (or older): with "1.1.0", a 1.1.0
//!   result fails ADD and a 1.0.0 result makes DEL fail (no DEL is sent).
//! * Plugins inherit podman's whole environment on the podman command's
//!   own path, but a DEL from `container cleanup` (the container exited or
//!   was killed) sees only PATH, HOME, TMPDIR, CONTAINERS_CONF and podman's
//!   own `_CONTAINERS_*`/`_OCI_*` (conmon's environment): give the
//!   plugin its variables with [`Podman::start_with_env`], which puts them
//!   in containers.conf's `[engine] env` (every podman process sets them).
//!
//! Outside DIR, podman still uses machine-wide paths keyed by container id:
//! /run/netns/netns-*, runc's /run/runc/<id>, cgroups
//! libpod_parent/libpod-<id> (and libpod_parent/<pod id>),
//! libcni's cache /var/lib/cni/results/<network>-<id>-<ifname>; and
//! `podman import` writes a blob digest cache in /var/lib/containers/cache.
//! Two tests' podmans share nothing else: not the machine's default podman
//! (/var/lib/containers/storage, /etc/containers, /run/libpod).
//!
//! Dropping a [`Podman`] (also when the test panics) removes its pods and
//! containers (CNI DEL runs while the host namespace is still there: make
//! the Podman after its host, so it drops first), kills whatever of theirs
//! is left, removes the runc state, libcni cache entries, cgroups and
//! namespace files of its containers, unmounts everything mounted below
//! DIR and deletes DIR. A Podman whose host namespace is already gone runs
//! its teardown in a fresh, empty network namespace (`unshare --net`),
//! never the machine's. A test process that died without dropping its
//! Podman (killed by a timeout) leaves all this behind: the first Podman
//! of a later test process removes it
//! (`<tmp>/weave-rs-tests-wrt<dead pid>x.../podman-*`).

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cmd::{run_cmd, Output};
use crate::host::Host;
use crate::lab::{Ctx, NAME_PREFIX};

/// The busybox image every [`Podman`] has (imported at start).
pub const BUSYBOX_IMAGE: &str = "localhost/weave-rs-test/busybox:latest";
/// Timeout of one podman command.
pub const PODMAN_TIMEOUT: Duration = Duration::from_secs(60);
/// The flags `run` needs on these machines (runc: "error setting rlimit"
/// without them).
pub const ULIMITS: &[&str] = &[
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];
/// Name of a [`Podman::for_host`] directory below the lab's scratch
/// directory: `<lab dir>/podman-<host>-<n>` (the stale sweep looks for it).
pub(crate) const PODMAN_DIR_PREFIX: &str = "podman-";
/// Debian's standard CNI plugins, after the test's own directory.
pub const SYSTEM_CNI_DIR: &str = "/usr/lib/cni";
/// libcni's cache of ADD results (machine-wide).
const CNI_CACHE_DIR: &str = "/var/lib/cni/results";
/// runc's state directory (podman 4.3 runs runc with its default root).
const RUNC_ROOT: &str = "/run/runc";
/// Podman's runroots: `/run/wrtpm<pid>x<n>` (short: podman refuses one
/// longer than 50 bytes, which a scratch directory below TMPDIR may be).
const RUNROOT_BASE: &str = "/run";
const RUNROOT_PREFIX: &str = "wrtpm";
static RUNROOTS: AtomicU32 = AtomicU32::new(0);

static STALE: Once = Once::new();

/// A podman with its own storage and CNI configuration, run in one host
/// network namespace. See the module documentation.
pub struct Podman {
    /// Keeps the lab's scratch directory alive (for [`Podman::for_host`]).
    _ctx: Option<Arc<Ctx>>,
    dir: PathBuf,
    ns_name: String,
    /// Ids of the containers this Podman made (the teardown also asks
    /// podman, and looks in DIR/root).
    ids: Mutex<Vec<String>>,
}

impl std::fmt::Debug for Podman {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "podman of {} ({})", self.ns_name, self.dir.display())
    }
}

impl Podman {
    /// A podman for the network namespace `ns_name` (/var/run/netns/NAME),
    /// owning `dir` (emptied first, deleted on drop): writes its
    /// configuration and imports [`BUSYBOX_IMAGE`].
    #[track_caller]
    pub fn start(ns_name: &str, dir: &Path) -> Podman {
        Self::start_with_env(ns_name, dir, &[])
    }

    /// Like [`Podman::start`], with `env` in containers.conf's `[engine]
    /// env`: every podman process sets these variables, so every CNI plugin
    /// call sees them, the DEL of `podman container cleanup` included.
    #[track_caller]
    pub fn start_with_env(ns_name: &str, dir: &Path, env: &[(&str, &str)]) -> Podman {
        Self::start_in(None, ns_name, dir, env)
    }

    /// A podman in `host`'s namespace, in `<lab dir>/podman-<host>-<n>`.
    /// Make it after `host` (so that it drops first).
    #[track_caller]
    pub fn for_host(host: &Host) -> Podman {
        Self::for_host_with_env(host, &[])
    }

    /// [`Podman::for_host`] with [`Podman::start_with_env`]'s `env`.
    #[track_caller]
    pub fn for_host_with_env(host: &Host, env: &[(&str, &str)]) -> Podman {
        let ctx = host.ctx().clone();
        let dir = ctx
            .dir
            .join(format!("{PODMAN_DIR_PREFIX}{}-{}", host.name(), ctx.next()));
        Self::start_in(Some(ctx), host.ns().name(), &dir, env)
    }

    #[track_caller]
    fn start_in(ctx: Option<Arc<Ctx>>, ns_name: &str, dir: &Path, env: &[(&str, &str)]) -> Podman {
        crate::tools::require_tool("podman");
        assert!(
            Path::new(SYSTEM_CNI_DIR).join("bridge").exists(),
            "no CNI plugins in {SYSTEM_CNI_DIR}: install containernetworking-plugins \
             (scripts/install-deps.sh)"
        );
        STALE.call_once(sweep_stale);
        assert!(
            Path::new(&ns_path(ns_name)).exists(),
            "no network namespace {ns_name} (/var/run/netns/{ns_name})"
        );
        let dir = std::path::absolute(dir)
            .unwrap_or_else(|e| panic!("absolute path of {}: {e}", dir.display()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["root", "tmp", "cni", "plugins", "ipam", "imgtmp"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        }
        let runroot = Path::new(RUNROOT_BASE).join(format!(
            "{RUNROOT_PREFIX}{}x{}",
            std::process::id(),
            RUNROOTS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&runroot);
        std::fs::create_dir_all(&runroot)
            .unwrap_or_else(|e| panic!("create {}: {e}", runroot.display()));
        std::os::unix::fs::symlink(&runroot, dir.join("runroot"))
            .unwrap_or_else(|e| panic!("symlink {}/runroot: {e}", dir.display()));
        let podman = Podman {
            _ctx: ctx,
            dir,
            ns_name: ns_name.to_string(),
            ids: Mutex::new(Vec::new()),
        };
        // From here a panic drops `podman`, which cleans up.
        podman.write_file("containers.conf", &podman.containers_conf(env));
        let (d, r) = (podman.dir.display(), runroot.display());
        podman.write_file(
            "storage.conf",
            &format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{d}/root\"\n\
                 runroot = \"{r}\"\n"
            ),
        );
        podman.import_busybox();
        podman
    }

    fn containers_conf(&self, env: &[(&str, &str)]) -> String {
        let d = self.dir.display();
        let env: Vec<String> = env
            .iter()
            .map(|(k, v)| {
                assert!(
                    !k.contains(['=', '"', '\\']) && !v.contains(['"', '\\', '\n']),
                    "environment variable for containers.conf: {k:?}={v:?}"
                );
                format!("\"{k}={v}\"")
            })
            .collect();
        format!(
            "# Written by netns-tests (netns-tests/src/podman.rs).\n\
             [containers]\n\
             default_ulimits = []\n\
             log_driver = \"k8s-file\"\n\
             \n\
             [network]\n\
             network_backend = \"cni\"\n\
             network_config_dir = \"{d}/cni\"\n\
             cni_plugin_dirs = [\"{d}/plugins\", \"{SYSTEM_CNI_DIR}\"]\n\
             \n\
             [engine]\n\
             cgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\n\
             events_logfile_path = \"{d}/events.log\"\n\
             lock_type = \"file\"\n\
             tmp_dir = \"{d}/tmp\"\n\
             image_copy_tmp_dir = \"{d}/imgtmp\"\n\
             env = [{}]\n",
            env.join(", ")
        )
    }

    #[track_caller]
    fn write_file(&self, name: &str, text: &str) {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    }

    /// Builds a rootfs tar of Debian's static busybox (the applets as
    /// symlinks in /bin, like scripts/build-images.sh's Docker image) and
    /// `podman import`s it as [`BUSYBOX_IMAGE`] (CMD /bin/sh).
    #[track_caller]
    fn import_busybox(&self) {
        let bb = crate::tools::require_tool("busybox");
        let rootfs = self.dir.join("imgtmp/rootfs");
        for sub in ["bin", "etc", "tmp", "proc", "sys", "dev", "root"] {
            std::fs::create_dir_all(rootfs.join(sub))
                .unwrap_or_else(|e| panic!("create rootfs dir {sub}: {e}"));
        }
        // A FROM-scratch image has no libraries: the binary must be static.
        assert!(
            !crate::cmd::run(&["ldd", &bb.display().to_string()]).success(),
            "{} is dynamically linked: install busybox-static (scripts/install-deps.sh)",
            bb.display()
        );
        std::fs::copy(&bb, rootfs.join("bin/busybox"))
            .unwrap_or_else(|e| panic!("copy {}: {e}", bb.display()));
        let list = crate::cmd::run(&[&bb.display().to_string(), "--list"]).ok();
        for applet in list.stdout.split_whitespace() {
            if applet != "busybox" && !applet.contains('/') {
                let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
            }
        }
        std::fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        )
        .expect("write rootfs /etc/passwd");
        std::fs::write(rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")
            .expect("write rootfs /etc/group");
        let tar = self.dir.join("imgtmp/busybox.tar");
        let (tar_s, rootfs_s) = (tar.display().to_string(), rootfs.display().to_string());
        crate::cmd::run(&["tar", "-C", &rootfs_s, "-cf", &tar_s, "."]).ok();
        self.podman(&["import", "--change", "CMD=/bin/sh", &tar_s, BUSYBOX_IMAGE])
            .ok();
        let _ = std::fs::remove_dir_all(self.dir.join("imgtmp"));
        let _ = std::fs::create_dir_all(self.dir.join("imgtmp"));
    }

    /// The directory this podman owns.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The network namespace podman runs in (its name in /var/run/netns).
    pub fn ns_name(&self) -> &str {
        &self.ns_name
    }

    /// Where podman reads CNI network configurations (`DIR/cni`).
    pub fn cni_config_dir(&self) -> PathBuf {
        self.dir.join("cni")
    }

    /// The first CNI plugin directory (`DIR/plugins`), before
    /// /usr/lib/cni: put the plugin under test here
    /// ([`Podman::install_plugin`]).
    pub fn plugin_dir(&self) -> PathBuf {
        self.dir.join("plugins")
    }

    /// `DIR/containers.conf` (CONTAINERS_CONF of every podman command).
    pub fn containers_conf_path(&self) -> PathBuf {
        self.dir.join("containers.conf")
    }

    /// Makes `binary` the CNI plugin `type_name` (a symlink in
    /// [`Podman::plugin_dir`]).
    #[track_caller]
    pub fn install_plugin(&self, type_name: &str, binary: &Path) {
        let link = self.plugin_dir().join(type_name);
        let _ = std::fs::remove_file(&link);
        let target = std::path::absolute(binary).expect("absolute plugin path");
        std::os::unix::fs::symlink(&target, &link)
            .unwrap_or_else(|e| panic!("symlink {} -> {}: {e}", link.display(), target.display()));
    }

    /// Writes `DIR/cni/<name>.conflist` (podman reads it at each command).
    #[track_caller]
    pub fn write_conflist(&self, name: &str, json: &str) {
        assert!(!name.contains('/'), "bad network name {name:?}");
        let p = self.cni_config_dir().join(format!("{name}.conflist"));
        std::fs::write(&p, json).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    }

    /// A CNI network `name` of Debian's `bridge` plugin (bridge `bridge` in
    /// the host's namespace, gateway address on it, no masquerading) with
    /// `host-local` addresses from `subnet` (like "10.88.5.0/24") kept in
    /// `DIR/ipam`, not the machine's /var/lib/cni/networks.
    #[track_caller]
    pub fn bridge_network(&self, name: &str, bridge: &str, subnet: &str) {
        assert!(bridge.len() <= 15, "interface name too long: {bridge}");
        let json = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": name,
            "plugins": [{
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": subnet }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                    "dataDir": self.dir.join("ipam").display().to_string(),
                },
            }],
        });
        self.write_conflist(name, &format!("{json:#}\n"));
    }

    /// The command `nsenter --net=/var/run/netns/NS podman --root DIR/root
    /// --runroot /run/wrtpm<pid>x<n> ARGS...` with CONTAINERS_CONF and
    /// CONTAINERS_STORAGE_CONF set (the rest of the environment is ours).
    pub fn command<S: AsRef<str>>(&self, args: &[S]) -> Command {
        podman_command(&self.dir, Some(&self.ns_name), args)
    }

    /// Runs `podman ARGS...` ([`PODMAN_TIMEOUT`]); never panics on failure.
    #[track_caller]
    pub fn podman<S: AsRef<str>>(&self, args: &[S]) -> Output {
        self.podman_timeout(args, PODMAN_TIMEOUT)
    }

    /// Runs `podman ARGS...` with a timeout.
    #[track_caller]
    pub fn podman_timeout<S: AsRef<str>>(&self, args: &[S], timeout: Duration) -> Output {
        run_cmd(self.command(args), timeout)
    }

    /// Runs `podman ARGS...`; it must succeed. Returns stdout.
    #[track_caller]
    pub fn podman_ok<S: AsRef<str>>(&self, args: &[S]) -> String {
        self.podman(args).ok().stdout
    }

    /// `podman run -d --name NAME --network NETWORK --ulimit ... IMAGE
    /// CMD...`; must succeed. Returns the container's id.
    #[track_caller]
    pub fn run_detached<S: AsRef<str>>(
        &self,
        name: &str,
        network: &str,
        image: &str,
        cmd: &[S],
    ) -> String {
        self.run_detached_with(name, &["--network", network], image, cmd)
    }

    /// Like [`Podman::run_detached`], with `opts` (`--network ...`,
    /// `--network-alias ...`, `--ip ...`, ...) instead of the network.
    #[track_caller]
    pub fn run_detached_with<S: AsRef<str>>(
        &self,
        name: &str,
        opts: &[&str],
        image: &str,
        cmd: &[S],
    ) -> String {
        let out = self.try_run_detached_with(name, opts, image, cmd);
        let out = out.unwrap_or_else(|out| panic!("podman run {name} failed:\n{out}"));
        out.stdout.trim().to_string()
    }

    /// [`Podman::run_detached_with`] that returns a failed `podman run`
    /// (Err) instead of panicking.
    #[track_caller]
    pub fn try_run_detached_with<S: AsRef<str>>(
        &self,
        name: &str,
        opts: &[&str],
        image: &str,
        cmd: &[S],
    ) -> Result<Output, Output> {
        let mut argv: Vec<&str> = vec!["run", "-d", "--name", name];
        argv.extend(ULIMITS);
        argv.extend(opts);
        argv.push(image);
        argv.extend(cmd.iter().map(|s| s.as_ref()));
        let out = self.podman(&argv);
        // Even a failed run may leave a created container (podman cleans
        // up most, the teardown the rest).
        let id = self.podman(&["inspect", "--format", "{{.Id}}", name]);
        if id.success() {
            self.ids.lock().unwrap().push(id.stdout.trim().to_string());
        }
        if out.success() {
            Ok(out)
        } else {
            Err(out)
        }
    }

    /// `podman exec NAME CMD...` (never panics; look at the Output).
    #[track_caller]
    pub fn exec<S: AsRef<str>>(&self, name: &str, cmd: &[S]) -> Output {
        let mut argv: Vec<&str> = vec!["exec", name];
        argv.extend(cmd.iter().map(|s| s.as_ref()));
        self.podman(&argv)
    }

    /// `podman rm -f -t 0 NAME` (no 10 s SIGTERM grace: busybox as pid 1
    /// ignores SIGTERM).
    #[track_caller]
    pub fn rm_f(&self, name: &str) -> Output {
        self.podman(&["rm", "-f", "-t", "0", name])
    }

    /// The container's IPv4 address on `network`, if it has one.
    #[track_caller]
    pub fn ip_of(&self, name: &str, network: &str) -> Option<Ipv4Addr> {
        let fmt = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
        let out = self.podman(&["inspect", "--format", &fmt, name]);
        out.stdout.trim().parse().ok()
    }

    /// The last `n` lines of the container's log (`podman logs`).
    pub fn logs_tail(&self, name: &str, n: usize) -> String {
        let out = self.podman(&["logs", "--tail", &n.to_string(), name]);
        format!("{}{}", out.stdout, out.stderr)
    }

    /// Ids of every container in this podman's storage: those it made,
    /// those podman lists, and those in DIR/root.
    fn all_ids(&self, podman_answers: bool) -> Vec<String> {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if podman_answers {
            let out = self.podman_timeout(&["ps", "-aq", "--no-trunc"], Duration::from_secs(20));
            ids.extend(out.stdout.split_whitespace().map(String::from));
        }
        if let Ok(rd) = std::fs::read_dir(self.dir.join("root/overlay-containers")) {
            ids.extend(
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned()),
            );
        }
        ids.retain(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()));
        ids.sort();
        ids.dedup();
        ids
    }

    /// Network namespace files (/run/netns/netns-*) of live containers.
    fn sandbox_keys(&self) -> Vec<PathBuf> {
        let out = self.podman_timeout(&["ps", "-aq", "--no-trunc"], Duration::from_secs(20));
        let ids: Vec<&str> = out.stdout.split_whitespace().collect();
        if ids.is_empty() {
            return Vec::new();
        }
        let mut argv = vec!["inspect", "--format", "{{.NetworkSettings.SandboxKey}}"];
        argv.extend(ids);
        let out = self.podman_timeout(&argv, Duration::from_secs(20));
        out.stdout
            .lines()
            .map(str::trim)
            .filter(|p| {
                p.starts_with("/run/netns/netns-") || p.starts_with("/var/run/netns/netns-")
            })
            .map(PathBuf::from)
            .collect()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let ns_alive = Path::new(&ns_path(&self.ns_name)).exists();
        if !ns_alive {
            eprintln!(
                "netns-tests: {self:?}: its network namespace is gone; removing its \
                 containers from an empty namespace (unshare --net)"
            );
        }
        let ns = ns_alive.then_some(self.ns_name.as_str());
        let teardown = |args: &[&str], timeout: Duration| -> Output {
            run_cmd(podman_command(&self.dir, ns, args), timeout)
        };
        let answers = teardown(&["ps", "-aq"], Duration::from_secs(20)).success();
        if std::thread::panicking() && answers {
            let ps = teardown(&["ps", "-a"], Duration::from_secs(20));
            let mut s = format!(
                "\n===== netns-tests: {self:?} at failure =====\n{}",
                ps.stdout
            );
            for name in teardown(
                &["ps", "-a", "--format", "{{.Names}}"],
                Duration::from_secs(20),
            )
            .stdout
            .split_whitespace()
            {
                let _ = write!(s, "--- logs of {name} ---\n{}", self.logs_tail(name, 20));
            }
            eprintln!("{s}");
        }
        let ids = self.all_ids(answers);
        // Pods' cgroups (<hierarchy>/libpod_parent/<pod id>): podman 4.3
        // leaves them in the named hierarchies (systemd, unified).
        let pods: Vec<String> = if answers {
            teardown(&["pod", "ps", "-q", "--no-trunc"], Duration::from_secs(20))
                .stdout
                .split_whitespace()
                .filter(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
                .map(String::from)
                .collect()
        } else {
            Vec::new()
        };
        let keys = if answers && ns_alive {
            self.sandbox_keys()
        } else {
            Vec::new()
        };
        if answers {
            for args in [
                &["pod", "rm", "-a", "-f", "-t", "0"][..],
                &["rm", "-a", "-f", "-t", "0"][..],
            ] {
                let out = teardown(args, PODMAN_TIMEOUT);
                if !out.success() {
                    eprintln!("netns-tests: {self:?}: teardown:\n{out}");
                }
            }
        }
        kill_leftovers(&self.dir, &ids);
        for id in &ids {
            remove_runc_state(id, &self.dir);
            remove_cni_cache(id);
            remove_cgroups(&format!("libpod-{id}"));
        }
        for id in &pods {
            remove_cgroups(id);
        }
        for key in keys {
            if key.exists() {
                umount_detach(&key);
                let _ = std::fs::remove_file(&key);
            }
        }
        unmount_below(&self.dir);
        remove_runroot(&self.dir);
        for attempt in 0..10 {
            match std::fs::remove_dir_all(&self.dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if attempt == 9 => {
                    eprintln!("netns-tests: cannot remove {}: {e}", self.dir.display())
                }
                Err(_) => {
                    unmount_below(&self.dir);
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

/// `podman --root DIR/root --runroot RUNROOT ARGS...` with DIR's
/// configuration, run by `nsenter --net=/var/run/netns/NS`, or with no
/// namespace by `unshare --net` (a fresh empty one: the teardown of a
/// podman whose host is gone).
fn podman_command<S: AsRef<str>>(dir: &Path, ns: Option<&str>, args: &[S]) -> Command {
    let mut c = match ns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", ns_path(ns)));
            c
        }
        None => {
            let mut c = Command::new("unshare");
            c.arg("--net");
            c
        }
    };
    c.arg("podman")
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(runroot_of(dir))
        .args(args.iter().map(|s| s.as_ref()))
        .env("CONTAINERS_CONF", dir.join("containers.conf"))
        .env("CONTAINERS_STORAGE_CONF", dir.join("storage.conf"));
    c
}

/// Where DIR/runroot points (podman's --runroot).
fn runroot_of(dir: &Path) -> PathBuf {
    std::fs::read_link(dir.join("runroot")).unwrap_or_else(|_| dir.join("runroot"))
}

/// Unmounts what is below podman's runroot for DIR and removes it.
fn remove_runroot(dir: &Path) {
    let runroot = runroot_of(dir);
    if runroot.starts_with(RUNROOT_BASE) {
        unmount_below(&runroot);
        let _ = std::fs::remove_dir_all(&runroot);
    }
}

fn ns_path(ns_name: &str) -> String {
    format!("/var/run/netns/{ns_name}")
}

/// Kills what a podman under `dir` left running: conmon and any podman
/// process naming `dir`, and the containers' processes (those in a cgroup
/// `libpod-<id>` of `ids`). Waits up to 5 s for them to go.
fn kill_leftovers(dir: &Path, ids: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut pids = pids_naming(dir);
        pids.extend(pids_in_cgroups(ids));
        if pids.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            eprintln!(
                "netns-tests: processes of the podman in {} survive: {pids:?}",
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

fn proc_pids() -> Vec<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
                .filter(|p| *p != me)
                .collect()
        })
        .unwrap_or_default()
}

/// Processes whose command line names a file under `dir`.
fn pids_naming(dir: &Path) -> Vec<i32> {
    let mut needle = dir.as_os_str().as_encoded_bytes().to_vec();
    needle.push(b'/');
    proc_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle.as_slice()))
        })
        .collect()
}

/// Processes in a container cgroup (`libpod-<id>`) of one of `ids`.
fn pids_in_cgroups(ids: &[String]) -> Vec<i32> {
    if ids.is_empty() {
        return Vec::new();
    }
    proc_pids()
        .into_iter()
        .filter(|pid| {
            let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            ids.iter().any(|id| cg.contains(&format!("libpod-{id}")))
        })
        .collect()
}

/// runc's state of container `id` (`/run/runc/<id>`), left when its
/// conmon was killed (the host's namespace went first, or the test
/// process died) and podman could not `runc delete` it: `runc delete
/// --force`, once the state is known to be of a container under `dir`.
fn remove_runc_state(id: &str, dir: &Path) {
    let state = Path::new(RUNC_ROOT).join(id);
    let Ok(text) = std::fs::read_to_string(state.join("state.json")) else {
        return;
    };
    let ours = serde_json::from_str::<serde_json::Value>(&text).is_ok_and(|v| {
        v["config"]["rootfs"]
            .as_str()
            .is_some_and(|r| Path::new(r).starts_with(dir))
    });
    if !ours {
        return;
    }
    let out = crate::cmd::run(&["runc", "delete", "--force", id]);
    if !out.success() && state.exists() {
        eprintln!("netns-tests: runc delete of {id}:\n{out}");
        let _ = std::fs::remove_dir_all(&state);
    }
}

/// libcni's cached results of container `id` (`<network>-<id>-<ifname>`),
/// left behind when a DEL failed or never ran.
fn remove_cni_cache(id: &str) {
    let Ok(rd) = std::fs::read_dir(CNI_CACHE_DIR) else {
        return;
    };
    let needle = format!("-{id}-");
    for e in rd.flatten() {
        if e.file_name().to_string_lossy().contains(&needle) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Empty cgroups `<hierarchy>/libpod_parent/<name>` (cgroupfs manager:
/// `libpod-<container id>`, or a pod's id), and the empty cgroups below
/// them, that podman did not remove.
fn remove_cgroups(name: &str) {
    let root = Path::new("/sys/fs/cgroup");
    let mut parents = vec![root.join("libpod_parent")];
    if let Ok(rd) = std::fs::read_dir(root) {
        parents.extend(rd.flatten().map(|e| e.path().join("libpod_parent")));
    }
    for parent in parents {
        remove_empty_cgroup(&parent.join(name), 3);
    }
}

/// Removes the cgroup `dir` after its child cgroups (up to `depth` levels);
/// fails silently (and leaves it) unless it exists and holds no process.
fn remove_empty_cgroup(dir: &Path, depth: u32) {
    if depth > 0 {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    remove_empty_cgroup(&e.path(), depth - 1);
                }
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Mount points in our mount namespace, as /proc/self/mountinfo lists
/// them (octal escapes decoded).
fn mount_points() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mountinfo(m)))
        .collect()
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts (lazily) everything mounted at or below `dir`, deepest first.
fn unmount_below(dir: &Path) {
    for _ in 0..5 {
        let mut mounts: Vec<PathBuf> = mount_points()
            .into_iter()
            .filter(|m| m.starts_with(dir))
            .collect();
        if mounts.is_empty() {
            return;
        }
        mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        for m in mounts {
            umount_detach(&m);
        }
    }
}

fn umount_detach(p: &Path) {
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
        return;
    };
    // SAFETY: a valid NUL-terminated path; umount2 reads it only.
    unsafe {
        libc::umount2(c.as_ptr(), libc::MNT_DETACH);
    }
}

/// For podman directories of dead test processes
/// (`<tmp>/weave-rs-tests-wrt<pid>x.../podman-...`): kills their leftover
/// processes, unmounts what is mounted below them and removes them. Runs
/// once per test process, before its first podman starts.
fn sweep_stale() {
    let tmp = std::env::temp_dir();
    let lab_prefix = format!("weave-rs-tests-{NAME_PREFIX}");
    let dead_lab = |name: &str| -> bool {
        let Some(rest) = name.strip_prefix(&lab_prefix) else {
            return false;
        };
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        !digits.is_empty()
            && rest[digits.len()..].starts_with('x')
            && !Path::new(&format!("/proc/{digits}")).exists()
    };
    let mut dirs: Vec<PathBuf> = Vec::new();
    // Podman dirs of dead labs, found by their mounts or on disk.
    for m in mount_points() {
        let Ok(rel) = m.strip_prefix(&tmp) else {
            continue;
        };
        let mut comps = rel.components();
        let (Some(lab), Some(pd)) = (comps.next(), comps.next()) else {
            continue;
        };
        let (lab, pd) = (
            lab.as_os_str().to_string_lossy(),
            pd.as_os_str().to_string_lossy(),
        );
        if dead_lab(&lab) && pd.starts_with(PODMAN_DIR_PREFIX) {
            dirs.push(tmp.join(&*lab).join(&*pd));
        }
    }
    if let Ok(rd) = std::fs::read_dir(&tmp) {
        for lab in rd.flatten() {
            if !dead_lab(&lab.file_name().to_string_lossy()) {
                continue;
            }
            if let Ok(rd) = std::fs::read_dir(lab.path()) {
                dirs.extend(
                    rd.flatten()
                        .filter(|e| {
                            e.file_name()
                                .to_string_lossy()
                                .starts_with(PODMAN_DIR_PREFIX)
                        })
                        .map(|e| e.path()),
                );
            }
        }
    }
    dirs.sort();
    dirs.dedup();
    // Runroots of dead test processes whose podman directory is gone.
    let mut runroots = Vec::new();
    if let Ok(rd) = std::fs::read_dir(RUNROOT_BASE) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(RUNROOT_PREFIX) else {
                continue;
            };
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            if !digits.is_empty()
                && rest[digits.len()..].starts_with('x')
                && !Path::new(&format!("/proc/{digits}")).exists()
            {
                runroots.push(e.path());
            }
        }
    }
    for dir in dirs {
        eprintln!(
            "netns-tests: removing the stale podman in {}",
            dir.display()
        );
        let ids: Vec<String> = std::fs::read_dir(dir.join("root/overlay-containers"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
                    .collect()
            })
            .unwrap_or_default();
        // Podman removes what it knows of (namespace files, libcni's
        // cache, cgroups, mounts), its CNI DELs in an empty namespace.
        if dir.join("containers.conf").exists() {
            for args in [
                &["pod", "rm", "-a", "-f", "-t", "0"][..],
                &["rm", "-a", "-f", "-t", "0"][..],
            ] {
                let _ = run_cmd(podman_command(&dir, None, args), PODMAN_TIMEOUT);
            }
        }
        kill_leftovers(&dir, &ids);
        for id in &ids {
            remove_runc_state(id, &dir);
            remove_cni_cache(id);
            remove_cgroups(&format!("libpod-{id}"));
        }
        unmount_below(&dir);
        remove_runroot(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        // The rest of the dead test's scratch directory, which the lab's
        // own sweep (run before) could not remove while podman's mounts
        // were in it.
        if let Some(lab) = dir.parent() {
            let _ = std::fs::remove_dir_all(lab);
        }
    }
    for runroot in runroots {
        if runroot.exists() {
            eprintln!(
                "netns-tests: removing the stale podman runroot {}",
                runroot.display()
            );
            unmount_below(&runroot);
            let _ = std::fs::remove_dir_all(&runroot);
        }
    }
}
