//! The incident log: JSON lines, append-only, each record fsync'd before the next step.
//!
//! This module owns the wire format (its own serde types, versioned by `schema`; fields are
//! added, never renamed), the writer and the readers. The log is a ledger: a record is
//! on disk whole or not at all (a failed write is cut back; a line another writer left
//! torn is ended before the next record), writers of this program append one at a time
//! (a short `flock` on the log), one daemon owns a log (`OwnerLock`, a lock file beside
//! it), and space for an action's record is reserved before the action. The writer opens
//! the file for each record, so logrotate's rename and a fixed permission problem are
//! picked up without a restart; the history a warden starts from includes the rotated
//! predecessor. Values of other modules become wire types here, at the edge (a
//! `forensics::Group` becomes a `Target`). It does not decide what to record.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::capture::{self, Origin};
use crate::episode::{self, Entry, Happened};
use crate::forensics::{self, Kind};
use crate::policy::Past;
pub(crate) use crate::vocab::OutcomeResult;
use crate::vocab::{ActionKind, Reason, RecordKind, Rule};

mod stream;
pub(crate) use stream::{Line, Raw, each_record};

pub(crate) const SCHEMA: u32 = 1;

/// One line of the incident log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Record {
    #[serde(default = "default_schema")]
    pub schema: u32,
    /// RFC 3339, UTC.
    pub ts: String,
    pub incident: String,
    pub vassal: String,
    pub config: PathBuf,
    /// Who owns the vassal (`owner =`), when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(flatten)]
    pub event: Event,
}

fn default_schema() -> u32 {
    SCHEMA
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum Event {
    Detected(Detected),
    Action(Action),
    Outcome(Outcome),
    Suppressed(Suppressed),
    /// An episode that is still on (held, alert only, refused): said again every `remind`.
    Reminder(Episode),
    /// An episode recorded as held, alert only or refused is over.
    Ended(Episode),
    /// The code that leaks, from a capture that went on after the incident's `detected`
    /// record (which said it would, `capture.pending`).
    Capture(Captured),
    /// An operator paused the vassal (`vassal-warden pause`): until when, who, why.
    Pause(Paused),
    /// The pause is over: `vassal-warden resume`, or its time came (`who` is then
    /// `vassal-warden`).
    Resume(Resumed),
}

/// A `pause` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Paused {
    /// RFC 3339, UTC.
    pub until: String,
    pub who: String,
    pub reason: String,
}

/// A `resume` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Resumed {
    pub who: String,
    pub reason: String,
}

impl Event {
    /// What kind of record it is, as its `event` field names it.
    #[must_use]
    pub(crate) fn kind(&self) -> RecordKind {
        match self {
            Event::Detected(_) => RecordKind::Detected,
            Event::Action(_) => RecordKind::Action,
            Event::Outcome(_) => RecordKind::Outcome,
            Event::Suppressed(_) => RecordKind::Suppressed,
            Event::Reminder(_) => RecordKind::Reminder,
            Event::Ended(_) => RecordKind::Ended,
            Event::Capture(_) => RecordKind::Capture,
            Event::Pause(_) => RecordKind::Pause,
            Event::Resume(_) => RecordKind::Resume,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Detected {
    pub pid: i32,
    pub role: Role,
    pub fds: u64,
    pub limit: u64,
    /// JSON has no NaN or infinity: such a value is written as `null` and read as NaN.
    #[serde(deserialize_with = "float_or_null")]
    pub usage: f64,
    pub rule: String,
    /// Which rule fired: `reload-at`, `max-fds` or `predict`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_name: Option<Rule>,
    /// For `predict`: growth in fds per second, and seconds left to the soft limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slope: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<f64>,
    pub top: Vec<Target>,
    /// Keys are kind names (`file`, `socket`, …), listed by name.
    pub by_kind: BTreeMap<Kind, u64>,
    /// The code that opened what leaks (`capture`): sites with their still-open fds, or
    /// why there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<Capture>,
}

/// A `capture` record: what a capture still armed at its incident found afterwards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Captured {
    pub capture: Capture,
}

/// The code that leaks, as a `detected` record carries it: sites, or why there are none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Capture {
    /// What was looked for: a path, or `connections to ADDRESS`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    #[serde(default)]
    pub seconds: f64,
    /// Opens of the target seen (a report each, up to `capture-samples`).
    #[serde(default)]
    pub reports: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<Site>,
    /// Why this incident has no sites, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    /// What could not be read in some processes (one line each).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Still armed when the incident came (it had seen no open yet): its sites follow in
    /// a `capture` record of the same incident.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

/// One place where the target was opened, with its fds still open at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Site {
    /// fds opened here and still open on the same file or connection at the end.
    pub open: u64,
    /// Opens seen here in the window.
    pub opened: u64,
    /// Innermost first.
    pub frames: Vec<Frame>,
}

/// One frame of a site: Python (file, line, function) or native (file, symbol).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Frame {
    pub file: String,
    /// Absent for a native frame, or an instruction without a line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    pub function: String,
    /// Written as its name (`app`, `framework`, `stdlib`, `native`); a name this version
    /// does not know reads as `other`.
    pub origin: Origin,
}

/// The log's record of a capture's result.
impl From<capture::Capture> for Capture {
    fn from(c: capture::Capture) -> Capture {
        Capture {
            target: c.target,
            seconds: c.seconds,
            reports: c.reports,
            sites: c.sites.into_iter().map(Site::from).collect(),
            unavailable: c.unavailable,
            notes: c.notes,
            pending: c.pending,
        }
    }
}

impl From<capture::Site> for Site {
    fn from(s: capture::Site) -> Site {
        Site {
            open: s.open,
            opened: s.opened,
            frames: s.frames.into_iter().map(Frame::from).collect(),
        }
    }
}

impl From<capture::Frame> for Frame {
    fn from(f: capture::Frame) -> Frame {
        Frame {
            file: f.file,
            line: f.line,
            function: f.function,
            origin: f.origin,
        }
    }
}

/// A detected record names a master or a worker; the other roles are never acted on.
pub(crate) use crate::procs::Role;

/// One group of open fds that share a target.
// Field names are the log's, a compatibility boundary.
#[allow(clippy::struct_field_names)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Target {
    pub target: String,
    /// Written as its name (`file`, `anon_inode`, …); a name this version does not know
    /// reads as `other`.
    pub kind: Kind,
    pub count: u64,
    /// Change since the warden first saw the process; absent when no per-target baseline
    /// was kept (large processes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub growth: Option<i64>,
    /// For a worker: how many of these fds it shares with its master (same fd number and
    /// target, inherited at fork). Such a leak lives in the master, and only a reload of
    /// the master clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherited: Option<u64>,
}

/// The log's record of a group of a forensics report.
impl From<&forensics::Group> for Target {
    fn from(g: &forensics::Group) -> Target {
        Target {
            target: g.target.clone(),
            kind: g.kind,
            count: g.count,
            growth: g.growth,
            inherited: g.inherited,
        }
    }
}

// Field names are the log's, a compatibility boundary.
#[allow(clippy::struct_field_names)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Action {
    pub action: ActionKind,
    pub path: PathBuf,
    pub mtime_before: Option<String>,
    pub mtime_after: Option<String>,
    pub dry_run: bool,
    /// Workers signalled, for `recycle-worker`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pids: Vec<i32>,
    /// Why: an operator's reason for a manual reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why this action rather than another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// An operator's (`vassal-warden reload`); written only when true.
    #[serde(default, skip_serializing_if = "is_false")]
    pub manual: bool,
}

impl Action {
    /// Taken by an operator (`vassal-warden reload`): said by its `manual` field, or,
    /// in a record written before that field, by a reason that starts `manual:`.
    #[must_use]
    fn is_manual(&self) -> bool {
        self.manual
            || self
                .reason
                .as_deref()
                .is_some_and(|r| r.starts_with(MANUAL))
    }
}

/// How an operator's reason began in records written before the `manual` field.
const MANUAL: &str = "manual:";

/// False, which a record does not write.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Outcome {
    pub result: OutcomeResult,
    /// The highest fd count among the vassal's processes when the outcome was decided.
    pub fds_after: Option<u64>,
    #[serde(deserialize_with = "float_or_null")]
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Suppressed {
    pub reason: Reason,
    /// For `action_failed`: the action that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<ActionKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// An operator's reload that was refused; written only when true.
    #[serde(default, skip_serializing_if = "is_false")]
    pub manual: bool,
}

impl Suppressed {
    /// An operator's reload that was refused: said by its `manual` field, or, in a
    /// record written before that field, by a detail that starts `manual:`.
    #[must_use]
    fn is_manual(&self) -> bool {
        self.manual
            || self
                .detail
                .as_deref()
                .is_some_and(|d| d.starts_with(MANUAL))
    }
}

/// A condition that lasts (flapping, given up, alert only, a refused touch…): the
/// incident's `suppressed` record starts it, `reminder` records say it is still on, an
/// `ended` record closes it. They carry the incident id of the record that started it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Episode {
    /// The reason of the record that started it.
    pub reason: Reason,
    /// When it started: the `ts` of that record.
    pub since: String,
    /// How long it has lasted, to this record.
    #[serde(deserialize_with = "float_or_null")]
    pub seconds: f64,
    /// The highest fd count among the vassal's processes now, when it is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Episode {
    /// The `reminder` or `ended` record of the lasting episode `open`, at `now`.
    #[must_use]
    pub(crate) fn of(
        open: &episode::Open,
        now: SystemTime,
        fds: Option<u64>,
        detail: Option<String>,
    ) -> Episode {
        Episode {
            reason: open.reason.clone(),
            since: timestamp(open.since),
            seconds: open.lasted(now).as_secs_f64(),
            fds,
            detail,
        }
    }
}

impl Record {
    /// What the record says, as the decision core reads its history; `None` when its
    /// time does not read.
    #[must_use]
    pub(crate) fn entry(&self) -> Option<Entry> {
        let what = match &self.event {
            Event::Detected(_) => Happened::Detected,
            Event::Action(a) => Happened::Acted {
                kind: a.action,
                dry_run: a.dry_run,
                manual: a.is_manual(),
            },
            Event::Suppressed(s) => Happened::Suppressed {
                reason: s.reason.clone(),
                action: s.action,
                manual: s.is_manual(),
            },
            Event::Reminder(e) => Happened::Reminded {
                reason: e.reason.clone(),
                since: parse_timestamp(&e.since),
            },
            Event::Ended(_) => Happened::Ended,
            Event::Outcome(o) => Happened::Verified {
                result: o.result,
                seconds: o.seconds,
            },
            // What the code is, not what happened to the vassal; a pause is the warden's
            // own state, kept in its own file.
            Event::Capture(_) | Event::Pause(_) | Event::Resume(_) => return None,
        };
        Some(Entry {
            at: parse_timestamp(&self.ts)?,
            config: self.config.clone(),
            incident: self.incident.clone(),
            what,
        })
    }
}

/// The history the decision core is rebuilt from: each record that reads, in order.
#[must_use]
pub(crate) fn history(records: &[Record]) -> Vec<Entry> {
    records.iter().filter_map(Record::entry).collect()
}

/// A number that may have been written as `null`: JSON cannot hold NaN or an infinity
/// (`serde_json` writes them as `null`), and a record must always read back.
fn float_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// RFC 3339 in UTC, whole seconds. A time RFC 3339 cannot show (before 1970 or after
/// 9999: a broken clock, or an mtime set by hand) is written as `@SECONDS` since the
/// epoch, as `date -d @SECONDS` reads it, never a panic.
#[must_use]
pub(crate) fn timestamp(t: SystemTime) -> String {
    if representable(t) {
        humantime::format_rfc3339_seconds(t).to_string()
    } else {
        epoch_seconds(t)
    }
}

/// RFC 3339 in UTC with nanoseconds, for mtimes (the Emperor compares whole seconds, and
/// the record must show exactly what the file had); `@SECONDS` out of range.
#[must_use]
pub(crate) fn timestamp_precise(t: SystemTime) -> String {
    if representable(t) {
        humantime::format_rfc3339_nanos(t).to_string()
    } else {
        epoch_seconds(t)
    }
}

/// The last second of year 9999, the end of what RFC 3339 can write.
const RFC3339_END: u64 = 253_402_300_799;

fn representable(t: SystemTime) -> bool {
    t.duration_since(std::time::UNIX_EPOCH)
        .is_ok_and(|d| d.as_secs() <= RFC3339_END)
}

fn epoch_seconds(t: SystemTime) -> String {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => format!("@{}", d.as_secs()),
        Err(e) => format!("@-{}", e.duration().as_secs()),
    }
}

pub(crate) fn parse_timestamp(s: &str) -> Option<SystemTime> {
    if let Some(secs) = s.strip_prefix('@') {
        let d = |n: &str| n.parse().ok().map(std::time::Duration::from_secs);
        return match secs.strip_prefix('-') {
            Some(n) => std::time::UNIX_EPOCH.checked_sub(d(n)?),
            None => std::time::UNIX_EPOCH.checked_add(d(secs)?),
        };
    }
    humantime::parse_rfc3339_weak(s).ok()
}

/// Why a record could not be written. The caller must not take the step the record was
/// meant to precede. Nothing of the record is left in the file.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot write the incident log {path}: {source}; free space on its filesystem or make its directory writable by the warden, or set `audit-log` in warden.ini"
)]
pub(crate) struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// How long an append waits for another writer (a `vassal-warden reload` while the daemon
/// runs) to finish its own append.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Mode of an incident log the warden creates (an existing one keeps its own).
const FILE_MODE: u32 = 0o640;
/// Mode of a log directory the warden creates.
const DIR_MODE: u32 = 0o750;

/// Appends records to the incident log: whole lines or nothing, one writer at a time.
#[derive(Debug, Clone)]
pub(crate) struct AuditLog {
    path: PathBuf,
}

impl AuditLog {
    #[must_use]
    pub(crate) fn new(path: PathBuf) -> Self {
        AuditLog { path }
    }

    #[must_use]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn wrap(&self, source: std::io::Error) -> WriteError {
        WriteError {
            path: self.path.clone(),
            source,
        }
    }

    /// Opens the log for appending, creating it (0640) and its directory (0750) when
    /// missing.
    fn open(&self) -> Result<File, WriteError> {
        create_dir(&self.path).map_err(|e| self.wrap(e))?;
        OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(FILE_MODE)
            .open(&self.path)
            .map_err(|e| self.wrap(e))
    }

    /// Writes one record and fsyncs it before returning. Under a lock on the log that
    /// every writer of this program takes, it ends the line another writer left torn
    /// (a crash), so the record starts on a line of its own; and when the write or the
    /// fsync fails (a full disk, an I/O error), the file is cut back to its length before
    /// the write, so no part of the record stays.
    pub(crate) fn append(&self, record: &Record) -> Result<(), WriteError> {
        let line = serde_json::to_vec(record).map_err(|e| self.wrap(e.into()))?;
        let mut f = self.open()?;
        lock(&f, LOCK_WAIT).map_err(|e| self.wrap(e))?;
        let len = f.metadata().map_err(|e| self.wrap(e))?.len();
        let mut buf = Vec::with_capacity(line.len() + 2);
        if len > 0 && last_byte(&f, len).map_err(|e| self.wrap(e))? != b'\n' {
            tracing::warn!(file = %self.path.display(), "the incident log ends in a torn line (a crash while writing?); it is left as it is, and readers skip it");
            buf.push(b'\n');
        }
        buf.extend_from_slice(&line);
        buf.push(b'\n');
        // One write(2) of the whole line, at the end (O_APPEND), under the lock.
        if let Err(e) = f.write_all(&buf).and_then(|()| f.sync_data()) {
            if let Err(cut) = f.set_len(len).and_then(|()| f.sync_data()) {
                return Err(self.wrap(std::io::Error::new(
                    e.kind(),
                    format!("{e}, and it could not be cut back to its last whole line ({cut}): readers skip the torn line"),
                )));
            }
            return Err(self.wrap(e));
        }
        Ok(())
    }

    /// Makes sure `bytes` more can be appended to the log without running out of space:
    /// the blocks are allocated now (`fallocate`, keeping the file's size), so that the
    /// record of an action about to be taken can be written once it is taken. A
    /// filesystem that cannot allocate ahead is not an error: a failed write is still
    /// cut back, and the record is written on a later pass.
    pub(crate) fn reserve(&self, bytes: u64) -> Result<(), WriteError> {
        use rustix::io::Errno;
        let f = self.open()?;
        let len = f.metadata().map_err(|e| self.wrap(e))?.len();
        match rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::KEEP_SIZE, len, bytes) {
            Err(Errno::OPNOTSUPP | Errno::NOSYS) | Ok(()) => Ok(()),
            Err(e) => Err(self.wrap(e.into())),
        }
    }
}

/// The length of `record`'s line in the log, newline included.
#[must_use]
pub(crate) fn line_len(record: &Record) -> u64 {
    serde_json::to_vec(record).map_or(0, |v| v.len() as u64 + 1)
}

/// Creates the directory of `file` (and its parents) as 0750 when it is missing.
pub(crate) fn create_dir(file: &Path) -> std::io::Result<()> {
    match file.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir),
        None => Ok(()),
    }
}

/// Takes an exclusive `flock` on `f`, waiting at most `wait` for the holder to let go.
fn lock(f: &File, wait: Duration) -> std::io::Result<()> {
    use rustix::fs::{FlockOperation, flock};
    let deadline = Instant::now() + wait;
    loop {
        match flock(f, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::WOULDBLOCK) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    format!(
                        "another process held its lock for more than {}s (`fuser` names it)",
                        wait.as_secs()
                    ),
                ));
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn last_byte(f: &File, len: u64) -> std::io::Result<u8> {
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, len - 1)?;
    Ok(b[0])
}

/// The lock that keeps a second daemon off one incident log: an exclusive `flock` on a
/// file beside it (`<log>.lock`, holding the daemon's PID), held for the daemon's
/// lifetime. It is not the log itself, so logrotate's rename of the log lets no second
/// daemon in.
#[derive(Debug)]
pub(crate) struct OwnerLock {
    _file: File,
}

/// Why the lock for the log could not be taken. Said of the log, whose path comes
/// before it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LockError {
    #[error(
        "another vassal-warden{} already runs with this incident log (it holds {}); stop it first (`systemctl stop vassal-warden`), or give this one its own `audit-log` in warden.ini",
        pid.map(|p| format!(" (PID {p})")).unwrap_or_default(),
        lock.display()
    )]
    Held { lock: PathBuf, pid: Option<i32> },
    #[error(
        "cannot take the lock {} that keeps a second warden off this incident log: {source}; make its directory writable by the warden, or set `audit-log` in warden.ini",
        lock.display()
    )]
    Io {
        lock: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The lock file of the log at `log`.
#[must_use]
pub(crate) fn lock_path(log: &Path) -> PathBuf {
    let mut s = log.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

impl OwnerLock {
    /// Takes the lock (without waiting) and writes this process's PID into it.
    pub(crate) fn take(log: &Path) -> Result<OwnerLock, LockError> {
        use rustix::fs::{FlockOperation, flock};
        let lock = lock_path(log);
        let io = |source| LockError::Io {
            lock: lock.clone(),
            source,
        };
        create_dir(log).map_err(io)?;
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(FILE_MODE)
            .open(&lock)
            .map_err(io)?;
        // A command that looks whether a daemon runs (`health`, `check`) holds a shared
        // lock for an instant: that is not a daemon, and is waited out.
        let deadline = Instant::now() + PROBE_WAIT;
        loop {
            match flock(&f, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(rustix::io::Errno::WOULDBLOCK | rustix::io::Errno::INTR)
                    if Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    let pid = std::fs::read_to_string(&lock)
                        .ok()
                        .and_then(|s| s.trim().parse().ok());
                    return Err(LockError::Held { lock, pid });
                }
                Err(e) => return Err(io(e.into())),
            }
        }
        f.set_len(0)
            .and_then(|()| writeln!(f, "{}", std::process::id()))
            .map_err(io)?;
        Ok(OwnerLock { _file: f })
    }
}

/// How long a daemon starting waits for the lock: a look by `health` or `check` holds it
/// for an instant, a daemon for its life.
const PROBE_WAIT: Duration = Duration::from_secs(1);

/// Whether a daemon runs with the log at `log`, and how that is known: by its lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Owner {
    /// The lock is held; the PID it names (none when it names none this side can read).
    Running(Option<i32>),
    /// Nobody holds the lock, or there is none: no warden writes this log.
    None(String),
    /// The lock could not be looked at (this user may not read it): nobody can say.
    Unknown(String),
}

impl Owner {
    /// The PID of the running daemon, when one runs and its PID is known.
    #[must_use]
    pub(crate) fn pid(&self) -> Option<i32> {
        match self {
            Owner::Running(pid) => *pid,
            _ => None,
        }
    }
}

/// Who holds the lock of the log at `log`: a daemon runs when a shared lock cannot be
/// taken without waiting. The lock is opened without following a link and without
/// blocking (a FIFO there stalls nothing), and must be a regular file.
#[must_use]
pub(crate) fn owner(log: &Path) -> Owner {
    use rustix::fs::{FlockOperation, flock};
    let lock = lock_path(log);
    let f = match crate::bounded::open_own(&lock) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Owner::None(format!(
                "no vassal-warden runs with the incident log {} (its lock {} does not exist)",
                log.display(),
                lock.display()
            ));
        }
        Err(e) => {
            return Owner::Unknown(format!(
                "cannot tell whether a vassal-warden runs: cannot open its lock {} ({e}); run this as root or as a member of the log's group",
                lock.display()
            ));
        }
    };
    if !f.metadata().is_ok_and(|m| m.is_file()) {
        return Owner::Unknown(format!(
            "cannot tell whether a vassal-warden runs: its lock {} is not a regular file; remove it and restart the warden",
            lock.display()
        ));
    }
    match flock(&f, FlockOperation::NonBlockingLockShared) {
        // Its PID, read from the descriptor already open, and bounded as a pidfile is.
        Err(rustix::io::Errno::WOULDBLOCK) => {
            use std::io::Read as _;
            let mut pid = String::new();
            let pid = (&f)
                .take(crate::bounded::MAX_PIDFILE)
                .read_to_string(&mut pid)
                .ok()
                .and_then(|_| pid.trim().parse().ok());
            Owner::Running(pid)
        }
        // Taken: nobody holds it (dropping the file releases it).
        Ok(()) => Owner::None(format!(
            "no vassal-warden runs with the incident log {} (nobody holds its lock {})",
            log.display(),
            lock.display()
        )),
        Err(e) => Owner::Unknown(format!(
            "cannot tell whether a vassal-warden runs: cannot test its lock {} ({e})",
            lock.display()
        )),
    }
}

/// The PID of the daemon that holds the lock of the log at `log`, if one runs.
#[must_use]
pub(crate) fn running_owner(log: &Path) -> Option<i32> {
    owner(log).pid()
}

/// The actions on the vassal file `config` recorded in the last `tail` bytes of the log:
/// what another writer (an operator's `vassal-warden reload`, another warden) did since
/// this one read the log. Lines that cannot be read are returned apart.
pub(crate) fn recent_actions(path: &Path, config: &Path, tail: u64) -> (Vec<Past>, Vec<BadLine>) {
    let Ok(read) = read_tail(path, tail) else {
        return (Vec::new(), Vec::new());
    };
    let past = read
        .records
        .iter()
        .filter(|r| r.config == config)
        .filter_map(|r| match &r.event {
            Event::Action(a) if !a.dry_run => Some(Past {
                at: parse_timestamp(&r.ts)?,
                kind: a.action,
                manual: a.is_manual(),
            }),
            _ => None,
        })
        .collect();
    (past, read.bad)
}

/// A line of the log that could not be read (a line torn by a crash, say): where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadLine {
    pub file: PathBuf,
    /// Its line number, when the file was read from its start.
    pub line: Option<usize>,
    /// Its byte offset in the file.
    pub offset: u64,
    pub message: String,
}

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}", self.file.display())?,
            None => write!(f, "{} (at byte {})", self.file.display(), self.offset)?,
        }
        write!(f, ": unreadable line skipped ({})", self.message)
    }
}

/// What a reading of the log found.
#[derive(Debug, Default)]
pub(crate) struct Read {
    pub records: Vec<Record>,
    pub bad: Vec<BadLine>,
}

/// Parses the lines of `bytes`, which start at `offset` in `file`. `cut`: the bytes
/// start in the middle of the file, so their first line is partial and is not a record.
fn parse(file: &Path, bytes: &[u8], offset: u64, cut: bool, out: &mut Read) {
    let mut at = offset;
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        let here = at;
        at += line.len() as u64 + 1;
        if (cut && i == 0) || line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Record>(line) {
            Ok(r) => out.records.push(r),
            Err(e) => out.bad.push(BadLine {
                file: file.to_owned(),
                line: (!cut).then_some(i + 1),
                offset: here,
                message: e.to_string(),
            }),
        }
    }
}

/// Reads the records of the last `tail` bytes of the log at `path`.
pub(crate) fn read_tail(path: &Path, tail: u64) -> std::io::Result<Read> {
    use std::io::{Read as _, Seek, SeekFrom};
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(tail);
    f.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    f.take(tail).read_to_end(&mut bytes)?;
    let mut out = Read::default();
    parse(path, &bytes, start, start > 0, &mut out);
    Ok(out)
}

/// Reads every record of the log. Bad lines (a torn line after a crash, say) are
/// returned apart and do not stop the reading.
#[cfg(test)]
pub(crate) fn read_log(path: &Path) -> std::io::Result<Read> {
    read_tail(path, u64::MAX)
}

/// The log's rotated predecessors as logrotate leaves them, newest first: `<log>.1`,
/// `<log>.2.gz`, … (each plain or gzipped, whichever exists), up to the first number
/// with neither.
#[must_use]
pub(crate) fn rotations(log: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for n in 1..=MAX_ROTATIONS {
        let plain = suffixed(log, &format!(".{n}"));
        let gz = suffixed(log, &format!(".{n}.gz"));
        match (plain.exists(), gz.exists()) {
            (true, _) => out.push(plain),
            (false, true) => out.push(gz),
            (false, false) => break,
        }
    }
    out
}

/// The most rotated files read: years of weekly rotations.
const MAX_ROTATIONS: usize = 1000;

/// The most a compressed rotation is inflated to: a file that inflates further is read
/// up to here, and the rest is reported as unread.
const MAX_INFLATED: u64 = 256 * 1024 * 1024;

fn suffixed(log: &Path, suffix: &str) -> PathBuf {
    let mut s = log.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Reads the records of the last `tail` bytes of one file of the log, plain or (by its
/// `.gz` name) gzipped. A compressed file is inflated as a stream, keeping only its
/// tail, up to `MAX_INFLATED` bytes; a file cut short (or corrupt) keeps what inflated
/// before the damage, and the damage is a bad line.
fn read_file_tail(path: &Path, tail: u64) -> std::io::Result<Read> {
    use std::io::Read as _;
    if path.extension().is_none_or(|e| e != "gz") {
        return read_tail(path, tail);
    }
    let mut dec = flate2::read::MultiGzDecoder::new(File::open(path)?);
    let keep = usize::try_from(tail.min(MAX_INFLATED)).unwrap_or(usize::MAX);
    let mut out = Read::default();
    let mut bytes: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    // Bytes inflated so far, and how many of them were let go from the front.
    let (mut total, mut dropped) = (0u64, 0u64);
    let mut problem = None;
    loop {
        match dec.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) if total + n as u64 > MAX_INFLATED => {
                problem = Some(format!(
                    "inflates to more than {} MiB; the rest of it is not read",
                    MAX_INFLATED >> 20
                ));
                break;
            }
            Ok(n) => {
                total += n as u64;
                bytes.extend_from_slice(&chunk[..n]);
                if bytes.len() > keep.saturating_mul(2) {
                    let excess = bytes.len() - keep;
                    bytes.drain(..excess);
                    dropped += excess as u64;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                problem = Some(format!(
                    "cannot be inflated to its end ({e}); what came before is read"
                ));
                break;
            }
        }
    }
    if let Some(message) = problem {
        // A line cut by the stop is not a record: read up to the last whole line.
        let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        bytes.truncate(whole);
        out.bad.push(BadLine {
            file: path.to_owned(),
            line: None,
            offset: dropped + whole as u64,
            message,
        });
    }
    let skip = bytes.len().saturating_sub(keep);
    let start = dropped + skip as u64;
    parse(path, &bytes[skip..], start, start > 0, &mut out);
    Ok(out)
}

/// The history a warden starts from: the last `tail` bytes of each of the newest
/// `files` rotated predecessors and of the log, oldest first. The bound keeps a huge log
/// from stalling the start. A log that does not exist is an empty history; any other
/// error reading the log itself is returned (the predecessors' errors are bad lines).
pub(crate) fn read_history(log: &Path, tail: u64, files: usize) -> std::io::Result<Read> {
    let mut out = Read::default();
    let mut old = rotations(log);
    old.truncate(files);
    for p in old.into_iter().rev() {
        match read_file_tail(&p, tail) {
            Ok(r) => {
                out.records.extend(r.records);
                out.bad.extend(r.bad);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => out.bad.push(BadLine {
                file: p,
                line: None,
                offset: 0,
                message: format!(
                    "cannot read it: {e}; cooldowns recorded only there are not known"
                ),
            }),
        }
    }
    match read_tail(log, tail) {
        Ok(r) => {
            out.records.extend(r.records);
            out.bad.extend(r.bad);
            Ok(out)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(out),
        Err(e) => Err(e),
    }
}

/// How many rotated files a warden reads at start (and `status` and `check`): with
/// logrotate's weekly rotation, two to three weeks, far longer than any cooldown or
/// `max-reloads` window.
pub(crate) const HISTORY_FILES: usize = 2;

/// How much of each file of the log a warden reads at start (and `status` and `check`):
/// weeks of incidents, far more than any cooldown or `max-reloads` window needs.
pub(crate) const HISTORY_TAIL: u64 = 4 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLES: &str = include_str!("../tests/data/incidents-v1.jsonl");

    #[test]
    fn checked_in_samples_round_trip() {
        for line in SAMPLES.lines().filter(|l| !l.is_empty()) {
            let r: Record = serde_json::from_str(line).unwrap();
            let back = serde_json::to_string(&r).unwrap();
            let a: serde_json::Value = serde_json::from_str(line).unwrap();
            let b: serde_json::Value = serde_json::from_str(&back).unwrap();
            assert_eq!(a, b, "round trip changed {line}");
        }
    }

    /// Every suppression reason, action kind and rule the warden writes, as the version
    /// that wrote these lines wrote them: reading and writing again gives the same bytes.
    #[test]
    fn vocabulary_is_byte_identical_on_the_wire() {
        let samples = include_str!("../tests/data/incidents-v1-vocabulary.jsonl");
        let mut reasons = Vec::new();
        for line in samples.lines().filter(|l| !l.is_empty()) {
            let r: Record = serde_json::from_str(line).unwrap();
            assert_eq!(serde_json::to_string(&r).unwrap(), line);
            if let Event::Suppressed(s) = r.event {
                reasons.push(s.reason);
            }
        }
        assert!(reasons.contains(&Reason::LadderExhausted));
        assert!(reasons.contains(&Reason::RunsVassals));
        assert_eq!(
            reasons[11],
            Reason::Other("a_reason_from_a_newer_version".into())
        );
    }

    #[test]
    fn names_shown_to_people_are_the_names_in_the_log() {
        for r in [
            OutcomeResult::Recovered,
            OutcomeResult::NotRecovered,
            OutcomeResult::Vanished,
        ] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.to_string());
        }
        for r in [Role::Master, Role::Worker] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.to_string());
        }
    }

    #[test]
    fn detected_records_keep_their_exact_bytes() {
        let line = r#"{"schema":1,"ts":"2026-11-26T22:10:00Z","incident":"i","vassal":"a.ini","config":"/v/a.ini","event":"detected","pid":7,"role":"worker","fds":9,"limit":10,"usage":0.9,"rule":"r","top":[{"target":"anon_inode:[eventfd]","kind":"anon_inode","count":5,"growth":5,"inherited":0},{"target":"unix (unnamed)","kind":"socket","count":3}],"by_kind":{"anon_inode":5,"file":1,"memfd":1,"other":1,"socket":3}}"#;
        let r: Record = serde_json::from_str(line).unwrap();
        let Event::Detected(d) = &r.event else {
            panic!("{r:?}")
        };
        assert_eq!(d.top[0].kind, Kind::AnonInode);
        assert_eq!(d.by_kind[&Kind::Memfd], 1);
        assert_eq!(serde_json::to_string(&r).unwrap(), line);
    }

    #[test]
    fn groups_of_a_report_become_targets() {
        let g = forensics::Group {
            target: "/srv/cat.jpg".into(),
            kind: Kind::File,
            count: 745,
            growth: Some(745),
            inherited: None,
        };
        let t = Target::from(&g);
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            serde_json::to_string(&g).unwrap()
        );
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"target":"/srv/cat.jpg","kind":"file","count":745,"growth":745}"#
        );
    }

    #[test]
    fn append_then_read_back_and_torn_lines_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/incidents.jsonl");
        let log = AuditLog::new(path.clone());
        let r = Record {
            owner: None,
            schema: SCHEMA,
            ts: timestamp(SystemTime::now()),
            incident: "i1".into(),
            vassal: "a.ini".into(),
            config: "/v/a.ini".into(),
            event: Event::Suppressed(Suppressed {
                reason: Reason::Cooldown,
                action: None,
                detail: None,
                manual: false,
            }),
        };
        log.append(&r).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"ts\": \"tor")
            .unwrap();
        let read = read_log(&path).unwrap();
        assert_eq!(read.records, vec![r]);
        assert_eq!(read.bad.len(), 1);
        assert_eq!(read.bad[0].line, Some(2));
    }

    fn sample(incident: &str, config: &str) -> Record {
        Record {
            owner: None,
            schema: SCHEMA,
            ts: "2026-01-01T00:00:00Z".into(),
            incident: incident.into(),
            vassal: "a.ini".into(),
            config: config.into(),
            event: Event::Action(Action {
                action: ActionKind::Touch,
                path: config.into(),
                mtime_before: None,
                mtime_after: None,
                dry_run: false,
                pids: Vec::new(),
                reason: Some("manual: é".into()),
                note: None,
                manual: true,
            }),
        }
    }

    #[test]
    fn a_record_after_a_torn_tail_starts_on_its_own_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("incidents.jsonl");
        let log = AuditLog::new(path.clone());
        log.append(&sample("i1", "/v/a.ini")).unwrap();
        // A crash in the middle of a line, cut inside a UTF-8 sequence.
        let torn = serde_json::to_vec(&sample("i2", "/v/a.ini")).unwrap();
        let cut = torn.iter().position(|b| *b == 0xc3).unwrap() + 1;
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&torn[..cut])
            .unwrap();
        log.append(&sample("i3", "/v/a.ini")).unwrap();
        let read = read_log(&path).unwrap();
        let ids: Vec<&str> = read.records.iter().map(|r| r.incident.as_str()).collect();
        assert_eq!(ids, ["i1", "i3"]);
        assert_eq!(read.bad.len(), 1, "{:?}", read.bad);
        assert_eq!(read.bad[0].line, Some(2));
        assert!(read.bad[0].to_string().contains("incidents.jsonl:2"));
        let text = std::fs::read(&path).unwrap();
        assert!(text.ends_with(b"\n"));
        // The tail reader, cut anywhere, sees the same.
        for tail in [10, 200, 100_000] {
            let (past, _) = recent_actions(&path, Path::new("/v/a.ini"), tail);
            assert!(past.len() <= 2, "{tail}");
        }
        assert_eq!(
            recent_actions(&path, Path::new("/v/a.ini"), 100_000)
                .0
                .len(),
            2
        );
    }

    #[test]
    fn a_tail_cut_inside_a_character_loses_nothing_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("incidents.jsonl");
        let log = AuditLog::new(path.clone());
        for i in 0..3 {
            log.append(&sample(&format!("i{i}"), "/v/a.ini")).unwrap();
        }
        let text = std::fs::read(&path).unwrap();
        // Cut one byte into the `é` of the first line's reason.
        let at = text.iter().position(|b| *b == 0xc3).unwrap() + 1;
        let read = read_tail(&path, (text.len() - at) as u64).unwrap();
        assert!(read.bad.is_empty(), "{:?}", read.bad);
        assert_eq!(read.records.len(), 2);
    }

    #[test]
    fn history_reads_the_rotations_as_logrotate_leaves_them_oldest_first() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("incidents.jsonl");
        let log = AuditLog::new(path.clone());
        // Three weeks of rotations under `compress` + `delaycompress`: .2.gz, .1, the log.
        log.append(&sample("oldest", "/v/a.ini")).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&bytes).unwrap();
        std::fs::write(suffixed(&path, ".2.gz"), gz.finish().unwrap()).unwrap();
        std::fs::remove_file(&path).unwrap();
        log.append(&sample("old", "/v/a.ini")).unwrap();
        std::fs::rename(&path, suffixed(&path, ".1")).unwrap();
        // No log yet after the rotation: the predecessors still tell the history.
        let ids =
            |r: &Read| -> Vec<String> { r.records.iter().map(|r| r.incident.clone()).collect() };
        let read = read_history(&path, HISTORY_TAIL, HISTORY_FILES).unwrap();
        assert_eq!(ids(&read), ["oldest", "old"]);
        log.append(&sample("new", "/v/a.ini")).unwrap();
        let read = read_history(&path, HISTORY_TAIL, HISTORY_FILES).unwrap();
        assert_eq!(ids(&read), ["oldest", "old", "new"]);
        // A start reads only the newest rotations; `incidents` reads them all.
        std::fs::write(suffixed(&path, ".3.gz"), b"\x1f\x8b broken").unwrap();
        let read = read_history(&path, HISTORY_TAIL, HISTORY_FILES).unwrap();
        assert_eq!((ids(&read).len(), read.bad.len()), (3, 0));
        let mut all = Read::default();
        each_record(&path, None, |l| {
            match l {
                Line::Record(r) => match r.record() {
                    Ok(r) => all.records.push(r),
                    Err(b) => all.bad.push(b),
                },
                Line::Bad(b) => all.bad.push(b),
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(ids(&all), ["oldest", "old", "new"]);
        assert!(
            all.bad[0].to_string().contains("incidents.jsonl.3.gz"),
            "{:?}",
            all.bad
        );
        // A gap ends the rotations: .5 after a missing .4 is not one of them.
        std::fs::write(suffixed(&path, ".5"), b"").unwrap();
        assert_eq!(rotations(&path).len(), 3);
        // A bound shorter than a line reads no partial line as a record, nor as bad.
        let read = read_history(&path, 20, HISTORY_FILES).unwrap();
        assert!(read.records.is_empty() && read.bad.is_empty(), "{read:?}");
        assert!(
            read_history(&dir.path().join("none.jsonl"), 10, HISTORY_FILES)
                .unwrap()
                .records
                .is_empty()
        );
    }

    #[test]
    fn a_gzipped_rotation_is_read_as_a_stream_keeping_its_tail_and_what_came_before_damage() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::new();
        for i in 0..2000 {
            text += &serde_json::to_string(&sample(&format!("i{i}"), "/v/a.ini")).unwrap();
            text.push('\n');
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(text.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        let whole = dir.path().join("incidents.jsonl.2.gz");
        std::fs::write(&whole, &gz).unwrap();
        let all = read_file_tail(&whole, u64::MAX).unwrap();
        assert_eq!((all.records.len(), all.bad.len()), (2000, 0));
        // A tail bound: the last records only, no partial line as a record or as bad.
        let tail = read_file_tail(&whole, 1000).unwrap();
        assert!(tail.bad.is_empty(), "{:?}", tail.bad);
        assert!(!tail.records.is_empty() && tail.records.len() < 10);
        assert_eq!(tail.records.last().unwrap().incident, "i1999");
        // Cut short, as a full disk leaves it: what inflated before the cut is read.
        let cut = dir.path().join("incidents.jsonl.3.gz");
        std::fs::write(&cut, &gz[..gz.len() / 2]).unwrap();
        let read = read_file_tail(&cut, u64::MAX).unwrap();
        assert!(read.records.len() > 100, "{}", read.records.len());
        assert_eq!(read.records[0].incident, "i0");
        assert_eq!(read.bad.len(), 1, "{:?}", read.bad);
        assert!(read.bad[0].to_string().contains("what came before is read"));
    }

    #[test]
    fn the_log_and_its_directory_are_created_private_to_root_and_adm() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/sub/incidents.jsonl");
        AuditLog::new(path.clone())
            .append(&sample("i", "/v/a.ini"))
            .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        // Only the umask can make them stricter.
        assert_eq!(mode(&path) & !0o640, 0, "{:o}", mode(&path));
        assert_eq!(mode(&path) & 0o600, 0o600);
        assert_eq!(mode(&dir.path().join("new")) & !0o750, 0);
        assert_eq!(mode(&dir.path().join("new/sub")) & 0o700, 0o700);
        // An existing one keeps what the admin set.
        let other = dir.path().join("mine.jsonl");
        std::fs::write(&other, "").unwrap();
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o644)).unwrap();
        AuditLog::new(other.clone())
            .append(&sample("i", "/v/a.ini"))
            .unwrap();
        assert_eq!(mode(&other), 0o644);
    }

    #[test]
    fn one_daemon_per_log_and_the_error_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("incidents.jsonl");
        let first = OwnerLock::take(&path).unwrap();
        let e = OwnerLock::take(&path).unwrap_err();
        let LockError::Held { pid, .. } = &e else {
            panic!("{e}")
        };
        assert_eq!(*pid, Some(i32::try_from(std::process::id()).unwrap()));
        let msg = e.to_string();
        assert!(msg.contains("incidents.jsonl.lock"), "{msg}");
        assert!(
            msg.contains("audit-log") && msg.contains("stop it"),
            "{msg}"
        );
        // The log's rename (logrotate) does not free the lock.
        std::fs::write(&path, "").unwrap();
        std::fs::rename(&path, suffixed(&path, ".1")).unwrap();
        assert!(OwnerLock::take(&path).is_err());
        drop(first);
        assert!(OwnerLock::take(&path).is_ok());
    }

    #[test]
    fn appends_wait_for_another_writers_lock_and_give_up_in_time() {
        use rustix::fs::{FlockOperation, flock};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("incidents.jsonl");
        std::fs::write(&path, "").unwrap();
        let other = File::open(&path).unwrap();
        flock(&other, FlockOperation::LockExclusive).unwrap();
        let mine = File::open(&path).unwrap();
        let e = lock(&mine, Duration::from_millis(50)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
        assert!(e.to_string().contains("fuser"), "{e}");
        drop(other);
        lock(&mine, Duration::from_millis(50)).unwrap();
    }

    #[test]
    fn reserving_room_keeps_the_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("incidents.jsonl");
        let log = AuditLog::new(path.clone());
        log.append(&sample("i", "/v/a.ini")).unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        log.reserve(4096).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
        assert_eq!(line_len(&sample("i", "/v/a.ini")), len);
    }

    #[test]
    fn unwritable_log_error_names_the_file() {
        let log = AuditLog::new(PathBuf::from("/proc/vassal-warden-test/incidents.jsonl"));
        let r = Record {
            owner: None,
            schema: SCHEMA,
            ts: "2026-01-01T00:00:00Z".into(),
            incident: "i".into(),
            vassal: "a.ini".into(),
            config: "/v/a.ini".into(),
            event: Event::Suppressed(Suppressed {
                reason: Reason::Cooldown,
                action: None,
                detail: None,
                manual: false,
            }),
        };
        let e = log.append(&r).unwrap_err().to_string();
        assert!(
            e.contains("/proc/vassal-warden-test/incidents.jsonl"),
            "{e}"
        );
        assert!(e.contains("audit-log"), "{e}");
    }

    #[test]
    fn times_rfc3339_cannot_show_are_written_as_epoch_seconds_not_a_panic() {
        use std::time::{Duration, UNIX_EPOCH};
        let before_1970 = UNIX_EPOCH - Duration::from_secs(86_400);
        let after_9999 = UNIX_EPOCH + Duration::from_secs(RFC3339_END + 1);
        for (t, text) in [(before_1970, "@-86400"), (after_9999, "@253402300800")] {
            assert_eq!(timestamp(t), text);
            assert_eq!(timestamp_precise(t), text);
            assert_eq!(parse_timestamp(text), Some(t));
        }
        let last = UNIX_EPOCH + Duration::from_secs(RFC3339_END);
        assert_eq!(timestamp(last), "9999-12-31T23:59:59Z");
        assert_eq!(parse_timestamp("@x"), None);
    }

    fn any_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            any::<String>(),
            "[\\x00-\\x1f\\x7f\\u{80}-\\u{9f}\\u{202e}\"\\\\\n\r]{0,12}",
        ]
    }

    fn any_float() -> impl proptest::strategy::Strategy<Value = f64> {
        use proptest::prelude::*;
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
        ]
    }

    fn any_time() -> impl proptest::strategy::Strategy<Value = SystemTime> {
        use proptest::prelude::*;
        use std::time::{Duration, UNIX_EPOCH};
        (any::<bool>(), 0..u64::from(u32::MAX) * 200).prop_map(|(before, secs)| {
            if before {
                UNIX_EPOCH - Duration::from_secs(secs)
            } else {
                UNIX_EPOCH + Duration::from_secs(secs)
            }
        })
    }

    fn any_event() -> impl proptest::strategy::Strategy<Value = Event> {
        use proptest::prelude::*;
        prop_oneof![
            (
                any::<i32>(),
                any::<u64>(),
                any::<f64>(),
                any_text(),
                any::<u64>()
            )
                .prop_map(|(pid, fds, usage, target, count)| {
                    Event::Detected(Detected {
                        pid,
                        role: Role::Worker,
                        fds,
                        limit: fds,
                        usage,
                        rule: target.clone(),
                        rule_name: None,
                        slope: Some(usage),
                        eta_seconds: None,
                        top: vec![Target {
                            target,
                            kind: Kind::File,
                            count,
                            growth: None,
                            inherited: None,
                        }],
                        by_kind: BTreeMap::new(),
                        capture: None,
                    })
                }),
            (any_text(), any_time(), any_time(), any::<Vec<i32>>()).prop_map(
                |(path, before, after, pids)| Event::Action(Action {
                    action: ActionKind::Touch,
                    path: PathBuf::from(path.clone()),
                    mtime_before: Some(timestamp_precise(before)),
                    mtime_after: Some(timestamp_precise(after)),
                    dry_run: false,
                    pids,
                    reason: Some(path),
                    note: None,
                    manual: false,
                })
            ),
            (any_float(), any_text()).prop_map(|(seconds, detail)| {
                Event::Outcome(Outcome {
                    result: OutcomeResult::NotRecovered,
                    fds_after: None,
                    seconds,
                    detail: Some(detail),
                })
            }),
            (any_text(), any_text()).prop_map(|(reason, detail)| {
                Event::Suppressed(Suppressed {
                    reason: Reason::Other(reason),
                    action: None,
                    detail: Some(detail),
                    manual: false,
                })
            }),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Whatever a record holds (control characters, newlines, any float, any time),
        /// it is written as exactly one line that reads back as a record: the log stays a
        /// ledger that the restart can replay.
        #[test]
        fn any_record_is_one_line_that_reads_back(
            records in proptest::collection::vec(
                (any_text(), any_time(), any_event()),
                1..6,
            )
        ) {
            let d = tempfile::tempdir().unwrap();
            let log = AuditLog::new(d.path().join("incidents.jsonl"));
            for (vassal, at, event) in &records {
                let r = Record {
                    owner: None,
                    schema: SCHEMA,
                    ts: timestamp(*at),
                    incident: vassal.clone(),
                    vassal: vassal.clone(),
                    config: PathBuf::from(vassal),
                    event: event.clone(),
                };
                log.append(&r).unwrap();
            }
            let bytes = std::fs::read(log.path()).unwrap();
            let lines = bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count();
            proptest::prop_assert_eq!(lines, records.len());
            let read = read_log(log.path()).unwrap();
            proptest::prop_assert!(read.bad.is_empty(), "{:?}", read.bad);
            proptest::prop_assert_eq!(read.records.len(), records.len());
            for (r, (vassal, at, _)) in read.records.iter().zip(&records) {
                proptest::prop_assert_eq!(&r.vassal, vassal);
                proptest::prop_assert_eq!(parse_timestamp(&r.ts), Some(*at));
            }
        }
    }

    /// Found by the property test: NaN was written as `null`, which did not read back,
    /// so the record was lost to the restart.
    #[test]
    fn a_float_json_cannot_write_reads_back() {
        let line = serde_json::to_string(&Outcome {
            result: OutcomeResult::NotRecovered,
            fds_after: None,
            seconds: f64::NAN,
            detail: None,
        })
        .unwrap();
        assert!(
            serde_json::from_str::<Outcome>(&line)
                .unwrap()
                .seconds
                .is_nan(),
            "{line}"
        );
    }

    #[test]
    fn a_look_at_the_lock_does_not_keep_a_daemon_from_starting() {
        use rustix::fs::{FlockOperation, flock};
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("incidents.jsonl");
        assert!(matches!(owner(&log), Owner::None(why) if why.contains("does not exist")));
        std::fs::write(lock_path(&log), "").unwrap();
        // `health` looking, at the moment the daemon starts.
        let look = File::open(lock_path(&log)).unwrap();
        flock(&look, FlockOperation::LockShared).unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(look);
        });
        let daemon = OwnerLock::take(&log);
        t.join().unwrap();
        assert!(daemon.is_ok(), "{daemon:?}");
        assert_eq!(
            owner(&log),
            Owner::Running(Some(std::process::id().cast_signed()))
        );
        // A second daemon still finds it held.
        assert!(matches!(
            OwnerLock::take(&log),
            Err(LockError::Held { pid: Some(_), .. })
        ));
        drop(daemon);
        assert!(matches!(owner(&log), Owner::None(why) if why.contains("nobody holds")));
    }
}
