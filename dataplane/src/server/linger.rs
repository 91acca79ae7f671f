//! Lingering close: when the server ends a connection, it first announces the end (TCP
//! FIN) and then keeps reading and discarding what the client still sends, for a short
//! time. Closing a socket with unread bytes makes the kernel send a reset, which can
//! destroy the answer the client has not read yet — typically a 413 refusing a body the
//! client is still uploading.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest time spent discarding a client's bytes after the server's end of a connection.
pub const LINGER_TIME: Duration = Duration::from_secs(2);
/// Most bytes discarded after the server's end of a connection.
pub const LINGER_BYTES: u64 = 4 * 1024 * 1024;

enum State {
    Open,
    Discarding {
        deadline: Pin<Box<tokio::time::Sleep>>,
        left: u64,
    },
    Closed,
}

/// The shutdown half of a socket whose close lingers (see the module documentation).
pub struct Linger {
    state: State,
}

impl Default for Linger {
    fn default() -> Self {
        Self { state: State::Open }
    }
}

impl Linger {
    /// Shut `io` down for writing, then discard what the client still sends until it
    /// stops, [`LINGER_BYTES`] were read or [`LINGER_TIME`] has passed.
    pub fn poll_shutdown<T: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut T,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            match &mut self.state {
                State::Open => {
                    ready!(Pin::new(&mut *io).poll_shutdown(cx))?;
                    self.state = State::Discarding {
                        deadline: Box::pin(tokio::time::sleep(LINGER_TIME)),
                        left: LINGER_BYTES,
                    };
                }
                State::Discarding { deadline, left } => {
                    if deadline.as_mut().poll(cx).is_ready() {
                        self.state = State::Closed;
                        continue;
                    }
                    let mut scratch = [0u8; 8192];
                    let mut buf = ReadBuf::new(&mut scratch);
                    match ready!(Pin::new(&mut *io).poll_read(cx, &mut buf)) {
                        Ok(()) if !buf.filled().is_empty() => {
                            *left = left.saturating_sub(buf.filled().len() as u64);
                            if *left == 0 {
                                self.state = State::Closed;
                            }
                        }
                        // End of the client's data, or an error: nothing left to protect.
                        _ => self.state = State::Closed,
                    }
                }
                State::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}
