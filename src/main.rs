//! The `weave-rs` command: parsing is in `cli`; nothing else lives here.

fn main() -> std::process::ExitCode {
    // Installed as `weave-rs-cni` (`setup-cni`), it is the CNI plugin.
    let name = std::env::args_os().next().unwrap_or_default();
    let name = std::path::Path::new(&name).file_name().unwrap_or_default();
    if name == weave_rs::core::cni::PLUGIN_TYPE {
        return weave_rs::cni::main();
    }
    weave_rs::cli::main()
}
