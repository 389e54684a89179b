//! Compiles `vigil/**.proto` with protox (pure Rust), so no system `protoc`
//! is needed, and writes the descriptor set that gRPC reflection serves.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "vigil/audit/v1/audit.proto",
    "vigil/event/v1/event.proto",
    "vigil/finding/v1/finding.proto",
    "vigil/ingest/v1/ingest.proto",
    "vigil/query/v1/query.proto",
    "vigil/schema/v1/schema.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let file_descriptors = protox::compile(PROTOS, ["."])?;
    let descriptor_path = out_dir.join("vigil_descriptor.bin");
    std::fs::write(
        &descriptor_path,
        prost::Message::encode_to_vec(&file_descriptors),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .skip_protoc_run()
        .file_descriptor_set_path(&descriptor_path)
        .compile_fds(file_descriptors)?;
    Ok(())
}
