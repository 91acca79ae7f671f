//! Realtime: a WebSocket on `/ws` authenticated by its first frame, subscriptions, and
//! a [`Watch`] that reconnects and resumes from the last `seq` it saw, so nothing is
//! missed across a restart of the instance or of CouchDB.
//!
//! Failures are of two kinds. Transient ones (the instance unreachable, the connection
//! lost, the database briefly unavailable, a close by the server) make a [`Watch`]
//! reconnect with backoff. Refusals (the token or session refused, `read:` not granted
//! or revoked, a `since` the instance does not understand) end it at once: retrying
//! cannot help.

use std::collections::VecDeque;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use crate::client::Client;
use crate::error::{ClientError, Result};

/// How long to wait for the TCP/WebSocket handshake, or the server's answer to `auth` or
/// `subscribe`.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection that carries no frame at all (the server pings every 25 s by default)
/// for this long is taken for dead and replaced.
pub const LIVENESS_TIMEOUT: Duration = Duration::from_secs(75);

/// First delay between reconnection attempts; doubled after each failure.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Longest delay between reconnection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The reason the data plane gives when CouchDB is down (a transient failure).
const DATABASE_UNAVAILABLE: &str = "Database service is not available.";

/// An event pushed for a subscribed collection.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A document was created or updated.
    Update {
        /// Collection.
        collection: String,
        /// The document.
        data: Value,
        /// Opaque change sequence.
        seq: Value,
    },
    /// A document was deleted.
    Delete {
        /// Collection.
        collection: String,
        /// Full document id.
        id: String,
        /// The deletion's revision.
        rev: String,
        /// Opaque change sequence.
        seq: Value,
    },
}

impl Event {
    /// The event's opaque sequence.
    pub fn seq(&self) -> &Value {
        match self {
            Event::Update { seq, .. } | Event::Delete { seq, .. } => seq,
        }
    }

    /// The document id concerned.
    pub fn id(&self) -> Option<&str> {
        match self {
            Event::Update { data, .. } => data["_id"].as_str(),
            Event::Delete { id, .. } => Some(id),
        }
    }

    /// The event as the JSON frame the server sent.
    pub fn to_json(&self) -> Value {
        match self {
            Event::Update {
                collection,
                data,
                seq,
            } => json!({"type": "update", "collection": collection, "data": data, "seq": seq}),
            Event::Delete {
                collection,
                id,
                rev,
                seq,
            } => {
                json!({"type": "delete", "collection": collection, "id": id, "rev": rev, "seq": seq})
            }
        }
    }

    fn parse(frame: &Value) -> Option<Self> {
        let collection = frame["collection"].as_str()?.to_string();
        let seq = frame.get("seq").cloned().unwrap_or(Value::Null);
        match frame["type"].as_str()? {
            "update" => Some(Event::Update {
                collection,
                data: frame.get("data")?.clone(),
                seq,
            }),
            "delete" => Some(Event::Delete {
                collection,
                id: frame["id"].as_str()?.to_string(),
                rev: frame["rev"].as_str().unwrap_or_default().to_string(),
                seq,
            }),
            _ => None,
        }
    }
}

/// A failure, sorted by whether trying again can help.
#[derive(Debug)]
enum Failure {
    /// Worth retrying (network, restart, database briefly down).
    Transient(ClientError),
    /// Retrying cannot help (refused credentials or permission, bad input).
    Refused(ClientError),
}

impl Failure {
    fn transient(message: impl Into<String>) -> Self {
        Failure::Transient(ClientError::Realtime(message.into()))
    }

    fn refused(message: impl Into<String>) -> Self {
        Failure::Refused(ClientError::Realtime(message.into()))
    }

    /// Sort a client-library error (token refresh, …).
    fn of(error: ClientError) -> Self {
        match &error {
            ClientError::Unreachable { .. } | ClientError::InvalidResponse { .. } => {
                Failure::Transient(error)
            }
            ClientError::Api { status, .. } if *status >= 500 || *status == 429 => {
                Failure::Transient(error)
            }
            _ => Failure::Refused(error),
        }
    }
}

impl From<Failure> for ClientError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Transient(e) | Failure::Refused(e) => e,
        }
    }
}

/// What the connection delivered next.
enum Incoming {
    /// A JSON text frame.
    Frame(Value),
    /// The server closed the socket (with its close code and reason, if any).
    Closed(Option<(u16, String)>),
}

/// One authenticated WebSocket.
pub struct Socket {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Socket {
    /// Connect to `client`'s instance and authenticate with a first frame
    /// `{"action":"auth","token","appId"}`; waits for `{"status":"authenticated"}`.
    pub async fn connect(client: &Client) -> Result<Self> {
        Ok(Self::open(client).await?)
    }

    async fn open(client: &Client) -> Result<Self, Failure> {
        let url = client.instance().websocket_url();
        let handshake = tokio::time::timeout(ANSWER_TIMEOUT, connect_async(url.as_str())).await;
        let ws = match handshake {
            Err(_) => {
                return Err(Failure::transient(format!(
                    "cannot connect to {url}: no answer within {ANSWER_TIMEOUT:?}"
                )));
            }
            Ok(Ok((ws, _))) => ws,
            Ok(Err(tungstenite::Error::Http(response))) => {
                let status = response.status();
                let message = format!("cannot connect to {url}: the instance answered {status}");
                return Err(if status.is_server_error() || status.as_u16() == 429 {
                    Failure::transient(message)
                } else {
                    Failure::refused(message)
                });
            }
            Ok(Err(e)) => return Err(Failure::transient(format!("cannot connect to {url}: {e}"))),
        };
        let mut socket = Self { ws };
        let token = client.access_token().await.map_err(Failure::of)?;
        let mut auth = json!({ "action": "auth", "token": token });
        if let Some(app) = client.app() {
            auth["appId"] = json!(app);
        }
        socket.send(&auth).await.map_err(Failure::Transient)?;
        match socket.answer().await? {
            answer if answer["status"] == "authenticated" => Ok(socket),
            answer => Err(Failure::refused(format!(
                "authentication refused: {answer}"
            ))),
        }
    }

    /// Send a JSON frame.
    pub async fn send(&mut self, frame: &Value) -> Result<()> {
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .map_err(|e| ClientError::Realtime(format!("send failed: {e}")))
    }

    /// `subscribe` to `collection`, replaying changes after `since` when given. Events
    /// that arrive before the confirmation are returned so none is lost.
    pub async fn subscribe(
        &mut self,
        collection: &str,
        since: Option<&Value>,
    ) -> Result<Vec<Event>> {
        Ok(self.subscribe_from(collection, since).await?.0)
    }

    /// Like [`Socket::subscribe`], also returning the position the instance reported in
    /// its confirmation (`"seq"`), when it did.
    async fn subscribe_from(
        &mut self,
        collection: &str,
        since: Option<&Value>,
    ) -> Result<(Vec<Event>, Option<Value>), Failure> {
        let mut frame = json!({ "action": "subscribe", "collection": collection });
        if let Some(since) = since {
            frame["since"] = since.clone();
        }
        self.send(&frame).await.map_err(Failure::Transient)?;
        let mut early = Vec::new();
        loop {
            let answer = self.answer().await?;
            if let Some(event) = Event::parse(&answer) {
                early.push(event);
                continue;
            }
            let reason = answer["reason"].as_str().unwrap_or("no reason given");
            return match answer["status"].as_str() {
                Some("subscribed") => Ok((early, answer.get("seq").cloned())),
                Some("denied") => Err(Failure::refused(format!(
                    "subscription to {collection} denied: {reason}"
                ))),
                Some("error") if reason == DATABASE_UNAVAILABLE => Err(Failure::transient(
                    format!("subscription to {collection} failed: {reason}"),
                )),
                Some("error") => Err(Failure::refused(format!(
                    "subscription to {collection} failed: {reason}"
                ))),
                _ => Err(Failure::refused(format!(
                    "unexpected answer to subscribe: {answer}"
                ))),
            };
        }
    }

    /// The next JSON frame of any kind (`None` when the server closed the socket).
    pub async fn next_frame(&mut self) -> Result<Option<Value>> {
        match self.incoming(None).await? {
            Incoming::Frame(frame) => Ok(Some(frame)),
            Incoming::Closed(None) => Ok(None),
            Incoming::Closed(Some((code, reason))) => Err(ClientError::Realtime(format!(
                "closed by server ({code}: {reason})"
            ))),
        }
    }

    /// The next text frame or the close, waiting at most `idle` between any two frames
    /// (pings included) when given. Connection failures are errors.
    async fn incoming(&mut self, idle: Option<Duration>) -> Result<Incoming> {
        loop {
            let message = match idle {
                None => self.ws.next().await,
                Some(idle) => match tokio::time::timeout(idle, self.ws.next()).await {
                    Ok(message) => message,
                    Err(_) => {
                        return Err(ClientError::Realtime(format!(
                            "no frame from the server for {idle:?}; the connection looks dead"
                        )));
                    }
                },
            };
            let Some(message) = message else {
                return Ok(Incoming::Closed(None));
            };
            let message =
                message.map_err(|e| ClientError::Realtime(format!("connection lost: {e}")))?;
            match message {
                Message::Text(text) => {
                    return serde_json::from_str(text.as_str())
                        .map(Incoming::Frame)
                        .map_err(|e| {
                            ClientError::Realtime(format!("server sent non-JSON text: {e}"))
                        });
                }
                Message::Close(frame) => {
                    return Ok(Incoming::Closed(
                        frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                    ));
                }
                // tungstenite answers pings itself; binary frames are not part of the protocol.
                _ => continue,
            }
        }
    }

    /// The next pushed event, skipping status frames (a `revoked` status ends with an error).
    pub async fn next_event(&mut self) -> Result<Option<Event>> {
        while let Some(frame) = self.next_frame().await? {
            if let Some(event) = Event::parse(&frame) {
                return Ok(Some(event));
            }
            if frame["status"] == "revoked" {
                return Err(ClientError::Realtime(format!(
                    "subscription revoked: {frame}"
                )));
            }
        }
        Ok(None)
    }

    /// The server's answer to `auth` or `subscribe`. A close instead of an answer is a
    /// refusal, except when the instance says its database is unavailable.
    async fn answer(&mut self) -> Result<Value, Failure> {
        match tokio::time::timeout(ANSWER_TIMEOUT, self.incoming(None)).await {
            Ok(Ok(Incoming::Frame(frame))) => Ok(frame),
            Ok(Ok(Incoming::Closed(None))) => Err(Failure::transient(
                "the server closed the connection before answering",
            )),
            Ok(Ok(Incoming::Closed(Some((code, reason))))) => {
                let message = format!("closed by server ({code}: {reason})");
                // 4001 is the realtime endpoint's authentication failure.
                if code == 4001 && reason != DATABASE_UNAVAILABLE {
                    Err(Failure::refused(format!(
                        "authentication refused: {message}"
                    )))
                } else {
                    Err(Failure::transient(message))
                }
            }
            Ok(Err(e)) => Err(Failure::Transient(e)),
            Err(_) => Err(Failure::transient(format!(
                "no answer from the server within {ANSWER_TIMEOUT:?}"
            ))),
        }
    }

    /// Close politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// What [`Watch::next_signal`] reports: events, and the life of the connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// Subscribed: the first time (`reconnects == 0`) or again after a reconnection,
    /// resuming after `since` (the last delivered sequence, or the position the instance
    /// reported at the first subscription).
    Subscribed {
        /// Reconnections so far.
        reconnects: u32,
        /// Where the subscription resumed from (`None`: from now).
        since: Option<Value>,
    },
    /// The connection could not be made or was lost; the watch keeps trying for
    /// `retry_for` before giving up. Reported once per outage.
    Disconnected {
        /// Why.
        reason: String,
        /// How long it keeps trying.
        retry_for: Duration,
    },
    /// An event.
    Event(Event),
}

/// A subscription to one collection that survives disconnects: on any transient failure
/// it reconnects (with backoff, fresh tokens) and resubscribes with `since` = the last
/// sequence it delivered, so every change is delivered once and in order. Refusals end
/// it with an error.
pub struct Watch {
    client: Client,
    collection: String,
    last_seq: Option<Value>,
    socket: Option<Socket>,
    pending: VecDeque<Event>,
    /// True once subscribed at least once.
    subscribed_once: bool,
    /// When the current outage began (`None` while connected).
    down_since: Option<Instant>,
    /// Failed attempts in the current outage.
    failed_attempts: u32,
    /// Whether the current outage was reported as [`Signal::Disconnected`].
    outage_reported: bool,
    backoff: Duration,
    /// Reconnections so far.
    pub reconnects: u32,
}

impl Watch {
    /// A watch of `collection` from `since` when given (else from the moment it
    /// subscribes), not yet connected: [`Watch::next_signal`] connects.
    pub fn new(client: &Client, collection: &str, since: Option<Value>) -> Self {
        Self {
            client: client.clone(),
            collection: collection.to_string(),
            last_seq: since,
            socket: None,
            pending: VecDeque::new(),
            subscribed_once: false,
            down_since: None,
            failed_attempts: 0,
            outage_reported: false,
            backoff: BACKOFF_MIN,
            reconnects: 0,
        }
    }

    /// Subscribe to `collection` now, from `since` when given (else from now); fails at
    /// once when the first connection fails.
    pub async fn start(client: &Client, collection: &str, since: Option<Value>) -> Result<Self> {
        let mut watch = Self::new(client, collection, since);
        watch.connect().await?;
        watch.subscribed_once = true;
        Ok(watch)
    }

    /// The sequence of the last delivered event (or the position it started from).
    pub fn last_seq(&self) -> Option<&Value> {
        self.last_seq.as_ref()
    }

    async fn connect(&mut self) -> Result<(), Failure> {
        let mut socket = Socket::open(&self.client).await?;
        // Without a sequence of our own, subscribe from "now": the instance answers with
        // the position its live events follow, so that a reconnection before the first
        // event still replays what changed meanwhile.
        let since = self.last_seq.clone().unwrap_or_else(|| json!("now"));
        let (early, position) = socket
            .subscribe_from(&self.collection, Some(&since))
            .await?;
        if self.last_seq.is_none() {
            self.last_seq = position.filter(|p| !p.is_null());
        }
        self.pending.extend(early);
        self.socket = Some(socket);
        Ok(())
    }

    /// The next event, reconnecting after transient failures; gives up when no
    /// connection could be made for `reconnect_for`. Waits as long as it takes while
    /// connected.
    pub async fn next(&mut self, reconnect_for: Duration) -> Result<Event> {
        loop {
            if let Signal::Event(event) = self.next_signal(reconnect_for).await? {
                return Ok(event);
            }
        }
    }

    /// The next event or change of connection state. Fails when the instance refuses
    /// (credentials, permission, `since`) or stays unreachable for `reconnect_for`.
    pub async fn next_signal(&mut self, reconnect_for: Duration) -> Result<Signal> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.last_seq = Some(event.seq().clone());
                return Ok(Signal::Event(event));
            }
            let Some(socket) = self.socket.as_mut() else {
                if let Some(signal) = self.try_connect(reconnect_for).await? {
                    return Ok(signal);
                }
                continue;
            };
            match read_event(socket).await {
                Ok(Some(event)) => {
                    self.last_seq = Some(event.seq().clone());
                    return Ok(Signal::Event(event));
                }
                Ok(None) => {}
                Err(Failure::Refused(e)) => {
                    self.socket = None;
                    return Err(e);
                }
                Err(Failure::Transient(e)) => {
                    self.socket = None;
                    self.down_since = Some(Instant::now());
                    self.failed_attempts = 0;
                    self.outage_reported = true;
                    return Ok(Signal::Disconnected {
                        reason: e.to_string(),
                        retry_for: reconnect_for,
                    });
                }
            }
        }
    }

    /// One connection attempt (after the backoff delay when earlier ones failed).
    /// `Ok(Some)` is a signal to report; `Ok(None)` means try again.
    async fn try_connect(&mut self, reconnect_for: Duration) -> Result<Option<Signal>> {
        let down_since = *self.down_since.get_or_insert_with(Instant::now);
        if self.failed_attempts > 0 {
            let deadline = down_since + reconnect_for;
            let now = Instant::now();
            if now >= deadline {
                return Err(ClientError::Realtime(format!(
                    "gave up on {} after {reconnect_for:?} without a connection",
                    self.client.instance().url()
                )));
            }
            tokio::time::sleep(self.backoff.min(deadline - now)).await;
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        }
        match self.connect().await {
            Ok(()) => {
                if self.subscribed_once {
                    self.reconnects += 1;
                }
                self.subscribed_once = true;
                self.down_since = None;
                self.failed_attempts = 0;
                self.outage_reported = false;
                self.backoff = BACKOFF_MIN;
                Ok(Some(Signal::Subscribed {
                    reconnects: self.reconnects,
                    since: self.last_seq.clone(),
                }))
            }
            Err(Failure::Refused(e)) => Err(e),
            Err(Failure::Transient(e)) => {
                self.failed_attempts += 1;
                if down_since.elapsed() >= reconnect_for {
                    return Err(ClientError::Realtime(format!(
                        "gave up after {reconnect_for:?} without a connection: {e}"
                    )));
                }
                if self.outage_reported {
                    return Ok(None);
                }
                self.outage_reported = true;
                Ok(Some(Signal::Disconnected {
                    reason: e.to_string(),
                    retry_for: reconnect_for,
                }))
            }
        }
    }
}

/// The next pushed event of a live socket. `Ok(None)`: a status frame to skip.
async fn read_event(socket: &mut Socket) -> Result<Option<Event>, Failure> {
    let frame = match socket.incoming(Some(LIVENESS_TIMEOUT)).await {
        Ok(Incoming::Frame(frame)) => frame,
        Ok(Incoming::Closed(None)) => {
            return Err(Failure::transient("the server closed the connection"));
        }
        Ok(Incoming::Closed(Some((code, reason)))) => {
            return Err(Failure::transient(format!(
                "closed by server ({code}: {reason})"
            )));
        }
        Err(e) => return Err(Failure::Transient(e)),
    };
    if let Some(event) = Event::parse(&frame) {
        return Ok(Some(event));
    }
    if frame["status"] == "revoked" {
        return Err(Failure::refused(format!(
            "subscription revoked: {}",
            frame["reason"].as_str().unwrap_or("no reason given")
        )));
    }
    Ok(None)
}
