//! Read-only HTTP status and Prometheus metrics, as Weave Net served on
//! 127.0.0.1:6784.
//!
//! - `GET /status`: the text of `weave-rs status`
//! - `GET /report`: the JSON of `weave-rs report`
//! - `GET /metrics`: OpenMetrics text for Prometheus
//!
//! Any other path is 404; these paths answer other methods with 405.
//! Nothing here changes the router. Loopback belongs to the network
//! namespace, so routers in separate namespaces never clash on the port.
//! The handlers only need something that yields a [`Report`]
//! ([`ReportSource`]), so they can be served without a router.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use super::protocol::Report;
use crate::daemon::Shared;

/// Where the router serves HTTP unless told otherwise (`--http-addr`).
pub const DEFAULT_ADDR: &str = "127.0.0.1:6784";

/// Content type of the OpenMetrics text exposition.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every prefix the metrics carry.
const PREFIX: &str = "weave_rs";

/// Connection states always exported (as 0 when none), so that series do
/// not vanish; see `ConnectionReport::state`.
const CONNECTION_STATES: [&str; 5] = ["established", "pending", "connecting", "retrying", "failed"];

/// Whatever yields the router's report: the running router, or a test.
pub trait ReportSource: Send + Sync + 'static {
    fn report(&self) -> impl Future<Output = Report> + Send;
}

impl<F, Fut> ReportSource for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Report> + Send,
{
    fn report(&self) -> impl Future<Output = Report> + Send {
        self()
    }
}

/// The HTTP service over any source of reports.
pub fn router<S: ReportSource>(source: S) -> axum::Router {
    axum::Router::new()
        .route("/status", get(status::<S>))
        .route("/report", get(report::<S>))
        .route("/metrics", get(metrics::<S>))
        .route("/ip/{*id}", get(ip_lookup::<S>))
        .fallback(not_found)
        .with_state(Arc::new(source))
}

async fn status<S: ReportSource>(State(source): State<Arc<S>>) -> Response {
    let r = source.report().await;
    text("text/plain; charset=utf-8", crate::cli::status::summary(&r))
}

async fn report<S: ReportSource>(State(source): State<Arc<S>>) -> Response {
    let r = source.report().await;
    // Exactly what `weave-rs report` prints.
    match serde_json::to_string_pretty(&r) {
        Ok(mut s) => {
            s.push('\n');
            text("application/json", s)
        }
        Err(e) => internal_error(e),
    }
}

async fn metrics<S: ReportSource>(State(source): State<Arc<S>>) -> Response {
    let r = source.report().await;
    match render_metrics(&r) {
        Ok(s) => text(METRICS_CONTENT_TYPE, s),
        Err(e) => internal_error(e),
    }
}

/// GET /ip/ID: the addresses allocated to ID, one CIDR a line (404 if
/// none). Only looking up is served here: this port is open to every local
/// user, so allocating and releasing stay on the root-only control socket.
async fn ip_lookup<S: ReportSource>(
    State(source): State<Arc<S>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let r = source.report().await;
    let lines: String = r
        .ipam
        .iter()
        .flat_map(|i| i.allocations.iter())
        .filter(|a| a.id == id)
        .map(|a| format!("{}\n", a.cidr))
        .collect();
    if lines.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!(
                "no address allocated to {}\n",
                crate::core::text::sanitize(&id, 256)
            ),
        )
            .into_response();
    }
    text("text/plain; charset=utf-8", lines)
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "not found (try /status, /report, /metrics or /ip/ID)\n",
    )
        .into_response()
}

fn text(content_type: &'static str, body: String) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn internal_error(e: impl std::fmt::Display) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
}

/// The report as OpenMetrics text: connections by state, peers, MAC table
/// size, IPAM gauges, and every router counter as `weave_rs_<name>_total`.
pub fn render_metrics(r: &Report) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::with_prefix(PREFIX);

    let mut by_state: BTreeMap<&str, i64> = CONNECTION_STATES.iter().map(|s| (*s, 0)).collect();
    for c in &r.connections {
        *by_state.entry(c.state.as_str()).or_default() += 1;
    }
    let conns = ByState(
        by_state
            .into_iter()
            .map(|(s, n)| (s.to_string(), n))
            .collect(),
    );
    reg.register(
        "connections",
        "Connections and connection attempts of this router, by state",
        conns,
    );
    reg.register(
        "peers",
        "Peers in the topology, this router included",
        ConstGauge::new(gauge_value(r.peers.len())),
    );
    reg.register(
        "fast_path_connections",
        "Connections whose data the kernel's VXLAN fast path carries",
        ConstGauge::new(gauge_value(
            r.connections.iter().filter(|c| c.fast_path).count(),
        )),
    );
    reg.register(
        "mac_table_entries",
        "MAC addresses the router has learned",
        ConstGauge::new(gauge_value(r.mac_table_entries)),
    );
    if let Some(i) = &r.ipam {
        let me = i.owners.iter().find(|o| o.peer == r.router.name);
        let gauges = [
            (
                "ipam_owned_addresses",
                "Addresses of the allocation range this router owns",
                me.map_or(0, |o| o.addresses),
            ),
            (
                "ipam_free_addresses",
                "Free addresses among those this router owns",
                me.map_or(0, |o| o.free),
            ),
            (
                "ipam_allocations",
                "Addresses allocated by this router",
                i.allocations.len() as u64,
            ),
            (
                "ipam_waiting_requests",
                "Allocation requests waiting (consensus, a donation, a claim)",
                i.pending.len() as u64,
            ),
            (
                "ipam_unreachable_owner_addresses",
                "Addresses owned by peers this router cannot reach",
                i.owners
                    .iter()
                    .filter(|o| !o.reachable)
                    .map(|o| o.addresses)
                    .fold(0, u64::saturating_add),
            ),
        ];
        for (name, help, v) in gauges {
            reg.register(
                name,
                help,
                ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)),
            );
        }
    }

    if let Some(d) = &r.dns {
        reg.register(
            "dns_names",
            "DNS records (name and address) this router answers",
            ConstGauge::new(gauge_value(d.records.iter().filter(|x| x.answered).count())),
        );
        // The query counters, like the router's, as `dns_queries_<name>`.
        if let Ok(serde_json::Value::Object(q)) = serde_json::to_value(&d.queries) {
            for (name, v) in q {
                let Some(v) = v.as_u64() else { continue };
                let help = format!("DNS queries: {}", name.replace('_', " "));
                reg.register(format!("dns_queries_{name}"), help, ConstCounter::new(v));
            }
        }
    }

    // The counters travel as a JSON object (`StatsReport`), so every field of
    // `core::router::Stats` is exported without being listed here.
    if let Some(stats) = r.stats.0.as_object() {
        for (name, v) in stats {
            let Some(v) = v.as_u64() else { continue };
            // The encoder appends `_total` to counters.
            let help = format!("Router counter: {}", name.replace('_', " "));
            reg.register(name.as_str(), help, ConstCounter::new(v));
        }
    }

    let mut out = String::new();
    encode(&mut out, &reg)?;
    Ok(out)
}

/// Gauges by connection state, in a stable order (a `Family` would list
/// them in hash order, differently on every scrape).
#[derive(Debug)]
struct ByState(Vec<(String, i64)>);

impl EncodeMetric for ByState {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (state, n) in &self.0 {
            let labels = [("state", state.as_str())];
            encoder.encode_family(&labels)?.encode_gauge(n)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Bind the HTTP listener, if one is configured. Failing to bind (port
/// taken, or no loopback address in a fresh network namespace) is only
/// worth a warning: the router works without it.
pub async fn bind(addr: Option<SocketAddr>) -> Option<TcpListener> {
    let addr = addr?;
    match TcpListener::bind(addr).await {
        Ok(l) => {
            info!(
                "HTTP status and metrics on http://{}",
                l.local_addr().unwrap_or(addr)
            );
            Some(l)
        }
        Err(e) => {
            warn!("HTTP status and metrics not served: bind {addr}: {e}");
            None
        }
    }
}

/// What the HTTP server allows each client.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; more are closed at once.
    pub max_conns: usize,
    /// A request's headers must arrive within this (also the longest a
    /// kept-alive connection may sit idle).
    pub header_timeout: Duration,
    /// Longest a connection lives, whatever it does.
    pub conn_lifetime: Duration,
}

pub const LIMITS: Limits = Limits {
    max_conns: 64,
    header_timeout: Duration::from_secs(5),
    conn_lifetime: Duration::from_secs(60),
};

/// Serve the running router's status. Never returns: a failure of the HTTP
/// server is logged and must not stop the router.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener) -> anyhow::Result<()> {
    let app = router(move || {
        let shared = shared.clone();
        async move { super::server::full_report(&shared).await }
    });
    serve_app(listener, app, LIMITS).await
}

/// A listener `serve_app` can take connections from (TCP here, the unix
/// socket of the Docker plugin).
pub trait Accept {
    type Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = std::io::Result<Self::Stream>> + Send;
}

impl Accept for TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept(&self) -> std::io::Result<Self::Stream> {
        TcpListener::accept(self).await.map(|(s, _)| s)
    }
}

impl Accept for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn accept(&self) -> std::io::Result<Self::Stream> {
        tokio::net::UnixListener::accept(self).await.map(|(s, _)| s)
    }
}

/// Serve `app` on `listener` within `limits`, for ever.
pub async fn serve_app<L: Accept + Sync>(listener: L, app: axum::Router, limits: Limits) -> ! {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_conns));
    let mut backoff = super::accept::AcceptBackoff::new("HTTP server");
    loop {
        let Some(stream) = backoff.accepted(Accept::accept(&listener).await).await else {
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            debug!(
                "HTTP: {} connections open, closing a new one",
                limits.max_conns
            );
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            match tokio::time::timeout(limits.conn_lifetime, conn).await {
                Ok(Err(e)) => debug!("HTTP connection: {e}"),
                Err(_) => debug!("HTTP connection closed after {:?}", limits.conn_lifetime),
                Ok(Ok(())) => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::protocol::*;
    use crate::core::router::Stats;
    use crate::core::PeerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn sample() -> Report {
        let a = PeerName([0x02, 0, 0, 0, 0, 1]);
        let b = PeerName([0x02, 0, 0, 0, 0, 2]);
        let conn = |addr: &str, state: &str| ConnectionReport {
            addr: addr.into(),
            peer: None,
            nickname: None,
            outbound: true,
            state: state.into(),
            last_error: None,
            encrypted: false,
            encryption: "none".into(),
            remote_key: None,
            ipam_refused: None,
            data_path: Some("fast path (mtu 1376) since 1s".into()),
            fast_path: state == "established",
        };
        let peer = |name, nickname: &str| PeerReport {
            name,
            nickname: nickname.into(),
            uid: 1,
            version: 1,
            connections: Vec::new(),
            data_path: None,
        };
        let stats = Stats {
            frames_from_tap: 7,
            dropped_no_route: 3,
            ..Stats::default()
        };
        Report {
            version: "0.1.0".into(),
            protocol: "1..1".into(),
            router: RouterInfo {
                name: a,
                nickname: "alpha".into(),
                uid: 42,
                pid: 1234,
                port: 6783,
                mtu: 1376,
                bridge: "weave".into(),
                discovery: true,
                conn_limit: 200,
                encryption: false,
                mesh_name: "weave-rs".into(),
                uptime_secs: 5,
                fast_path: "weave-vxlan, vni 1, udp 6784".into(),
            },
            connections: vec![
                conn("10.0.0.2:6783", "established"),
                conn("10.0.0.3:6783", "established"),
                conn("10.0.0.4:6783", "retrying"),
            ],
            peers: vec![peer(a, "alpha"), peer(b, "beta")],
            targets: vec!["10.0.0.4:6783".into()],
            refused: Vec::new(),
            attached: Vec::new(),
            exposed: Vec::new(),
            mac_table_entries: 9,
            stats: (&stats).into(),
            dns: Some(crate::api::protocol::DnsReport {
                address: "169.254.53.53".into(),
                domain: "weave.local.".into(),
                ttl: 1,
                upstream: vec!["10.0.0.53:53".into()],
                error: None,
                records: vec![crate::api::protocol::DnsRecordReport {
                    name: "db.weave.local.".into(),
                    answered: true,
                    ..Default::default()
                }],
                queries: crate::api::protocol::QueryCounts {
                    udp: 7,
                    forwarded: 2,
                    ..Default::default()
                },
            }),
            ipam: Some(IpamReport {
                owners: vec![
                    IpamOwnerReport {
                        peer: a,
                        nickname: "alpha".into(),
                        reachable: true,
                        ranges: 2,
                        addresses: 100,
                        free: 98,
                    },
                    IpamOwnerReport {
                        peer: b,
                        nickname: "beta".into(),
                        reachable: false,
                        ranges: 1,
                        addresses: 28,
                        free: 28,
                    },
                ],
                pending: vec!["allocate for x".into()],
                allocations: vec![
                    IpamAllocationReport {
                        id: "/var/run/netns/c1".into(),
                        cidr: "10.32.0.1/12".into(),
                    },
                    IpamAllocationReport {
                        id: "abc".into(),
                        cidr: "10.32.0.2/12".into(),
                    },
                ],
                ..IpamReport::default()
            }),
        }
    }

    #[test]
    fn metrics_rendering() {
        let m = render_metrics(&sample()).unwrap();
        for line in [
            "# TYPE weave_rs_connections gauge",
            "weave_rs_connections{state=\"established\"} 2",
            "weave_rs_connections{state=\"retrying\"} 1",
            "weave_rs_connections{state=\"failed\"} 0",
            "weave_rs_connections{state=\"pending\"} 0",
            "weave_rs_peers 2",
            "weave_rs_mac_table_entries 9",
            "weave_rs_ipam_owned_addresses 100",
            "weave_rs_dns_names 1",
            "weave_rs_dns_queries_udp_total 7",
            "weave_rs_dns_queries_forwarded_total 2",
            "weave_rs_ipam_free_addresses 98",
            "weave_rs_ipam_allocations 2",
            "weave_rs_ipam_waiting_requests 1",
            "weave_rs_ipam_unreachable_owner_addresses 28",
            "# TYPE weave_rs_frames_from_tap counter",
            "weave_rs_frames_from_tap_total 7",
            "weave_rs_dropped_no_route_total 3",
            "weave_rs_mac_moves_total 0",
        ] {
            assert!(m.lines().any(|l| l == line), "{line:?} missing in:\n{m}");
        }
        // Every counter of the router is there, whatever its name.
        let all = serde_json::to_value(Stats::default()).unwrap();
        let names = all.as_object().unwrap();
        assert!(names.len() >= 13);
        for name in names.keys() {
            let sample = format!("weave_rs_{name}_total ");
            assert!(m.contains(&sample), "{sample:?} missing in:\n{m}");
        }
        assert!(m.ends_with("# EOF\n"));
        // Stable from one scrape to the next.
        assert_eq!(m, render_metrics(&sample()).unwrap());
    }

    /// One HTTP/1.1 request; the status code, headers and body of the reply.
    async fn get(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.unwrap();
        let (head, body) = buf.split_once("\r\n\r\n").unwrap();
        let code = head.split(' ').nth(1).unwrap().parse().unwrap();
        (code, head.to_ascii_lowercase(), body.to_string())
    }

    #[tokio::test]
    async fn serves_status_report_and_metrics() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(|| async { sample() });
        let server = tokio::spawn(serve_app(listener, app, LIMITS));

        let (code, head, body) = get(addr, "GET", "/status").await;
        assert_eq!(code, 200);
        assert!(head.contains("content-type: text/plain"));
        assert_eq!(body, crate::cli::status::summary(&sample()));
        assert!(body.contains("Connections: 3 (2 established, 1 other)"));

        let (code, head, body) = get(addr, "GET", "/report").await;
        assert_eq!(code, 200);
        assert!(head.contains("content-type: application/json"));
        let got: Report = serde_json::from_str(&body).unwrap();
        assert_eq!(
            serde_json::to_value(&got).unwrap(),
            serde_json::to_value(sample()).unwrap()
        );

        let (code, head, body) = get(addr, "GET", "/metrics").await;
        assert_eq!(code, 200);
        assert!(head.contains("content-type: application/openmetrics-text"));
        assert_eq!(body, render_metrics(&sample()).unwrap());

        let (code, _, body) = get(addr, "GET", "/ip//var/run/netns/c1").await;
        assert_eq!((code, body.as_str()), (200, "10.32.0.1/12\n"));
        let (code, _, body) = get(addr, "GET", "/ip/abc").await;
        assert_eq!((code, body.as_str()), (200, "10.32.0.2/12\n"));
        let (code, _, _) = get(addr, "GET", "/ip/nobody").await;
        assert_eq!(code, 404);
        let (code, _, _) = get(addr, "POST", "/ip/abc").await;
        assert_eq!(code, 405, "allocating is for the control socket only");

        let (code, _, _) = get(addr, "GET", "/").await;
        assert_eq!(code, 404);
        let (code, _, _) = get(addr, "GET", "/status/nope").await;
        assert_eq!(code, 404);
        let (code, _, _) = get(addr, "POST", "/status").await;
        assert_eq!(code, 405);

        server.abort();
    }

    /// Reads until the server closes; None if it has not within `within`.
    async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> Option<Vec<u8>> {
        let mut buf = Vec::new();
        tokio::time::timeout(within, s.read_to_end(&mut buf))
            .await
            .ok()
            .map(|_| buf)
    }

    async fn start(limits: Limits) -> (SocketAddr, tokio::task::AbortHandle) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(|| async { sample() });
        (
            addr,
            tokio::spawn(serve_app(listener, app, limits)).abort_handle(),
        )
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_are_closed_and_slots_come_back() {
        let limits = Limits {
            max_conns: 3,
            header_timeout: Duration::from_secs(30),
            conn_lifetime: Duration::from_secs(30),
        };
        let (addr, server) = start(limits).await;
        let mut idle = Vec::new();
        for _ in 0..3 {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /st").await.unwrap(); // half a request
            idle.push(s);
        }
        // Accepted in order: the cap is reached once the 4th is refused.
        let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
        let got = closed_within(&mut extra, Duration::from_secs(5)).await;
        assert_eq!(got.as_deref(), Some(&b""[..]), "4th connection not closed");
        drop(idle);
        // The slots come back once the idle clients are gone.
        let mut ok = None;
        for _ in 0..100 {
            let (code, _, _) = get(addr, "GET", "/status").await;
            if code == 200 {
                ok = Some(code);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(ok, Some(200));
        server.abort();
    }

    #[tokio::test]
    async fn slow_and_idle_clients_are_cut_off() {
        let limits = Limits {
            max_conns: 8,
            header_timeout: Duration::from_millis(300),
            conn_lifetime: Duration::from_secs(2),
        };
        let (addr, server) = start(limits).await;
        // Headers trickled: cut at the header timeout.
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let t = std::time::Instant::now();
        assert!(closed_within(&mut slow, Duration::from_secs(5))
            .await
            .is_some());
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

        // A kept-alive connection that answered once and then idles.
        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let got = closed_within(&mut idle, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(
            got.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&got)
        );

        // A client that keeps sending requests is cut at the lifetime.
        let mut busy = tokio::net::TcpStream::connect(addr).await.unwrap();
        let t = std::time::Instant::now();
        let mut reply = vec![0u8; 1 << 16];
        let closed = loop {
            if busy
                .write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .is_err()
            {
                break true;
            }
            match tokio::time::timeout(Duration::from_secs(5), busy.read(&mut reply)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(_)) => {}
                Err(_) => break false,
            }
            assert!(t.elapsed() < Duration::from_secs(10), "never cut off");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(closed);
        assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
        server.abort();
    }

    #[tokio::test]
    async fn bind_failure_is_not_fatal() {
        assert!(bind(None).await.is_none());
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        assert!(bind(Some(taken.local_addr().unwrap())).await.is_none());
    }
}
