//! Free TCP ports on 127.0.0.1, and starting a server on one.
//!
//! A port found free can be taken by another test's server before ours binds it, so
//! [`start_on_free_port`] retries on a new port when the server reports its port in use, and
//! [`restart_on_port`] (which must keep the port) waits and retries on the same one.

use std::net::{Ipv4Addr, TcpListener};
use std::time::Duration;

use crate::SupportError;

/// Ports tried by [`start_on_free_port`] before giving up.
const START_ATTEMPTS: usize = 5;
/// Retries of [`restart_on_port`] while the port is taken, [`RESTART_PAUSE`] apart.
const RESTART_RETRIES: usize = 20;
/// Pause between two attempts of [`restart_on_port`].
const RESTART_PAUSE: Duration = Duration::from_millis(250);

/// A port that was free a moment ago. Chosen at random below the kernel's ephemeral range
/// (where outgoing connections take their local ports), so parallel test processes rarely pick
/// the same one; callers retry with another port when the server still finds it taken.
pub(crate) fn free_port() -> u16 {
    for _ in 0..200 {
        let port = 20_000 + (rand::random::<u16>() % 12_000);
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    // Fall back to whatever the kernel hands out.
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("bind 127.0.0.1:0")
}

/// True when a start-up failure was the port being taken (by another test's server).
pub(crate) fn port_was_taken(error: &SupportError) -> bool {
    match error {
        SupportError::Exited { log_tail, .. } => {
            log_tail.contains("EADDRINUSE") || log_tail.contains("Address already in use")
        }
        _ => false,
    }
}

/// Runs `start` (spawn a server on the given port and wait until it is ready) on a free port,
/// and again on a new free port when it failed because the port was taken, up to
/// [`START_ATTEMPTS`] ports. Any other failure is returned at once.
pub(crate) async fn start_on_free_port<T>(
    mut start: impl AsyncFnMut(u16) -> Result<T, SupportError>,
) -> Result<T, SupportError> {
    start_with_ports(free_port, &mut start).await
}

async fn start_with_ports<T>(
    mut next_port: impl FnMut() -> u16,
    start: &mut impl AsyncFnMut(u16) -> Result<T, SupportError>,
) -> Result<T, SupportError> {
    let mut last_error = None;
    for _ in 0..START_ATTEMPTS {
        match start(next_port()).await {
            Ok(started) => return Ok(started),
            Err(error) if port_was_taken(&error) => last_error = Some(error),
            Err(error) => return Err(error),
        }
    }
    Err(last_error.expect("at least one attempt"))
}

/// Runs `start` (spawn the server again on its own port and wait until it is ready); while it
/// fails because the port is taken (another test may grab it while the server is down), waits
/// a little and tries again, [`RESTART_RETRIES`] times at most.
pub(crate) async fn restart_on_port<T>(
    start: impl AsyncFnMut() -> Result<T, SupportError>,
) -> Result<T, SupportError> {
    restart_with_pause(RESTART_PAUSE, start).await
}

async fn restart_with_pause<T>(
    pause: Duration,
    mut start: impl AsyncFnMut() -> Result<T, SupportError>,
) -> Result<T, SupportError> {
    let mut retries = 0;
    loop {
        match start().await {
            Ok(started) => return Ok(started),
            Err(error) if port_was_taken(&error) && retries < RESTART_RETRIES => {
                retries += 1;
                tokio::time::sleep(pause).await;
            }
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(log_tail: &str) -> SupportError {
        SupportError::Exited {
            server: "test-server",
            status: "exit status: 1".into(),
            log: "server.log".into(),
            log_tail: log_tail.into(),
        }
    }

    #[test]
    fn only_a_port_in_use_counts_as_taken() {
        assert!(port_was_taken(&exited(
            "Error: listen EADDRINUSE 127.0.0.1:1"
        )));
        assert!(port_was_taken(&exited(
            "Address already in use (os error 98)"
        )));
        assert!(!port_was_taken(&exited("panicked")));
        assert!(!port_was_taken(&SupportError::Request {
            server: "test-server",
            message: "EADDRINUSE".into(),
        }));
    }

    #[tokio::test]
    async fn a_taken_port_is_retried_on_another_port() {
        let mut ports = [20_001, 20_002, 20_003].into_iter();
        let mut tried = Vec::new();
        let started = start_with_ports(|| ports.next().unwrap(), &mut async |port| {
            tried.push(port);
            if port < 20_003 {
                Err(exited("EADDRINUSE"))
            } else {
                Ok(port)
            }
        })
        .await
        .unwrap();
        assert_eq!(started, 20_003);
        assert_eq!(tried, [20_001, 20_002, 20_003]);
    }

    #[tokio::test]
    async fn other_failures_and_too_many_taken_ports_end_the_start() {
        let mut calls = 0;
        let error = start_on_free_port(async |_| -> Result<(), _> {
            calls += 1;
            Err(exited("panicked"))
        })
        .await
        .unwrap_err();
        assert!(!port_was_taken(&error));
        assert_eq!(calls, 1);
        let mut calls = 0;
        let error = start_on_free_port(async |_| -> Result<(), _> {
            calls += 1;
            Err(exited("EADDRINUSE"))
        })
        .await
        .unwrap_err();
        assert!(port_was_taken(&error));
        assert_eq!(calls, START_ATTEMPTS);
    }

    #[tokio::test]
    async fn a_restart_waits_for_its_port() {
        let mut calls = 0;
        let started = restart_with_pause(Duration::ZERO, async || {
            calls += 1;
            if calls < 3 {
                Err(exited("EADDRINUSE"))
            } else {
                Ok(calls)
            }
        })
        .await
        .unwrap();
        assert_eq!(started, 3);
        let mut calls = 0;
        let error = restart_with_pause(Duration::ZERO, async || -> Result<(), _> {
            calls += 1;
            Err(exited("EADDRINUSE"))
        })
        .await
        .unwrap_err();
        assert!(port_was_taken(&error));
        assert_eq!(calls, RESTART_RETRIES + 1);
        let mut calls = 0;
        restart_with_pause(Duration::ZERO, async || -> Result<(), _> {
            calls += 1;
            Err(exited("panicked"))
        })
        .await
        .unwrap_err();
        assert_eq!(calls, 1);
    }
}
