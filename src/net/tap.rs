//! The router's TAP port (`weave-tap`): a layer-2 TAP device with the
//! virtio-net header and the kernel's offloads on (checksum, TSO), so that a
//! read can return a whole 64 KiB TCP segment; no packet-information prefix,
//! not persistent (it disappears when the router closes it), brought up at
//! once.
//!
//! A TAP cannot be created by netlink; the caller enslaves the opened TAP to
//! the bridge with [`super::Netlink::enslave`].

use tun_rs::{AsyncDevice, DeviceBuilder, Layer};

use super::NetError;

/// Opens (creating it if needed) the TAP `name` with MTU `mtu`, up.
/// Must be called within a tokio runtime. Each read yields a virtio-net
/// header (`core::wire::vnet`) and one Ethernet frame; each write takes the
/// same.
/// Frames the kernel queues on the TAP for the router to read.
pub const TAP_QUEUE_LEN: u32 = 4096;

pub fn open_tap(name: &str, mtu: u16) -> Result<AsyncDevice, NetError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(NetError::NoRuntime("open_tap"));
    }
    DeviceBuilder::new()
        .name(name)
        .layer(Layer::L2)
        .packet_information(false)
        .offload(true)
        .multi_queue(false)
        .mtu(mtu)
        // Room for a burst while the router is busy (the kernel's default
        // is 500 frames); what still overflows is counted by the kernel
        // (`report`: dropped_tap_queue).
        .tx_queue_len(TAP_QUEUE_LEN)
        .enable(true)
        .build_async()
        .map_err(|source| NetError::Tap {
            name: name.to_string(),
            source,
        })
}
