//! The `weave-rs` command: parsing is in `cli`; nothing else lives here.

fn main() -> std::process::ExitCode {
    weave_rs::cli::main()
}
