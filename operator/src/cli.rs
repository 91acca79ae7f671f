//! The `vibe-operator` command line: subcommands and the flags of every part, each also
//! readable from the environment. The parts own their flag groups ([`OperatorConfig`],
//! [`WebhookArgs`], [`ControlPlaneArgs`]); this module only puts them together, so no part
//! depends on the command line.

use crate::config::OperatorConfig;
use crate::control_plane::{ClaimCodeArgs, ControlPlaneArgs};
use crate::webhook::server::WebhookArgs;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Command line of the `vibe-operator` binary.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "vibe-operator",
    version,
    about = "Vibe Cloud Kubernetes operator"
)]
pub struct Cli {
    /// What to do; `run` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Operator settings (shared by `run` and `render`).
    #[command(flatten)]
    pub operator: OperatorConfig,
    /// Settings of the running operator.
    #[command(flatten)]
    pub run: RunArgs,
    /// Settings of the validating webhook's HTTPS server.
    #[command(flatten)]
    pub webhook: WebhookArgs,
    /// Settings of the identity control plane's HTTP server.
    #[command(flatten)]
    pub control_plane: ControlPlaneArgs,
}

/// Subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Run the controller and the HTTP server (the default).
    Run,
    /// Print every object the operator would apply for an instance, without a cluster.
    Render {
        /// VibeInstance manifest (YAML or JSON); `-` for standard input.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Create a one-time claim code (admin rights or an invite) and print it; only its hash is
    /// stored.
    ClaimCode(ClaimCodeArgs),
}

/// Settings only the running operator needs.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Address of the HTTP server (/metrics, /healthz, /readyz).
    #[arg(
        long,
        env = "VIBE_HTTP_ADDR",
        default_value = "0.0.0.0:8080",
        global = true
    )]
    pub http_addr: SocketAddr,
    /// Namespaces to watch, comma separated; all namespaces when empty.
    #[arg(
        long,
        env = "VIBE_WATCH_NAMESPACES",
        value_delimiter = ',',
        default_value = "",
        global = true
    )]
    pub watch_namespaces: Vec<String>,
    /// Namespace of the leader election Lease (normally the operator's own namespace).
    #[arg(
        long,
        env = "POD_NAMESPACE",
        default_value = "vibe-system",
        global = true
    )]
    pub lease_namespace: String,
    /// Name of the leader election Lease.
    #[arg(
        long,
        env = "VIBE_LEASE_NAME",
        default_value = "vibe-operator-leader",
        global = true
    )]
    pub lease_name: String,
    /// Identity of this replica in the Lease (normally the pod name).
    #[arg(long, env = "POD_NAME", global = true)]
    pub pod_name: Option<String>,
    /// Disable leader election (only for a single replica).
    #[arg(long, env = "VIBE_LEADER_ELECTION_DISABLED", global = true)]
    pub leader_election_disabled: bool,
    /// Log format: `json` (default) or `text`.
    #[arg(long, env = "VIBE_LOG_FORMAT", default_value = "json", global = true)]
    pub log_format: String,
}

impl RunArgs {
    /// The watched namespaces; empty means all.
    pub fn namespaces(&self) -> Vec<String> {
        self.watch_namespaces
            .iter()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect()
    }
}

impl Default for RunArgs {
    fn default() -> Self {
        Self {
            http_addr: ([0, 0, 0, 0], 8080).into(),
            watch_namespaces: Vec::new(),
            lease_namespace: "vibe-system".into(),
            lease_name: "vibe-operator-leader".into(),
            pod_name: None,
            leader_election_disabled: false,
            log_format: "json".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_with_defaults() {
        let cli = Cli::try_parse_from([
            "vibe-operator",
            "--base-domain",
            "example.org",
            "run",
            "--watch-namespaces",
            "a,b",
        ])
        .unwrap();
        assert_eq!(cli.operator.base_domain, "example.org");
        assert!(cli.operator.s3.path_style);
        assert!(matches!(cli.command, Some(Command::Run)));
        assert_eq!(cli.run.namespaces(), vec!["a", "b"]);
        let cli = Cli::try_parse_from(["vibe-operator"]).unwrap();
        assert!(cli.run.namespaces().is_empty(), "all namespaces by default");
        let cli = Cli::try_parse_from([
            "vibe-operator",
            "render",
            "-f",
            "x.yaml",
            "--s3-path-style",
            "false",
        ])
        .unwrap();
        assert!(!cli.operator.s3.path_style);
    }
}
