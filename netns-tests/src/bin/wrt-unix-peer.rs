//! A local user's process against the control socket, for tests: it drops
//! to an unprivileged uid first (it is started as root, in a host's netns).
//!
//!     wrt-unix-peer serve UID REPLY_FILE LOG_FILE
//!         bind @weave-rs/control (as the router would), print "ready", and
//!         answer every connection with REPLY_FILE's line; log one line
//!         "bytes=N" per connection (what the client sent before replying).
//!     wrt-unix-peer hold UID COUNT
//!         keep COUNT idle connections to @weave-rs/control open, opening a
//!         new one whenever the server closes one; print "holding COUNT".
//!     wrt-unix-peer request UID JSON
//!         send one request line, print the reply line (what a plugin or
//!         other client of the local API does).

use std::io::{BufRead, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};

const NAME: &[u8] = b"weave-rs/control";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["serve", uid, reply, log] => serve(uid, reply, log),
        ["hold", uid, count] => hold(uid, count),
        ["request", uid, json] => request(uid, json),
        _ => Err(
            "usage: wrt-unix-peer serve UID REPLY_FILE LOG_FILE | hold UID COUNT | request UID JSON"
                .into(),
        ),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wrt-unix-peer: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Become `uid` (gid the same, no supplementary groups) for good; 0
/// stays root.
fn drop_to(uid: &str) -> Result<(), String> {
    let id: u32 = uid.parse().map_err(|_| format!("bad uid {uid}"))?;
    if id == 0 {
        return Ok(());
    }
    setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    let g = Gid::from_raw(id);
    setresgid(g, g, g).map_err(|e| format!("setresgid: {e}"))?;
    let u = Uid::from_raw(id);
    setresuid(u, u, u).map_err(|e| format!("setresuid: {e}"))?;
    if nix::unistd::geteuid().is_root() {
        return Err("still root".into());
    }
    Ok(())
}

fn addr() -> Result<SocketAddr, String> {
    SocketAddr::from_abstract_name(NAME).map_err(|e| e.to_string())
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn serve(uid: &str, reply_file: &str, log_file: &str) -> Result<(), String> {
    let mut reply = std::fs::read(reply_file).map_err(|e| format!("{reply_file}: {e}"))?;
    if !reply.ends_with(b"\n") {
        reply.push(b'\n');
    }
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log_file)
        .map_err(|e| format!("{log_file}: {e}"))?;
    drop_to(uid)?;
    let l = UnixListener::bind_addr(&addr()?).map_err(|e| format!("bind: {e}"))?;
    say("ready");
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut got = Vec::new();
        let _ = std::io::BufReader::new(&mut s).read_until(b'\n', &mut got);
        let _ = writeln!(log, "bytes={}", got.len());
        let _ = log.flush();
        let _ = s.write_all(&reply);
    }
    Ok(())
}

fn request(uid: &str, json: &str) -> Result<(), String> {
    drop_to(uid)?;
    let mut s = UnixStream::connect_addr(&addr()?).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("{json}\n").as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut reply = String::new();
    std::io::BufReader::new(&mut s)
        .read_line(&mut reply)
        .map_err(|e| format!("reply: {e}"))?;
    say(reply.trim_end());
    Ok(())
}

fn hold(uid: &str, count: &str) -> Result<(), String> {
    let n: usize = count.parse().map_err(|_| format!("bad count {count}"))?;
    drop_to(uid)?;
    let addr = addr()?;
    let open = || -> Option<UnixStream> {
        let s = UnixStream::connect_addr(&addr).ok()?;
        s.set_nonblocking(true).ok()?;
        Some(s)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut conns: Vec<Option<UnixStream>> = Vec::with_capacity(n);
    while conns.len() < n {
        match open() {
            Some(s) => conns.push(Some(s)),
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            None => return Err(format!("could connect only {} times", conns.len())),
        }
    }
    say(&format!("holding {n}"));
    let mut buf = [0u8; 512];
    loop {
        for c in conns.iter_mut() {
            let closed = match c {
                Some(s) => match s.read(&mut buf) {
                    Ok(0) => true,
                    Ok(_) => false, // a refusal line; EOF follows
                    Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                },
                None => true,
            };
            if closed {
                *c = open();
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
