//! `wait`: the entrypoint that `weave-rs run` gives a container.
//!
//! It holds the container's own command back until the router has attached
//! the overlay interface: it polls until `/sys/class/net/ethwe` is up and
//! `/.weave-rs/argv` (the real command, NUL-separated, written atomically by
//! weave-rs after the attach) exists, then execs that command in its place,
//! with the environment, working directory and file descriptors it was given.
//!
//! Built by `build.rs` as a static executable with std only, so it runs in
//! any image, even one `FROM scratch` with no libc. Both paths can be
//! overridden for tests: `WEAVE_RS_WAIT_DIR` (default `/.weave-rs`) and
//! `WEAVE_RS_WAIT_IFACE` (default `ethwe`).

use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::thread;
use std::time::{Duration, Instant};

const DEFAULT_DIR: &str = "/.weave-rs";
const DEFAULT_IFACE: &str = "ethwe";
const POLL: Duration = Duration::from_millis(5);
const PATIENCE: Duration = Duration::from_secs(10);
/// What a shell exits with when it cannot run a command.
const CANNOT_RUN: u8 = 127;
/// `IFF_UP` in `/sys/class/net/<iface>/flags`.
const IFF_UP: u64 = 0x1;

extern "C" {
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    fn _exit(status: i32) -> !;
}

/// Dies of a termination signal while waiting. Needed because the waiter is
/// usually PID 1 of its container, which the kernel shields from signals it
/// has no handler for: without this, `docker stop` of a container still
/// waiting would take the full grace period. Handlers are reset by exec, so
/// the container's command starts with default dispositions.
extern "C" fn on_signal(signum: i32) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { _exit(128 + signum) }
}

fn main() -> ExitCode {
    for signum in [1, 2, 15] {
        // SIGHUP, SIGINT, SIGTERM (the same numbers on every Linux port that
        // Docker runs on).
        // SAFETY: the handler only calls an async-signal-safe function.
        unsafe { signal(signum, on_signal) };
    }
    let dir = env_path("WEAVE_RS_WAIT_DIR", DEFAULT_DIR);
    let iface = env_path("WEAVE_RS_WAIT_IFACE", DEFAULT_IFACE);
    let argv_path = dir.join("argv");
    let iface_dir = Path::new("/sys/class/net").join(&iface);

    let start = Instant::now();
    let mut warned = false;
    loop {
        if iface_up(&iface_dir) {
            match std::fs::read(&argv_path) {
                Ok(bytes) => return run(&bytes, &argv_path),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    fail(&format!("cannot read {}: {e}", argv_path.display()));
                    return ExitCode::from(CANNOT_RUN);
                }
            }
        }
        if !warned && start.elapsed() >= PATIENCE {
            warned = true;
            fail(&format!(
                "waiting for {} to be attached...",
                iface.to_string_lossy()
            ));
        }
        thread::sleep(POLL);
    }
}

fn env_path(name: &str, default: &str) -> PathBuf {
    match std::env::var_os(name) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(default),
    }
}

/// Whether the interface is operationally up. A veth such as `ethwe` reports
/// `up` once both ends are; devices that do not track carrier (loopback)
/// report `unknown`, which counts as up when the device is administratively
/// up, as `ip link` shows it.
fn iface_up(dir: &Path) -> bool {
    let Ok(state) = std::fs::read_to_string(dir.join("operstate")) else {
        return false;
    };
    match state.trim() {
        "up" => true,
        "unknown" => std::fs::read_to_string(dir.join("flags"))
            .ok()
            .and_then(|f| u64::from_str_radix(f.trim().trim_start_matches("0x"), 16).ok())
            .is_some_and(|f| f & IFF_UP != 0),
        _ => false,
    }
}

/// Execs the NUL-separated command in `bytes`; returns only on failure.
fn run(bytes: &[u8], argv_path: &Path) -> ExitCode {
    let bytes = bytes.strip_suffix(b"\0").unwrap_or(bytes);
    let mut args: Vec<OsString> = if bytes.is_empty() {
        Vec::new()
    } else {
        bytes
            .split(|&b| b == 0)
            .map(|a| OsString::from_vec(a.to_vec()))
            .collect()
    };
    if args.is_empty() || args[0].is_empty() {
        fail(&format!(
            "cannot start: no command in {}",
            argv_path.display()
        ));
        return ExitCode::from(CANNOT_RUN);
    }
    let prog = args.remove(0);
    // Without a '/', std execs through execvp, which searches the container's
    // PATH; the environment is inherited untouched.
    let err = Command::new(&prog).args(&args).exec();
    fail(&format!("cannot start {}: {}", show(&prog), why(&err)));
    ExitCode::from(CANNOT_RUN)
}

fn show(s: &OsStr) -> String {
    String::from_utf8_lossy(s.as_bytes()).into_owned()
}

/// The error without std's " (os error N)" suffix, like a shell prints it.
fn why(err: &io::Error) -> String {
    let s = err.to_string();
    match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_string(),
        _ => s,
    }
}

fn fail(msg: &str) {
    let _ = writeln!(io::stderr(), "weave-rs: {msg}");
}
