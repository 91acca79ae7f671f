//! Request bodies left unread by an answer.
//!
//! Many answers are given without reading the request body: 401 before a body is parsed,
//! 404 and 405 from the router, 413 after the first megabyte. hyper then drops the rest of
//! the connection without saying so, and a keep-alive client's next request on it fails
//! ("connection closed before message completed"). [`settle_unread_body`] watches the body
//! a handler receives; when the handler is done and the body was not read to its end, the
//! rest is read and discarded if it is small and arrives soon ([`DRAIN_TIME`], at most the
//! body limit), so the connection stays usable. Otherwise the answer carries
//! `Connection: close`, and the client knows to open a new connection.
//!
//! A body announced with `Expect: 100-continue` that the handler did not touch is never
//! drained: reading it would ask the client to send it after all.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};

/// Longest wait for the rest of an unread body before the connection is given up.
pub const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Largest unread rest that is drained (the configured body limit).
#[derive(Clone, Copy, Debug)]
pub struct DrainLimit(pub u64);

/// Middleware: keep the connection usable after an answer that left the body unread, or
/// announce that it closes (see the module documentation).
pub async fn settle_unread_body(
    State(limit): State<DrainLimit>,
    request: Request,
    next: Next,
) -> Response {
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let expects_continue = request
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let declared = declared_length(request.headers());
    let (parts, body) = request.into_parts();
    let watched = Arc::new(Mutex::new(Watched {
        body: Some(body),
        read: 0,
        polled: false,
        ended: false,
    }));
    let proxy = Body::new(Proxy(watched.clone()));
    let mut response = next.run(Request::from_parts(parts, proxy)).await;

    if Arc::strong_count(&watched) > 1 {
        // The handler still holds the body (it streams it on); nothing to settle.
        return response;
    }
    let (body, read, polled) = match watched.lock() {
        Ok(mut w) if !w.ended => (w.body.take(), w.read, w.polled),
        _ => return response,
    };
    let Some(body) = body else {
        return response;
    };
    let reusable = if expects_continue && !polled {
        false
    } else {
        let rest = declared.map(|n| n.saturating_sub(read));
        rest.is_none_or(|rest| rest <= limit.0) && drain(body, limit.0).await
    };
    if !reusable {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Read and discard `body` for at most [`DRAIN_TIME`] and `limit` bytes; `true` when it
/// ended within both.
async fn drain(body: Body, limit: u64) -> bool {
    let read_all = async {
        let mut body = body;
        let mut total: u64 = 0;
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            let Ok(frame) = frame else {
                return false;
            };
            if let Some(data) = frame.data_ref() {
                total += data.len() as u64;
                if total > limit {
                    return false;
                }
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIME, read_all)
        .await
        .unwrap_or(false)
}

struct Watched {
    /// The real body, kept here so the middleware can finish it after the handler.
    body: Option<Body>,
    read: u64,
    polled: bool,
    ended: bool,
}

/// The body handlers see: reads through to the real one and counts what was read.
struct Proxy(Arc<Mutex<Watched>>);

impl HttpBody for Proxy {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let Ok(mut watched) = self.0.lock() else {
            return Poll::Ready(None);
        };
        watched.polled = true;
        let Some(body) = watched.body.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    watched.read += data.len() as u64;
                }
            }
            Poll::Ready(None) => watched.ended = true,
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.0.lock().map_or(true, |w| {
            w.ended || w.body.as_ref().is_none_or(|b| b.is_end_stream())
        })
    }

    fn size_hint(&self) -> SizeHint {
        self.0
            .lock()
            .ok()
            .and_then(|w| w.body.as_ref().map(|b| b.size_hint()))
            .unwrap_or_default()
    }
}
