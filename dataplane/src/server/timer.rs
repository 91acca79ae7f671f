//! The idle and header-read deadlines of one connection.
//!
//! hyper has one timer for a connection waiting for a request head: it starts when the
//! server begins to wait (at accept, and again after each response) and ends when the head
//! is complete. Two limits are wanted instead: a long one while nothing arrives (an idle
//! keep-alive connection) and a short one once a request has begun (a slow or trickling
//! client). the connection's socket ([`super::socket`]) records in a [`LastRead`] when bytes last arrived;
//! [`HeadTimer`] gives hyper sleeps that end `idle` after the wait began when no byte came,
//! or `header` after the first byte that came during the wait.
//!
//! hyper only runs this timer while it waits for a head, so requests being handled,
//! streamed responses and upgraded connections (WebSockets) are never cut by it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// When bytes last arrived on a connection, shared by its socket and its timer.
#[derive(Clone, Default)]
pub struct LastRead(Arc<Mutex<Option<Instant>>>);

impl LastRead {
    /// Note that bytes arrived now.
    pub fn mark(&self) {
        if let Ok(mut last) = self.0.lock() {
            *last = Some(Instant::now());
        }
    }

    /// The time of the last read, if it happened after `since`.
    fn after(&self, since: Instant) -> Option<Instant> {
        let last = *self.0.lock().ok()?;
        last.filter(|at| *at >= since)
    }
}

/// hyper's timer for one connection (see the module documentation).
#[derive(Clone)]
pub struct HeadTimer {
    last_read: LastRead,
    idle: Duration,
    header: Duration,
}

impl HeadTimer {
    /// A timer over the connection whose reads `last_read` records.
    pub fn new(last_read: LastRead, idle: Duration, header: Duration) -> Self {
        Self {
            last_read,
            idle,
            header,
        }
    }

    fn start(&self) -> HeadSleep {
        let started = Instant::now();
        HeadSleep {
            last_read: self.last_read.clone(),
            started,
            header: self.header,
            head_begun: false,
            sleep: Box::pin(tokio::time::sleep_until((started + self.idle).into())),
        }
    }
}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, _duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(self.start())
    }

    /// hyper asks for its header-read deadline; the deadline is ours (idle, then header).
    fn sleep_until(&self, _deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(self.start())
    }
}

/// A wait for a request head: idle deadline until a byte arrives, header deadline after.
pub struct HeadSleep {
    last_read: LastRead,
    started: Instant,
    header: Duration,
    head_begun: bool,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        // hyper polls this each time bytes arrive without completing the head.
        if !this.head_begun
            && let Some(first) = this.last_read.after(this.started)
        {
            this.head_begun = true;
            this.sleep.as_mut().reset((first + this.header).into());
        }
        this.sleep.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for HeadSleep {}
