//! One router per network namespace, decided before anything is touched.
//!
//! `launch` takes an exclusive flock on `/run/weave-rs/netns-<inode>.lock`
//! (the inode of the network namespace: two live namespaces never share
//! one) before it looks at devices or files, and the router holds it for
//! its whole life. The background router inherits the very descriptor
//! (`--lock-fd`), so there is no moment where nobody holds it. The kernel
//! releases the lock when the last descriptor closes, so a router killed
//! with -9 leaves nothing to clean up. The lock is never released
//! explicitly (LOCK_UN would release it for the inheriting router too).
//! The file holds the pid of the holder, for the loser's error message.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the locks live (a tmpfs: nothing survives a reboot).
pub const LOCK_DIR: &str = "/run/weave-rs";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{} is held by {}", path.display(), pid.map_or("an unknown process".to_string(), |p| format!("pid {p}")))]
    Held { path: PathBuf, pid: Option<u32> },
    #[error("lock {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("--lock-fd {fd}: {why}")]
    BadFd { fd: RawFd, why: String },
}

/// The held lock; dropping it closes this process's descriptor.
#[derive(Debug)]
pub struct InstanceLock {
    file: File,
}

/// This network namespace's lock file.
pub fn path_for_this_netns() -> io::Result<PathBuf> {
    let ino = std::fs::metadata("/proc/self/ns/net")?.ino();
    Ok(Path::new(LOCK_DIR).join(format!("netns-{ino}.lock")))
}

impl InstanceLock {
    /// Take the lock at `path` without waiting, or say who holds it.
    pub fn acquire_at(path: &Path) -> Result<InstanceLock, LockError> {
        let io_err = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io_err)?;
        lock_or_held(&file, path, io_err)?;
        let lock = InstanceLock { file };
        lock.record_pid().map_err(io_err)?;
        Ok(lock)
    }

    /// Take over the lock descriptor `fd` inherited from `launch`: it must
    /// be the lock file at `path`, already locked by us (same open file).
    pub fn adopt(fd: RawFd, path: &Path) -> Result<InstanceLock, LockError> {
        let bad = |why: String| LockError::BadFd { fd, why };
        if fd < 3 {
            return Err(bad("not a lock descriptor".into()));
        }
        let fd_meta = fstat(fd).map_err(|e| bad(e.to_string()))?;
        let path_meta =
            std::fs::metadata(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
        if fd_meta.st_dev != path_meta.dev() || fd_meta.st_ino != path_meta.ino() {
            return Err(bad(format!("not the lock file {}", path.display())));
        }
        // SAFETY: fd is open (fstat succeeded), refers to the lock file, and
        // nothing else in this process owns it: it was inherited for us.
        let file = unsafe { File::from_raw_fd(fd) };
        // Not to be inherited any further (by iptables and the like).
        nix::fcntl::fcntl(
            &file,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(|e| bad(e.to_string()))?;
        lock_or_held(&file, path, |e| bad(e.to_string()))?;
        let lock = InstanceLock { file };
        lock.record_pid().map_err(|source| LockError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(lock)
    }

    /// The descriptor to hand to the background router.
    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Write our pid over the old one (first line; no moment of emptiness).
    fn record_pid(&self) -> io::Result<()> {
        let line = format!("{}\n", std::process::id());
        self.file.write_all_at(line.as_bytes(), 0)?;
        self.file.set_len(line.len() as u64)
    }
}

/// fstat of a raw descriptor that may not be open at all.
fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a whole stat on success; any fd value is safe.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: initialised by the successful call.
    Ok(unsafe { st.assume_init() })
}

fn flock_exclusive(f: &File) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor we own.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Locks `file` (the lock at `path`): a lock held elsewhere is `Held`, naming
/// its holder; any other failure goes through `other`.
fn lock_or_held(
    file: &File,
    path: &Path,
    other: impl FnOnce(io::Error) -> LockError,
) -> Result<(), LockError> {
    match flock_exclusive(file) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(LockError::Held {
            path: path.to_path_buf(),
            pid: holder_pid(file),
        }),
        Err(e) => Err(other(e)),
    }
}

/// The pid the holder wrote. It writes it just after locking, so an empty
/// file is retried briefly.
fn holder_pid(f: &File) -> Option<u32> {
    for _ in 0..10 {
        let mut buf = [0u8; 32];
        let n = f.read_at(&mut buf, 0).ok()?;
        let text = String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).into_owned();
        if let Some(pid) = text.lines().next().and_then(|l| l.trim().parse().ok()) {
            return Some(pid);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_lock() -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub").join("netns-1.lock");
        (d, p)
    }

    #[test]
    fn second_taker_is_told_the_holders_pid() {
        let (_d, p) = temp_lock();
        let held = InstanceLock::acquire_at(&p).unwrap();
        let mode = std::fs::metadata(p.parent().unwrap()).unwrap().mode();
        assert_eq!(mode & 0o777, 0o700);
        match InstanceLock::acquire_at(&p) {
            Err(LockError::Held { pid, path }) => {
                assert_eq!(pid, Some(std::process::id()));
                assert_eq!(path, p);
            }
            other => panic!("want Held, got {other:?}"),
        }
        let msg = InstanceLock::acquire_at(&p).unwrap_err().to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(held);
        InstanceLock::acquire_at(&p).unwrap();
    }

    #[test]
    fn a_longer_old_pid_is_overwritten_cleanly() {
        let (_d, p) = temp_lock();
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "4294967295\nleftover\n").unwrap();
        let _held = InstanceLock::acquire_at(&p).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            format!("{}\n", std::process::id())
        );
    }

    #[test]
    fn the_lock_lives_while_any_descriptor_of_it_does() {
        let (_d, p) = temp_lock();
        let held = InstanceLock::acquire_at(&p).unwrap();
        // What the background router inherits: the same open file.
        let inherited = held.file.try_clone().unwrap();
        drop(held);
        assert!(matches!(
            InstanceLock::acquire_at(&p),
            Err(LockError::Held { .. })
        ));
        // The inheritor adopts it (here: the duplicate descriptor).
        let fd = std::os::fd::IntoRawFd::into_raw_fd(inherited);
        let adopted = InstanceLock::adopt(fd, &p).unwrap();
        assert_eq!(adopted.raw_fd(), fd);
        drop(adopted);
        InstanceLock::acquire_at(&p).unwrap();
    }

    #[test]
    fn adopt_refuses_anything_but_the_lock_file() {
        let (d, p) = temp_lock();
        let _held = InstanceLock::acquire_at(&p).unwrap();
        let other = File::create(d.path().join("other")).unwrap();
        let e = InstanceLock::adopt(other.as_raw_fd(), &p).unwrap_err();
        assert!(e.to_string().contains("not the lock file"), "{e}");
        assert!(InstanceLock::adopt(1, &p).is_err());
        assert!(InstanceLock::adopt(987_654, &p).is_err());
        // A descriptor of the lock file that is not the holder's open file.
        let own = File::open(&p).unwrap();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(own);
        assert!(matches!(
            InstanceLock::adopt(fd, &p),
            Err(LockError::Held { .. })
        ));
    }
}
