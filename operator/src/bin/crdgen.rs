//! Prints the VibeInstance CRD as YAML (`cargo run -p vibe-operator --bin crdgen > crds/vibeinstance.yaml`).

fn main() {
    print!("{}", vibe_operator::crd_yaml());
}
