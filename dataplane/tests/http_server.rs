//! The HTTP layer against misbehaving and keep-alive clients: refused requests leave the
//! connection usable (or say it closes), slow and idle connections are closed on time,
//! and an over-large declared body is refused before it is sent.

mod common;

use std::time::{Duration, Instant};

use common::TestInstance;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One answer read off a raw connection.
struct Answer {
    status: u16,
    head: String,
}

impl Answer {
    fn closes(&self) -> bool {
        self.head
            .lines()
            .any(|l| l.to_ascii_lowercase().replace(' ', "") == "connection:close")
    }
}

/// Read one HTTP/1.1 answer (with a `Content-Length` body); `None` when the connection
/// ended first.
async fn read_answer(tcp: &mut TcpStream) -> Option<Answer> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = tcp.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = tcp.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(Answer { status, head })
}

async fn connect(instance: &TestInstance) -> TcpStream {
    let addr = instance.base.trim_start_matches("http://");
    TcpStream::connect(addr).await.expect("connect")
}

fn health_request() -> &'static [u8] {
    b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n"
}

/// Alternate refused requests (401, 405, 404, 413 of 2 MB, sync 401) with `GET /health` on
/// one keep-alive connection, as a client without automatic retries does: the connection
/// is reused unless an answer said `Connection: close`, and no request may fail.
#[tokio::test]
async fn refused_requests_leave_keep_alive_connections_usable() {
    let instance = TestInstance::start().await;
    let small = json!({ "collection": "notes", "filler": "x".repeat(16 * 1024) }).to_string();
    let big = format!(r#"{{"filler":"{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let mut failures = Vec::new();
    let mut tcp = connect(&instance).await;
    let rounds = 1000;
    for round in 0..rounds {
        let (method, path, body, expected) = match round % 5 {
            0 => ("POST", "/api/v1/data/read", &small, 401),
            1 => ("PUT", "/health", &small, 405),
            2 => ("POST", "/api/v1/no-such-route", &small, 404),
            3 => ("POST", "/api/v1/auth/login", &big, 413),
            _ => ("POST", "/api/v1/sync/_bulk_docs", &small, 401),
        };
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut closes = true;
        if tcp.write_all(request.as_bytes()).await.is_err() {
            failures.push(format!("round {round}: {path}: write failed"));
        } else {
            match read_answer(&mut tcp).await {
                Some(a) if a.status == expected => closes = a.closes(),
                Some(a) => failures.push(format!("round {round}: {path}: got {}", a.status)),
                None => failures.push(format!("round {round}: {path}: no answer")),
            }
        }
        if closes {
            tcp = connect(&instance).await;
        }
        let mut closes = true;
        if tcp.write_all(health_request()).await.is_err() {
            failures.push(format!("round {round}: health after {path}: write failed"));
        } else {
            match read_answer(&mut tcp).await {
                Some(a) if a.status == 200 => closes = a.closes(),
                Some(a) => failures.push(format!("round {round}: health got {}", a.status)),
                None => failures.push(format!("round {round}: health after {path}: no answer")),
            }
        }
        if closes {
            tcp = connect(&instance).await;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {rounds} alternations failed, first: {:?}",
        failures.len(),
        failures.first()
    );
}

/// The body arrives 200 ms after the headers, after the 401 was decided: the connection
/// must still serve the next request, or the 401 must say that it closes.
#[tokio::test]
async fn a_late_body_after_a_refusal_does_not_break_the_connection() {
    let instance = TestInstance::start().await;
    for path in ["/api/v1/data/read", "/api/v1/sync/_bulk_docs", "/nope"] {
        let mut tcp = connect(&instance).await;
        let body = br#"{"collection":"notes"}"#;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        tcp.write_all(body).await.unwrap();
        let refused = read_answer(&mut tcp).await.expect("an answer");
        assert!(refused.status == 401 || refused.status == 404, "{path}");
        if refused.closes() {
            continue;
        }
        tcp.write_all(health_request()).await.unwrap();
        let health = read_answer(&mut tcp)
            .await
            .unwrap_or_else(|| panic!("{path}: connection dropped after a keep-alive 401"));
        assert_eq!(health.status, 200);
    }
}

/// A client that never sends its body after `Expect: 100-continue` must not keep the
/// connection open as if it could be reused.
#[tokio::test]
async fn an_unsent_expected_body_is_not_waited_for() {
    let instance = TestInstance::start().await;
    let mut tcp = connect(&instance).await;
    tcp.write_all(
        b"POST /api/v1/data/read HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 100\r\n\r\n",
    )
    .await
    .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(2), read_answer(&mut tcp))
        .await
        .expect("answered at once")
        .expect("an answer");
    assert_eq!(answer.status, 401);
    assert!(answer.closes(), "{}", answer.head);
}

/// `Expect: 100-continue` with a declared length over the body limit: 413 at once, no
/// `100 Continue`, on the JSON API and on sync.
#[tokio::test]
async fn an_oversized_declared_body_is_refused_before_it_is_sent() {
    let instance = TestInstance::start().await;
    let token = instance.owner_token().await;
    for length in ["2000000", "100000000000000"] {
        for (path, auth) in [
            ("/api/v1/auth/login", String::new()),
            (
                "/api/v1/sync/_bulk_docs",
                format!("Authorization: Bearer {token}\r\n"),
            ),
        ] {
            let mut tcp = connect(&instance).await;
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: t\r\n{auth}Content-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {length}\r\n\r\n"
            );
            tcp.write_all(head.as_bytes()).await.unwrap();
            let started = Instant::now();
            let answer = tokio::time::timeout(Duration::from_secs(2), read_answer(&mut tcp))
                .await
                .unwrap_or_else(|_| panic!("{path} {length}: no immediate answer"))
                .expect("an answer");
            assert_eq!(answer.status, 413, "{path} {length}: {}", answer.head);
            assert!(started.elapsed() < Duration::from_secs(1));
            assert!(answer.closes(), "{}", answer.head);
        }
    }
}

async fn closed_within(tcp: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((started + limit).into(), tcp.read(&mut chunk)).await {
            Err(_) => panic!("connection still open after {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
        }
    }
}

async fn with_short_timeouts() -> TestInstance {
    TestInstance::start_with(|config| {
        config.http.idle_timeout = Duration::from_secs(3);
        config.http.header_read_timeout = Duration::from_secs(1);
    })
    .await
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let instance = with_short_timeouts().await;
    // A new connection that never sends a byte.
    let mut silent = connect(&instance).await;
    let waited = closed_within(&mut silent, Duration::from_secs(5)).await;
    assert!(waited >= Duration::from_millis(2500), "{waited:?}");
    // A kept-alive connection after an answer.
    let mut kept = connect(&instance).await;
    kept.write_all(health_request()).await.unwrap();
    assert_eq!(read_answer(&mut kept).await.expect("answer").status, 200);
    let waited = closed_within(&mut kept, Duration::from_secs(5)).await;
    assert!(waited >= Duration::from_millis(2500), "{waited:?}");
}

#[tokio::test]
async fn partial_and_trickled_headers_are_cut_after_the_header_timeout() {
    let instance = with_short_timeouts().await;
    let mut partial = connect(&instance).await;
    partial
        .write_all(b"GET /health HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let waited = closed_within(&mut partial, Duration::from_millis(2500)).await;
    assert!(waited < Duration::from_millis(2500), "{waited:?}");

    // One byte every 300 ms, for ever: closed about 1 s after the first byte.
    let trickle = connect(&instance).await;
    let (mut reader, mut writer) = trickle.into_split();
    let started = Instant::now();
    let writing = tokio::spawn(async move {
        for byte in b"GET /health HTTP/1.1\r\nX-Slow: ".iter().cycle() {
            if writer.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let mut chunk = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_millis(2500), async {
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    writing.abort();
    assert!(closed.is_ok(), "trickling client still connected");
    assert!(started.elapsed() < Duration::from_millis(2500));
}

/// The timeouts only apply between requests: a WebSocket silent for longer than both
/// stays open.
#[tokio::test]
async fn websockets_outlive_the_idle_timeout() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let instance = with_short_timeouts().await;
    let token = instance.owner_token().await;
    instance
        .upsert_app(&token, "https://app.example", &[("read:notes", "always")])
        .await;
    let url = format!("{}/ws", instance.base.replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    ws.send(Message::text(
        json!({"action": "auth", "token": token, "appId": "https://app.example"}).to_string(),
    ))
    .await
    .unwrap();
    let first = ws.next().await.expect("frame").expect("frame");
    assert!(
        first.to_text().unwrap().contains("authenticated"),
        "{first:?}"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    ws.send(Message::text(
        json!({"action": "subscribe", "collection": "notes"}).to_string(),
    ))
    .await
    .expect("socket still open");
    let answer = ws.next().await.expect("frame").expect("frame");
    assert!(
        answer.to_text().unwrap().contains("subscribed"),
        "{answer:?}"
    );
}
