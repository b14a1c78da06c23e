//! Compiles the kernel side of a capture (`src/capture/capture.bpf.c`) with clang into
//! `$OUT_DIR/capture.bpf.o`, which the binary embeds. `scripts/ensure-build` installs
//! clang and libbpf's headers.

use std::path::PathBuf;
use std::process::Command;

const SOURCE: &str = "src/capture/capture.bpf.c";

fn main() {
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-env-changed=CLANG");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let status = Command::new(&clang)
        .args([
            "-O2",
            "-g",
            "-target",
            "bpf",
            "-mcpu=v3",
            "-D__TARGET_ARCH_x86",
            "-I/usr/include/x86_64-linux-gnu",
            "-Wall",
            "-Werror",
            "-c",
            SOURCE,
            "-o",
        ])
        .arg(out.join("capture.bpf.o"))
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{clang} failed on {SOURCE} ({s})"),
        Err(e) => panic!(
            "cannot run {clang} ({e}): building needs clang and libbpf's headers; \
             run scripts/ensure-build (apt-get install clang libbpf-dev)"
        ),
    }
}
