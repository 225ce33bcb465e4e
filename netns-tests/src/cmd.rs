//! Running commands with a timeout, capturing their output in files.
//!
//! Output goes to files rather than pipes: `weave-rs launch` leaves a daemon
//! behind that may inherit stdout/stderr, and a pipe would then never reach
//! end of file.

use std::fmt;
use std::fs::{self, File};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Default timeout of one command run by the harness.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What a finished command left: exit status and its output as text.
#[derive(Clone)]
pub struct Output {
    /// The command line, for messages.
    pub cmdline: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// True when the harness killed it after its timeout.
    pub timed_out: bool,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success() && !self.timed_out
    }

    /// The exit code, or None when killed by a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Panics with the whole story unless the command succeeded.
    #[track_caller]
    pub fn ok(self) -> Output {
        if !self.success() {
            panic!("command failed:\n{self}");
        }
        self
    }

    /// Panics with the whole story unless the command failed.
    #[track_caller]
    pub fn err(self) -> Output {
        if self.success() || self.timed_out {
            panic!("command was expected to fail (non-zero exit, no timeout):\n{self}");
        }
        self
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  $ {}", self.cmdline)?;
        if self.timed_out {
            writeln!(f, "  (killed: timed out)")?;
        }
        match (self.status.code(), self.status.signal()) {
            (Some(c), _) => writeln!(f, "  exit code: {c}")?,
            (None, Some(s)) => writeln!(f, "  killed by signal {s}")?,
            _ => writeln!(f, "  status: {:?}", self.status)?,
        }
        writeln!(f, "  --- stdout ---\n{}", indent(&self.stdout))?;
        write!(f, "  --- stderr ---\n{}", indent(&self.stderr))
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn indent(s: &str) -> String {
    const MAX: usize = 8000;
    let s = if s.len() > MAX {
        let mut cut = s.len() - MAX;
        while !s.is_char_boundary(cut) {
            cut += 1;
        }
        format!("[... {} bytes cut ...]\n{}", cut, &s[cut..])
    } else {
        s.to_string()
    };
    if s.trim().is_empty() {
        return "    (empty)".into();
    }
    s.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Renders a command line for messages.
pub fn cmdline(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(char::is_whitespace) {
            s.push_str(&format!(" '{a}'"));
        } else {
            s.push(' ');
            s.push_str(&a);
        }
    }
    s
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A pair of temporary files for one command's stdout and stderr.
pub(crate) fn capture_files() -> (PathBuf, PathBuf, File, File) {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let base = std::env::temp_dir().join(format!("wrt-cmd-{}-{n}", std::process::id()));
    let out = base.with_extension("out");
    let err = base.with_extension("err");
    let fo = File::create(&out).unwrap_or_else(|e| panic!("create {}: {e}", out.display()));
    let fe = File::create(&err).unwrap_or_else(|e| panic!("create {}: {e}", err.display()));
    (out, err, fo, fe)
}

/// Runs `cmd` to completion (stdin closed), killing its process group after
/// `timeout`. Never panics on a non-zero exit: look at the [`Output`].
#[track_caller]
pub fn run_cmd(mut cmd: Command, timeout: Duration) -> Output {
    let line = cmdline(&cmd);
    let (out_path, err_path, fo, fe) = capture_files();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(fo))
        .stderr(Stdio::from(fe))
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = fs::remove_file(&out_path);
            let _ = fs::remove_file(&err_path);
            panic!("cannot start `{line}`: {e}");
        }
    };
    let pid = child.id() as i32;
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) => {}
            Err(e) => panic!("waiting for `{line}`: {e}"),
        }
        if start.elapsed() > timeout {
            timed_out = true;
            // The whole group: `ip netns exec` and whatever it started.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            break child.wait().expect("wait after kill");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = fs::read(&out_path).unwrap_or_default();
    let stderr = fs::read(&err_path).unwrap_or_default();
    let _ = fs::remove_file(&out_path);
    let _ = fs::remove_file(&err_path);
    Output {
        cmdline: if timed_out {
            format!("{line}   [timeout {timeout:?}]")
        } else {
            line
        },
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        timed_out,
    }
}

/// Runs a program with arguments (default timeout); returns its [`Output`].
#[track_caller]
pub fn run<S: AsRef<str>>(argv: &[S]) -> Output {
    assert!(!argv.is_empty(), "run: empty command");
    let mut cmd = Command::new(argv[0].as_ref());
    cmd.args(argv[1..].iter().map(|s| s.as_ref()));
    run_cmd(cmd, DEFAULT_TIMEOUT)
}

/// Runs a program that must succeed; returns its stdout. Panics with the
/// command line, exit status and stderr otherwise.
#[track_caller]
pub fn sh<S: AsRef<str>>(argv: &[S]) -> String {
    run(argv).ok().stdout
}
