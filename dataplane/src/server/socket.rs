//! The socket of one served connection: reads are timed for the head deadlines
//! ([`super::timer`]), writes pass through, and shutdown lingers ([`super::linger`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::linger::Linger;
use super::timer::LastRead;

/// A connection's socket as hyper sees it (see the module documentation).
pub struct ServerSocket<T> {
    inner: T,
    last_read: LastRead,
    linger: Linger,
}

impl<T> ServerSocket<T> {
    /// Wrap `inner`, recording the arrival of bytes in `last_read`.
    pub fn new(inner: T, last_read: LastRead) -> Self {
        Self {
            inner,
            last_read,
            linger: Linger::default(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ServerSocket<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.last_read.mark();
        }
        polled
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ServerSocket<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.linger.poll_shutdown(&mut this.inner, cx)
    }
}
