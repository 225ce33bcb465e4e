//! The container-side waiter that `weave-rs run` uses as a container's
//! entrypoint, so that the container's own command starts only once `ethwe`
//! is attached.
//!
//! The CLI installs [`WAITER`] as `<dir>/wait` ([`install`]), runs the
//! container with `--entrypoint /.weave-rs/wait -v <dir>:/.weave-rs:ro`,
//! attaches `ethwe`, and then hands over the real command with
//! [`write_argv`]; the waiter (`src/wait/main.rs`, built static by
//! `build.rs`) execs it.

use std::io;
use std::path::{Path, PathBuf};

use crate::files::write_atomic;

/// The waiter executable: static, std-only, runs in any image.
pub const WAITER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/weave-rs-wait"));

/// Name of the waiter in the mounted directory.
pub const WAIT_NAME: &str = "wait";
/// Name of the command file in the mounted directory.
pub const ARGV_NAME: &str = "argv";

/// Writes [`WAITER`] as `dir/wait`, mode 0755, atomically (a running
/// container may be executing the old one), and returns its path.
pub fn install(dir: &Path) -> io::Result<PathBuf> {
    let path = dir.join(WAIT_NAME);
    write_atomic(&path, WAITER, 0o755, None)?;
    Ok(path)
}

/// Mode of the command file: a command line may carry secrets.
pub const ARGV_MODE: u32 = 0o600;

/// Writes the container's real command as `dir/argv`: each argument
/// followed by a NUL, atomically, so the waiter never sees a partial
/// command. `owner` (uid, gid) is the user the waiter runs as when that is
/// not root: it must be able to read the file. An argument that itself
/// contains a NUL cannot be passed to exec and is refused.
pub fn write_argv(dir: &Path, argv: &[String], owner: Option<(u32, u32)>) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(argv.iter().map(|a| a.len() + 1).sum());
    for a in argv {
        if a.as_bytes().contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("command argument {a:?} contains a NUL byte"),
            ));
        }
        bytes.extend_from_slice(a.as_bytes());
        bytes.push(0);
    }
    write_atomic(&dir.join(ARGV_NAME), &bytes, ARGV_MODE, owner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Child, Command, Output, Stdio};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static SEQ: AtomicU64 = AtomicU64::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let path = std::env::temp_dir().join(format!(
                "weave-rs-waiter-{tag}-{}-{nanos}-{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn waiter_is_a_static_executable() {
        assert_eq!(&WAITER[..4], b"\x7fELF");
        assert!(WAITER.len() > 1000);
    }

    #[test]
    fn install_writes_an_executable_atomically() {
        let d = TempDir::new("install");
        let p = install(&d.0).unwrap();
        assert_eq!(p, d.0.join("wait"));
        assert_eq!(fs::read(&p).unwrap(), WAITER);
        let mode = fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o755);
        // Replacing an existing (possibly running) waiter works too.
        fs::write(&p, b"old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(install(&d.0).unwrap(), p);
        assert_eq!(fs::read(&p).unwrap(), WAITER);
        let mode = fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o755);
        assert_eq!(entries(&d.0), ["wait"]);
    }

    #[test]
    fn install_into_a_missing_dir_fails_cleanly() {
        let d = TempDir::new("missing");
        let missing = d.0.join("nope");
        assert!(install(&missing).is_err());
        assert!(entries(&d.0).is_empty());
    }

    #[test]
    fn write_argv_is_nul_separated_and_replaces() {
        let d = TempDir::new("argv");
        write_argv(&d.0, &args(&["echo", "hello world", ""]), None).unwrap();
        assert_eq!(
            fs::read(d.0.join("argv")).unwrap(),
            b"echo\0hello world\0\0"
        );
        let mode = fs::metadata(d.0.join("argv")).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o7777,
            0o600,
            "the command must not be world-readable"
        );
        write_argv(&d.0, &args(&["sh"]), None).unwrap();
        assert_eq!(fs::read(d.0.join("argv")).unwrap(), b"sh\0");
        write_argv(&d.0, &[], None).unwrap();
        assert_eq!(fs::read(d.0.join("argv")).unwrap(), b"");
        assert_eq!(entries(&d.0), ["argv"]);
    }

    #[test]
    fn write_argv_refuses_nul_in_an_argument() {
        let d = TempDir::new("nul");
        let e = write_argv(&d.0, &args(&["a\0b"]), None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(entries(&d.0).is_empty());
    }

    // The waiter itself, run on the host with `lo` standing in for `ethwe`
    // (loopback reports operstate "unknown" with IFF_UP set).

    fn lo_usable() -> bool {
        Path::new("/sys/class/net/lo/flags").exists()
    }

    fn spawn_waiter(dir: &Path, iface: &str) -> Child {
        let wait = install(dir).unwrap();
        let mut tries = 0;
        loop {
            let spawned = Command::new(&wait)
                .env("WEAVE_RS_WAIT_DIR", dir)
                .env("WEAVE_RS_WAIT_IFACE", iface)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn();
            match spawned {
                // Another test thread may have forked while our temp file
                // was open for writing; its child holds the fd until it
                // execs.
                Err(e) if e.kind() == io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                r => return r.unwrap(),
            }
        }
    }

    fn finish(mut child: Child) -> Output {
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("waiter did not exit: {:?}", child.wait_with_output());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        child.wait_with_output().unwrap()
    }

    #[test]
    fn waiter_execs_the_command_once_written() {
        if !lo_usable() {
            return;
        }
        let d = TempDir::new("run");
        let child = spawn_waiter(&d.0, "lo");
        std::thread::sleep(Duration::from_millis(50));
        write_argv(
            &d.0,
            &args(&["sh", "-c", "echo \"$0\" \"$1\"; exit 3", "he llo", "x"]),
            None,
        )
        .unwrap();
        let out = finish(child);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "he llo x\n");
        assert_eq!(out.status.code(), Some(3), "{out:?}");
    }

    #[test]
    fn waiter_keeps_waiting_without_the_interface() {
        let d = TempDir::new("noiface");
        let mut child = spawn_waiter(&d.0, "weavers-none0");
        write_argv(&d.0, &args(&["true"]), None).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(child.try_wait().unwrap().is_none());
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn waiter_fails_like_a_shell() {
        if !lo_usable() {
            return;
        }
        let d = TempDir::new("fail");
        write_argv(&d.0, &args(&["weave-rs-no-such-program", "x"]), None).unwrap();
        let out = finish(spawn_waiter(&d.0, "lo"));
        assert_eq!(out.status.code(), Some(127));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "weave-rs: cannot start weave-rs-no-such-program: No such file or directory\n"
        );

        write_argv(&d.0, &[], None).unwrap();
        let out = finish(spawn_waiter(&d.0, "lo"));
        assert_eq!(out.status.code(), Some(127));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("weave-rs: cannot start"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}
