//! One WebSocket session: authentication, subscriptions, pushes, limits.
//!
//! The session is a single task selecting over the client's frames, the database's change
//! feed, grant changes, the token's expiry and a ping timer, so its state needs no locks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::StreamExt;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::{BroadcastStream, WatchStream};
use tracing::debug;

use super::event::Event;
use super::hub::{ChangesHub, FeedReceiver, Lagged};
use super::protocol::{
    CLOSE_AUTH, CLOSE_GOING_AWAY, CLOSE_GRANTS_REVOKED, CLOSE_IDLE, CLOSE_RATE_LIMITED,
    CLOSE_SLOW_CONSUMER, CLOSE_TOO_BIG, ClientAction, INVALID_MESSAGE, Status, error_text,
    missing_read,
};
use super::replay::{REPLAY_PAGE_ROWS, ReplayFence, replay_page};
use super::seq::Seq;
use super::settings::RealtimeSettings;
use crate::access::ReadGate;
use crate::couch::CouchError;
use crate::error::{ApiError, DATABASE_UNAVAILABLE};
use crate::state::{AppState, now_unix};

/// The realtime engine shared by every socket of an instance.
pub struct Realtime {
    /// Change readers.
    pub hub: ChangesHub,
    /// Limits and timings.
    pub settings: RealtimeSettings,
}

impl Realtime {
    /// An engine with no running reader.
    pub fn new(settings: RealtimeSettings) -> Self {
        Self {
            hub: ChangesHub::new(settings.hub.clone()),
            settings,
        }
    }
}

/// A verified token, bound to the app the socket acts as.
#[derive(Clone)]
pub struct Authed {
    app_id: String,
    caller: crate::auth::Caller,
    expires_at: i64,
}

/// Why authentication failed, as sent in the close frame or the HTTP answer.
pub fn auth_failure(error: &ApiError) -> &'static str {
    match error {
        ApiError::Unavailable(_) => DATABASE_UNAVAILABLE,
        ApiError::BadRequest(_) => "Missing application identifier.",
        ApiError::Forbidden(_) => "Forbidden.",
        _ => "Authentication failed.",
    }
}

/// Verify `token` for `app_id` (an app token may omit it). The socket must act as an app.
pub async fn check_token(
    state: &AppState,
    token: &str,
    app_id: Option<&str>,
) -> Result<Authed, ApiError> {
    let caller = crate::auth::authenticate(state, token, app_id).await?;
    let app_id = caller
        .app_id
        .clone()
        .ok_or_else(|| ApiError::BadRequest("Missing application identifier.".into()))?;
    Ok(Authed {
        app_id,
        expires_at: caller.expires_at().unwrap_or(i64::MAX),
        caller,
    })
}

/// How a session ends.
enum End {
    /// Send a close frame with this code and reason.
    Close(u16, &'static str),
    /// The connection is gone or unwritable: just drop it.
    Drop,
}

/// Serve an upgraded socket until it ends. `pre` is set when `?token=` authenticated it.
pub async fn serve(mut ws: WebSocket, state: AppState, rt: Arc<Realtime>, pre: Option<Authed>) {
    // Shutdown waits (bounded) for this socket to say goodbye.
    let _held = state.shutdown.hold();
    let _open = state.metrics.open(crate::metrics::Open::WebSocket);
    let authed = match pre {
        Some(authed) => authed,
        None => match first_frame_auth(&mut ws, &state, &rt.settings).await {
            Ok(authed) => authed,
            Err(end) => return finish(ws, end).await,
        },
    };
    let mut session = Session {
        gate: ReadGate::app(&state, &authed.app_id),
        bucket: TokenBucket::new(rt.settings.messages_per_sec, rt.settings.message_burst),
        state,
        rt,
        granted: authed.caller.app().cloned(),
        authed,
        feed: None,
        subs: HashMap::new(),
        last_seen: Instant::now(),
    };
    let end = session.run(&mut ws).await;
    debug!(app = %session.authed.app_id, "realtime socket ended");
    finish(ws, end).await;
}

async fn finish(mut ws: WebSocket, end: End) {
    if let End::Close(code, reason) = end {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), ws.send(Message::Close(Some(frame))))
            .await;
    }
}

async fn first_frame_auth(
    ws: &mut WebSocket,
    state: &AppState,
    settings: &RealtimeSettings,
) -> Result<Authed, End> {
    let deadline = tokio::time::Instant::now() + settings.auth_timeout;
    loop {
        let frame = match tokio::select! {
            _ = state.shutdown.started() => return Err(going_away()),
            frame = tokio::time::timeout_at(deadline, ws.recv()) => frame,
        } {
            Err(_) => return Err(End::Close(CLOSE_AUTH, "Authentication required.")),
            Ok(Some(Err(e))) if is_too_big(&e) => return Err(too_big()),
            Ok(None) | Ok(Some(Err(_))) => return Err(End::Drop),
            Ok(Some(Ok(frame))) => frame,
        };
        match frame {
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(_) => return Err(End::Drop),
            Message::Text(text) => {
                let Some(ClientAction::Auth { token, app_id }) = ClientAction::parse(&text) else {
                    return Err(End::Close(CLOSE_AUTH, "Authentication required."));
                };
                return match check_token(state, &token, app_id.as_deref()).await {
                    Ok(authed) => {
                        send_text(ws, authenticated(), settings.send_timeout).await?;
                        Ok(authed)
                    }
                    Err(e) => Err(End::Close(CLOSE_AUTH, auth_failure(&e))),
                };
            }
            Message::Binary(_) => return Err(End::Close(CLOSE_AUTH, "Authentication required.")),
        }
    }
}

/// Whether a receive error is tungstenite refusing a frame or message over the limit
/// (axum passes it on only as text).
fn is_too_big(error: &axum::Error) -> bool {
    let text = error.to_string();
    text.contains("too long") || text.contains("limit exceeded")
}

fn too_big() -> End {
    End::Close(CLOSE_TOO_BIG, "Message too big.")
}

fn going_away() -> End {
    End::Close(
        CLOSE_GOING_AWAY,
        "Server shutting down; reconnect and resume with since.",
    )
}

fn authenticated() -> String {
    serde_json::json!({ "status": "authenticated" }).to_string()
}

async fn send_text(
    ws: &mut WebSocket,
    text: impl Into<Utf8Bytes>,
    wait: Duration,
) -> Result<(), End> {
    send(ws, Message::Text(text.into()), wait).await
}

async fn send(ws: &mut WebSocket, message: Message, wait: Duration) -> Result<(), End> {
    match tokio::time::timeout(wait, ws.send(message)).await {
        Ok(Ok(())) => Ok(()),
        // Unwritable or not draining its socket: a slow consumer we cannot even tell.
        _ => Err(End::Drop),
    }
}

struct Subscription {
    /// Live events at or below this ordinal predate the subscription.
    start: u64,
    /// Documents the replay delivered (present when subscribed with `since`).
    fence: Option<ReplayFence>,
}

struct Session {
    state: AppState,
    rt: Arc<Realtime>,
    authed: Authed,
    /// The app's registration the socket has been served under: at authentication, then
    /// each later one that took no grant away. Losing a grant closes the socket (4003).
    granted: Option<Arc<crate::apps::AppRecord>>,
    /// Checks every pushed or replayed change (the app never changes on this socket).
    gate: ReadGate,
    feed: Option<FeedReceiver>,
    subs: HashMap<String, Subscription>,
    bucket: TokenBucket,
    last_seen: Instant,
}

async fn next_event(feed: &mut Option<FeedReceiver>) -> Result<Arc<Event>, Lagged> {
    match feed {
        Some(feed) => feed.recv().await,
        None => std::future::pending().await,
    }
}

impl Session {
    fn send_timeout(&self) -> Duration {
        self.rt.settings.send_timeout
    }

    async fn run(&mut self, ws: &mut WebSocket) -> End {
        match self.run_inner(ws).await {
            Ok(()) => End::Drop,
            Err(end) => end,
        }
    }

    async fn run_inner(&mut self, ws: &mut WebSocket) -> Result<(), End> {
        let settings = self.rt.settings.clone();
        // The futures of the rare wake-ups live across iterations: recreating them for every
        // push would register and unregister each socket with the shutdown signal, the
        // revocation watch and the grants channel (shared locks), times every socket, for
        // every push. Dropping a stream's `next()` keeps its registration.
        let mut grants = BroadcastStream::new(self.state.grants.subscribe());
        let mut revocations = WatchStream::from_changes(self.state.tokens.revocations());
        let shutdown = self.state.shutdown.signal();
        let shutdown = shutdown.cancelled();
        tokio::pin!(shutdown);
        let start = tokio::time::Instant::now();
        let mut ping =
            tokio::time::interval_at(start + settings.ping_interval, settings.ping_interval);
        let mut recheck =
            tokio::time::interval_at(start + settings.token_recheck, settings.token_recheck);
        // One timer for the token's expiry, moved only when a re-authentication changes it
        // (not a new timer per event: each would be inserted into and removed from the
        // runtime's timer wheel, times every socket, for every push).
        // A grant revoked between authentication and now (the channel was not heard yet).
        self.check_grants_kept()?;
        let mut expiring = self.authed.expires_at;
        let expiry = tokio::time::sleep_until(expiry_deadline(expiring));
        tokio::pin!(expiry);
        loop {
            if self.authed.expires_at != expiring {
                expiring = self.authed.expires_at;
                expiry.as_mut().reset(expiry_deadline(expiring));
            }
            tokio::select! {
                biased;
                _ = &mut shutdown => return Err(going_away()),
                // Logout, refresh-token reuse: close at once, not at the next recheck.
                // (The senders live as long as the state this session holds.)
                Some(_) = revocations.next() => self.check_credential()?,
                Some(change) = grants.next() => match change {
                    Ok(change) if change.app_id != self.authed.app_id => {}
                    Ok(_) | Err(BroadcastStreamRecvError::Lagged(_)) => {
                        self.check_credential()?;
                        self.recheck_grants(ws).await?;
                        self.check_grants_kept()?
                    }
                },
                _ = &mut expiry => return Err(End::Close(CLOSE_AUTH, "Token expired.")),
                _ = recheck.tick() => self.check_credential()?,
                frame = ws.recv() => match frame {
                    None => return Ok(()),
                    Some(Err(e)) if is_too_big(&e) => return Err(too_big()),
                    Some(Err(_)) => return Ok(()),
                    Some(Ok(frame)) => self.on_frame(ws, frame).await?,
                },
                event = next_event(&mut self.feed) => match event {
                    Ok(event) => self.deliver(ws, &event).await?,
                    Err(Lagged(_)) => return Err(End::Close(
                        CLOSE_SLOW_CONSUMER,
                        "Slow consumer: events were dropped; reconnect and resume with since.",
                    )),
                },
                _ = ping.tick() => {
                    if self.last_seen.elapsed() > settings.idle_timeout {
                        return Err(End::Close(CLOSE_IDLE, "Idle timeout."));
                    }
                    send(ws, Message::Ping(Default::default()), settings.send_timeout).await?;
                }
            }
        }
    }

    /// Close with 4001 when the credential was revoked (its family logged out or reused,
    /// its app registration deleted or replaced) or expired, or its app is gone.
    fn check_credential(&self) -> Result<(), End> {
        match self.authed.caller.refreshed(&self.state) {
            Ok(_) if self.state.grants.get(&self.authed.app_id).is_none() => {
                Err(End::Close(CLOSE_AUTH, "Application no longer registered."))
            }
            Ok(_) => Ok(()),
            Err(_) => Err(End::Close(CLOSE_AUTH, "Token expired or revoked.")),
        }
    }

    /// Close with 4003 when the app lost a grant it held while this socket was open (the
    /// owner revoked it): the app's open streams end as with any revocation, and what it
    /// does next is checked against the grants left. Granting more keeps the socket.
    fn check_grants_kept(&mut self) -> Result<(), End> {
        let current = self.state.grants.get(&self.authed.app_id);
        if crate::auth::grants_revoked(self.granted.as_deref(), current.as_deref()) {
            return Err(End::Close(
                CLOSE_GRANTS_REVOKED,
                "Grants revoked; reconnect.",
            ));
        }
        self.granted = current;
        Ok(())
    }

    async fn on_frame(&mut self, ws: &mut WebSocket, frame: Message) -> Result<(), End> {
        self.last_seen = Instant::now();
        let text = match frame {
            Message::Text(text) => text,
            Message::Binary(_) => {
                self.take_rate_token()?;
                return send_text(ws, error_text(INVALID_MESSAGE), self.send_timeout()).await;
            }
            Message::Ping(_) | Message::Pong(_) => return Ok(()),
            Message::Close(_) => return Err(End::Drop),
        };
        self.take_rate_token()?;
        let timeout = self.send_timeout();
        match ClientAction::parse(&text) {
            None => send_text(ws, error_text(INVALID_MESSAGE), timeout).await,
            Some(ClientAction::Ping) => send_text(ws, r#"{"type":"pong"}"#, timeout).await,
            Some(ClientAction::Auth { token, app_id }) => self.reauth(ws, &token, app_id).await,
            Some(ClientAction::Unsubscribe { collection }) => {
                let status = if self.subs.remove(&collection).is_some() {
                    "unsubscribed"
                } else {
                    "not_subscribed"
                };
                self.release_feed_if_unused();
                send_text(ws, Status::of(status, &collection).to_text(), timeout).await
            }
            Some(ClientAction::Subscribe { collection, since }) => {
                self.subscribe(ws, collection, since).await
            }
        }
    }

    fn take_rate_token(&mut self) -> Result<(), End> {
        if self.bucket.take() {
            Ok(())
        } else {
            Err(End::Close(CLOSE_RATE_LIMITED, "Rate limit exceeded."))
        }
    }

    async fn reauth(
        &mut self,
        ws: &mut WebSocket,
        token: &str,
        app_id: Option<String>,
    ) -> Result<(), End> {
        let timeout = self.send_timeout();
        let app_id = app_id.unwrap_or_else(|| self.authed.app_id.clone());
        match check_token(&self.state, token, Some(&app_id)).await {
            Ok(authed) if authed.app_id == self.authed.app_id => {
                self.granted = authed.caller.app().cloned();
                self.authed = authed;
                send_text(ws, authenticated(), timeout).await
            }
            Ok(_) => {
                send_text(
                    ws,
                    error_text("Re-authentication must keep the same application."),
                    timeout,
                )
                .await
            }
            Err(e) => send_text(ws, error_text(auth_failure(&e)), timeout).await,
        }
    }

    async fn subscribe(
        &mut self,
        ws: &mut WebSocket,
        collection: String,
        since: Option<Seq>,
    ) -> Result<(), End> {
        let timeout = self.send_timeout();
        if self.subs.contains_key(&collection) {
            return send_text(ws, Status::of("subscribed", &collection).to_text(), timeout).await;
        }
        if !self
            .state
            .grants
            .allows(&self.authed.app_id, &format!("read:{collection}"))
        {
            let reason = missing_read(&collection);
            return send_text(
                ws,
                Status::because("denied", &collection, &reason).to_text(),
                timeout,
            )
            .await;
        }
        if self.subs.len() >= self.rt.settings.max_subscriptions {
            let reason = format!(
                "Too many subscriptions on this socket (at most {}).",
                self.rt.settings.max_subscriptions
            );
            return send_text(
                ws,
                Status::because("denied", &collection, &reason).to_text(),
                timeout,
            )
            .await;
        }
        let db = match self.state.data_db().await {
            Ok(db) => db,
            Err(_) => {
                return self
                    .subscribe_error(ws, &collection, DATABASE_UNAVAILABLE)
                    .await;
            }
        };
        if self.feed.is_none() {
            match self.rt.hub.subscribe(&db).await {
                Ok(feed) => self.feed = Some(feed),
                Err(_) => {
                    return self
                        .subscribe_error(ws, &collection, DATABASE_UNAVAILABLE)
                        .await;
                }
            }
        }
        let (start, position) = match self.feed.as_ref() {
            Some(feed) => feed.position(),
            None => (0, Seq::now()),
        };
        let since = match since {
            // From now: tell the client where "now" is, so it can resume from there.
            Some(since) if since.is_now() => {
                self.subs
                    .insert(collection.clone(), Subscription { start, fence: None });
                let answer = Status::subscribed_at(&collection, &position).to_text();
                return send_text(ws, answer, timeout).await;
            }
            Some(since) => since,
            None => {
                self.subs
                    .insert(collection.clone(), Subscription { start, fence: None });
                return send_text(ws, Status::of("subscribed", &collection).to_text(), timeout)
                    .await;
            }
        };

        // Replay: the first page decides whether `since` is acceptable.
        let mut page = match replay_page(&db, &since, REPLAY_PAGE_ROWS).await {
            Ok(page) => page,
            Err(CouchError::BadRequest { .. }) => {
                self.release_feed_if_unused();
                return self
                    .subscribe_error(ws, &collection, "Invalid 'since' sequence.")
                    .await;
            }
            Err(_) => {
                self.release_feed_if_unused();
                return self
                    .subscribe_error(ws, &collection, DATABASE_UNAVAILABLE)
                    .await;
            }
        };
        send_text(ws, Status::of("subscribed", &collection).to_text(), timeout).await?;
        let mut fence = ReplayFence::default();
        loop {
            for event in page.events.iter().filter(|e| {
                e.collection == collection && self.gate.admits_change(&e.id, &e.collection)
            }) {
                fence.record(event);
                send(ws, Message::Text(event.frame.clone()), timeout).await?;
            }
            if page.complete {
                break;
            }
            page = match replay_page(&db, &page.next, REPLAY_PAGE_ROWS).await {
                Ok(page) => page,
                Err(_) => {
                    // The client saw `subscribed` and part of the replay: ask it to resume.
                    return Err(End::Close(
                        CLOSE_SLOW_CONSUMER,
                        "Replay interrupted; reconnect and resume with since.",
                    ));
                }
            };
        }
        self.subs.insert(
            collection,
            Subscription {
                start,
                fence: Some(fence),
            },
        );
        Ok(())
    }

    async fn subscribe_error(
        &mut self,
        ws: &mut WebSocket,
        collection: &str,
        reason: &str,
    ) -> Result<(), End> {
        self.release_feed_if_unused();
        let timeout = self.send_timeout();
        send_text(
            ws,
            Status::because("error", collection, reason).to_text(),
            timeout,
        )
        .await
    }

    fn release_feed_if_unused(&mut self) {
        if self.subs.is_empty() {
            // Lets the hub stop the database's reader when no socket listens.
            self.feed = None;
        }
    }

    async fn deliver(&mut self, ws: &mut WebSocket, event: &Event) -> Result<(), End> {
        let Some(sub) = self.subs.get_mut(&event.collection) else {
            return Ok(());
        };
        if event.ordinal <= sub.start {
            return Ok(());
        }
        if let Some(fence) = &mut sub.fence {
            if !fence.admits(event) {
                return Ok(());
            }
            if fence.is_empty() {
                sub.fence = None;
            }
        }
        if !self.gate.admits_change(&event.id, &event.collection) {
            return Ok(());
        }
        let timeout = self.send_timeout();
        send(ws, Message::Text(event.frame.clone()), timeout).await
    }

    /// End every subscription whose `read:` grant is gone.
    async fn recheck_grants(&mut self, ws: &mut WebSocket) -> Result<(), End> {
        let app = self.authed.app_id.clone();
        let mut revoked: Vec<String> = self
            .subs
            .keys()
            .filter(|c| !self.state.grants.allows(&app, &format!("read:{c}")))
            .cloned()
            .collect();
        revoked.sort();
        for collection in &revoked {
            self.subs.remove(collection);
        }
        self.release_feed_if_unused();
        let timeout = self.send_timeout();
        for collection in &revoked {
            let reason = missing_read(collection);
            send_text(
                ws,
                Status::because("revoked", collection, &reason).to_text(),
                timeout,
            )
            .await?;
        }
        Ok(())
    }
}

/// When a token expiring at `expires_at` (Unix seconds) runs out, on the runtime's clock;
/// about 30 years away for one that never does.
fn expiry_deadline(expires_at: i64) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(expires_in(expires_at))
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86_400))
}

fn expires_in(expires_at: i64) -> Duration {
    Duration::from_secs(expires_at.saturating_sub(now_unix()).max(0) as u64)
}

/// Client message rate limit: `rate` per second sustained, `burst` at once.
struct TokenBucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(rate).max(1));
        Self {
            tokens: burst,
            rate: f64::from(rate.max(1)),
            burst,
            last: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_limits() {
        let mut bucket = TokenBucket::new(5, 10);
        assert!((0..10).all(|_| bucket.take()));
        assert!(!bucket.take());
    }
}
