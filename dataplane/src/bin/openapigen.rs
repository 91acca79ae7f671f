//! `cargo run -p vibe-dataplane --bin openapigen`: rewrites the generated component schemas
//! of `dataplane/openapi.json` from `vibe-api`'s types. `--check` only says whether the file
//! is up to date (exit status 1 when it is not).

use std::path::Path;
use std::process::ExitCode;

use vibe_dataplane::openapi::components::splice;

fn main() -> ExitCode {
    let check = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--check") => true,
        Some(_) => {
            eprintln!("usage: openapigen [--check]");
            return ExitCode::from(2);
        }
    };
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("openapigen: cannot read {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let spliced = match splice(&text) {
        Ok(spliced) => spliced,
        Err(e) => {
            eprintln!("openapigen: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    if spliced == text {
        println!("{} is up to date", path.display());
        return ExitCode::SUCCESS;
    }
    if check {
        eprintln!(
            "{} is stale: run `cargo run -p vibe-dataplane --bin openapigen`",
            path.display()
        );
        return ExitCode::FAILURE;
    }
    if let Err(e) = std::fs::write(&path, spliced) {
        eprintln!("openapigen: cannot write {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    println!("{} rewritten", path.display());
    ExitCode::SUCCESS
}
