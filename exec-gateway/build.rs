//! Compiles e2b's envd protocol (`proto/e2b/{process,filesystem}`) for the gateway's e2b front end:
//! prost messages plus pbjson's serde implementations (the protobuf JSON mapping Connect-RPC's JSON
//! codec uses: camelCase names, 64-bit integers as strings, bytes as base64, enums by name).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time (see api/build.rs): a build script reused from another checkout must not
    // compile that checkout's protos.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let files = [root.join("e2b/process/process.proto"), root.join("e2b/filesystem/filesystem.proto")];
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let descriptors = out.join("e2b_descriptor.bin");
    prost_build::Config::new()
        .file_descriptor_set_path(&descriptors)
        .compile_well_known_types()
        .extern_path(".google.protobuf", "::pbjson_types")
        .bytes([".process", ".filesystem"])
        .compile_protos(&files, &[root])?;
    let set = std::fs::read(&descriptors)?;
    pbjson_build::Builder::new()
        .register_descriptors(&set)?
        .build(&[".process", ".filesystem"])?;
    Ok(())
}
