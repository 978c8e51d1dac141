//! Compiles `proto/` with protox (pure Rust), so building needs no `protoc`.
fn main() {
    let proto_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let file = proto_dir.join("redmirror/v1/event.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let fds = protox::compile([&file], [&proto_dir]).expect("compile proto/redmirror/v1/event.proto");
    prost_build::Config::new()
        .bytes(["."])
        .compile_fds(fds)
        .expect("generate Rust for the event schema");
}
