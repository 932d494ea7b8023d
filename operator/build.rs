//! The broker's gRPC admin API (client side only), from the broker's own .proto, compiled with
//! protox (pure Rust, no system protoc) as the broker does.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../broker/proto/kairos/admin/v1/admin.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["../broker/proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
