//! The host's upstream resolvers, read from resolv.conf text.
//!
//! Names outside our domain are forwarded to the servers the host itself
//! would ask, so this reads `nameserver` lines the way glibc does: only the
//! first [`MAXNS`] addresses it can parse count, the rest of each line after
//! the address is ignored, and so are lines starting with `#` or `;`. The
//! caller reads the file; this only parses text.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};

/// The most name servers glibc's resolver uses (`MAXNS` in `resolv.h`); lines
/// after the third parsable one are ignored by the host, so by us too.
pub const MAXNS: usize = 3;

/// The port every `nameserver` line implies (resolv.conf cannot name another).
pub const PORT: u16 = 53;

/// The name servers in resolv.conf `text`, in file order, duplicates removed.
///
/// Takes the same servers glibc would: the first [`MAXNS`] `nameserver` lines
/// whose address parses (a duplicate among them still uses up a slot, as it
/// does in glibc). Lines with an unparsable address are skipped without
/// using a slot. An IPv6 address may carry a zone: a numeric one (`%2`)
/// becomes the scope id; an interface name (`%eth0`) cannot be turned into an
/// index without asking the kernel, so it is dropped, leaving scope id 0.
pub fn nameservers(text: &str) -> Vec<SocketAddr> {
    let mut servers = Vec::with_capacity(MAXNS);
    let parsed = text.lines().filter_map(nameserver_line).take(MAXNS);
    for server in parsed {
        if !servers.contains(&server) {
            servers.push(server);
        }
    }
    servers
}

/// The address on one line, if it is a `nameserver` line with a parsable one.
fn nameserver_line(line: &str) -> Option<SocketAddr> {
    let line = line.trim_start();
    if line.starts_with(['#', ';']) {
        return None;
    }
    let rest = line.strip_prefix("nameserver")?;
    // The keyword must be followed by blanks ("nameservers 1.2.3.4" is not it).
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    // glibc cuts the address at the first blank, '#' or ';'.
    let token = rest
        .trim_start()
        .split([' ', '\t', '#', ';'])
        .next()
        .filter(|token| !token.is_empty())?;
    address(token)
}

fn address(token: &str) -> Option<SocketAddr> {
    if let Ok(ip) = token.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, PORT));
    }
    let (ip, zone) = token.split_once('%')?;
    let ip: Ipv6Addr = ip.parse().ok()?;
    let scope_id = zone.parse::<u32>().unwrap_or(0);
    Some(SocketAddr::V6(SocketAddrV6::new(ip, PORT, 0, scope_id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn ipv4_and_ipv6_servers_on_port_53_in_file_order() {
        let text = "nameserver 10.0.0.2\nnameserver 2001:db8::1\nnameserver 192.0.2.7\n";
        assert_eq!(
            nameservers(text),
            addrs(&["10.0.0.2:53", "[2001:db8::1]:53", "192.0.2.7:53"])
        );
    }

    #[test]
    fn typical_systemd_resolved_stub_file() {
        let text = "\
# This is /run/systemd/resolve/stub-resolv.conf managed by man:systemd-resolved(8).
# Do not edit.

nameserver 127.0.0.53
options edns0 trust-ad
search example.internal
";
        assert_eq!(nameservers(text), addrs(&["127.0.0.53:53"]));
    }

    #[test]
    fn comment_lines_are_ignored() {
        let text = "# nameserver 10.0.0.1\n; nameserver 10.0.0.2\n  # nameserver 10.0.0.3\nnameserver 10.0.0.4\n";
        assert_eq!(nameservers(text), addrs(&["10.0.0.4:53"]));
    }

    #[test]
    fn trailing_comment_and_words_after_the_address_are_ignored() {
        let text =
            "nameserver 10.0.0.1 # office\nnameserver 10.0.0.2;lab\nnameserver\t10.0.0.3#x extra\n";
        assert_eq!(
            nameservers(text),
            addrs(&["10.0.0.1:53", "10.0.0.2:53", "10.0.0.3:53"])
        );
    }

    #[test]
    fn leading_blanks_tabs_and_crlf_are_accepted() {
        let text = "  nameserver   10.0.0.1  \r\n\tnameserver\t\t10.0.0.2\r\n";
        assert_eq!(nameservers(text), addrs(&["10.0.0.1:53", "10.0.0.2:53"]));
    }

    #[test]
    fn other_keywords_and_malformed_lines_are_skipped() {
        let text = "\
nameservers 10.0.0.1
nameserver10.0.0.2
NAMESERVER 10.0.0.3
nameserver
nameserver    
nameserver not-an-address
nameserver 10.0.0.256
nameserver 10.0.0.4:53
domain example.com
search a b
options ndots:2
sortlist 10.0.0.0/8
nameserver 10.0.0.5
";
        assert_eq!(nameservers(text), addrs(&["10.0.0.5:53"]));
    }

    #[test]
    fn duplicates_are_removed_keeping_the_first() {
        let text = "nameserver 10.0.0.1\nnameserver 10.0.0.2\nnameserver 10.0.0.1\n";
        assert_eq!(nameservers(text), addrs(&["10.0.0.1:53", "10.0.0.2:53"]));
    }

    #[test]
    fn at_most_three_servers_like_glibc() {
        let text =
            "nameserver 10.0.0.1\nnameserver 10.0.0.2\nnameserver 10.0.0.3\nnameserver 10.0.0.4\n";
        assert_eq!(
            nameservers(text),
            addrs(&["10.0.0.1:53", "10.0.0.2:53", "10.0.0.3:53"])
        );
    }

    #[test]
    fn unparsable_lines_do_not_use_up_a_slot() {
        let text = "nameserver bogus\nnameserver 10.0.0.1\nnameserver ::1\nnameserver 10.0.0.3\n";
        assert_eq!(
            nameservers(text),
            addrs(&["10.0.0.1:53", "[::1]:53", "10.0.0.3:53"])
        );
    }

    #[test]
    fn a_duplicate_uses_up_a_slot_as_in_glibc() {
        // glibc keeps all three lines and never reaches 10.0.0.3.
        let text =
            "nameserver 10.0.0.1\nnameserver 10.0.0.1\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n";
        assert_eq!(nameservers(text), addrs(&["10.0.0.1:53", "10.0.0.2:53"]));
    }

    #[test]
    fn ipv6_numeric_zone_becomes_the_scope_id() {
        let servers = nameservers("nameserver fe80::1%2\n");
        let expected = SocketAddrV6::new("fe80::1".parse().unwrap(), 53, 0, 2);
        assert_eq!(servers, vec![SocketAddr::V6(expected)]);
    }

    #[test]
    fn ipv6_interface_name_zone_is_dropped() {
        let servers = nameservers("nameserver fe80::1%eth0\n");
        let expected = SocketAddrV6::new("fe80::1".parse().unwrap(), 53, 0, 0);
        assert_eq!(servers, vec![SocketAddr::V6(expected)]);
    }

    #[test]
    fn zone_on_ipv4_or_garbage_is_rejected() {
        let text = "nameserver 10.0.0.1%eth0\nnameserver %eth0\nnameserver fe80::zz%2\n";
        assert_eq!(nameservers(text), Vec::<SocketAddr>::new());
    }

    #[test]
    fn empty_text_has_no_servers() {
        assert!(nameservers("").is_empty());
        assert!(nameservers("\n\n# nothing here\n").is_empty());
    }
}
