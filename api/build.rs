//! Compiles `proto/airlock/v1/*.proto` (client code and server traits) and writes the file descriptor set
//! the reflection service serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not `env!` at compile time: a build script binary reused from another
    // checkout sharing the target directory would otherwise compile that checkout's protos.
    let proto_root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let proto = proto_root.join("airlock/v1/sandbox.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("airlock_descriptor.bin"))
        .bytes(".airlock.v1")
        .compile_protos(&[proto], &[proto_root])?;
    Ok(())
}
