//! Talking to the service manager: systemd's notify protocol (`sd_notify(3)`).
//!
//! This module owns `READY=1` (sent after the first pass), `STATUS=` (a one-line
//! summary), `RELOADING=1` around a re-read of the configuration, and `WATCHDOG=1`,
//! sent by the loop itself when it is due, so that a loop that stalls stops feeding the
//! watchdog and systemd restarts the warden. Without `$NOTIFY_SOCKET` every call does
//! nothing. It never blocks: the socket is a datagram socket and a failed send is
//! dropped (systemd then sees a stalled service, which is the truth).

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

/// The connection to systemd, if the warden runs under it with `Type=notify`.
#[derive(Debug, Default)]
pub(crate) struct Notifier {
    socket: Option<(UnixDatagram, SocketAddr)>,
    /// Half of `WatchdogSec=`: how often to send `WATCHDOG=1`.
    watchdog: Option<Duration>,
    last_ping: Option<Instant>,
    last_status: String,
}

impl Notifier {
    /// From the environment systemd gives the service (`NOTIFY_SOCKET`,
    /// `WATCHDOG_USEC`, `WATCHDOG_PID`).
    #[must_use]
    pub(crate) fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let addr = address(path.to_str()?)?;
            let sock = UnixDatagram::unbound().ok()?;
            sock.set_nonblocking(true).ok()?;
            Some((sock, addr))
        });
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|u| *u > 0 && for_us)
            .map(|u| Duration::from_micros(u) / 2);
        Notifier {
            socket,
            watchdog,
            last_ping: None,
            last_status: String::new(),
        }
    }

    fn send(&self, state: &str) {
        if let Some((sock, addr)) = &self.socket {
            let _ = sock.send_to_addr(state.as_bytes(), addr);
        }
    }

    /// The first pass is done: the service is up.
    pub(crate) fn ready(&mut self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
        status.clone_into(&mut self.last_status);
        self.ping();
    }

    /// The configuration is being re-read (`systemctl reload`); `ready` follows.
    pub(crate) fn reloading(&self) {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let usec = u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000
            + u64::try_from(now.tv_nsec).unwrap_or(0) / 1_000;
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
    }

    /// A new one-line summary, sent only when it changed.
    pub(crate) fn status(&mut self, status: &str) {
        if status != self.last_status {
            self.send(&format!("STATUS={status}"));
            status.clone_into(&mut self.last_status);
        }
    }

    /// Feeds the watchdog if it is due.
    pub(crate) fn ping_if_due(&mut self) {
        if self.next_ping().is_some_and(|due| Instant::now() >= due) {
            self.ping();
        }
    }

    fn ping(&mut self) {
        if self.watchdog.is_some() {
            self.send("WATCHDOG=1");
            self.last_ping = Some(Instant::now());
        }
    }

    /// When the loop must wake up to feed the watchdog, if there is one.
    #[must_use]
    pub(crate) fn next_ping(&self) -> Option<Instant> {
        let every = self.watchdog?;
        Some(self.last_ping.map_or_else(Instant::now, |t| t + every))
    }
}

/// `NOTIFY_SOCKET` as an address: a path, or `@name` for an abstract socket.
fn address(value: &str) -> Option<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    match value.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()).ok(),
        None if value.starts_with('/') => SocketAddr::from_pathname(value).ok(),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_the_notify_socket_and_status_is_sent_when_it_changes() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("notify");
        let systemd = UnixDatagram::bind(&path).unwrap();
        systemd.set_nonblocking(true).unwrap();
        let mut n = Notifier {
            socket: Some((
                UnixDatagram::unbound().unwrap(),
                address(path.to_str().unwrap()).unwrap(),
            )),
            watchdog: Some(Duration::from_secs(5)),
            ..Notifier::default()
        };
        let recv = || {
            let mut buf = [0u8; 256];
            systemd
                .recv(&mut buf)
                .ok()
                .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
        };
        n.ready("2 vassals");
        assert_eq!(recv().as_deref(), Some("READY=1\nSTATUS=2 vassals"));
        assert_eq!(recv().as_deref(), Some("WATCHDOG=1"));
        n.status("2 vassals");
        assert_eq!(recv(), None, "an unchanged status is not sent again");
        n.status("3 vassals");
        assert_eq!(recv().as_deref(), Some("STATUS=3 vassals"));
        // Fed just now: not due again for half the watchdog time.
        n.ping_if_due();
        assert_eq!(recv(), None);
        assert!(n.next_ping().unwrap() > Instant::now());
    }

    #[test]
    fn abstract_and_path_addresses() {
        assert!(address("@/org/freedesktop/systemd1/notify/1").is_some());
        assert!(address("/run/systemd/notify").is_some());
        assert!(address("relative").is_none());
    }

    #[test]
    fn without_systemd_nothing_is_due() {
        assert_eq!(Notifier::default().next_ping(), None);
    }
}
