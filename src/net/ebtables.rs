//! Keeping Docker networks apart on the bridge (the plugin's networks
//! share the weave bridge, and the overlay carries every frame): a frame
//! from an endpoint's veth must be for an address of its network's
//! subnet, and a frame to it must come from one. Both ends of a path check
//! their side, so two networks stay apart even when one's subnet contains
//! the other's, and whatever routes a container adds. Frames to the host
//! (the DNS server) do not cross the bridge and are not concerned.
//!
//! `ebtables` (FORWARD of the bridge's filter table) is run as a child
//! process, like `iptables` (`super::iptables`).

use std::process::Command;

use ipnetwork::Ipv4Network;

use super::NetError;

const PROGRAM: &str = "ebtables";

/// The two rules of `veth` in network `subnet`, after the operation.
fn rules(veth: &str, subnet: Ipv4Network) -> [Vec<String>; 2] {
    let s = subnet.to_string();
    let w = |a: &[&str]| a.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    [
        w(&[
            "FORWARD", "-i", veth, "-p", "IPv4", "--ip-dst", "!", &s, "-j", "DROP",
        ]),
        w(&[
            "FORWARD", "-o", veth, "-p", "IPv4", "--ip-src", "!", &s, "-j", "DROP",
        ]),
    ]
}

fn run(args: &[String]) -> Result<std::process::Output, NetError> {
    Command::new(PROGRAM)
        .args(args)
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => NetError::IptablesMissing {
                program: PROGRAM.into(),
            },
            _ => NetError::Iptables {
                program: PROGRAM.into(),
                args: args.join(" "),
                cause: e.to_string(),
            },
        })
}

fn with_op(op: &str, rule: &[String]) -> Vec<String> {
    let mut a = vec![op.to_string()];
    a.extend(rule.iter().cloned());
    a
}

/// Confines `veth` to `subnet` (idempotent: any old copy goes first).
pub fn isolate(veth: &str, subnet: Ipv4Network) -> Result<(), NetError> {
    release(veth, subnet);
    for r in rules(veth, subnet) {
        let args = with_op("-A", &r);
        let out = run(&args)?;
        if !out.status.success() {
            return Err(NetError::Iptables {
                program: PROGRAM.into(),
                args: args.join(" "),
                cause: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
    }
    Ok(())
}

/// Removes `veth`'s rules (those not there are no error).
pub fn release(veth: &str, subnet: Ipv4Network) {
    for r in rules(veth, subnet) {
        // Each copy, boundedly.
        for _ in 0..8 {
            match run(&with_op("-D", &r)) {
                Ok(o) if o.status.success() => {}
                _ => break,
            }
        }
    }
}

/// Removes every rule about an endpoint veth of the plugin (reset).
pub fn release_all(prefix: &str) {
    let Ok(out) = run(&["-L".into(), "FORWARD".into()]) else {
        return;
    };
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    for line in listing.lines().filter(|l| l.contains(prefix)) {
        let mut args = vec!["-D".to_string(), "FORWARD".to_string()];
        args.extend(line.split_whitespace().map(str::to_string));
        let _ = run(&args);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_are_confined_to_the_subnet() {
        let [out, inn] = rules("vethwrp1234", "10.33.1.0/24".parse().unwrap());
        assert_eq!(
            out.join(" "),
            "FORWARD -i vethwrp1234 -p IPv4 --ip-dst ! 10.33.1.0/24 -j DROP"
        );
        assert_eq!(
            inn.join(" "),
            "FORWARD -o vethwrp1234 -p IPv4 --ip-src ! 10.33.1.0/24 -j DROP"
        );
    }
}
