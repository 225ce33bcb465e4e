//! The handshake a stranger sends first: prefix, negotiation, body.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weave_rs::core::wire::handshake::{Hello, Prefix, PREFIX_LEN};

fuzz_target!(|data: &[u8]| {
    if let Some(prefix) = data.get(..PREFIX_LEN) {
        if let Ok(p) = Prefix::parse(prefix.try_into().unwrap()) {
            let _ = p.negotiate();
        }
    }
    if let Ok(h) = Hello::parse_body(data) {
        // What parses must re-emit to the same meaning.
        let bytes = h.emit();
        assert_eq!(Hello::parse_body(&bytes[PREFIX_LEN..]).as_ref(), Ok(&h));
    }
});
