//! The `vibe` command: argument parsing ([`args`]) and the commands ([`commands`]).

pub mod args;
mod commands;
mod output;

use std::process::ExitCode;

use clap::Parser;

pub use args::Cli;

/// Entry point of the `vibe` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            output::error(json, &error);
            ExitCode::FAILURE
        }
    }
}
