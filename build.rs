//! Build steps: Rust types for the Perfetto protobuf subset in schema/perfetto
//! (protox parses the .proto files in pure Rust, so no protoc is needed), and,
//! with the `record` feature, the BPF object and its libbpf-rs skeleton.

use std::env;
use std::path::PathBuf;

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));

    println!("cargo:rerun-if-changed=schema/perfetto");
    let descriptors = protox::compile(["perfetto_trace.proto"], ["schema/perfetto"])
        .expect("schema/perfetto/*.proto must parse");
    prost_build::Config::new()
        .compile_fds(descriptors)
        .expect("prost code generation for schema/perfetto");

    #[cfg(feature = "record")]
    build_bpf(&out_dir);
    let _ = out_dir;
}

#[cfg(feature = "record")]
fn build_bpf(out_dir: &std::path::Path) {
    // libbpf-cargo brings libbpf's headers and sets __TARGET_ARCH_* itself.
    let source = "bpf/schedlens.bpf.c";
    println!("cargo:rerun-if-changed=bpf");
    libbpf_cargo::SkeletonBuilder::new()
        .source(source)
        .clang_args(["-Ibpf", "-O2", "-g", "-Wall", "-mcpu=v3"])
        .build_and_generate(out_dir.join("schedlens.skel.rs"))
        .unwrap_or_else(|e| {
            panic!(
                "building {source} failed: {e:#}\n\
                 The recorder needs clang and libelf (apt-get install clang libelf-dev zlib1g-dev \
                 pkg-config); build with --no-default-features for the analyzing commands only."
            )
        });
}
