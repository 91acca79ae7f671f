//! The `/ws` wire protocol: client actions, server answers (the original's exact strings),
//! and close codes.
//!
//! Client → server (JSON text frames):
//! - `{"action":"auth","token":…,"appId":…}` — first frame (unless `?token=` was used); again
//!   later with a fresh token to extend the session.
//! - `{"action":"subscribe","collection":c,"since"?:seq}` / `{"action":"unsubscribe","collection":c}`.
//!   `"since":"now"` replays nothing and the answer carries `"seq"`: the position the live
//!   events follow, from which a client that disconnects before its first event resumes.
//! - `{"action":"ping"}` → `{"type":"pong"}` (for clients that cannot send WebSocket pings).
//!
//! Server → client: `{"status":"authenticated"}`, `{"status":"subscribed"|"unsubscribed"|
//! "not_subscribed","collection":c}` (`subscribed` plus `"seq"` after `"since":"now"`), `{"status":"denied"|"revoked"|"error","collection":c,
//! "reason":…}`, `{"error":"Invalid message format."}`, and pushes
//! `{"type":"update","collection":c,"data":doc,"seq":…}` /
//! `{"type":"delete","collection":c,"id":…,"rev":…,"seq":…}`.

use serde::Serialize;
use serde_json::Value;

use super::seq::Seq;

/// Close code: authentication missing, invalid, revoked or expired.
pub const CLOSE_AUTH: u16 = 4001;
/// Close code: the owner revoked one of the app's grants while the socket was open. The
/// token still works: a new socket authenticates again and may subscribe to what the app
/// is still granted (a `revoked` status for each subscription the lost grant fed comes
/// first).
pub const CLOSE_GRANTS_REVOKED: u16 = 4003;
/// Close code: the client read too slowly and missed events; reconnect with `since`.
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;
/// Close code: too many messages per second.
pub const CLOSE_RATE_LIMITED: u16 = 4029;
/// Close code: no frame (not even a pong) for too long.
pub const CLOSE_IDLE: u16 = 4000;
/// Close code (RFC 6455): a frame larger than allowed.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code (RFC 6455): the server is shutting down; reconnect (to another replica or
/// after the restart) and resume with `since`.
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// The original's answer to anything it does not understand.
pub const INVALID_MESSAGE: &str = "Invalid message format.";

/// A parsed client frame.
#[derive(Debug, PartialEq)]
pub enum ClientAction {
    /// Authenticate (or re-authenticate).
    Auth {
        /// Bearer token.
        token: String,
        /// App to act as.
        app_id: Option<String>,
    },
    /// Subscribe to a collection, optionally replaying changes after `since`.
    Subscribe {
        /// Collection.
        collection: String,
        /// Last sequence the client saw.
        since: Option<Seq>,
    },
    /// Stop a subscription.
    Unsubscribe {
        /// Collection.
        collection: String,
    },
    /// Application-level keep-alive.
    Ping,
}

impl ClientAction {
    /// Parse a text frame; `None` is answered with [`INVALID_MESSAGE`].
    pub fn parse(text: &str) -> Option<Self> {
        let value: Value = serde_json::from_str(text).ok()?;
        let object = value.as_object()?;
        let string = |key: &str| object.get(key).and_then(Value::as_str).map(str::to_owned);
        match object.get("action")?.as_str()? {
            "auth" => Some(ClientAction::Auth {
                token: string("token").filter(|t| !t.is_empty())?,
                app_id: string("appId").filter(|a| !a.trim().is_empty()),
            }),
            "subscribe" => {
                let since = match object.get("since") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(Seq::from_client(v)?),
                };
                Some(ClientAction::Subscribe {
                    collection: string("collection")?,
                    since,
                })
            }
            "unsubscribe" => Some(ClientAction::Unsubscribe {
                collection: string("collection")?,
            }),
            "ping" => Some(ClientAction::Ping),
            _ => None,
        }
    }
}

/// A status answer.
#[derive(Debug, Serialize)]
pub struct Status<'a> {
    /// `authenticated`, `subscribed`, `denied`, …
    pub status: &'a str,
    /// The collection concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collection: Option<&'a str>,
    /// Why (denied, revoked, error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    /// Where a `"since":"now"` subscription starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<&'a Seq>,
}

impl<'a> Status<'a> {
    /// `{"status":status,"collection":c}`.
    pub fn of(status: &'a str, collection: &'a str) -> Self {
        Status {
            status,
            collection: Some(collection),
            reason: None,
            seq: None,
        }
    }

    /// `{"status":"subscribed","collection":c,"seq":seq}`.
    pub fn subscribed_at(collection: &'a str, seq: &'a Seq) -> Self {
        Status {
            seq: Some(seq),
            ..Status::of("subscribed", collection)
        }
    }

    /// `{"status":status,"collection":c,"reason":reason}`.
    pub fn because(status: &'a str, collection: &'a str, reason: &'a str) -> Self {
        Status {
            status,
            collection: Some(collection),
            reason: Some(reason),
            seq: None,
        }
    }

    /// As a JSON text.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The reason given when the app lacks `read:<collection>` (the original's words).
pub fn missing_read(collection: &str) -> String {
    format!("App does not have 'read:{collection}' permission.")
}

/// `{"error": message}`.
pub fn error_text(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_original_actions() {
        assert_eq!(
            ClientAction::parse(r#"{"action":"subscribe","collection":"c"}"#),
            Some(ClientAction::Subscribe {
                collection: "c".into(),
                since: None
            })
        );
        assert_eq!(
            ClientAction::parse(r#"{"action":"subscribe","collection":"c","since":"3-g1A"}"#),
            Some(ClientAction::Subscribe {
                collection: "c".into(),
                since: Seq::from_client(&json!("3-g1A"))
            })
        );
        assert_eq!(
            ClientAction::parse(r#"{"action":"unsubscribe","collection":"c"}"#),
            Some(ClientAction::Unsubscribe {
                collection: "c".into()
            })
        );
        assert_eq!(
            ClientAction::parse(r#"{"action":"auth","token":"t","appId":"a"}"#),
            Some(ClientAction::Auth {
                token: "t".into(),
                app_id: Some("a".into())
            })
        );
    }

    #[test]
    fn anything_else_is_invalid() {
        for bad in [
            "not json",
            "[]",
            "{}",
            r#"{"action":"dance"}"#,
            r#"{"action":"subscribe"}"#,
            r#"{"action":"subscribe","collection":5}"#,
            r#"{"action":"subscribe","collection":"c","since":{"x":1}}"#,
            r#"{"action":"auth"}"#,
            r#"{"action":7}"#,
        ] {
            assert_eq!(ClientAction::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn exact_answers() {
        assert_eq!(
            Status::of("subscribed", "c").to_text(),
            r#"{"status":"subscribed","collection":"c"}"#
        );
        assert_eq!(
            Status::subscribed_at("c", &Seq::from(json!("12-g1A"))).to_text(),
            r#"{"status":"subscribed","collection":"c","seq":"12-g1A"}"#
        );
        assert_eq!(
            Status::because("denied", "c", &missing_read("c")).to_text(),
            r#"{"status":"denied","collection":"c","reason":"App does not have 'read:c' permission."}"#
        );
        assert_eq!(
            error_text(INVALID_MESSAGE),
            r#"{"error":"Invalid message format."}"#
        );
    }
}
