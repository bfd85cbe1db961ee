fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/p2p.proto");
    // protox compiles the proto in pure Rust: no `protoc` needed on CI.
    let fds = protox::compile(["proto/p2p.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
