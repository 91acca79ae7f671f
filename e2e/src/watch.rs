//! Realtime: a WebSocket on `/ws` authenticated by its first frame, subscriptions, and
//! a [`Watch`] that reconnects and resumes from the last `seq` it saw, so nothing is
//! missed across a restart of the instance or of CouchDB.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use crate::client::Client;
use crate::error::{ClientError, Result};

/// How long to wait for the server's answer to `auth` or `subscribe`.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

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

/// One authenticated WebSocket.
pub struct Socket {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Socket {
    /// Connect to `client`'s instance and authenticate with a first frame
    /// `{"action":"auth","token","appId"}`; waits for `{"status":"authenticated"}`.
    pub async fn connect(client: &Client) -> Result<Self> {
        let url = client.instance().websocket_url();
        let (ws, _) = connect_async(url.as_str())
            .await
            .map_err(|e| ClientError::Realtime(format!("cannot connect to {url}: {e}")))?;
        let mut socket = Self { ws };
        let token = client.access_token().await?;
        let mut auth = json!({ "action": "auth", "token": token });
        if let Some(app) = client.app() {
            auth["appId"] = json!(app);
        }
        socket.send(&auth).await?;
        let answer = socket.answer().await?;
        if answer["status"] == "authenticated" {
            Ok(socket)
        } else {
            Err(ClientError::Realtime(format!(
                "authentication refused: {answer}"
            )))
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
        let mut frame = json!({ "action": "subscribe", "collection": collection });
        if let Some(since) = since {
            frame["since"] = since.clone();
        }
        self.send(&frame).await?;
        let mut early = Vec::new();
        loop {
            let answer = self.answer().await?;
            if let Some(event) = Event::parse(&answer) {
                early.push(event);
                continue;
            }
            return match answer["status"].as_str() {
                Some("subscribed") => Ok(early),
                Some("denied") => Err(ClientError::Realtime(format!(
                    "subscription denied: {}",
                    answer["reason"].as_str().unwrap_or("no reason given")
                ))),
                _ => Err(ClientError::Realtime(format!(
                    "unexpected answer to subscribe: {answer}"
                ))),
            };
        }
    }

    /// The next JSON frame of any kind (`None` when the server closed the socket).
    pub async fn next_frame(&mut self) -> Result<Option<Value>> {
        while let Some(message) = self.ws.next().await {
            let message =
                message.map_err(|e| ClientError::Realtime(format!("connection lost: {e}")))?;
            match message {
                Message::Text(text) => {
                    return serde_json::from_str(text.as_str()).map(Some).map_err(|e| {
                        ClientError::Realtime(format!("server sent non-JSON text: {e}"))
                    });
                }
                Message::Close(frame) => {
                    return Err(ClientError::Realtime(match frame {
                        Some(f) => {
                            format!("closed by server ({}: {})", u16::from(f.code), f.reason)
                        }
                        None => "closed by server".into(),
                    }));
                }
                // tungstenite answers pings itself; binary frames are not part of the protocol.
                _ => continue,
            }
        }
        Ok(None)
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

    async fn answer(&mut self) -> Result<Value> {
        match tokio::time::timeout(ANSWER_TIMEOUT, self.next_frame()).await {
            Ok(Ok(Some(frame))) => Ok(frame),
            Ok(Ok(None)) => Err(ClientError::Realtime("closed before answering".into())),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ClientError::Realtime("no answer from the server".into())),
        }
    }

    /// Close politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// A subscription to one collection that survives disconnects: on any connection error
/// it reconnects (with backoff, fresh tokens) and resubscribes with `since` = the last
/// sequence it delivered.
pub struct Watch {
    client: Client,
    collection: String,
    last_seq: Option<Value>,
    socket: Option<Socket>,
    pending: std::collections::VecDeque<Event>,
    /// Reconnections so far.
    pub reconnects: u32,
}

impl Watch {
    /// Subscribe to `collection`, from `since` when given (else from now).
    pub async fn start(client: &Client, collection: &str, since: Option<Value>) -> Result<Self> {
        let mut watch = Self {
            client: client.clone(),
            collection: collection.to_string(),
            last_seq: since,
            socket: None,
            pending: Default::default(),
            reconnects: 0,
        };
        watch.connect().await?;
        Ok(watch)
    }

    /// The sequence of the last delivered event.
    pub fn last_seq(&self) -> Option<&Value> {
        self.last_seq.as_ref()
    }

    async fn connect(&mut self) -> Result<()> {
        let mut socket = Socket::connect(&self.client).await?;
        let early = socket
            .subscribe(&self.collection, self.last_seq.as_ref())
            .await?;
        self.pending.extend(early);
        self.socket = Some(socket);
        Ok(())
    }

    /// The next event, reconnecting for as long as `give_up_after` allows.
    pub async fn next(&mut self, give_up_after: Duration) -> Result<Event> {
        let deadline = tokio::time::Instant::now() + give_up_after;
        let mut backoff = Duration::from_millis(200);
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.last_seq = Some(event.seq().clone());
                return Ok(event);
            }
            let outcome = match self.socket.as_mut() {
                Some(socket) => {
                    match tokio::time::timeout_at(deadline, socket.next_event()).await {
                        Ok(result) => result,
                        Err(_) => {
                            return Err(ClientError::Realtime(format!(
                                "no event on {} within {give_up_after:?}",
                                self.collection
                            )));
                        }
                    }
                }
                None => Ok(None),
            };
            match outcome {
                Ok(Some(event)) => {
                    self.last_seq = Some(event.seq().clone());
                    return Ok(event);
                }
                Err(e @ ClientError::Realtime(_)) if e.to_string().contains("revoked") => {
                    return Err(e);
                }
                Ok(None) | Err(_) => {
                    self.socket = None;
                    loop {
                        if tokio::time::Instant::now() >= deadline {
                            return Err(ClientError::Realtime(format!(
                                "could not reconnect to {} within {give_up_after:?}",
                                self.client.instance().url()
                            )));
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        if self.connect().await.is_ok() {
                            self.reconnects += 1;
                            break;
                        }
                    }
                }
            }
        }
    }
}
