//! Control frames after the handshake: length prefix, kind, body.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weave_rs::core::wire::control;

fuzz_target!(|data: &[u8]| {
    if let Some(prefix) = data.get(..control::LEN_PREFIX) {
        let _ = control::frame_len(prefix.try_into().unwrap());
    }
    if let Ok((kind, body)) = control::parse(data) {
        let again = control::emit(kind, body);
        assert_eq!(&again[control::LEN_PREFIX..], data);
    }
});
