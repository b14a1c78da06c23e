//! The metrics endpoint: a small HTTP/1.1 server on its own thread that answers
//! `GET /metrics` (and `HEAD`) with the latest exposition and 404 otherwise. It reads
//! only the shared slot, never the warden.
//!
//! One thread serves every client at once, driven by `poll(2)` over non-blocking
//! sockets, so that no client waits on another: a client that connects and says
//! nothing, sends its request a byte at a time, or reads the answer slowly holds only its
//! own connection, and only until its deadline (`READ_DEADLINE` for the whole request
//! head, `WRITE_DEADLINE` for the whole answer). At most `MAX_CONNECTIONS` are held;
//! past that, the oldest connection still sending its request is closed to make room,
//! or, when every one is taking an answer, the oldest of those (a scrape sends its
//! request at once and takes its answer in milliseconds, so it is never the oldest).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use tracing::debug;

use super::Slot;

/// The whole request head must arrive within this time.
const READ_DEADLINE: Duration = Duration::from_secs(2);
/// The whole answer must be taken within this time (the page is bounded: a few MiB at
/// most, which loopback carries in milliseconds).
const WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// The largest request head read; Prometheus sends a few hundred bytes.
const MAX_REQUEST: usize = 8 * 1024;
/// The most connections held at once (each holds at most `MAX_REQUEST` bytes of request,
/// and one reference to the shared page).
pub(super) const MAX_CONNECTIONS: usize = 256;

pub(super) struct Server {
    listener: TcpListener,
    conns: Vec<Conn>,
}

/// One client.
struct Conn {
    stream: TcpStream,
    /// When it must be done with its current phase.
    deadline: Instant,
    /// When it was accepted: the oldest is closed first when room is needed.
    since: Instant,
    phase: Phase,
}

enum Phase {
    /// Sending its request head: what came so far.
    Reading(Vec<u8>),
    /// Taking the answer: the head, then the body (shared with every other scrape of
    /// the same pass), and how much of both was sent.
    Writing {
        head: Vec<u8>,
        body: Option<Arc<str>>,
        sent: usize,
    },
}

/// What one step of a connection left to do.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Read,
    Write,
    Close,
}

impl Server {
    pub(super) fn bind(addr: SocketAddr) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(Server {
            listener,
            conns: Vec::new(),
        })
    }

    /// The address bound (with the port the kernel chose for port 0).
    pub(super) fn addr(&self) -> String {
        self.listener
            .local_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string())
    }

    /// Serves clients for the life of the process.
    pub(super) fn run(mut self, slot: &Slot) {
        loop {
            if let Err(e) = self.turn(slot) {
                // poll itself failed (out of memory, say): wait a little rather than spin.
                debug!("metrics endpoint: poll failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Waits for the next thing to do (a client ready, or the nearest deadline), and
    /// does it.
    fn turn(&mut self, slot: &Slot) -> io::Result<()> {
        let now = Instant::now();
        self.conns.retain(|c| c.deadline > now);
        let timeout = self
            .conns
            .iter()
            .map(|c| c.deadline.saturating_duration_since(now))
            .min()
            .map(|d| {
                // Rounded up: a deadline is never polled for 0 ms in a loop.
                rustix::time::Timespec {
                    tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                    tv_nsec: i64::from(d.subsec_nanos()) + 1_000_000,
                }
            })
            .map(normalize);
        let ready: Vec<PollFlags> = {
            let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(self.conns.len() + 1);
            fds.push(PollFd::new(&self.listener, PollFlags::IN));
            for c in &self.conns {
                let want = match c.phase {
                    Phase::Reading(_) => PollFlags::IN,
                    Phase::Writing { .. } => PollFlags::OUT,
                };
                fds.push(PollFd::from_borrowed_fd(c.stream.as_fd(), want));
            }
            match rustix::event::poll(&mut fds, timeout.as_ref()) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            fds.iter().map(PollFd::revents).collect()
        };
        let mut i = 0;
        let mut keep = Vec::with_capacity(self.conns.len());
        for mut c in self.conns.drain(..) {
            i += 1;
            let next = if ready[i].is_empty() {
                c.waiting()
            } else {
                c.step(slot)
            };
            if next != Next::Close {
                keep.push(c);
            }
        }
        self.conns = keep;
        if !ready[0].is_empty() {
            self.accept_all(slot);
        }
        Ok(())
    }

    /// Takes every connection waiting, making room as needed.
    fn accept_all(&mut self, slot: &Slot) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.conns.len() >= MAX_CONNECTIONS {
                        self.close_oldest();
                    }
                    if let Err(e) = stream.set_nonblocking(true) {
                        debug!("metrics endpoint: a client was not answered: {e}");
                        continue;
                    }
                    let now = Instant::now();
                    let mut c = Conn {
                        stream,
                        deadline: now + READ_DEADLINE,
                        since: now,
                        phase: Phase::Reading(Vec::new()),
                    };
                    // A scrape's request is usually there already.
                    if c.step(slot) != Next::Close {
                        self.conns.push(c);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of fds, say: the oldest client gives way, if the endpoint holds
                    // enough to be the cause.
                    debug!("metrics endpoint: accept failed: {e}");
                    if self.conns.len() < MAX_CONNECTIONS / 2 || !self.close_oldest() {
                        // Not ours to free: the connection stays queued and the listener
                        // ready; wait a little rather than spin on it.
                        std::thread::sleep(Duration::from_millis(20));
                        return;
                    }
                }
            }
        }
    }

    /// Closes the connection that has been sending its request the longest, else the one
    /// that has been taking its answer the longest, if any.
    fn close_oldest(&mut self) -> bool {
        let oldest = self
            .conns
            .iter()
            .enumerate()
            .min_by_key(|(_, c)| (matches!(c.phase, Phase::Writing { .. }), c.since))
            .map(|(i, c)| (i, c.waiting()));
        match oldest {
            Some((i, phase)) => {
                debug!(
                    ?phase,
                    "metrics endpoint: too many connections; the oldest one is closed"
                );
                self.conns.swap_remove(i);
                true
            }
            None => false,
        }
    }
}

/// A `Timespec` whose nanoseconds are under a second.
fn normalize(mut t: rustix::time::Timespec) -> rustix::time::Timespec {
    if t.tv_nsec >= 1_000_000_000 {
        t.tv_sec = t.tv_sec.saturating_add(1);
        t.tv_nsec -= 1_000_000_000;
    }
    t
}

impl Conn {
    /// What it waits for, not ready this turn.
    fn waiting(&self) -> Next {
        match self.phase {
            Phase::Reading(_) => Next::Read,
            Phase::Writing { .. } => Next::Write,
        }
    }

    /// Reads what came, answers once the head is whole, writes what fits.
    fn step(&mut self, slot: &Slot) -> Next {
        if let Phase::Reading(buf) = &mut self.phase {
            let answer = match read_more(&mut self.stream, buf) {
                Ok(Head::Partial) => return Next::Read,
                Ok(Head::Whole) => answer(&route(buf), slot),
                Ok(Head::TooLarge) => plain("431 Request Header Fields Too Large", "", b""),
                Err(e) => {
                    debug!("metrics endpoint: a client was not answered: {e}");
                    return Next::Close;
                }
            };
            self.phase = answer;
            self.deadline = Instant::now() + WRITE_DEADLINE;
        }
        match self.write_more() {
            Ok(true) => {
                // A client may still be sending (a body nobody asked for): end ours
                // cleanly.
                let _ = self.stream.shutdown(Shutdown::Write);
                Next::Close
            }
            Ok(false) => Next::Write,
            Err(e) => {
                debug!("metrics endpoint: a client did not take its answer: {e}");
                Next::Close
            }
        }
    }

    /// Writes what the socket takes now. `Ok(true)`: all of it was sent.
    fn write_more(&mut self) -> io::Result<bool> {
        let Phase::Writing { head, body, sent } = &mut self.phase else {
            return Ok(false);
        };
        loop {
            let body_bytes = body.as_deref().map_or(&[][..], str::as_bytes);
            let total = head.len() + body_bytes.len();
            if *sent >= total {
                return Ok(true);
            }
            let chunk = if *sent < head.len() {
                &head[*sent..]
            } else {
                &body_bytes[*sent - head.len()..]
            };
            match self.stream.write(chunk) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => *sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// How far a request head came.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    Partial,
    Whole,
    TooLarge,
}

/// Reads what the socket has into `buf`, up to `MAX_REQUEST` bytes in all.
fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Head> {
    let mut chunk = [0u8; 1024];
    loop {
        let room = (MAX_REQUEST - buf.len()).min(chunk.len());
        let n = match s.read(&mut chunk[..room]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed before a whole request",
                ));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Head::Partial),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        // The blank line may straddle two reads: look a few bytes back.
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        let seen = &buf[from..];
        if seen.windows(4).any(|w| w == b"\r\n\r\n") || seen.windows(2).any(|w| w == b"\n\n") {
            return Ok(Head::Whole);
        }
        if buf.len() >= MAX_REQUEST {
            return Ok(Head::TooLarge);
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

/// The answer to a request.
fn answer(route: &Route, slot: &Slot) -> Phase {
    match route {
        Route::Metrics { head_only } => {
            // Cloned under the lock, written after it: the loop never waits on a client.
            let text: Arc<str> = slot.lock().unwrap_or_else(PoisonError::into_inner).clone();
            Phase::Writing {
                head: head(
                    "200 OK",
                    "text/plain; version=0.0.4; charset=utf-8",
                    text.len(),
                ),
                body: (!head_only).then_some(text),
                sent: 0,
            }
        }
        Route::NotFound => plain(
            "404 Not Found",
            "text/plain; charset=utf-8",
            b"not found; metrics are at /metrics\n",
        ),
        Route::NotAllowed => plain(
            "405 Method Not Allowed\r\nAllow: GET, HEAD",
            "text/plain; charset=utf-8",
            b"only GET and HEAD\n",
        ),
        Route::Bad => plain("400 Bad Request", "", b""),
    }
}

/// A short answer, head and body in one buffer.
fn plain(status: &str, content_type: &str, body: &[u8]) -> Phase {
    let mut head = head(status, content_type, body.len());
    head.extend_from_slice(body);
    Phase::Writing {
        head,
        body: None,
        sent: 0,
    }
}

fn head(status: &str, content_type: &str, len: usize) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n");
    if !content_type.is_empty() {
        head.push_str("Content-Type: ");
        head.push_str(content_type);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
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

    /// A server on a port of its own, serving `text` on a thread for the rest of the
    /// test process.
    fn serving(text: &str) -> SocketAddr {
        let server = Server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = server.listener.local_addr().unwrap();
        let slot: Slot = Arc::new(std::sync::Mutex::new(Arc::from(text)));
        std::thread::spawn(move || server.run(&slot));
        addr
    }

    fn ask(addr: SocketAddr, request: &[u8]) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        c.write_all(request).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn a_scrape_gets_the_latest_text_and_anything_else_a_plain_error() {
        let addr = serving("# the text\n");
        let ok = ask(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{ok}"
        );
        assert!(ok.contains("Content-Length: 11\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\n# the text\n"), "{ok}");
        let head_only = ask(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(head_only.ends_with("Content-Length: 11\r\nConnection: close\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\r\n"), "{head_only}");
        let missing = ask(addr, b"GET /favicon.ico HTTP/1.1\r\n\r\n");
        assert!(
            missing.starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{missing}"
        );
        let huge = ask(addr, &[b'a'; MAX_REQUEST]);
        assert!(huge.starts_with("HTTP/1.1 431 "), "{huge}");
        // A request a byte at a time is answered once whole.
        let mut c = TcpStream::connect(addr).unwrap();
        for b in b"GET /metrics HTTP/1.0\r\n\r\n" {
            c.write_all(&[*b]).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        assert!(out.ends_with("\r\n\r\n# the text\n"), "{out}");
    }

    /// More clients than the endpoint holds, each sending nothing: the oldest give way,
    /// and a scrape is still answered.
    #[test]
    fn past_the_most_connections_the_oldest_silent_one_gives_way() {
        let addr = serving("# the text\n");
        let mut silent: Vec<TcpStream> = (0..MAX_CONNECTIONS + 20)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        let ok = ask(addr, b"GET /metrics HTTP/1.0\r\n\r\n");
        assert!(ok.ends_with("\r\n\r\n# the text\n"), "{ok}");
        // The first one was closed to make room: it reads the end of its stream.
        silent[0]
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(silent[0].read(&mut buf).unwrap(), 0);
    }

    /// As many clients as the endpoint holds ask for a page larger than a socket takes
    /// and never read it: a scrape is still answered whole (the oldest of them gives
    /// way).
    #[test]
    fn past_the_most_connections_the_oldest_slow_reader_gives_way() {
        let page = "x".repeat(8 << 20);
        let addr = serving(&page);
        let held: Vec<TcpStream> = (0..MAX_CONNECTIONS)
            .map(|_| {
                let mut c = TcpStream::connect(addr).unwrap();
                c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
                c
            })
            .collect();
        // Every one has its request read and is taking its answer.
        std::thread::sleep(Duration::from_millis(500));
        let ok = ask(addr, b"GET /metrics HTTP/1.0\r\n\r\n");
        assert!(ok.ends_with(&page[..1024]), "{} bytes", ok.len());
        assert_eq!(ok.len() - ok.find("\r\n\r\n").unwrap() - 4, page.len());
        drop(held);
    }
}
