//! The TAP pump: frames from our bridge, decided by the core and sent to
//! neighbours in batches (several TAP reads per wake-up, one UDP GSO send
//! per run of same-sized datagrams to one neighbour).

use super::*;

/// What the TAP pump keeps between frames.
struct TapState {
    /// Datagrams for more than one neighbour, before they are copied out.
    batch: Vec<u8>,
    hops: Vec<PeerName>,
    next_id: u32,
    steer_ops: Vec<SteerOp>,
}

/// Frames (with their virtio-net headers) from our bridge to peers. Each
/// wake-up takes up to `TAP_BATCH` frames under one lock and one clock
/// read; consecutive single-datagram frames of one size to one neighbour
/// (a burst of small packets) leave in one system call (UDP GSO).
pub async fn tap_loop(shared: Arc<Shared>) -> anyhow::Result<()> {
    let mut bufs: Vec<Vec<u8>> = (0..TAP_BATCH).map(|_| vec![0u8; TAP_BUFFER]).collect();
    let mut lens = [0usize; TAP_BATCH];
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut sends: Sends = Vec::with_capacity(TAP_BATCH);
    let mut st = TapState {
        batch: Vec::with_capacity(2 * MAX_DATAGRAM),
        hops: Vec::with_capacity(16),
        next_id: rand::random(),
        steer_ops: Vec::new(),
    };
    loop {
        let (first, rest) = bufs.split_at_mut(1);
        lens[0] = shared.tap.recv(&mut first[0]).await?;
        let mut count = 1;
        for buf in rest {
            // A failed read (nothing waiting, mostly) ends the batch; a real
            // error shows on the next `recv`.
            match shared.tap.try_recv(buf) {
                Ok(n) => {
                    lens[count] = n;
                    count += 1;
                }
                Err(_) => break,
            }
        }
        sends.clear();
        {
            let mut guard = shared.data();
            let data = &mut *guard;
            let now = Instant::now();
            for (buf, &n) in bufs.iter().zip(&lens).take(count) {
                if let Some(whole) = buf.get(..n) {
                    queue_frame(&shared, data, whole, now, &mut st, &mut out, &mut sends);
                }
            }
        }
        let sent = send_all(&shared, &sends, &out).await;
        if sent.calls > 0 {
            let mut data = shared.data();
            data.router.stats.udp_sends += sent.calls;
            data.router.stats.udp_datagrams_sent += sent.datagrams;
        }
    }
}

/// Decide one frame from the TAP and queue its datagrams in `out`/`sends`.
fn queue_frame(
    shared: &Shared,
    data: &mut DataPlane,
    whole: &[u8],
    now: Instant,
    st: &mut TapState,
    out: &mut Vec<Vec<u8>>,
    sends: &mut Sends,
) {
    let Ok(vnet) = VnetHdr::parse(whole) else {
        return;
    };
    let frame = &whole[vnet::LEN..];
    st.hops.clear();
    let dst = match data.router.frame_from_tap(frame, now) {
        TapDecision::Drop(reason) => {
            debug!("frame from TAP dropped: {reason:?}");
            pass_steer_ops(shared, data, &mut st.steer_ops);
            return;
        }
        TapDecision::Unicast { dst, next_hop } => {
            st.hops.push(next_hop);
            dst
        }
        TapDecision::Broadcast { next_hops } => {
            st.hops.extend_from_slice(next_hops);
            PeerName::NONE
        }
    };
    pass_steer_ops(shared, data, &mut st.steer_ops);
    // The smallest datagram any next hop takes: one encoding for all.
    let room = st
        .hops
        .iter()
        .filter_map(|p| {
            let addr = data.peer_addrs.get(p)?;
            let seal = if data.seals_for(*p) {
                sealed::OVERHEAD
            } else {
                0
            };
            Some(max_udp_payload(addr) - seal)
        })
        .min()
        .unwrap_or(1400);
    let queued = sends.len();
    match st.hops.as_slice() {
        // The usual case, one neighbour: encoded straight into a send
        // buffer, sealed where it lies, and joined to the previous send if
        // that went to the same neighbour in datagrams of the same size.
        &[hop] => {
            let Some(&addr) = data.peer_addrs.get(&hop) else {
                data.router.stats.dropped_no_route += 1;
                return;
            };
            let sealed = data.seals_for(hop);
            let pad = if sealed {
                (sealed::HEADER_LEN, sealed::TAG_LEN)
            } else {
                (0, 0)
            };
            let slot = sends.len();
            if out.len() <= slot {
                out.push(Vec::with_capacity(2 * MAX_DATAGRAM));
            }
            let buf = &mut out[slot];
            buf.clear();
            let Some(stride) = encode(shared, whole, vnet, dst, room, pad, &mut st.next_id, buf)
            else {
                data.router.stats.dropped_malformed += 1;
                return;
            };
            if sealed && data.seal_batch_for(hop, buf, stride, now).is_none() {
                data.router.stats.dropped_no_route += 1;
                return;
            }
            join_or_push(out, sends, Send { addr, slot, stride });
        }
        hops => {
            st.batch.clear();
            let Some(stride) = encode(
                shared,
                whole,
                vnet,
                dst,
                room,
                (0, 0),
                &mut st.next_id,
                &mut st.batch,
            ) else {
                data.router.stats.dropped_malformed += 1;
                return;
            };
            let hops = hops.to_vec();
            data.fan_out(hops.into_iter(), &st.batch, stride, now, None, out, sends);
        }
    }
    if sends.len() == queued && dst != PeerName::NONE {
        // Routed to a neighbour whose UDP address or keys we lack.
        data.router.stats.dropped_no_route += 1;
    }
}

/// `whole` (virtio-net header and frame) as sleeve datagrams of at most
/// `room` bytes, each with `pad` free bytes around it for a seal, appended
/// to `buf`: one datagram if the frame fits and needs no offload, else
/// fragments. Returns the stride (every datagram's length but the last).
#[allow(clippy::too_many_arguments)]
fn encode(
    shared: &Shared,
    whole: &[u8],
    vnet: VnetHdr,
    dst: PeerName,
    room: usize,
    pad: (usize, usize),
    next_id: &mut u32,
    buf: &mut Vec<u8>,
) -> Option<usize> {
    let frame = whole.get(vnet::LEN..)?;
    let header = |kind| Header {
        kind,
        hops: 0,
        src: shared.ourself(),
        dst,
    };
    let fits = sleeve::HEADER_LEN + sleeve::framed_len(frame.len()) <= room;
    if fits && (vnet.is_plain() || vnet.checksum_only()) {
        buf.resize(pad.0, 0);
        header(Kind::Frames).emit(buf);
        let at = buf.len() + sleeve::framed_len(0);
        sleeve::push_frame(buf, frame);
        // A checksum left to complete is completed here: the frame then
        // fits one datagram of its own (with its virtio-net header and a
        // fragment's header, a full-sized one would take two), joins a GSO
        // send with others of its size, and its checksum is checked at the
        // other end.
        if !vnet.is_plain() && !vnet.complete_checksum(buf.get_mut(at..at + frame.len())?) {
            return None;
        }
        buf.resize(buf.len() + pad.1, 0);
        Some(buf.len())
    } else {
        // A segment to cut, or a frame too big for a datagram: in
        // fragments.
        *next_id = next_id.wrapping_add(1);
        let start = buf.len();
        let stride =
            sleeve::push_fragments(buf, header(Kind::Fragment), *next_id, whole, room, pad)?;
        // A single fragment (a small frame with a checksum to complete):
        // its own length is its stride, so that a run of them joins.
        Some(stride.min(buf.len() - start))
    }
}

/// Queue `send`, whose datagrams lie in `out[send.slot]`: appended to the
/// previous send's instead when both are for the same address in
/// datagrams of the same size (the previous one ending on a whole
/// datagram and this one being a single datagram), so GSO takes both.
fn join_or_push(out: &mut [Vec<u8>], sends: &mut Sends, send: Send) {
    let slot = send.slot;
    if let Some(prev) = sends.last() {
        if let Some(p) = Some(prev.slot).filter(|p| *p < slot) {
            let (head, tail) = out.split_at_mut(slot);
            let (Some(into), Some(this)) = (head.get_mut(p), tail.first()) else {
                sends.push(send);
                return;
            };
            let stride = send.stride.max(1);
            if prev.addr == send.addr
                && prev.stride == send.stride
                && this.len() == send.stride
                && into.len() % stride == 0
            {
                into.extend_from_slice(this);
                return;
            }
        }
    }
    sends.push(send);
}
