//! Free TCP ports on 127.0.0.1.

use std::net::{Ipv4Addr, TcpListener};

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
