//! One `_changes` reader per database, fanned out to every subscriber through a
//! `tokio::sync::broadcast` channel (the mini-redis pattern).
//!
//! The reader starts with the first [`FeedReceiver`] of a database and stops when the last
//! one is dropped. It follows a continuous feed (`include_docs`, heartbeat), reconnects with
//! exponential backoff and resumes from the last sequence it saw, so a CouchDB restart loses
//! no event. Rows are classified once ([`Event::from_row`]) and shared as `Arc<Event>`.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use serde_json::Value;
use tokio::sync::{Mutex, broadcast, oneshot};
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::io::StreamReader;
use tracing::{Instrument, debug, info, info_span, warn};

use super::event::Event;
use super::seq::Seq;
use crate::couch::{ChangeRow, ChangesFeed, ChangesQuery, CouchError, Database};

/// Tuning of the change readers.
#[derive(Clone, Debug)]
pub struct HubSettings {
    /// Events buffered per database; a subscriber falling further behind is lagged.
    pub capacity: usize,
    /// Heartbeat asked of CouchDB; three missed heartbeats count as a dead connection.
    pub heartbeat: Duration,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Longest `_changes` line accepted (one document); longer rows are skipped with a warning.
    pub max_line_bytes: usize,
}

impl Default for HubSettings {
    fn default() -> Self {
        Self {
            capacity: 1024,
            heartbeat: Duration::from_secs(10),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            max_line_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Registry of the running change readers. Cheap to clone.
#[derive(Clone)]
pub struct ChangesHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    settings: HubSettings,
    feeds: Mutex<HashMap<String, Weak<Feed>>>,
}

/// A running reader. Dropping the last `Arc<Feed>` drops `_stop`, which ends the reader.
struct Feed {
    tx: broadcast::Sender<Arc<Event>>,
    published: Arc<AtomicU64>,
    position: Arc<std::sync::Mutex<Seq>>,
    _stop: oneshot::Sender<()>,
}

/// A subscriber's end of a database's change feed.
pub struct FeedReceiver {
    feed: Arc<Feed>,
    rx: broadcast::Receiver<Arc<Event>>,
}

/// The subscriber fell more than the channel capacity behind; it has missed events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("subscriber lagged behind the change feed by {0} events")]
pub struct Lagged(pub u64);

impl FeedReceiver {
    /// The next event. `Err(Lagged)` means events were lost for this subscriber: the caller
    /// must resynchronise (replay from its last sequence) or disconnect.
    pub async fn recv(&mut self) -> Result<Arc<Event>, Lagged> {
        match self.rx.recv().await {
            Ok(event) => Ok(event),
            Err(broadcast::error::RecvError::Lagged(n)) => Err(Lagged(n)),
            // The reader holds a sender for as long as this receiver keeps the feed alive.
            Err(broadcast::error::RecvError::Closed) => Err(Lagged(0)),
        }
    }

    /// Ordinal of the newest event published so far. Events with a larger
    /// [`Event::ordinal`] were read from CouchDB after this call.
    pub fn published(&self) -> u64 {
        self.feed.published.load(Ordering::Acquire)
    }

    /// The feed's position: [`FeedReceiver::published`] and the sequence of the last
    /// `_changes` row read, taken together. Events with a larger ordinal are exactly the
    /// changes after that sequence, so a client told this sequence can later resume from
    /// it (`since`) without missing or repeating a change.
    pub fn position(&self) -> (u64, Seq) {
        let seq = self
            .feed
            .position
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (self.published(), seq.clone())
    }
}

impl ChangesHub {
    /// A hub with no running reader.
    pub fn new(settings: HubSettings) -> Self {
        Self {
            inner: Arc::new(HubInner {
                settings,
                feeds: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Subscribe to the changes of `db`, starting its reader if none runs. When this returns
    /// `Ok`, every change committed afterwards will be delivered (barring lag). Fails when the
    /// reader has to start and CouchDB cannot tell the database's current sequence.
    pub async fn subscribe(&self, db: &Database) -> Result<FeedReceiver, CouchError> {
        let mut feeds = self.inner.feeds.lock().await;
        if let Some(feed) = feeds.get(db.name()).and_then(Weak::upgrade) {
            let rx = feed.tx.subscribe();
            return Ok(FeedReceiver { feed, rx });
        }
        feeds.retain(|_, weak| weak.strong_count() > 0);
        // Start at the database's current sequence, read before we answer, so no change
        // committed after `subscribe` returns can be missed (unlike `since=now`, which is
        // evaluated whenever the feed request happens to reach CouchDB).
        let info = db.info().await?;
        let since = info
            .get("update_seq")
            .cloned()
            .filter(|v| !v.is_null())
            .map(Seq::from)
            .ok_or_else(|| CouchError::Decode("database info has no update_seq".into()))?;

        let (tx, rx) = broadcast::channel(self.inner.settings.capacity.max(1));
        let (stop_tx, stop_rx) = oneshot::channel();
        let published = Arc::new(AtomicU64::new(0));
        let position = Arc::new(std::sync::Mutex::new(since));
        let feed = Arc::new(Feed {
            tx: tx.clone(),
            published: published.clone(),
            position: position.clone(),
            _stop: stop_tx,
        });
        let reader = Reader {
            db: db.clone(),
            tx,
            published,
            position,
            settings: self.inner.settings.clone(),
            clock: db.client().metrics().map(|m| m.change_reader(db.clone())),
        };
        reader.read_up_to(&reader.lock_position());
        let span = info_span!("changes_reader", db = %db.name());
        tokio::spawn(reader.run(stop_rx).instrument(span));
        feeds.insert(db.name().to_owned(), Arc::downgrade(&feed));
        Ok(FeedReceiver { feed, rx })
    }

    /// Number of databases whose reader is running.
    pub async fn active_feeds(&self) -> usize {
        let feeds = self.inner.feeds.lock().await;
        feeds.values().filter(|w| w.strong_count() > 0).count()
    }
}

#[derive(Debug, thiserror::Error)]
enum FeedError {
    #[error(transparent)]
    Couch(#[from] CouchError),
    #[error("connection lost: {0}")]
    Io(#[from] io::Error),
    #[error("no data or heartbeat for {0:?}")]
    Stalled(Duration),
    #[error("CouchDB reported an error in the feed: {0}")]
    InFeed(String),
}

struct Reader {
    db: Database,
    tx: broadcast::Sender<Arc<Event>>,
    published: Arc<AtomicU64>,
    /// The sequence of the last row read (where a reconnect resumes), shared with
    /// subscribers; `published` changes only while this is locked.
    position: Arc<std::sync::Mutex<Seq>>,
    settings: HubSettings,
    /// When CouchDB last said something on the feed (the lag metric); the reader counts
    /// as running while it is alive.
    clock: Option<Arc<crate::metrics::ReaderClock>>,
}

impl Reader {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        info!(since = %self.lock_position().as_query(), "change reader started");
        let mut delay = self.settings.backoff_min;
        loop {
            let outcome = tokio::select! {
                _ = &mut stop => break,
                outcome = self.follow() => outcome,
            };
            match outcome {
                Ok(true) => {
                    // The feed ended after delivering rows: reconnect at once.
                    delay = self.settings.backoff_min;
                    continue;
                }
                Ok(false) => debug!("feed ended without rows"),
                Err((progressed, error)) => {
                    if progressed {
                        delay = self.settings.backoff_min;
                    }
                    warn!(error = %error, retry_in = ?delay, "change feed interrupted; resuming from last sequence");
                }
            }
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep(jitter(delay)) => {}
            }
            delay = (delay * 2).min(self.settings.backoff_max);
        }
        info!("change reader stopped (no subscribers)");
    }

    /// Follow one continuous feed request until it ends. `Ok(progressed)` when the server
    /// closed it cleanly; `Err((progressed, _))` on failure. `progressed`: data arrived.
    async fn follow(&mut self) -> Result<bool, (bool, FeedError)> {
        let query = ChangesQuery {
            feed: ChangesFeed::Continuous,
            since: Some(self.lock_position().as_json().clone()),
            include_docs: true,
            heartbeat_ms: Some(self.settings.heartbeat.as_millis() as u64),
            ..ChangesQuery::default()
        };
        let response = self
            .db
            .changes_stream(&query)
            .await
            .map_err(|e| (false, e.into()))?;
        self.heard();
        let body = StreamReader::new(response.bytes_stream().map_err(io::Error::other));
        let mut lines = FramedRead::new(
            body,
            LinesCodec::new_with_max_length(self.settings.max_line_bytes),
        );
        let stall = self.settings.heartbeat * 3;
        let mut progressed = false;
        loop {
            let next = match tokio::time::timeout(stall, lines.next()).await {
                Ok(next) => next,
                Err(_) => return Err((progressed, FeedError::Stalled(stall))),
            };
            let line = match next {
                None => return Ok(progressed),
                Some(Ok(line)) => line,
                Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                    // The codec discards the rest of the line; the next row moves `since` on.
                    warn!(
                        max = self.settings.max_line_bytes,
                        "skipping an oversized _changes row"
                    );
                    continue;
                }
                Some(Err(LinesCodecError::Io(e))) => return Err((progressed, e.into())),
            };
            progressed = true;
            self.heard();
            if line.trim().is_empty() {
                continue; // heartbeat
            }
            self.handle_line(&line).map_err(|e| (progressed, e))?;
        }
    }

    fn handle_line(&mut self, line: &str) -> Result<(), FeedError> {
        let value: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                warn!(error = %e, "skipping an undecodable _changes line");
                return Ok(());
            }
        };
        if let Some(error) = value.get("error") {
            return Err(FeedError::InFeed(error.to_string()));
        }
        if value.get("id").is_none() {
            // `{"last_seq": …}` closes a feed.
            if let Some(last) = value.get("last_seq").filter(|v| !v.is_null()) {
                let last = Seq::from(last.clone());
                self.read_up_to(&last);
                *self.lock_position() = last;
            }
            return Ok(());
        }
        let row: ChangeRow = match serde_json::from_value(value) {
            Ok(row) => row,
            Err(e) => {
                warn!(error = %e, "skipping a malformed _changes row");
                return Ok(());
            }
        };
        // The row's sequence and its ordinal move together (see FeedReceiver::position).
        let mut position = self.lock_position();
        *position = Seq::from(row.seq.clone());
        self.read_up_to(&position);
        if let Some(mut event) = Event::from_row(row) {
            event.ordinal = self.published.load(Ordering::Relaxed) + 1;
            self.published.store(event.ordinal, Ordering::Release);
            // No receiver left is fine: the reader is about to be stopped.
            let _ = self.tx.send(Arc::new(event));
        }
        drop(position);
        Ok(())
    }

    fn heard(&self) {
        if let Some(clock) = &self.clock {
            clock.heard();
        }
    }

    /// Tells the lag metric the reader's position.
    fn read_up_to(&self, seq: &Seq) {
        if let Some(clock) = &self.clock {
            clock.read_up_to(seq);
        }
    }

    fn lock_position(&self) -> std::sync::MutexGuard<'_, Seq> {
        self.position
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `delay` ± 20 %, so readers of many instances do not reconnect in lockstep.
fn jitter(delay: Duration) -> Duration {
    let factor = 0.8 + rand::random::<f64>() * 0.4;
    delay.mul_f64(factor)
}
