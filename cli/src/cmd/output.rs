//! Printing results and errors, human-readable or as JSON.

use std::io::Write;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::client::Progress;
use crate::error::ClientError;

/// Where results go.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    /// `--json`.
    pub json: bool,
    /// Progress bars allowed.
    pub progress: bool,
}

impl Out {
    /// Print a result: `human` for people, `value` with `--json`.
    pub fn result(&self, human: impl FnOnce() -> String, value: &Value) {
        let mut stdout = std::io::stdout().lock();
        let line = if self.json {
            value.to_string()
        } else {
            human()
        };
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }

    /// A note for people on stderr (suppressed with `--json`).
    pub fn note(&self, message: &str) {
        if !self.json {
            eprintln!("{message}");
        }
    }

    /// A byte progress bar on stderr (hidden when not a terminal, with --json or
    /// --no-progress).
    pub fn bar(&self, total: Option<u64>, message: &str) -> (ProgressBar, Progress) {
        let bar = if self.json || !self.progress {
            ProgressBar::hidden()
        } else {
            match total {
                Some(total) => ProgressBar::new(total),
                None => ProgressBar::no_length(),
            }
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.set_message(message.to_string());
        let handle = bar.clone();
        (bar, std::sync::Arc::new(move |n| handle.inc(n)))
    }
}

/// Print an error on stderr.
pub fn error(json_output: bool, error: &ClientError) {
    if json_output {
        let mut value = json!({ "error": error.to_string() });
        if let Some(status) = error.status() {
            value["status"] = json!(status);
        }
        eprintln!("{value}");
    } else {
        eprintln!("error: {error}");
    }
}

/// Pretty JSON for people.
pub fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}
