//! The UDP pump: datagrams from neighbours, decided by the core (relayed,
//! or handed to our TAP), received in batches (recvmmsg and GRO); runs of
//! UDP datagrams of one flow reach the TAP in one write
//! (`core::wire::udp_run`).

use super::*;

/// What the data-plane lock decided for one received datagram.
struct Received {
    heartbeat: Option<(PeerName, u64)>,
    inject: bool,
    /// Where the sleeve datagram lies in the received bytes.
    range: std::ops::Range<usize>,
}

/// Decide one datagram (under the data-plane lock); queue its relays.
fn receive_one(
    data: &mut DataPlane,
    d: &mut [u8],
    from: SocketAddr,
    now: Instant,
    out: &mut Vec<Vec<u8>>,
    sends: &mut Sends,
    relay_to: &mut Vec<PeerName>,
) -> Option<Received> {
    let (range, neighbour) = data.unwrap(d, from, now)?;
    let datagram = d.get_mut(range.clone())?;
    relay_to.clear();
    let (heartbeat, inject) = match data.router.datagram(datagram, now) {
        DatagramDecision::Drop(reason) => {
            debug!("datagram from {from} dropped: {reason:?}");
            return None;
        }
        DatagramDecision::Heartbeat { src, uid } => {
            if neighbour.is_some_and(|p| p != src) {
                // Sealed by one neighbour in another's name.
                data.router.stats.dropped_unknown_sender += 1;
                return None;
            }
            (Some((src, uid)), false)
        }
        DatagramDecision::Frames { inject, relay, .. } => {
            match relay {
                Relay::None => {}
                Relay::To(p) => relay_to.push(p),
                Relay::Many(ps) => relay_to.extend_from_slice(ps),
            }
            (None, inject)
        }
    };
    if !relay_to.is_empty() {
        let datagram = &d[range.clone()];
        data.fan_out(
            relay_to.iter().copied(),
            datagram,
            datagram.len(),
            now,
            Some(from),
            out,
            sends,
        );
    }
    Some(Received {
        heartbeat,
        inject,
        range,
    })
}

/// Datagrams from peers: heartbeats to the control plane, frames to our
/// TAP and on to further peers. One receive call takes several datagrams,
/// and the kernel may hand over a run of same-sized ones as one (GRO).
pub async fn udp_loop(shared: Arc<Shared>) -> anyhow::Result<()> {
    // A GRO run is one socket buffer, at most 64 KiB; room for two.
    let mut bufs: [Vec<u8>; RECV_BATCH] = std::array::from_fn(|_| vec![0u8; 2 * MAX_DATAGRAM]);
    let mut meta = [quinn_udp::RecvMeta::default(); RECV_BATCH];
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut sends: Sends = Vec::with_capacity(16);
    let mut relay_to: Vec<PeerName> = Vec::with_capacity(16);
    let mut rx = RxState {
        reassembly: Reassembler::new(),
        to_tap: Vec::with_capacity(MAX_DATAGRAM),
        run: UdpRun::default(),
        icmp_window: (Instant::now(), 0),
        reply: Vec::new(),
        out: Vec::new(),
        sends: Vec::new(),
    };
    let mut decided: Vec<(usize, Received)> = Vec::with_capacity(64);
    let mut steer_ops = Vec::new();
    let panic_on_cue = test_panic_cue();
    loop {
        let n = {
            let mut slices = bufs.each_mut().map(|b| std::io::IoSliceMut::new(b));
            match shared
                .udp
                .async_io(tokio::io::Interest::READABLE, || {
                    shared
                        .udp_state
                        .recv((&shared.udp).into(), &mut slices, &mut meta)
                })
                .await
            {
                Ok(n) => n,
                Err(e) => {
                    // ICMP errors surface here as ECONNREFUSED and similar.
                    debug!("UDP receive: {e}");
                    continue;
                }
            }
        };
        for (buf, m) in bufs.iter_mut().zip(&meta).take(n) {
            let from = SocketAddr::new(m.addr.ip().to_canonical(), m.addr.port());
            let Some(received) = buf.get_mut(..m.len) else {
                continue;
            };
            if panic_on_cue.is_some_and(|cue| received.starts_with(cue)) {
                panic!("test-injected data-plane panic");
            }
            let stride = m.stride.max(1);
            // One lock, one clock read, one batch of sends per GRO run.
            sends.clear();
            decided.clear();
            {
                let mut data = shared.data();
                let now = Instant::now();
                for (i, d) in received.chunks_mut(stride).enumerate() {
                    let r =
                        receive_one(&mut data, d, from, now, &mut out, &mut sends, &mut relay_to);
                    decided.extend(r.map(|r| (i, r)));
                }
                pass_steer_ops(&shared, &mut data, &mut steer_ops);
            }
            send_all(&shared, &sends, &out).await;
            for (i, r) in decided.drain(..) {
                if let Some((src, uid)) = r.heartbeat {
                    // Control work (routes, dialling) is the control plane's.
                    if shared.heartbeats.try_send((src, uid, from)).is_err() {
                        debug!("UDP heartbeat from {src} at {from}: queue full, dropped");
                    }
                    continue;
                }
                if r.inject {
                    let datagram = received
                        .get(i * stride..)
                        .and_then(|d| d.get(r.range))
                        .unwrap_or_default();
                    inject(&shared, datagram, &mut rx).await;
                }
            }
        }
        write_run(&shared, &mut rx.run).await;
    }
}

/// Debug builds only, for the tests: with `WEAVE_RS_TEST_PANIC_CUE` set,
/// a datagram starting with its bytes makes the data plane panic (how the
/// tests check that a dead data plane ends the router).
fn test_panic_cue() -> Option<&'static [u8]> {
    if !cfg!(debug_assertions) {
        return None;
    }
    let cue = std::env::var("WEAVE_RS_TEST_PANIC_CUE").ok()?;
    (!cue.is_empty()).then(|| &*cue.into_bytes().leak())
}

/// Hand a datagram's frames to our TAP, each behind a virtio-net header.
async fn inject(shared: &Shared, datagram: &[u8], rx: &mut RxState) {
    let Ok((header, payload)) = Header::parse(datagram) else {
        return;
    };
    let mtu = shared.config.mtu;
    if header.kind == Kind::Fragment {
        let Ok((frag, bytes)) = sleeve::parse_fragment(payload) else {
            return;
        };
        let before = rx.reassembly.dropped_incomplete;
        let whole = if frag.count == 1 {
            (frag.offset == 0 && bytes.len() == frag.total as usize).then_some(bytes)
        } else {
            rx.reassembly.push(header.src, frag, bytes, Instant::now())
        };
        let mut bad_offload = false;
        let mut too_big = None;
        if let Some(w) = whole {
            let frame = &w[vnet::LEN.min(w.len())..];
            match VnetHdr::parse(w).and_then(|h| h.validate(frame.len()).map(|()| h)) {
                Ok(h) => {
                    let gso = (h.gso_type != vnet::GSO_NONE).then_some((h.hdr_len, h.gso_size));
                    if icmp::exceeds(frame.len(), gso, mtu) {
                        too_big = icmp::too_big_reply(frame, mtu).map(Some).or(Some(None));
                    } else if gso.is_some() || !gather(shared, &mut rx.run, h, frame).await {
                        write_run(shared, &mut rx.run).await;
                        if let Err(e) = shared.tap.send(w).await {
                            debug!("TAP write: {e}");
                        }
                    }
                }
                Err(e) => {
                    debug!("offloaded frame from {}: {e}", header.src);
                    bad_offload = true;
                }
            }
        }
        let dropped = rx.reassembly.dropped_incomplete - before;
        if dropped > 0 || bad_offload {
            let mut data = shared.data();
            data.router.stats.dropped_incomplete += dropped;
            data.router.stats.dropped_bad_offload += u64::from(bad_offload);
        }
        if let Some(reply) = too_big {
            answer_too_big(shared, header.src, reply, rx).await;
        }
        return;
    }
    for frame in sleeve::frames(payload).flatten() {
        if icmp::exceeds(frame.len(), None, mtu) {
            let reply = icmp::too_big_reply(frame, mtu);
            answer_too_big(shared, header.src, reply, rx).await;
            continue;
        }
        if gather(shared, &mut rx.run, VnetHdr::default(), frame).await {
            continue;
        }
        rx.to_tap.clear();
        rx.to_tap.extend_from_slice(&vnet::PLAIN);
        rx.to_tap.extend_from_slice(frame);
        if let Err(e) = shared.tap.send(&rx.to_tap).await {
            debug!("TAP write: {e}");
        }
    }
}

/// Adds `frame` to the UDP run, writing the run first if the frame does
/// not join it. False: the frame joins no run (the caller writes it).
async fn gather(shared: &Shared, run: &mut UdpRun, vnet: VnetHdr, frame: &[u8]) -> bool {
    if run.join(vnet, frame) {
        return true;
    }
    write_run(shared, run).await;
    run.join(vnet, frame)
}

/// Writes the UDP datagrams gathered in `run` to the TAP: one write
/// for the lot (`core::wire::udp_run`). Called at the end of each receive
/// batch and before any other frame, so that frames keep their order.
async fn write_run(shared: &Shared, run: &mut UdpRun) {
    let w = match run.take() {
        Taken::Nothing => return,
        Taken::Single(w) => w,
        Taken::Joined(w, count) => {
            let mut data = shared.data();
            data.router.stats.tap_udp_runs += 1;
            data.router.stats.tap_udp_run_datagrams += count as u64;
            w
        }
    };
    if let Err(e) = shared.tap.send(w).await {
        debug!("TAP write: {e}");
    }
}

/// The receive pump's own state.
struct RxState {
    reassembly: Reassembler,
    to_tap: Vec<u8>,
    /// UDP datagrams for the TAP, gathered to be written as one.
    run: UdpRun,
    /// ICMP errors sent in the current second, at most `ICMP_PER_SECOND`.
    icmp_window: (Instant, u32),
    reply: Vec<u8>,
    out: Vec<Vec<u8>>,
    sends: Sends,
}

const ICMP_PER_SECOND: u32 = 100;

/// A frame from `origin` was too big for us: count it, and send its
/// sender `reply` (an ICMP error), rate-limited, back through the overlay.
async fn answer_too_big(
    shared: &Shared,
    origin: PeerName,
    reply: Option<Vec<u8>>,
    rx: &mut RxState,
) {
    let now = Instant::now();
    if now.duration_since(rx.icmp_window.0) >= Duration::from_secs(1) {
        rx.icmp_window = (now, 0);
    }
    let allowed = reply.is_some() && rx.icmp_window.1 < ICMP_PER_SECOND;
    rx.sends.clear();
    {
        let mut data = shared.data();
        data.router.stats.dropped_too_big += 1;
        let hop = data.router.next_hop(origin);
        if let (true, Some(reply), Some(hop)) = (allowed, &reply, hop) {
            rx.icmp_window.1 += 1;
            data.router.stats.icmp_too_big_sent += 1;
            rx.reply.clear();
            Header {
                kind: Kind::Frames,
                hops: 0,
                src: shared.ourself(),
                dst: origin,
            }
            .emit(&mut rx.reply);
            sleeve::push_frame(&mut rx.reply, reply);
            let stride = rx.reply.len();
            data.fan_out(
                std::iter::once(hop),
                &rx.reply,
                stride,
                now,
                None,
                &mut rx.out,
                &mut rx.sends,
            );
        }
    }
    send_all(shared, &rx.sends, &rx.out).await;
}
