//! Files weave-rs keeps on the host: private directories and atomic writes.
//!
//! Everything under `/var/lib/weave-rs` is root's alone (the state dir holds
//! the router's private key, run dirs hold containers' command lines). A
//! file is written to a fresh, uniquely named temporary file beside it,
//! flushed to disk and renamed over the old one, so readers see the old or
//! the new content, never a mix, however many writers race.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Where weave-rs keeps its files (unless `WEAVE_RS_STATE_DIR` moves the
/// state dir).
pub const BASE_DIR: &str = "/var/lib/weave-rs";

/// Make `dir` (and missing parents) and give it exactly `mode`, whatever
/// the umask or the mode it had.
pub fn dir_with_mode(dir: &Path, mode: u32) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
}

/// Make `dir` with `mode` if it is missing; leave an existing one as it is.
pub fn dir_if_missing(dir: &Path, mode: u32) -> io::Result<()> {
    match fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(mode)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                fs::create_dir_all(parent)?;
            }
            dir_if_missing(dir, mode)
        }
        Err(e) => Err(e),
    }
}

/// Replace `path` with `bytes`, mode `mode` (and owner `owner`, uid and
/// gid, if given), atomically and durably.
pub fn write_atomic(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    // Created 0600, unique name, removed if we fail before persisting.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    let f = tmp.as_file();
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(f, Some(uid), Some(gid))?;
    }
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    // The rename itself survives a crash once the directory is synced.
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().mode() & 0o7777
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn atomic_writes_set_mode_and_leave_nothing_behind() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write_atomic(&p, b"one", 0o600, None).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(mode(&p), 0o600);
        // An existing file's loose mode is not kept.
        fs::set_permissions(&p, fs::Permissions::from_mode(0o666)).unwrap();
        write_atomic(&p, b"two", 0o640, None).unwrap();
        assert_eq!((fs::read(&p).unwrap(), mode(&p)), (b"two".to_vec(), 0o640));
        assert_eq!(names(d.path()), ["f"]);
        // Writing into a missing dir fails cleanly.
        assert!(write_atomic(&d.path().join("no/f"), b"x", 0o600, None).is_err());
    }

    #[test]
    fn concurrent_writers_never_leave_a_torn_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("attached.json");
        std::thread::scope(|s| {
            for t in 0..8u8 {
                let p = &p;
                s.spawn(move || {
                    for i in 0..50u32 {
                        let body = vec![b'a' + t; 1000 + i as usize * 7];
                        write_atomic(p, &body, 0o600, None).unwrap();
                        let got = fs::read(p).unwrap();
                        assert!(!got.is_empty() && got.iter().all(|b| *b == got[0]));
                    }
                });
            }
        });
        assert_eq!(names(d.path()), ["attached.json"]);
    }

    #[test]
    fn owner_is_set_when_given() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("argv");
        let me = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        // Root may give it away; anyone may "give" it to themselves.
        let to = if me.0 == 0 { (65534, 65534) } else { me };
        write_atomic(&p, b"x", 0o600, Some(to)).unwrap();
        let m = fs::metadata(&p).unwrap();
        assert_eq!((m.uid(), m.gid()), to);
    }

    #[test]
    fn dirs_get_exactly_their_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b");
        dir_with_mode(&p, 0o700).unwrap();
        assert_eq!(mode(&p), 0o700);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        dir_with_mode(&p, 0o700).unwrap();
        assert_eq!(mode(&p), 0o700);

        let q = d.path().join("c/d");
        dir_if_missing(&q, 0o700).unwrap();
        assert_eq!(mode(&q), 0o700);
        fs::set_permissions(&q, fs::Permissions::from_mode(0o750)).unwrap();
        dir_if_missing(&q, 0o700).unwrap();
        assert_eq!(mode(&q), 0o750, "an existing dir was changed");
    }
}
