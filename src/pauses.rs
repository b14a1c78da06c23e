//! Pauses: vassals an operator told the warden to leave alone for a while (`pause`),
//! kept in a file beside the incident log (`<log>.pauses`) so that the running daemon
//! honours them on its next pass and they survive its restarts.
//!
//! This module owns that file: its form (one JSON document, a list of pauses), how it is
//! read (bounded, without following a link or blocking on a FIFO, a regular file with one
//! link only) and how it is changed (under a lock of its own, `<log>.pauses.lock`, waited
//! for a few seconds at most; written to a temporary file and renamed over it). What a
//! pause means is the warden's: a paused vassal is sampled, and its incidents recorded,
//! marked `paused`, but nothing is done to it. It also says who asks: the login behind
//! the command (`/proc/self/loginuid`), and the user it runs as when that differs.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::audit;

/// The most of a pauses file read: room for thousands of pauses.
const MAX_FILE: u64 = 1 << 20;

/// How long a command's change waits for another to finish.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// How long the daemon's change (lifting the pauses whose time came) waits: a pass must
/// not stall behind a command that hangs; it tries again on the next one.
pub(crate) const PASS_LOCK_WAIT: Duration = Duration::from_millis(50);

/// One vassal paused: which, until when, by whom and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pause {
    pub vassal: String,
    /// The vassal file, as the warden watches it.
    pub config: PathBuf,
    /// RFC 3339, UTC.
    pub since: String,
    pub until: String,
    pub who: String,
    pub reason: String,
}

impl Pause {
    /// When it ends; a time that cannot be read has ended.
    #[must_use]
    pub(crate) fn until(&self) -> SystemTime {
        audit::parse_timestamp(&self.until).unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// Whether it still holds at `now`.
    #[must_use]
    pub(crate) fn holds(&self, now: SystemTime) -> bool {
        self.until() > now
    }

    /// How a record or a report says it: `paused by alice until 2026-12-06T14:00:00Z:
    /// deploy`.
    #[must_use]
    pub(crate) fn describe(&self) -> String {
        format!(
            "paused by {} until {}: {}",
            self.who, self.until, self.reason
        )
    }
}

/// The pauses file of the incident log at `log`.
#[must_use]
pub(crate) fn path_of(log: &Path) -> PathBuf {
    let mut s = log.as_os_str().to_owned();
    s.push(".pauses");
    PathBuf::from(s)
}

fn lock_of(log: &Path) -> PathBuf {
    let mut s = path_of(log).into_os_string();
    s.push(".lock");
    PathBuf::from(s)
}

/// What identifies one version of the file, to read it again only when it changed.
pub(crate) type Stamp = (u64, u64, u64, i64, i64);

/// The pauses of the log at `log`, with the stamp of the file read; none when there is no
/// file. A file that is not a regular file with one link, or is too large or not a list
/// of pauses, is an error naming it.
pub(crate) fn read(log: &Path) -> Result<(Vec<Pause>, Option<Stamp>), String> {
    use std::io::Read as _;
    let path = path_of(log);
    let f = match crate::bounded::open_own(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), None)),
        Err(e) => return Err(format!("cannot read the pauses {} ({e})", path.display())),
    };
    let m = f
        .metadata()
        .map_err(|e| format!("cannot read the pauses {} ({e})", path.display()))?;
    if !m.is_file() || m.nlink() != 1 {
        return Err(format!(
            "the pauses {} is not a regular file of its own (a link?); remove it and pause again",
            path.display()
        ));
    }
    let stamp = (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec());
    let mut text = Vec::new();
    f.take(MAX_FILE + 1)
        .read_to_end(&mut text)
        .map_err(|e| format!("cannot read the pauses {} ({e})", path.display()))?;
    if text.len() as u64 > MAX_FILE {
        return Err(format!(
            "the pauses {} is larger than {} KiB; remove it and pause again",
            path.display(),
            MAX_FILE >> 10
        ));
    }
    if text.iter().all(u8::is_ascii_whitespace) {
        return Ok((Vec::new(), Some(stamp)));
    }
    serde_json::from_slice(&text)
        .map(|p| (p, Some(stamp)))
        .map_err(|e| {
            format!(
                "the pauses {} cannot be read ({e}); remove it and pause again",
                path.display()
            )
        })
}

/// The stamp of the pauses file now, to tell whether it changed since it was read.
#[must_use]
pub(crate) fn stamp(log: &Path) -> Option<Stamp> {
    let m = std::fs::symlink_metadata(path_of(log)).ok()?;
    Some((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// Changes the pauses of the log at `log` with `change`, under the file's lock: read,
/// changed, written whole beside it and renamed over it (0640, as the log). Returns what
/// `change` returns.
pub(crate) fn update<R>(
    log: &Path,
    change: impl FnOnce(&mut Vec<Pause>) -> R,
) -> Result<R, String> {
    update_within(log, LOCK_WAIT, change)
}

/// Like `update`, waiting at most `wait` for the lock.
pub(crate) fn update_within<R>(
    log: &Path,
    wait: Duration,
    change: impl FnOnce(&mut Vec<Pause>) -> R,
) -> Result<R, String> {
    let path = path_of(log);
    // Beside the log, whose directory a warden that recorded nothing yet has not made.
    audit::create_dir(log)
        .map_err(|e| format!("cannot make the directory of {} ({e})", path.display()))?;
    let _lock = lock(&lock_of(log), wait)?;
    let (mut pauses, _) = read(log)?;
    let out = change(&mut pauses);
    let mut tmp = path.clone().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let _ = std::fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits().cast_signed())
            .open(&tmp)?;
        serde_json::to_writer_pretty(&mut f, &pauses)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write the pauses {} ({e})", path.display())
    })?;
    Ok(out)
}

/// An exclusive lock on `path` (created 0640), waited for `wait` at most.
fn lock(path: &Path, wait: Duration) -> Result<File, String> {
    use rustix::fs::{FlockOperation, flock};
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o640)
        .custom_flags(
            (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK)
                .bits()
                .cast_signed(),
        )
        .open(path)
        .map_err(|e| format!("cannot take the lock {} ({e})", path.display()))?;
    let deadline = Instant::now() + wait;
    loop {
        match flock(&f, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(f),
            Err(rustix::io::Errno::WOULDBLOCK | rustix::io::Errno::INTR)
                if Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                return Err(format!(
                    "cannot take the lock {} ({e}); another `vassal-warden pause` may hang (`fuser` names it)",
                    path.display()
                ));
            }
        }
    }
}

/// Who runs this command, for the record: the login behind it (the kernel's
/// `loginuid`, kept through `sudo` and `su`), and the user it runs as when that differs
/// (`alice (as root)`).
#[must_use]
pub(crate) fn who() -> String {
    let name = |uid: u32| crate::trust::user_name(uid).unwrap_or_else(|| format!("uid {uid}"));
    let euid = rustix::process::geteuid().as_raw();
    let login = std::fs::read_to_string("/proc/self/loginuid")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|&u| u != u32::MAX);
    match login {
        Some(l) if l != euid => format!("{} (as {})", name(l), name(euid)),
        _ => name(euid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pause(vassal: &str, until: &str) -> Pause {
        Pause {
            vassal: vassal.into(),
            config: PathBuf::from(format!("/v/{vassal}")),
            since: "2026-12-06T10:00:00Z".into(),
            until: until.into(),
            who: "alice".into(),
            reason: "deploy".into(),
        }
    }

    #[test]
    fn a_pause_holds_until_its_end_and_an_unreadable_end_has_passed() {
        let p = pause("a.ini", "2026-12-06T12:00:00Z");
        let at = |s| audit::parse_timestamp(s).unwrap();
        assert!(p.holds(at("2026-12-06T11:59:59Z")));
        assert!(!p.holds(at("2026-12-06T12:00:00Z")));
        assert!(!pause("a.ini", "soon").holds(at("1970-01-02T00:00:00Z")));
        assert_eq!(
            p.describe(),
            "paused by alice until 2026-12-06T12:00:00Z: deploy"
        );
    }

    #[test]
    fn updates_are_read_back_and_a_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("incidents.jsonl");
        assert_eq!(read(&log).unwrap().0, []);
        update(&log, |p| p.push(pause("a.ini", "2026-12-06T12:00:00Z"))).unwrap();
        update(&log, |p| p.push(pause("b.ini", "2026-12-06T13:00:00Z"))).unwrap();
        let removed = update(&log, |p| {
            let n = p.len();
            p.retain(|q| q.vassal != "a.ini");
            n - p.len()
        })
        .unwrap();
        assert_eq!(removed, 1);
        let (read_back, stamp) = read(&log).unwrap();
        assert_eq!(read_back, [pause("b.ini", "2026-12-06T13:00:00Z")]);
        assert!(stamp.is_some());

        let other = dir.path().join("other");
        std::fs::write(&other, "[]").unwrap();
        std::fs::remove_file(path_of(&log)).unwrap();
        std::os::unix::fs::symlink(&other, path_of(&log)).unwrap();
        assert!(read(&log).unwrap_err().contains("incidents.jsonl.pauses"));
        std::fs::remove_file(path_of(&log)).unwrap();
        std::fs::hard_link(&other, path_of(&log)).unwrap();
        assert!(
            read(&log)
                .unwrap_err()
                .contains("not a regular file of its own")
        );
    }
}
