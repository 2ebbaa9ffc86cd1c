//! Compiles `proto/camshaft/v1/*.proto` with tonic-prost-build (needs `protoc`
//! on `PATH` or in `PROTOC`; `scripts/setup` installs Debian's
//! `protobuf-compiler`) and writes the encoded descriptor set that
//! `FILE_DESCRIPTOR_SET` includes for server reflection.

use std::env;
use std::path::PathBuf;

const PROTOS: [&str; 4] = [
    "camshaft/v1/common.proto",
    "camshaft/v1/coordinator.proto",
    "camshaft/v1/worker.proto",
    "camshaft/v1/explainer.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let protos: Vec<PathBuf> = PROTOS.iter().map(|p| proto_root.join(p)).collect();
    // The protos live outside this package, so cargo would not notice edits.
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    println!("cargo:rerun-if-changed=build.rs");

    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("camshaft_v1_descriptor.bin"))
        // Image payloads and weight chunks arrive as `Bytes`: decoding slices the
        // request buffer instead of copying every image.
        .bytes(".camshaft.v1")
        // serde for every message and enum, so a service can keep wire
        // records (a job's spec, its epoch rows) as JSON in the store.
        // `default` keeps old records readable after fields are added.
        .type_attribute(
            ".camshaft.v1",
            "#[derive(serde::Serialize, serde::Deserialize)]",
        )
        .message_attribute(".camshaft.v1", "#[serde(default)]")
        .compile_protos(&protos, &[proto_root])?;
    Ok(())
}
