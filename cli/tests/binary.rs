//! The installed `vibe` binary answers `--help` and `--version` without any instance,
//! and its help lists every command the parser knows.
//!
//! (This integration test also makes `cargo test --workspace --no-run` build the `vibe`
//! binary, which `deploy/local/built-bins` hands to the other suites as `VIBE_BIN_VIBE`.)

use std::process::Command;

use clap::CommandFactory;
use vibe_cli::cmd::Cli;

fn vibe(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_vibe"))
        .args(args)
        .env_remove("VIBE_INSTANCE")
        .env_remove("VIBE_CONFIG_DIR")
        .output()
        .expect("run vibe");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn help_lists_every_command() {
    let (ok, help) = vibe(&["--help"]);
    assert!(ok, "{help}");
    assert!(help.contains("Usage: vibe"), "{help}");
    for command in Cli::command().get_subcommands() {
        let name = command.get_name();
        assert!(
            help.contains(&format!("  {name} ")),
            "{name} missing:\n{help}"
        );
        let (ok, sub) = vibe(&[name, "--help"]);
        assert!(ok, "vibe {name} --help: {sub}");
        assert!(sub.contains(&format!("Usage: vibe {name}")), "{sub}");
    }
}

#[test]
fn version_is_the_package_version() {
    let (ok, version) = vibe(&["--version"]);
    assert!(ok);
    assert_eq!(
        version.trim(),
        format!("vibe {}", env!("CARGO_PKG_VERSION"))
    );
}
