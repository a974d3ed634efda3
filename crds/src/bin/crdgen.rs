//! Prints the Sandbox CRD as YAML. `make crds` writes it to `crds/sandbox.yaml`.
fn main() {
    print!("{}", airlock_crds::crd_yaml());
}
