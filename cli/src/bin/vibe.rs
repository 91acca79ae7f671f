//! The `vibe` command: see `vibe --help`.

fn main() -> std::process::ExitCode {
    vibe_cli::cmd::main()
}
