//! Host plumbing: netlink, network namespaces, TAP, iptables, gratuitous ARP.
