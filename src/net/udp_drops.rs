//! How many datagrams the kernel dropped for one of our UDP sockets (its
//! receive buffer full): the `drops` column of `/proc/net/udp` and
//! `/proc/net/udp6`, found by the socket's inode.

use std::os::fd::AsFd;

/// Drops counted for the socket behind `fd`; None if it is not found.
pub fn udp_drops(fd: &impl AsFd) -> Option<u64> {
    let inode = nix::sys::stat::fstat(fd.as_fd()).ok()?.st_ino;
    ["/proc/self/net/udp", "/proc/self/net/udp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .find_map(|table| drops_of(&table, inode))
}

/// The `drops` of the line whose `inode` column is `inode`.
fn drops_of(table: &str, inode: u64) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        (cols.get(9)?.parse::<u64>().ok()? == inode)
            .then(|| cols.last()?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  120: 00000000:1A7F 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 43117 2 0000000000000000 0
  121: 00000000:1A80 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 43120 2 0000000000000000 1234
";

    #[test]
    fn drops_are_found_by_inode() {
        assert_eq!(drops_of(TABLE, 43120), Some(1234));
        assert_eq!(drops_of(TABLE, 43117), Some(0));
        assert_eq!(drops_of(TABLE, 1), None);
        assert_eq!(drops_of("header only\n", 43117), None);
        assert_eq!(drops_of("h\n  1: short line\n", 1), None);
    }

    #[test]
    fn a_socket_of_ours_is_found() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(udp_drops(&s), Some(0));
    }
}
