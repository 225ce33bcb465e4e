//! The fast path's heartbeat socket: `AF_PACKET` on the VXLAN device, so a
//! heartbeat leaves and arrives exactly where the kernel's traffic does
//! (`core::wire::fastpath`). It receives with `ETH_P_ALL` and a filter on
//! our ethertype: on a bridge port, a socket bound to one ethertype sees
//! nothing (the bridge takes frames before protocol dispatch). Open it on
//! a thread inside the router's network namespace; non-blocking.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::garp::{send_frame, sockaddr_ll};
use crate::core::wire::fastpath::ETHERTYPE;

const ETH_P_ALL: u16 = 0x0003;

pub struct HeartbeatSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl AsRawFd for HeartbeatSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl HeartbeatSocket {
    /// A socket on interface `ifname` of the caller's namespace.
    pub fn open(ifname: &str) -> io::Result<HeartbeatSocket> {
        let ifindex = nix::net::if_::if_nametoindex(ifname).map_err(io::Error::from)?;
        let ifindex = i32::try_from(ifindex).map_err(io::Error::other)?;
        // SAFETY: plain socket(2); the fd is owned right after.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                i32::from(ETH_P_ALL.to_be()),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh, valid fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        attach_filter(&fd)?;
        let sa = sockaddr_ll(ifindex, ETH_P_ALL, [0; 6]);
        // SAFETY: sa is a valid sockaddr_ll of the given length.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::from_ref(&sa).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(HeartbeatSocket { fd, ifindex })
    }

    /// Sends `frame` (a whole Ethernet frame) out of the interface.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        send_frame(&self.fd, self.ifindex, frame)
    }

    /// The next frame that arrived (our own sends skipped); None when none
    /// waits.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
            let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: buf, sa and len are valid for the sizes given.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    std::ptr::from_mut(&mut sa).cast::<libc::sockaddr>(),
                    &mut len,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(None),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(e),
                };
            }
            if sa.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            return Ok(Some(n as usize));
        }
    }
}

/// Only frames of our ethertype reach the socket: `ldh [12]; jeq
/// #ETHERTYPE; ret all; ret 0`.
fn attach_filter(fd: &OwnedFd) -> io::Result<()> {
    let op = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let code = [
        op(libc::BPF_LD | libc::BPF_H | libc::BPF_ABS, 0, 0, 12),
        op(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            0,
            1,
            u32::from(ETHERTYPE),
        ),
        op(libc::BPF_RET | libc::BPF_K, 0, 0, 0x0004_0000),
        op(libc::BPF_RET | libc::BPF_K, 0, 0, 0),
    ];
    let prog = libc::sock_fprog {
        len: code.len() as u16,
        filter: code.as_ptr().cast_mut(),
    };
    // SAFETY: prog points at `code`, alive for the call; the kernel copies it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            std::ptr::from_ref(&prog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
