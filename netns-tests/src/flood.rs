//! A connection flood from one namespace (one source address): `conns` TCP
//! connections to a router's port, each behaving as a hostile or broken
//! peer would ([`Behaviour`]), every one the router closes opened again, for
//! as long as the [`Flood`] lives. One thread drives all of them with
//! non-blocking sockets and `poll`.
//!
//! Reopening: a connection that lived a second or more is reopened at once
//! (the attacker takes back a freed slot immediately); one closed sooner
//! waits 50 ms, doubling up to 1 s, so a router that refuses at once sees
//! a few hundred attempts a second, not a busy loop.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use socket2::{Domain, Socket, Type};

use crate::netns::AsNetns;
use crate::wire::{self, Hello};

/// What each connection of a flood does once connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Sends nothing.
    Idle,
    /// Sends a valid plain hello, then heartbeat frames, one byte a second.
    Trickle,
    /// A fake peer: a complete plain hello (a name of its own), then a
    /// heartbeat frame every second, so it stays registered.
    FakePeer,
    /// A fake peer that sends a complete plain hello and then nothing, so
    /// the router drops it when its heartbeats time out (and the flood opens
    /// another at once).
    SilentFakePeer,
    /// A fake peer that, after its hello, announces a control frame of the
    /// largest allowed length (1 MiB) and sends its body at 1 KiB a second.
    FakePeerHugeFrame,
}

/// How many connections, doing what.
#[derive(Clone, Copy, Debug)]
pub struct FloodSpec {
    pub conns: usize,
    pub behaviour: Behaviour,
}

/// Counters of a running flood.
#[derive(Clone, Copy, Debug, Default)]
pub struct FloodStats {
    /// Connections opened so far (reopenings included).
    pub opened: u64,
    /// Connections the router closed (EOF, reset, refused).
    pub closed_by_router: u64,
    /// Connections open right now (TCP established).
    pub open_now: usize,
    /// Slots whose connection, at least once, was established and had sent
    /// its opening bytes (the hello, and the frame header for
    /// [`Behaviour::FakePeerHugeFrame`]).
    pub slots_started: usize,
}

#[derive(Default)]
struct Counters {
    opened: AtomicU64,
    closed_by_router: AtomicU64,
    open_now: AtomicUsize,
    slots_started: AtomicUsize,
}

/// A running flood; dropping it closes every connection (and joins its
/// thread).
pub struct Flood {
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
}

impl Flood {
    /// Starts `spec.conns` connections from inside `from` to `to`.
    pub fn start(from: &impl AsNetns, to: SocketAddr, spec: FloodSpec) -> Flood {
        raise_fd_limit(spec.conns as u64 + 256);
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let thread = {
            let (stop, counters) = (stop.clone(), counters.clone());
            from.netns()
                .spawn(move || Driver::new(to, spec, counters).run(&stop))
        };
        Flood {
            stop,
            counters,
            thread: Some(thread),
        }
    }

    pub fn stats(&self) -> FloodStats {
        let c = &self.counters;
        FloodStats {
            opened: c.opened.load(Ordering::Relaxed),
            closed_by_router: c.closed_by_router.load(Ordering::Relaxed),
            open_now: c.open_now.load(Ordering::Relaxed),
            slots_started: c.slots_started.load(Ordering::Relaxed),
        }
    }

    /// Closes every connection and returns the final counters.
    pub fn stop(mut self) -> FloodStats {
        self.halt();
        self.stats()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            if let Err(p) = t.join() {
                if !std::thread::panicking() {
                    std::panic::resume_unwind(p);
                }
            }
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Lets this process hold `need` descriptors (up to the hard limit).
fn raise_fd_limit(need: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < need {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard.min(need.max(4096)), hard);
        }
    }
}

/// Shortest and longest wait before reopening a connection that the
/// router closed within a second.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// A connection that lived this long is reopened at once.
const LONG_LIVED: Duration = Duration::from_secs(1);
/// Give up on a TCP connect after this long (and try again).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a connection's behaviour sends its next piece.
const PACE: Duration = Duration::from_secs(1);
/// Body bytes a [`Behaviour::FakePeerHugeFrame`] sends per [`PACE`].
const BODY_CHUNK: usize = 1024;

struct Conn {
    sock: TcpStream,
    opened: Instant,
    connected: bool,
    /// Queued bytes not yet written.
    out: Vec<u8>,
    /// Trickle: the script and how much of it was queued.
    script: Vec<u8>,
    script_pos: usize,
    next_pace: Instant,
}

struct Slot {
    conn: Option<Conn>,
    next_open: Instant,
    backoff: Duration,
    started: bool,
}

struct Driver {
    to: SocketAddr,
    spec: FloodSpec,
    counters: Arc<Counters>,
    slots: Vec<Slot>,
    /// Distinguishes this flood's fake peer names from another's.
    tag: u8,
    next_name: u16,
}

impl Driver {
    fn new(to: SocketAddr, spec: FloodSpec, counters: Arc<Counters>) -> Driver {
        let now = Instant::now();
        let tag = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
            >> 8) as u8;
        Driver {
            to,
            spec,
            counters,
            slots: (0..spec.conns)
                .map(|_| Slot {
                    conn: None,
                    next_open: now,
                    backoff: Duration::ZERO,
                    started: false,
                })
                .collect(),
            tag,
            next_name: 0,
        }
    }

    fn run(mut self, stop: &AtomicBool) {
        let mut buf = vec![0u8; 64 * 1024];
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            for i in 0..self.slots.len() {
                self.service(i, now);
            }
            // Wait for data, closes and connects (at most 50 ms).
            let mut readable = Vec::new();
            {
                let mut fds = Vec::new();
                let mut idx = Vec::new();
                for (i, s) in self.slots.iter().enumerate() {
                    if let Some(c) = &s.conn {
                        let mut ev = PollFlags::POLLIN;
                        if !c.connected || !c.out.is_empty() {
                            ev |= PollFlags::POLLOUT;
                        }
                        fds.push(PollFd::new(c.sock.as_fd(), ev));
                        idx.push(i);
                    }
                }
                if fds.is_empty() {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                let _ = poll(&mut fds, PollTimeout::from(50u16));
                for (fd, i) in fds.iter().zip(idx) {
                    if fd.revents().is_some_and(|r| !r.is_empty()) {
                        readable.push(i);
                    }
                }
            }
            let now = Instant::now();
            for i in readable {
                if self.on_ready(i, &mut buf) {
                    self.close(i, now);
                }
            }
        }
        // Dropping the slots closes every connection.
        self.counters.open_now.store(0, Ordering::Relaxed);
    }

    /// Opens, paces and flushes slot `i`.
    fn service(&mut self, i: usize, now: Instant) {
        let slot = &mut self.slots[i];
        let Some(c) = &mut slot.conn else {
            if now >= slot.next_open {
                self.open(i, now);
            }
            return;
        };
        if !c.connected && now.duration_since(c.opened) > CONNECT_TIMEOUT {
            self.close(i, now);
            return;
        }
        if now >= c.next_pace {
            c.next_pace += PACE;
            match self.spec.behaviour {
                Behaviour::Idle => {}
                Behaviour::Trickle => {
                    if c.script_pos >= c.script.len() {
                        c.script = wire::control_frame(1, &[]);
                        c.script_pos = 0;
                    }
                    c.out.push(c.script[c.script_pos]);
                    c.script_pos += 1;
                }
                Behaviour::FakePeer => c.out.extend(wire::control_frame(1, &[])),
                Behaviour::SilentFakePeer => {}
                Behaviour::FakePeerHugeFrame => c.out.extend([0u8; BODY_CHUNK]),
            }
        }
        if c.connected && !self.flush(i) {
            self.close(i, now);
        }
    }

    fn open(&mut self, i: usize, now: Instant) {
        let sock = match Socket::new(Domain::for_address(self.to), Type::STREAM, None) {
            Ok(s) => s,
            Err(_) => {
                self.slots[i].next_open = now + MAX_BACKOFF;
                return;
            }
        };
        let _ = sock.set_nonblocking(true);
        match sock.connect(&self.to.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::EINPROGRESS) => {}
            Err(_) => {
                self.counters.opened.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .closed_by_router
                    .fetch_add(1, Ordering::Relaxed);
                self.slots[i].backoff = next_backoff(self.slots[i].backoff);
                self.slots[i].next_open = now + self.slots[i].backoff;
                return;
            }
        }
        self.counters.opened.fetch_add(1, Ordering::Relaxed);
        let (out, script) = match self.spec.behaviour {
            Behaviour::Idle => (Vec::new(), Vec::new()),
            Behaviour::Trickle => (Vec::new(), self.next_hello()),
            Behaviour::FakePeer | Behaviour::SilentFakePeer => (self.next_hello(), Vec::new()),
            Behaviour::FakePeerHugeFrame => {
                let mut out = self.next_hello();
                out.extend_from_slice(&wire::MAX_FRAME.to_be_bytes());
                out.push(2); // gossip
                (out, Vec::new())
            }
        };
        self.slots[i].conn = Some(Conn {
            sock: sock.into(),
            opened: now,
            connected: false,
            out,
            script,
            script_pos: 0,
            next_pace: now,
        });
    }

    /// A plain hello under a peer name not used by this flood's open
    /// connections.
    fn next_hello(&mut self) -> Vec<u8> {
        self.next_name = self.next_name.wrapping_add(1);
        let [hi, lo] = self.next_name.to_be_bytes();
        let name = [0x02, 0xfa, 0x4f, self.tag, hi, lo];
        let h = Hello {
            name,
            uid: u64::from_be_bytes([0, 0, name[0], name[1], name[2], name[3], hi, lo]),
            port: wire::PORT,
            features: 0,
            nick: format!("flood{}", self.next_name),
        };
        wire::handshake(wire::VERSION, wire::VERSION, &h)
    }

    /// Slot `i`'s socket has an event: finish the connect, write, drain.
    /// True when the connection is over (closed, reset or refused).
    fn on_ready(&mut self, i: usize, buf: &mut [u8]) -> bool {
        let Some(c) = self.slots[i].conn.as_mut() else {
            return false;
        };
        if !c.connected {
            if matches!(c.sock.take_error(), Ok(Some(_)) | Err(_)) {
                return true;
            }
            if c.sock.peer_addr().is_err() {
                return false; // still connecting
            }
            c.connected = true;
            self.counters.open_now.fetch_add(1, Ordering::Relaxed);
        }
        if !self.flush(i) {
            return true;
        }
        let Some(c) = self.slots[i].conn.as_mut() else {
            return false;
        };
        loop {
            match c.sock.read(buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
    }

    /// Writes what slot `i` has queued, as far as the socket takes it.
    /// False when the connection is broken.
    fn flush(&mut self, i: usize) -> bool {
        let slot = &mut self.slots[i];
        let Some(c) = slot.conn.as_mut() else {
            return true;
        };
        while !c.out.is_empty() {
            match c.sock.write(&c.out) {
                Ok(n) => {
                    c.out.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        let opening_sent = match self.spec.behaviour {
            // The first byte of the hello went out.
            Behaviour::Trickle => c.script_pos > 0 && c.out.is_empty(),
            _ => c.out.is_empty(),
        };
        if c.connected && opening_sent && !slot.started {
            slot.started = true;
            self.counters.slots_started.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// The router closed (or refused) slot `i`'s connection: count it and
    /// schedule the next one.
    fn close(&mut self, i: usize, now: Instant) {
        let slot = &mut self.slots[i];
        let Some(c) = slot.conn.take() else {
            return;
        };
        if c.connected {
            self.counters.open_now.fetch_sub(1, Ordering::Relaxed);
        }
        self.counters
            .closed_by_router
            .fetch_add(1, Ordering::Relaxed);
        slot.backoff = if now.duration_since(c.opened) >= LONG_LIVED {
            Duration::ZERO
        } else {
            next_backoff(slot.backoff)
        };
        slot.next_open = now + slot.backoff;
    }
}

fn next_backoff(b: Duration) -> Duration {
    (b * 2).clamp(MIN_BACKOFF, MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_50ms_to_1s() {
        let mut b = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..7 {
            b = next_backoff(b);
            seen.push(b.as_millis());
        }
        assert_eq!(seen, [50, 100, 200, 400, 800, 1000, 1000]);
    }
}
