//! Builds the clock-shift shim (`shim/clockshift.c`) as a shared library for
//! `LD_PRELOAD` into test `redis-server` processes (see
//! `RedisOptions::clock_offset`). Uses the C compiler the Rust toolchain
//! links with, found by the `cc` crate.
fn main() {
    let src = std::path::Path::new("shim/clockshift.c");
    println!("cargo:rerun-if-changed={}", src.display());
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("libclockshift.so");
    let compiler = cc::Build::new().get_compiler();
    let status = compiler
        .to_command()
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&out)
        .arg(src)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {:?}: {e}", compiler.path()));
    assert!(status.success(), "building {} failed", src.display());
    println!("cargo:rustc-env=REDMIRROR_CLOCKSHIFT_SO={}", out.display());
}
