//! Builds the container-side waiter (`src/wait/main.rs`) as a static
//! executable that `src/waiter.rs` embeds with `include_bytes!`.
//!
//! It is compiled by invoking the same rustc cargo uses, directly, for the
//! target being built; deliberately without the crate's RUSTFLAGS (cargo-fuzz
//! adds sanitizer and coverage flags that must not reach a binary that runs
//! in containers), and with glibc linked statically so it runs in any image.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const SRC: &str = "src/wait/main.rs";
const OUT: &str = "weave-rs-wait";

fn main() {
    println!("cargo:rerun-if-changed={SRC}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");

    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target = env::var("TARGET").expect("cargo sets TARGET");
    let out = out_dir.join(OUT);
    let src = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it")).join(SRC);

    let mut cmd = Command::new(&rustc);
    cmd.arg(&src)
        .args(["--edition", "2021", "--crate-type", "bin"])
        .args(["--crate-name", "weave_rs_wait"])
        .args(["--target", &target])
        .args(["-C", "opt-level=s"])
        .args(["-C", "panic=abort"])
        .args(["-C", "strip=symbols"])
        .args(["-C", "target-feature=+crt-static"])
        // A plain static executable rather than static-pie: no
        // self-relocation at startup, and slightly smaller.
        .args(["-C", "relocation-model=static"])
        .arg("-o")
        .arg(&out);
    // A linker configured for the target (CARGO_TARGET_<T>_LINKER or
    // target.<t>.linker) reaches build scripts only as RUSTC_LINKER.
    if let Some(linker) = env::var_os("RUSTC_LINKER") {
        cmd.arg("-C").arg({
            let mut a = std::ffi::OsString::from("linker=");
            a.push(linker);
            a
        });
    }
    let status = match cmd.status() {
        Ok(s) => s,
        Err(e) => panic!(
            "weave-rs build: cannot run {} to build the container waiter {SRC}: {e}",
            rustc.to_string_lossy()
        ),
    };
    if !status.success() {
        panic!(
            "weave-rs build: {} failed ({status}) building the container waiter {SRC} \
             as a static executable for {target}; it needs the target's static C library \
             (for glibc: libc.a, e.g. the libc6-dev package)",
            rustc.to_string_lossy()
        );
    }
}
