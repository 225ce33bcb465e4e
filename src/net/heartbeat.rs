//! The fast path's heartbeat socket (`core::wire::fastpath`). It sends
//! with `AF_PACKET` out of the VXLAN device, so a heartbeat leaves exactly
//! where the kernel's traffic does. It receives on the bridge, bound to our
//! ethertype: a heartbeat arrives on the device addressed to the device's
//! own MAC, which the bridge hands up to itself. A socket on the device
//! itself would have to take every frame (`ETH_P_ALL`: on a bridge port the
//! bridge takes frames before they are dispatched by ethertype), and the
//! kernel would copy each frame the fast path sends to it. Open it on a
//! thread inside the router's network namespace; non-blocking.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::garp::{send_frame, sockaddr_ll};
use crate::core::wire::fastpath::ETHERTYPE;

pub struct HeartbeatSocket {
    fd: OwnedFd,
    /// Where heartbeats are sent: the VXLAN device.
    ifindex: i32,
}

impl AsRawFd for HeartbeatSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn ifindex(name: &str) -> io::Result<i32> {
    let i = nix::net::if_::if_nametoindex(name).map_err(io::Error::from)?;
    i32::try_from(i).map_err(io::Error::other)
}

impl HeartbeatSocket {
    /// A socket sending out of `device` and receiving on `bridge` (the
    /// bridge `device` is a port of), in the caller's namespace.
    pub fn open(device: &str, bridge: &str) -> io::Result<HeartbeatSocket> {
        let send_on = ifindex(device)?;
        let receive_on = ifindex(bridge)?;
        // SAFETY: plain socket(2); the fd is owned right after.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                i32::from(ETHERTYPE.to_be()),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh, valid fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let sa = sockaddr_ll(receive_on, ETHERTYPE, [0; 6]);
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
        Ok(HeartbeatSocket {
            fd,
            ifindex: send_on,
        })
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
