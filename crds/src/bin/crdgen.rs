//! Prints a CRD as YAML: `crdgen sandbox.yaml` (the default), `crdgen sandboxtemplate.yaml` or
//! `crdgen sandboxpool.yaml`. `make crds` writes each to `crds/`.
fn main() {
    let file = std::env::args().nth(1).unwrap_or_else(|| "sandbox.yaml".into());
    match airlock_crds::crd_yaml_of(&file) {
        Some(yaml) => print!("{yaml}"),
        None => {
            eprintln!("crdgen: unknown CRD file {file:?}; one of {:?}", airlock_crds::CRD_FILES);
            std::process::exit(2);
        }
    }
}
