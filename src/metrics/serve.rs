//! The metrics endpoint: a small HTTP/1.1 server on its own thread, one connection at a
//! time, that answers `GET /metrics` (and `HEAD`) with the latest exposition and 404
//! otherwise. It reads only the shared slot, never the warden. A client is given a
//! bounded time and size to send its request head, and a bounded time to take the
//! answer: a client that connects and says nothing holds the endpoint (not the warden)
//! for at most `READ_DEADLINE`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use tracing::debug;

use super::Slot;

/// The whole request head must arrive within this time.
const READ_DEADLINE: Duration = Duration::from_secs(2);
/// Each write of the answer must make progress within this time.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request head read; Prometheus sends a few hundred bytes.
const MAX_REQUEST: usize = 8 * 1024;

pub(super) struct Server {
    listener: TcpListener,
}

impl Server {
    pub(super) fn bind(addr: SocketAddr) -> io::Result<Server> {
        Ok(Server {
            listener: TcpListener::bind(addr)?,
        })
    }

    /// The address bound (with the port the kernel chose for port 0).
    pub(super) fn addr(&self) -> String {
        self.listener
            .local_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string())
    }

    /// Answers connections one at a time, for the life of the process.
    pub(super) fn run(self, slot: &Slot) {
        for conn in self.listener.incoming() {
            match conn {
                Ok(s) => {
                    if let Err(e) = answer(s, slot) {
                        debug!("metrics endpoint: a client was not answered: {e}");
                    }
                }
                Err(e) => {
                    // Out of fds, say: wait a little rather than spin.
                    debug!("metrics endpoint: accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics { head_only: bool },
    NotFound,
    NotAllowed,
    Bad,
}

fn route(head: &[u8]) -> Route {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::Bad;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::Bad;
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Route::NotAllowed,
    };
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if path == "/metrics" {
        Route::Metrics { head_only }
    } else {
        Route::NotFound
    }
}

/// Reads the request head: up to its blank line, `MAX_REQUEST` bytes and
/// `READ_DEADLINE`. `Ok(None)`: too large.
fn read_head(s: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let deadline = Instant::now() + READ_DEADLINE;
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no whole request in time",
            ));
        }
        s.set_read_timeout(Some(left))?;
        let n = s.read(&mut buf[len..])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before a whole request",
            ));
        }
        // The blank line may straddle two reads: look a few bytes back.
        let from = len.saturating_sub(3);
        len += n;
        let seen = &buf[from..len];
        if seen.windows(4).any(|w| w == b"\r\n\r\n") || seen.windows(2).any(|w| w == b"\n\n") {
            buf.truncate(len);
            return Ok(Some(buf));
        }
        if len == MAX_REQUEST {
            return Ok(None);
        }
    }
}

fn answer(mut s: TcpStream, slot: &Slot) -> io::Result<()> {
    s.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let route = match read_head(&mut s)? {
        Some(head) => route(&head),
        None => {
            return respond(
                &mut s,
                "431 Request Header Fields Too Large",
                "",
                &[],
                false,
            );
        }
    };
    match route {
        Route::Metrics { head_only } => {
            // Cloned under the lock, written after it: the loop never waits on a client.
            let text: Arc<str> = slot.lock().unwrap_or_else(PoisonError::into_inner).clone();
            respond(
                &mut s,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                text.as_bytes(),
                head_only,
            )
        }
        Route::NotFound => respond(
            &mut s,
            "404 Not Found",
            "text/plain; charset=utf-8",
            b"not found; metrics are at /metrics\n",
            false,
        ),
        Route::NotAllowed => respond(
            &mut s,
            "405 Method Not Allowed\r\nAllow: GET, HEAD",
            "text/plain; charset=utf-8",
            b"only GET and HEAD\n",
            false,
        ),
        Route::Bad => respond(&mut s, "400 Bad Request", "", &[], false),
    }
}

fn respond(
    s: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if !content_type.is_empty() {
        head.push_str("Content-Type: ");
        head.push_str(content_type);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    if !head_only {
        s.write_all(body)?;
    }
    s.flush()?;
    // A client may still be sending (a body nobody asked for): end ours cleanly.
    let _ = s.shutdown(Shutdown::Write);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_or_head_of_metrics_is_answered_with_them() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics { head_only: false }
        );
        assert_eq!(
            route(b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Route::Metrics { head_only: true }
        );
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"GET /metricsx HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n"), Route::NotAllowed);
        assert_eq!(route(b"GET /metrics\r\n\r\n"), Route::Bad);
        assert_eq!(route(b"GET /metrics SPDY/3\r\n\r\n"), Route::Bad);
        assert_eq!(route(b"\xff\xfe\r\n\r\n"), Route::Bad);
    }

    fn serve_one(request: &[u8]) -> String {
        let server = Server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = server.listener.local_addr().unwrap();
        let slot: Slot = Arc::new(std::sync::Mutex::new(Arc::from("# the text\n")));
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(request).unwrap();
        let (s, _) = server.listener.accept().unwrap();
        answer(s, &slot).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn a_scrape_gets_the_latest_text_and_anything_else_a_plain_error() {
        let ok = serve_one(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{ok}"
        );
        assert!(ok.contains("Content-Length: 11\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\n# the text\n"), "{ok}");
        let missing = serve_one(b"GET /favicon.ico HTTP/1.1\r\n\r\n");
        assert!(
            missing.starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{missing}"
        );
        let huge = serve_one(&[b'a'; MAX_REQUEST]);
        assert!(huge.starts_with("HTTP/1.1 431 "), "{huge}");
    }
}
