//! A network config as a runtime hands it to `weave-rs-cni` (stdin, any
//! bytes), with CNI_ARGS. Nothing panics: a config is refused with one of
//! the spec's error codes or read whole, and what it carries (a previous
//! result) renders at every version the plugin speaks (as a result, not an error).
#![no_main]
use libfuzzer_sys::fuzz_target;
use weave_rs::core::cni::{self, conf, result, SpecVersion};

fuzz_target!(|data: &[u8]| {
    let (conf_bytes, args) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], String::from_utf8_lossy(&data[i + 1..]).into_owned()),
        None => (data, String::new()),
    };
    if let Ok(parsed) = cni::parse_args(&args) {
        let _ = cni::requested_ips(&parsed, &[]);
        let _ = cni::names(&parsed, &[]);
    }
    let (netconf, version) = match conf::parse(conf_bytes) {
        Ok(c) => c,
        Err(e) => {
            let code = u32::from(&e);
            assert!(code == 1 || code == 6 || code == 7, "code {code}: {e}");
            return;
        }
    };
    let rendered = result::render_error(version, &cni::Error::InvalidNetworkConfig("x".into()));
    assert!(rendered.contains("\"code\":7"));
    if let Ok(pc) = conf::plugin_conf(&netconf) {
        let _ = cni::requested_ips(&[], &pc.ips);
        if let Some(prev) = pc.prev_result {
            for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
                let v: SpecVersion = v.parse().unwrap();
                let json = result::render(v, prev.clone());
                assert!(json.starts_with('{') && json.contains("cniVersion"), "{json}");
            }
        }
    }
});
