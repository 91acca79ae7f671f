//! `vibe-bench`: see `vibe-bench --help` and docs/benchmarks.md.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match vibe_e2e::bench::parse_args(&args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let command = format!(
        "cargo run --release -p vibe-e2e --bin vibe-bench --{}",
        args.iter().map(|a| format!(" {a}")).collect::<String>()
    );
    match vibe_e2e::bench::run(&options).await {
        Ok(results) => {
            println!(
                "## Run of {}\n",
                chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
            );
            println!("Command: `{command}`\n");
            println!("{}", vibe_e2e::bench::environment());
            println!("{}", vibe_e2e::bench::markdown(&results, &options));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vibe-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
