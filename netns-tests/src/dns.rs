//! DNS helpers: `dig` run inside a namespace with its answer parsed
//! ([`dig`], [`try_dig`], [`DigResult`]), and a dnsmasq serving fixed names
//! in a namespace ([`DnsmasqUpstream`], killed on drop).
//!
//! dig is run as `dig @SERVER +tries=1 +time=2 +noall +comments +answer
//! +authority +stats ARGS...` (Debian's dig 9.18): the header comments give
//! the status and flags, the sections one record per line, and the `;;
//! SERVER: ... (UDP)` / `(TCP)` line of `+stats` tells the transport of the
//! reply that was printed (dig retries over TCP on its own when the UDP reply
//! has TC set, unless `+ignore` is given).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::cmd::Output;
use crate::netns::AsNetns;
use crate::tools::{require_tool, try_wait_until};

/// How long one dig may run (its own limits: +time=2 per try, +tries=1,
/// plus a TCP retry after a truncated reply).
pub const DIG_TIMEOUT: Duration = Duration::from_secs(10);

/// One resource record as dig prints it: (name, type, data, TTL). The name
/// is fully qualified with its trailing dot (`api.weave.local.`), the type
/// upper case (`A`), the data as dig prints it (`10.32.0.5`, `ns. host.
/// 1 2 3 4 5` for an SOA).
pub type Rr = (String, String, String, u32);

/// What one `dig` printed about the reply it got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigResult {
    /// RCODE: "NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", "FORMERR"...
    pub status: String,
    /// Answer section.
    pub answers: Vec<Rr>,
    /// Authority section.
    pub authority: Vec<Rr>,
    /// Header flags, lower case: "qr", "aa", "tc", "rd", "ra", "ad", "cd".
    pub flags: Vec<String>,
    /// The printed reply came over TCP (`+tcp`, or dig's retry after a
    /// truncated UDP reply). None when dig did not say (no `;; SERVER:`).
    pub via_tcp: Option<bool>,
    /// dig printed ";; Truncated, retrying in TCP mode.": the UDP reply had
    /// TC set and the reply shown is the TCP one.
    pub retried_tcp: bool,
    /// Extended DNS errors (`; EDE: 14 (Not Ready)` -> "14 (Not Ready)").
    pub ede: Vec<String>,
    /// dig's whole stdout.
    pub raw: String,
}

impl DigResult {
    /// Parses the output of dig run with `+noall +comments +answer
    /// +authority [+stats]` for one query. Errors name what is wrong.
    pub fn parse(out: &str) -> Result<DigResult, String> {
        let mut status = None;
        let mut flags = None;
        let mut via_tcp = None;
        let mut retried_tcp = false;
        let mut ede = Vec::new();
        let mut answers = Vec::new();
        let mut authority = Vec::new();
        #[derive(PartialEq)]
        enum Section {
            None,
            Answer,
            Authority,
            Other,
        }
        let mut section = Section::None;
        for line in out.lines() {
            let t = line.trim();
            if t.is_empty() {
                continue;
            }
            if let Some(c) = t.strip_prefix(";;") {
                let c = c.trim();
                if let Some(h) = c.strip_prefix("->>HEADER<<-") {
                    if status.is_some() {
                        return Err("more than one reply header: dig printed several \
                                    messages (one query per dig call)"
                            .into());
                    }
                    let s = h
                        .split(',')
                        .filter_map(|kv| kv.trim().strip_prefix("status:"))
                        .map(|v| v.trim().to_string())
                        .next()
                        .ok_or_else(|| format!("no status in header line {line:?}"))?;
                    status = Some(s);
                } else if let Some(f) = c.strip_prefix("flags:") {
                    // "flags: qr aa rd ra; QUERY: 1, ANSWER: 1, ..."
                    let f = f.split(';').next().unwrap_or("");
                    flags = Some(f.split_whitespace().map(str::to_lowercase).collect());
                } else if let Some(s) = c.strip_prefix("SERVER:") {
                    // "SERVER: 127.0.0.1#53(127.0.0.1) (UDP)"
                    let proto = s.trim().rsplit('(').next().unwrap_or("");
                    via_tcp = match proto.trim_end_matches(')') {
                        "TCP" => Some(true),
                        "UDP" => Some(false),
                        _ => None,
                    };
                } else if c.starts_with("Truncated, retrying in TCP mode") {
                    retried_tcp = true;
                } else if let Some(name) = c.strip_suffix("SECTION:") {
                    section = match name.trim() {
                        "ANSWER" => Section::Answer,
                        "AUTHORITY" => Section::Authority,
                        _ => Section::Other,
                    };
                }
                continue;
            }
            if let Some(c) = t.strip_prefix(';') {
                // "; EDNS: ...", "; EDE: 14 (Not Ready)", "; COOKIE: ..."
                if let Some(e) = c.trim().strip_prefix("EDE:") {
                    ede.push(e.trim().to_string());
                }
                continue;
            }
            let rr = parse_rr(t).map_err(|e| format!("{e} in record line {line:?}"))?;
            match section {
                Section::Answer => answers.push(rr),
                Section::Authority => authority.push(rr),
                Section::Other => {}
                Section::None => {
                    return Err(format!("record line {line:?} outside any section"));
                }
            }
        }
        let status = status.ok_or("no `;; ->>HEADER<<-` line (was +comments given?)")?;
        let flags = flags.ok_or("no `;; flags:` line")?;
        Ok(DigResult {
            status,
            answers,
            authority,
            flags,
            via_tcp,
            retried_tcp,
            ede,
            raw: out.to_string(),
        })
    }

    /// Is the header flag `flag` ("aa", "tc", "ra"...) set?
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
    }

    /// The data of the answers of type `rtype` ("A", "PTR"...), in order.
    pub fn answer_data(&self, rtype: &str) -> Vec<String> {
        self.answers
            .iter()
            .filter(|r| r.1.eq_ignore_ascii_case(rtype))
            .map(|r| r.2.clone())
            .collect()
    }

    /// The addresses of the A and AAAA answers, sorted.
    pub fn addrs(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self
            .answers
            .iter()
            .filter(|r| r.1 == "A" || r.1 == "AAAA")
            .filter_map(|r| r.2.parse().ok())
            .collect();
        v.sort();
        v
    }
}

/// "name TTL [class] TYPE data..." (tabs or spaces between fields; the data
/// keeps its own spacing).
fn parse_rr(line: &str) -> Result<Rr, String> {
    let mut rest = line;
    let mut field = || -> Option<&str> {
        let s = rest.trim_start();
        if s.is_empty() {
            return None;
        }
        let end = s.find(char::is_whitespace).unwrap_or(s.len());
        rest = &s[end..];
        Some(&s[..end])
    };
    let name = field().ok_or("no name")?.to_string();
    let ttl_s = field().ok_or("no TTL")?;
    let ttl: u32 = ttl_s
        .parse()
        .map_err(|_| format!("TTL {ttl_s:?} is not a number (was +nottlid given?)"))?;
    let mut rtype = field().ok_or("no type")?;
    if matches!(rtype, "IN" | "CH" | "HS" | "ANY") || rtype.starts_with("CLASS") {
        rtype = field().ok_or("no type after the class")?;
    }
    let rtype = rtype.to_string();
    let data = rest.trim().to_string();
    Ok((name, rtype, data, ttl))
}

/// Why [`try_dig`] has no [`DigResult`].
#[derive(Debug)]
pub enum DigError {
    /// dig got no reply (exit 9: timed out, connection refused...) or
    /// failed otherwise (non-zero exit, killed by the harness's timeout).
    Failed(Output),
    /// dig exited 0 but its output did not parse.
    Unparsable { why: String, output: Output },
}

impl DigError {
    /// dig's whole output.
    pub fn output(&self) -> &Output {
        match self {
            DigError::Failed(o) => o,
            DigError::Unparsable { output, .. } => output,
        }
    }

    /// dig said it got no reply at all (exit code 9).
    pub fn no_reply(&self) -> bool {
        matches!(self, DigError::Failed(o) if o.code() == Some(9))
    }
}

impl fmt::Display for DigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DigError::Failed(o) if o.code() == Some(9) => {
                write!(f, "dig got no reply (exit 9):\n{o}")
            }
            DigError::Failed(o) => write!(f, "dig failed:\n{o}"),
            DigError::Unparsable { why, output } => {
                write!(f, "cannot parse dig's output ({why}):\n{output}")
            }
        }
    }
}

impl std::error::Error for DigError {}

/// The argv of a dig query: `server` is an address (`169.254.53.53`),
/// `ADDR#PORT` (dig's notation) or a socket address (`127.0.0.1:5353`,
/// `[::1]:5353`).
pub fn dig_argv(server: &str, args: &[&str]) -> Vec<String> {
    let mut argv = vec!["dig".to_string()];
    if let Ok(sa) = server.parse::<SocketAddr>() {
        argv.push(format!("@{}", sa.ip()));
        argv.push("-p".into());
        argv.push(sa.port().to_string());
    } else if let Some((addr, port)) = server.split_once('#') {
        argv.push(format!("@{addr}"));
        argv.push("-p".into());
        argv.push(port.to_string());
    } else {
        argv.push(format!("@{server}"));
    }
    for a in [
        "+tries=1",
        "+time=2",
        "+noall",
        "+comments",
        "+answer",
        "+authority",
        "+stats",
    ] {
        argv.push(a.into());
    }
    argv.extend(args.iter().map(|a| a.to_string()));
    argv
}

/// Runs `dig @server ARGS...` inside `ns` (one try, 2 s) and parses the
/// reply. `args` are the query and any more dig options, e.g.
/// `&["api.weave.local", "A"]` or `&["+tcp", "api.weave.local"]`.
#[track_caller]
pub fn try_dig(ns: &impl AsNetns, server: &str, args: &[&str]) -> Result<DigResult, DigError> {
    require_tool("dig");
    let out = ns.netns().run_timeout(&dig_argv(server, args), DIG_TIMEOUT);
    if !out.success() {
        return Err(DigError::Failed(out));
    }
    match DigResult::parse(&out.stdout) {
        Ok(r) => Ok(r),
        Err(why) => Err(DigError::Unparsable { why, output: out }),
    }
}

/// Like [`try_dig`], and panics (with dig's whole output) when dig got no
/// reply or its output does not parse. A reply with any status (NXDOMAIN,
/// SERVFAIL...) is a result, not a failure.
#[track_caller]
pub fn dig(ns: &impl AsNetns, server: &str, args: &[&str]) -> DigResult {
    match try_dig(ns, server, args) {
        Ok(r) => r,
        Err(e) => panic!(
            "dig @{server} {} in {}: {e}",
            args.join(" "),
            ns.netns().name()
        ),
    }
}

static DNSMASQ_SEQ: AtomicU64 = AtomicU64::new(0);

/// A dnsmasq serving fixed names in a test namespace, killed (with its TCP
/// children) on drop, also when the test panics; its log is printed then.
///
/// It answers only what it is given: A (and PTR) for each (name, ip) as
/// `--host-record`, NODATA for other types of those names, NXDOMAIN for
/// every other name (`--address=/#/`); no upstream, no /etc/hosts, no
/// config files. TTL 0 unless `--local-ttl=N` is passed in `extra`. Queries
/// are logged ([`DnsmasqUpstream::queries`]).
pub struct DnsmasqUpstream {
    child: Child,
    /// Address it listens on.
    pub addr: IpAddr,
    /// UDP and TCP port (53 unless given).
    pub port: u16,
    dir: PathBuf,
    ns_name: String,
}

impl DnsmasqUpstream {
    /// dnsmasq on `listen` port 53 in `at` (the address must be configured
    /// there), serving `records` (name, IPv4 or IPv6 address; a name may
    /// come several times). Returns once it answers.
    #[track_caller]
    pub fn start(at: &impl AsNetns, listen: &str, records: &[(&str, &str)]) -> DnsmasqUpstream {
        Self::start_with(at, listen, 53, records, &[])
    }

    /// Like [`DnsmasqUpstream::start`], on `port`, with more dnsmasq
    /// options (e.g. `--local-ttl=30`, `--address=/example.test/10.1.1.1`).
    #[track_caller]
    pub fn start_with(
        at: &impl AsNetns,
        listen: &str,
        port: u16,
        records: &[(&str, &str)],
        extra: &[&str],
    ) -> DnsmasqUpstream {
        let bin = require_tool("dnsmasq");
        require_tool("dig");
        let addr: IpAddr = listen
            .parse()
            .unwrap_or_else(|e| panic!("DnsmasqUpstream: listen address {listen:?}: {e}"));
        // Named like the lab's scratch dirs so that a killed test's leftovers
        // are removed by the next Lab::new (stale-dir sweep by pid).
        let n = DNSMASQ_SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "weave-rs-tests-{}{}dnsmasq{n}",
            crate::lab::NAME_PREFIX,
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let mut argv = vec![
            bin.to_string_lossy().into_owned(),
            "--keep-in-foreground".into(),
            "--conf-file=/dev/null".into(),
            "--no-resolv".into(),
            "--no-hosts".into(),
            "--no-poll".into(),
            "--bind-interfaces".into(),
            format!("--listen-address={addr}"),
            format!("--port={port}"),
            "--user=root".into(),
            format!("--pid-file={}", dir.join("dnsmasq.pid").display()),
            format!("--log-facility={}", dir.join("dnsmasq.log").display()),
            "--log-queries".into(),
            // Every name not given: NXDOMAIN (no upstream to ask).
            "--address=/#/".into(),
        ];
        for (name, ip) in records {
            let ip: IpAddr = ip
                .parse()
                .unwrap_or_else(|e| panic!("DnsmasqUpstream: record {name} {ip:?}: {e}"));
            argv.push(format!("--host-record={name},{ip}"));
        }
        argv.extend(extra.iter().map(|s| s.to_string()));
        let ns = at.netns();
        let stderr = std::fs::File::create(dir.join("stderr"))
            .unwrap_or_else(|e| panic!("create {}: {e}", dir.join("stderr").display()));
        let mut cmd = ns.command(&argv);
        {
            use std::os::unix::process::CommandExt;
            // Its own group: drop kills TCP children too.
            cmd.process_group(0);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start dnsmasq in {}: {e}", ns.name()));
        let mut up = DnsmasqUpstream {
            child,
            addr,
            port,
            dir,
            ns_name: ns.name().to_string(),
        };
        // Ready = answers a query (any status) over UDP.
        let probe = records.first().map(|r| r.0).unwrap_or("ready.invalid");
        let server = up.server();
        let mut last = None;
        let ready = try_wait_until(Duration::from_secs(10), || {
            if let Ok(Some(_)) = up.child.try_wait() {
                return true; // exited: reported below
            }
            match try_dig(at, &server, &["+notcp", probe]) {
                Ok(_) => true,
                Err(e) => {
                    last = Some(e);
                    false
                }
            }
        });
        if let Ok(Some(st)) = up.child.try_wait() {
            panic!(
                "dnsmasq in {} exited at start ({st}):\n{}",
                up.ns_name,
                up.output()
            );
        }
        if !ready {
            panic!(
                "dnsmasq in {} does not answer on {server} after 10 s; last dig: {}\n{}",
                up.ns_name,
                last.map(|e| e.to_string()).unwrap_or_default(),
                up.output()
            );
        }
        up
    }

    /// The server as [`dig`] takes it: `ADDR` on port 53, else `ADDR#PORT`.
    pub fn server(&self) -> String {
        if self.port == 53 {
            self.addr.to_string()
        } else {
            format!("{}#{}", self.addr, self.port)
        }
    }

    /// The queries dnsmasq received so far, as (type, name) from its log
    /// (`query[A] api.weave.local from 10.32.0.1` -> ("A", "api.weave.local")).
    pub fn queries(&self) -> Vec<(String, String)> {
        self.log()
            .lines()
            .filter_map(|l| {
                let q = l.split_once("query[")?.1;
                let (t, rest) = q.split_once(']')?;
                let name = rest.split_whitespace().next()?;
                Some((t.to_string(), name.to_string()))
            })
            .collect()
    }

    /// dnsmasq's log (with every query).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dnsmasq.log")).unwrap_or_default()
    }

    /// Its log and stderr, for messages.
    pub fn output(&self) -> String {
        format!(
            "  --- dnsmasq log ---\n{}\n  --- dnsmasq stderr ---\n{}",
            self.log(),
            std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
        )
    }
}

impl Drop for DnsmasqUpstream {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "dnsmasq in {} on {} (test failed):\n{}",
                self.ns_name,
                self.server(),
                self.output()
            );
        }
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rr(name: &str, t: &str, data: &str, ttl: u32) -> Rr {
        (name.into(), t.into(), data.into(), ttl)
    }

    // Captured from Debian 12's dig 9.18.49 against dnsmasq 2.90 in a
    // namespace, with the options dig_argv gives (`;; WHEN:` lines kept).
    const ANSWER: &str = "\
;; Got answer:
;; WARNING: .local is reserved for Multicast DNS
;; You are currently testing what happens when an mDNS query is leaked to DNS
;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 14268
;; flags: qr aa rd ra; QUERY: 1, ANSWER: 1, AUTHORITY: 0, ADDITIONAL: 1

;; OPT PSEUDOSECTION:
; EDNS: version: 0, flags:; udp: 1232
;; ANSWER SECTION:
api.weave.local.\t0\tIN\tA\t10.32.0.5

;; Query time: 0 msec
;; SERVER: 127.0.0.1#53(127.0.0.1) (UDP)
;; WHEN: Tue Dec 01 07:20:25 UTC 2026
;; MSG SIZE  rcvd: 60

";

    const TWO: &str = "\
;; Got answer:
;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 7257
;; flags: qr aa rd ra; QUERY: 1, ANSWER: 2, AUTHORITY: 0, ADDITIONAL: 1

;; OPT PSEUDOSECTION:
; EDNS: version: 0, flags:; udp: 1232
;; ANSWER SECTION:
multi.test.\t\t0\tIN\tA\t10.0.0.2
multi.test.\t\t0\tIN\tA\t10.0.0.1

;; Query time: 0 msec
;; SERVER: 127.0.0.1#53(127.0.0.1) (UDP)
;; WHEN: Tue Dec 01 07:20:25 UTC 2026
;; MSG SIZE  rcvd: 71

";

    const NXDOMAIN_SOA: &str = "\
;; Got answer:
;; ->>HEADER<<- opcode: QUERY, status: NXDOMAIN, id: 44025
;; flags: qr aa rd; QUERY: 1, ANSWER: 0, AUTHORITY: 1, ADDITIONAL: 1
;; WARNING: recursion requested but not available

;; OPT PSEUDOSECTION:
; EDNS: version: 0, flags:; udp: 1232
;; AUTHORITY SECTION:
zone.test.\t\t600\tIN\tSOA\tns.zone.test. hostmaster.ns.zone.test. 1796109584 1200 180 1209600 600

;; Query time: 0 msec
;; SERVER: 127.0.0.1#53(127.0.0.1) (UDP)
;; WHEN: Tue Dec 01 07:19:45 UTC 2026
;; MSG SIZE  rcvd: 123

";

    const ANSWER_AND_NS: &str = "\
;; Got answer:
;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 21145
;; flags: qr aa rd; QUERY: 1, ANSWER: 1, AUTHORITY: 1, ADDITIONAL: 1
;; WARNING: recursion requested but not available

;; OPT PSEUDOSECTION:
; EDNS: version: 0, flags:; udp: 1232
;; ANSWER SECTION:
www.zone.test.\t\t600\tIN\tA\t10.9.0.1

;; AUTHORITY SECTION:
zone.test.\t\t600\tIN\tNS\tns.zone.test.

;; Query time: 0 msec
;; SERVER: 127.0.0.1#53(127.0.0.1) (UDP)
;; WHEN: Tue Dec 01 07:19:45 UTC 2026
;; MSG SIZE  rcvd: 93

";

    const REFUSED_EDE: &str = "\
;; Got answer:
;; WARNING: .local is reserved for Multicast DNS
;; You are currently testing what happens when an mDNS query is leaked to DNS
;; ->>HEADER<<- opcode: QUERY, status: REFUSED, id: 48572
;; flags: qr rd ra; QUERY: 1, ANSWER: 0, AUTHORITY: 0, ADDITIONAL: 1

;; OPT PSEUDOSECTION:
; EDNS: version: 0, flags:; udp: 1232
; EDE: 14 (Not Ready)
;; Query time: 0 msec
;; SERVER: 127.0.0.1#53(127.0.0.1) (UDP)
;; WHEN: Tue Dec 01 07:19:51 UTC 2026
;; MSG SIZE  rcvd: 50

";

    // 60 A records, +bufsize=512: TC over UDP, dig retried over TCP.
    const TRUNCATED_RETRY: &str = "\
;; Truncated, retrying in TCP mode.
;; Got answer:
;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 10710
;; flags: qr aa rd ra; QUERY: 1, ANSWER: 60, AUTHORITY: 0, ADDITIONAL: 1

;; OPT PSEUDOSECTION:
; EDNS: version: 0, flags:; udp: 1232
;; ANSWER SECTION:
big.test.\t\t0\tIN\tA\t10.1.0.1
big.test.\t\t0\tIN\tA\t10.1.0.2

;; Query time: 0 msec
;; SERVER: 127.0.0.1#53(127.0.0.1) (TCP)
;; WHEN: Tue Dec 01 07:19:51 UTC 2026
;; MSG SIZE  rcvd: 997

";

    // Same with +ignore: the truncated UDP reply itself, without EDNS.
    const TRUNCATED_IGNORED: &str = "\
;; Got answer:
;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 60237
;; flags: qr aa tc rd ra; QUERY: 1, ANSWER: 30, AUTHORITY: 0, ADDITIONAL: 0

;; ANSWER SECTION:
big.test.\t\t0\tIN\tA\t10.1.0.1

;; Query time: 0 msec
;; SERVER: 127.0.0.1#53(127.0.0.1) (UDP)
;; WHEN: Tue Dec 01 07:19:51 UTC 2026
;; MSG SIZE  rcvd: 506

";

    const PTR_NO_STATS: &str = "\
;; Got answer:
;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 14779
;; flags: qr aa rd ra; QUERY: 1, ANSWER: 1, AUTHORITY: 0, ADDITIONAL: 1

;; OPT PSEUDOSECTION:
; EDNS: version: 0, flags:; udp: 1232
;; ANSWER SECTION:
5.0.32.10.in-addr.arpa.\t0\tIN\tPTR\tapi.weave.local.

";

    #[test]
    fn one_answer() {
        let r = DigResult::parse(ANSWER).unwrap();
        assert_eq!(r.status, "NOERROR");
        assert_eq!(r.flags, ["qr", "aa", "rd", "ra"]);
        assert!(r.has_flag("aa") && !r.has_flag("tc"));
        assert_eq!(r.answers, [rr("api.weave.local.", "A", "10.32.0.5", 0)]);
        assert!(r.authority.is_empty());
        assert_eq!(r.via_tcp, Some(false));
        assert!(!r.retried_tcp);
        assert!(r.ede.is_empty());
        assert_eq!(r.addrs(), ["10.32.0.5".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn two_answers_in_order_addrs_sorted() {
        let r = DigResult::parse(TWO).unwrap();
        assert_eq!(r.answer_data("a"), ["10.0.0.2", "10.0.0.1"]);
        let want: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        assert_eq!(r.addrs(), want);
    }

    #[test]
    fn nxdomain_with_soa() {
        let r = DigResult::parse(NXDOMAIN_SOA).unwrap();
        assert_eq!(r.status, "NXDOMAIN");
        assert!(r.answers.is_empty());
        assert_eq!(
            r.authority,
            [rr(
                "zone.test.",
                "SOA",
                "ns.zone.test. hostmaster.ns.zone.test. 1796109584 1200 180 1209600 600",
                600
            )]
        );
        assert!(!r.has_flag("ra"));
    }

    #[test]
    fn answer_and_authority() {
        let r = DigResult::parse(ANSWER_AND_NS).unwrap();
        assert_eq!(r.answers, [rr("www.zone.test.", "A", "10.9.0.1", 600)]);
        assert_eq!(r.authority, [rr("zone.test.", "NS", "ns.zone.test.", 600)]);
    }

    #[test]
    fn refused_with_ede() {
        let r = DigResult::parse(REFUSED_EDE).unwrap();
        assert_eq!(r.status, "REFUSED");
        assert_eq!(r.ede, ["14 (Not Ready)"]);
        assert!(r.answers.is_empty() && r.authority.is_empty());
    }

    #[test]
    fn truncated_then_tcp() {
        let r = DigResult::parse(TRUNCATED_RETRY).unwrap();
        assert!(r.retried_tcp);
        assert_eq!(r.via_tcp, Some(true));
        assert!(!r.has_flag("tc"));
        assert_eq!(r.answers.len(), 2);

        let r = DigResult::parse(TRUNCATED_IGNORED).unwrap();
        assert!(!r.retried_tcp);
        assert_eq!(r.via_tcp, Some(false));
        assert!(r.has_flag("tc"));
    }

    #[test]
    fn without_stats_transport_unknown() {
        let r = DigResult::parse(PTR_NO_STATS).unwrap();
        assert_eq!(r.via_tcp, None);
        assert_eq!(r.answer_data("PTR"), ["api.weave.local."]);
    }

    #[test]
    fn record_without_class() {
        assert_eq!(
            parse_rr("a.test. 30 A 10.0.0.1").unwrap(),
            rr("a.test.", "A", "10.0.0.1", 30)
        );
        assert_eq!(
            parse_rr("t.test.\t5\tIN\tTXT\t\"two  spaces\" \"x\"").unwrap(),
            rr("t.test.", "TXT", "\"two  spaces\" \"x\"", 5)
        );
    }

    #[test]
    fn errors_name_the_problem() {
        // No reply printed (e.g. +short, or dig's "no servers" message).
        let e =
            DigResult::parse(";; communications error to 127.0.0.1#53: timed out\n").unwrap_err();
        assert!(e.contains("HEADER"), "{e}");
        let e = DigResult::parse("10.32.0.5\n").unwrap_err();
        assert!(e.contains("10.32.0.5"), "{e}");
        let two = format!("{ANSWER}{TWO}");
        assert!(DigResult::parse(&two)
            .unwrap_err()
            .contains("more than one"));
    }

    // Real dnsmasq and dig in a namespace of a lab (root, like every
    // netns test; light: no router).
    #[test]
    fn dnsmasq_upstream_answers_and_dies_on_drop() {
        let lab = crate::Lab::new();
        let h = lab.host("d1");
        h.ns().ip(&["addr", "add", "10.53.0.1/32", "dev", "lo"]);
        let up = DnsmasqUpstream::start(
            &h,
            "10.53.0.1",
            &[
                ("api.weave.local", "10.32.0.5"),
                ("multi.test", "10.0.0.1"),
                ("multi.test", "10.0.0.2"),
            ],
        );
        let r = dig(&h, &up.server(), &["api.weave.local", "A"]);
        assert_eq!(r.status, "NOERROR", "{}", r.raw);
        assert_eq!(r.answers, [rr("api.weave.local.", "A", "10.32.0.5", 0)]);
        assert!(r.has_flag("aa"));
        assert_eq!(r.via_tcp, Some(false));
        let r = dig(&h, &up.server(), &["+tcp", "multi.test"]);
        assert_eq!(r.answer_data("A").len(), 2, "{}", r.raw);
        assert_eq!(r.via_tcp, Some(true));
        let r = dig(&h, &up.server(), &["api.weave.local", "AAAA"]);
        assert_eq!((r.status.as_str(), r.answers.len()), ("NOERROR", 0));
        let r = dig(&h, &up.server(), &["nothere.test", "A"]);
        assert_eq!(r.status, "NXDOMAIN", "{}", r.raw);
        let q = up.queries();
        assert!(
            q.contains(&("AAAA".into(), "api.weave.local".into())),
            "{q:?}"
        );

        // Nothing listens on another port: no reply, a clear error.
        let e = try_dig(&h, "10.53.0.1#5399", &["api.weave.local"]).unwrap_err();
        assert!(e.no_reply(), "{e}");

        let pid = up.child.id();
        drop(up);
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "dnsmasq {pid} still runs after drop"
        );
        assert!(h.ns().pids().is_empty(), "{:?}", h.ns().pids());
    }

    #[test]
    #[should_panic(expected = "exited at start")]
    fn dnsmasq_upstream_on_a_missing_address_fails_loudly() {
        let lab = crate::Lab::new();
        let h = lab.host("d1");
        let _up = DnsmasqUpstream::start(&h, "10.53.0.9", &[("a.test", "10.0.0.1")]);
    }

    #[test]
    fn argv_server_forms() {
        let a = dig_argv("169.254.53.53", &["api.weave.local", "A"]);
        assert_eq!(a[..2], ["dig", "@169.254.53.53"]);
        assert_eq!(a[a.len() - 2..], ["api.weave.local", "A"]);
        let a = dig_argv("127.0.0.1:5353", &["x"]);
        assert_eq!(a[..4], ["dig", "@127.0.0.1", "-p", "5353"]);
        let a = dig_argv("127.0.0.1#5353", &["x"]);
        assert_eq!(a[..4], ["dig", "@127.0.0.1", "-p", "5353"]);
        let a = dig_argv("[::1]:53", &["x"]);
        assert_eq!(a[..4], ["dig", "@::1", "-p", "53"]);
    }
}
