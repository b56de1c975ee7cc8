//! The `GET /metrics` endpoint: a minimal HTTP/1.1 responder on a TCP or
//! unix socket, one request per connection.
//!
//! Any local user can connect, so every connection is bounded: the request
//! head must arrive whole within [`REQUEST_DEADLINE`] and fit in
//! [`MAX_HEAD_BYTES`], the answer must be taken within
//! [`RESPONSE_DEADLINE`], and at most [`MAX_CONNECTIONS`] are served at
//! once (more are closed at once). Only `GET /metrics` is answered with
//! metrics. It renders what the daemon already published; it must never
//! queue work on the core or change anything.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::MetricsError;
use crate::config::MetricsListen;

/// The largest request head read (request line and headers).
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// How long a client has to send its request head.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// How long a client has to take the answer.
pub const RESPONSE_DEADLINE: Duration = Duration::from_secs(10);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 8;
/// Mode of a unix socket: root and the socket's group.
const SOCKET_MODE: u32 = 0o660;
/// Pause after a failed accept (out of file descriptors), so the loop does
/// not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Renders the metrics text; blocking (runs on the blocking pool).
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// A bound listening socket.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// Binds `listen`. A unix socket gets mode 0660 before it appears at
    /// its path: it is bound under a temporary name beside it, chmodded,
    /// then renamed over the path (replacing a stale socket, never another
    /// kind of file).
    pub async fn bind(listen: &MetricsListen) -> Result<Listener, MetricsError> {
        let failed = |source| MetricsError::Bind {
            listen: listen.to_string(),
            source,
        };
        match listen {
            MetricsListen::Tcp(addr) => TcpListener::bind(addr)
                .await
                .map(Listener::Tcp)
                .map_err(failed),
            MetricsListen::Unix(path) => bind_unix(path).map(Listener::Unix).map_err(failed),
        }
    }

    /// Serves connections until the task is dropped.
    pub async fn serve(self, render: Render) {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let accepted = match &self {
                Listener::Tcp(listener) => listener
                    .accept()
                    .await
                    .map(|(stream, _)| Connection::Tcp(stream)),
                Listener::Unix(listener) => listener
                    .accept()
                    .await
                    .map(|(stream, _)| Connection::Unix(stream)),
            };
            let connection = match accepted {
                Ok(connection) => connection,
                Err(err) => {
                    tracing::warn!("metrics: cannot accept a connection: {err}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            // Over the cap: dropping the connection closes it.
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let render = render.clone();
            tokio::spawn(async move {
                match connection {
                    Connection::Tcp(stream) => serve_one(stream, render, slot).await,
                    Connection::Unix(stream) => serve_one(stream, render, slot).await,
                }
            });
        }
    }
}

enum Connection {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    let mut staging = path.as_os_str().to_owned();
    staging.push(format!(".{}.tmp", std::process::id()));
    let staging = PathBuf::from(staging);
    remove_socket(&staging)?;
    let listener = UnixListener::bind(&staging)?;
    let placed = std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(SOCKET_MODE))
        .and_then(|()| remove_socket(path))
        .and_then(|()| std::fs::rename(&staging, path));
    if let Err(err) = placed {
        let _ = std::fs::remove_file(&staging);
        return Err(err);
    }
    Ok(listener)
}

/// Removes `path` if it is a socket; fine if it does not exist; an error
/// if it is anything else.
fn remove_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        )),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    }
}

/// Answers one connection, then frees its slot before closing it, so a
/// client that saw the close finds the slot free.
async fn serve_one<S>(mut stream: S, render: Render, slot: OwnedSemaphorePermit)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    answer(&mut stream, render).await;
    drop(slot);
    // Sends the end of the stream at once; nothing to wait for.
    let _ = stream.shutdown().await;
}

/// Reads one request head and answers it, within the deadlines.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, render: Render) {
    let head = match tokio::time::timeout(REQUEST_DEADLINE, read_head(stream)).await {
        Ok(Ok(head)) => head,
        // Slow, silent or gone: close without a word.
        Ok(Err(_)) | Err(_) => return,
    };
    let response = match route(&head) {
        Ok(()) => match tokio::task::spawn_blocking(move || render()).await {
            Ok(body) => response(200, "OK", super::render::CONTENT_TYPE, &body),
            Err(_) => response(500, "Internal Server Error", TEXT, "cannot render\n"),
        },
        Err((code, reason)) => response(code, reason, TEXT, &format!("{reason}\n")),
    };
    let _ = tokio::time::timeout(RESPONSE_DEADLINE, stream.write_all(&response)).await;
}

const TEXT: &str = "text/plain; charset=utf-8";

/// What arrived: a whole head (up to the blank line), or too much.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    Complete(Vec<u8>),
    TooLarge,
}

/// Reads until the blank line that ends a request head, at most
/// [`MAX_HEAD_BYTES`]; an error when the client closes before the end.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Head> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&chunk[..read]);
        if let Some(end) = head_end(&head) {
            head.truncate(end);
            return Ok(Head::Complete(head));
        }
        if head.len() >= MAX_HEAD_BYTES {
            return Ok(Head::TooLarge);
        }
    }
}

/// Where the head ends (after `\r\n\r\n` or `\n\n`), within the limit.
fn head_end(bytes: &[u8]) -> Option<usize> {
    let bytes = &bytes[..bytes.len().min(MAX_HEAD_BYTES)];
    let crlf = memchr::memmem::find(bytes, b"\r\n\r\n").map(|at| at + 4);
    let lf = memchr::memmem::find(bytes, b"\n\n").map(|at| at + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `Ok` for `GET /metrics` (a query string is ignored); otherwise the
/// status to answer with.
fn route(head: &Head) -> Result<(), (u16, &'static str)> {
    let Head::Complete(bytes) = head else {
        return Err((431, "Request Header Fields Too Large"));
    };
    let line_end = memchr::memchr(b'\n', bytes).unwrap_or(bytes.len());
    let line = bytes[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&bytes[..line_end]);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err((400, "Bad Request"));
    };
    if !matches!(version, b"HTTP/1.0" | b"HTTP/1.1") {
        return Err((400, "Bad Request"));
    }
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    if path != b"/metrics" {
        return Err((404, "Not Found"));
    }
    if method != b"GET" {
        return Err((405, "Method Not Allowed"));
    }
    Ok(())
}

/// A whole HTTP/1.1 response that closes the connection.
fn response(code: u16, reason: &str, content_type: &str, body: &str) -> Vec<u8> {
    let allow = if code == 405 { "Allow: GET\r\n" } else { "" };
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(text: &str) -> Head {
        Head::Complete(text.as_bytes().to_vec())
    }

    #[test]
    fn only_get_metrics_is_answered() {
        assert_eq!(
            route(&complete("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")),
            Ok(())
        );
        assert_eq!(route(&complete("GET /metrics?x=1 HTTP/1.0\n\n")), Ok(()));
        assert_eq!(
            route(&complete("GET / HTTP/1.1\r\n\r\n")).map_err(|e| e.0),
            Err(404)
        );
        assert_eq!(
            route(&complete("GET /metricsx HTTP/1.1\r\n\r\n")).map_err(|e| e.0),
            Err(404)
        );
        assert_eq!(
            route(&complete("POST /metrics HTTP/1.1\r\n\r\n")).map_err(|e| e.0),
            Err(405)
        );
        for garbage in [
            "\r\n\r\n",
            "GET\r\n\r\n",
            "GET /metrics\r\n\r\n",
            "GET /metrics HTTP/2 x\r\n\r\n",
            "\u{0}\u{1} \u{ff}\n\n",
        ] {
            assert_eq!(
                route(&complete(garbage)).map_err(|e| e.0),
                Err(400),
                "{garbage:?}"
            );
        }
        assert_eq!(route(&Head::TooLarge).map_err(|e| e.0), Err(431));
    }

    #[test]
    fn the_head_ends_at_the_first_blank_line_within_the_limit() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
        let mut late = vec![b'a'; MAX_HEAD_BYTES];
        late.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            head_end(&late),
            None,
            "a blank line past the limit does not count"
        );
    }

    /// Sends `request` to a connection of its own; what comes back.
    async fn exchange(request: &[u8]) -> String {
        let render: Render = Arc::new(|| "orch_up 1\n".to_string());
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let slot = Arc::new(Semaphore::new(1))
            .try_acquire_owned()
            .expect("a free slot");
        let served = tokio::spawn(serve_one(server, render, slot));
        client.write_all(request).await.expect("write");
        let mut reply = String::new();
        client.read_to_string(&mut reply).await.expect("read");
        served.await.expect("served");
        reply
    }

    #[tokio::test]
    async fn an_oversized_request_gets_431_and_a_good_one_metrics() {
        let reply = exchange(&vec![b'A'; MAX_HEAD_BYTES + 10]).await;
        assert!(reply.starts_with("HTTP/1.1 431 "), "{reply}");
        let reply = exchange(b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.contains("Content-Length: 10\r\n"), "{reply}");
        assert!(reply.ends_with("\r\n\r\norch_up 1\n"), "{reply}");
        let reply = exchange(b"GET /other HTTP/1.1\r\n\r\n").await;
        assert!(reply.starts_with("HTTP/1.1 404 Not Found\r\n"), "{reply}");
    }
}
