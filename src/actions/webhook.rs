//! Webhook actions: one HTTP/1.1 `POST` of one JSON object to an
//! `http://` URL, under a connect timeout and an overall timeout.
//!
//! Plain HTTP only (https is refused when the config is read): point it at
//! a local relay for anything beyond this host. It must not retry, follow
//! redirects or read more of the answer than its status line; a 2xx status
//! is success.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::batch::Batch;
use crate::config::WebhookUrl;

/// Longest wait for the TCP connection, within the overall timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most bytes read while looking for the status line.
const MAX_STATUS_LINE: usize = 1024;

/// Why a webhook delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error("cannot connect to {address}: {reason}")]
    Connect { address: String, reason: String },
    #[error("no answer within {}", humantime::format_duration(*.0))]
    TimedOut(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("answered {0:?}, not an HTTP status line")]
    BadAnswer(String),
    #[error("answered with status {0}")]
    Status(u16),
}

/// The JSON object a webhook receives for `batch`.
pub fn body(batch: &Batch, host: &str) -> Vec<u8> {
    let event = &batch.event;
    let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let value = serde_json::json!({
        "event": event.kind.as_str(),
        "count": event.count,
        "addresses": event.addresses.iter().map(crate::addr::display_net).collect::<Vec<_>>(),
        "truncated": event.truncated(),
        "source": text(&event.source),
        "jail": text(&event.jail),
        "reason": text(&event.reason),
        "expires_at": event.expires_at,
        "host": host,
        "merged": batch.merged,
        "rate_limited": batch.rate_limited,
    });
    value.to_string().into_bytes()
}

/// POSTs `body` to `url`; the status on success (2xx).
pub async fn post(url: &WebhookUrl, body: &[u8], timeout: Duration) -> Result<u16, WebhookError> {
    tokio::time::timeout(timeout, send(url, body, timeout.min(CONNECT_TIMEOUT)))
        .await
        .map_err(|_| WebhookError::TimedOut(timeout))?
}

async fn send(
    url: &WebhookUrl,
    body: &[u8],
    connect_timeout: Duration,
) -> Result<u16, WebhookError> {
    let mut stream = connect(url, connect_timeout).await?;
    let host_header = match (url.host.contains(':'), url.port) {
        (true, 80) => format!("[{}]", url.host),
        (true, port) => format!("[{}]:{port}", url.host),
        (false, 80) => url.host.clone(),
        (false, port) => format!("{}:{port}", url.host),
    };
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: orch/{}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        url.path,
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await?;
    let status = read_status(&mut stream).await?;
    if (200..300).contains(&status) {
        Ok(status)
    } else {
        Err(WebhookError::Status(status))
    }
}

/// The first address of `url`'s host that takes a connection.
async fn connect(url: &WebhookUrl, timeout: Duration) -> Result<TcpStream, WebhookError> {
    let addresses: Vec<_> = tokio::net::lookup_host((url.host.as_str(), url.port))
        .await
        .map_err(|source| WebhookError::Resolve {
            host: url.host.clone(),
            source,
        })?
        .collect();
    let mut last = None;
    for address in addresses {
        match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(err)) => last = Some((address, err.to_string())),
            Err(_) => last = Some((address, format!("no answer within {timeout:?}"))),
        }
    }
    match last {
        Some((address, reason)) => Err(WebhookError::Connect {
            address: address.to_string(),
            reason,
        }),
        None => Err(WebhookError::NoAddress {
            host: url.host.clone(),
        }),
    }
}

/// The status code of the answer's first line (`HTTP/1.x NNN ...`).
async fn read_status(stream: &mut TcpStream) -> Result<u16, WebhookError> {
    let mut answer = Vec::with_capacity(128);
    let mut buf = [0u8; 256];
    while !answer.contains(&b'\n') && answer.len() < MAX_STATUS_LINE {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let line = answer.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    match (words.next(), words.next().map(str::parse::<u16>)) {
        (Some(version), Some(Ok(status))) if version.starts_with("HTTP/1.") => Ok(status),
        _ => Err(WebhookError::BadAnswer(crate::quote::quote_input(
            crate::quote::cut(line.trim_end(), 80),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::ban_events::{BanEvent, BanEventKind};
    use std::io::{Read, Write};
    use std::sync::Arc;

    fn batch() -> Batch {
        Batch {
            event: BanEvent {
                kind: BanEventKind::Ban,
                count: 3,
                addresses: vec![
                    "192.0.2.1/32".parse().expect("net"),
                    "2001:db8::/48".parse().expect("net"),
                ],
                source: Arc::from("sshd"),
                jail: Arc::from("sshd"),
                reason: Arc::from("5 failures"),
                expires_at: Some(1_700_000_000),
            },
            merged: 2,
            rate_limited: false,
        }
    }

    /// A one-shot server answering `answer`; returns what it received.
    fn serve_once(answer: &'static [u8]) -> (WebhookUrl, std::thread::JoinHandle<Vec<u8>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            conn.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            // Read the head and the body it announces.
            loop {
                let n = conn.read(&mut buf).unwrap_or(0);
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).to_string();
                if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|l| l.parse().ok())
                        .unwrap_or(0);
                    if rest.len() >= length {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            let _ = conn.write_all(answer);
            got
        });
        let url =
            crate::config::actions::check_webhook(&format!("http://127.0.0.1:{port}/hook?x=1"))
                .expect("url");
        (url, server)
    }

    #[tokio::test]
    async fn posts_one_json_object() {
        let (url, server) = serve_once(b"HTTP/1.1 204 No Content\r\n\r\n");
        let body = body(&batch(), "web1");
        let status = post(&url, &body, Duration::from_secs(5))
            .await
            .expect("delivered");
        assert_eq!(status, 204);
        let got = String::from_utf8(server.join().expect("server")).expect("utf-8");
        let (head, sent) = got.split_once("\r\n\r\n").expect("head");
        assert!(head.starts_with("POST /hook?x=1 HTTP/1.1\r\n"), "{head}");
        assert!(
            head.contains(&format!("\r\nHost: 127.0.0.1:{}\r\n", url.port)),
            "{head}"
        );
        let json: serde_json::Value = serde_json::from_str(sent).expect("json");
        assert_eq!(json["event"], "ban");
        assert_eq!(json["count"], 3);
        assert_eq!(
            json["addresses"],
            serde_json::json!(["192.0.2.1", "2001:db8::/48"])
        );
        assert_eq!(json["truncated"], true);
        assert_eq!(json["jail"], "sshd");
        assert_eq!(json["host"], "web1");
        assert_eq!(json["expires_at"], 1_700_000_000);
        assert_eq!(json["merged"], 2);
    }

    #[tokio::test]
    async fn failures_say_why() {
        let (url, server) = serve_once(b"HTTP/1.0 500 Oops\r\n\r\n");
        let err = post(&url, b"{}", Duration::from_secs(5))
            .await
            .expect_err("500");
        assert_eq!(err.to_string(), "answered with status 500");
        server.join().expect("server");
        let (url, server) = serve_once(b"SSH-2.0-OpenSSH\r\n");
        let err = post(&url, b"{}", Duration::from_secs(5))
            .await
            .expect_err("not http");
        assert!(err.to_string().contains("not an HTTP status line"), "{err}");
        server.join().expect("server");
        // A listener that never answers: the overall timeout ends it.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = crate::config::actions::check_webhook(&format!(
            "http://127.0.0.1:{}/",
            silent.local_addr().expect("addr").port()
        ))
        .expect("url");
        let started = std::time::Instant::now();
        let err = post(&url, b"{}", Duration::from_millis(300))
            .await
            .expect_err("silent");
        assert!(matches!(err, WebhookError::TimedOut(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
