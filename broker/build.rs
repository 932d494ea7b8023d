//! Generates the gRPC admin API from `proto/` with protox (a pure-Rust .proto compiler), so
//! building needs no system `protoc`. The encoded descriptor set feeds gRPC reflection.
use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/kairos/admin/v1/admin.proto";
    let controller = "proto/kairos/controller/v1/controller.proto";
    println!("cargo:rerun-if-changed={proto}");
    println!("cargo:rerun-if-changed={controller}");
    tonic_prost_build::configure().compile_fds(protox::compile([controller], ["proto"])?)?;
    let fds = protox::compile([proto], ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("kairos_admin_v1_descriptor.bin"),
        fds.encode_to_vec(),
    )?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
