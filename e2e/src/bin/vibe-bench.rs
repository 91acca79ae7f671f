//! `vibe-bench`: every benchmark of issue 10 in one run; see `vibe-bench --help` and
//! docs/benchmarks.md. Markdown on stdout, progress on stderr.

use std::process::ExitCode;

use clap::Parser;
use vibe_e2e::bench::{self, Args, report};

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let options = match args.options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("vibe-bench: {message}");
            return ExitCode::from(2);
        }
    };
    let command = std::env::var(bench::COMMAND_ENV)
        .ok()
        .filter(|c| !c.trim().is_empty())
        .unwrap_or_else(|| {
            let mut words: Vec<String> = ["cargo", "run", "--release", "-p", "vibe-e2e"]
                .into_iter()
                .chain(["--bin", "vibe-bench", "--"])
                .map(str::to_string)
                .collect();
            words.extend(std::env::args().skip(1));
            report::shell_words(&words)
        });
    match bench::run(&options).await {
        Ok(results) => {
            println!("{}", report::markdown(&results, &command));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vibe-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
