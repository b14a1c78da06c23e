//! The incident log: JSON lines, append-only, each record fsync'd before the next step.
//!
//! This module owns the wire format (its own serde types, versioned by `schema`; fields are
//! added, never renamed) and the writer and reader. The writer opens the file for each
//! record, so logrotate's rename and a fixed permission problem are picked up without a
//! restart. Values of other modules become wire types here, at the edge (a
//! `forensics::Group` becomes a `Target`). It does not decide what to record.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::forensics::{self, Kind};
use crate::policy::{ActionKind, Past, Reason, Rule};

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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Detected {
    pub pid: i32,
    pub role: Role,
    pub fds: u64,
    pub limit: u64,
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
}

impl Action {
    /// Taken by an operator (`vassal-warden reload`), whose reason starts `manual:`.
    #[must_use]
    pub(crate) fn is_manual(&self) -> bool {
        self.reason
            .as_deref()
            .is_some_and(|r| r.starts_with("manual:"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OutcomeResult {
    Recovered,
    NotRecovered,
    Vanished,
}

impl std::fmt::Display for OutcomeResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OutcomeResult::Recovered => "recovered",
            OutcomeResult::NotRecovered => "not_recovered",
            OutcomeResult::Vanished => "vanished",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Outcome {
    pub result: OutcomeResult,
    /// The highest fd count among the vassal's processes when the outcome was decided.
    pub fds_after: Option<u64>,
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
/// meant to precede.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot write the incident log {path}: {source}; make its directory writable by the warden or set `audit-log` in warden.ini"
)]
pub(crate) struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Appends records to the incident log.
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

    /// Writes one record and fsyncs it before returning.
    pub(crate) fn append(&self, record: &Record) -> Result<(), WriteError> {
        let wrap = |source| WriteError {
            path: self.path.clone(),
            source,
        };
        let mut line = serde_json::to_vec(record).map_err(|e| wrap(e.into()))?;
        line.push(b'\n');
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(wrap)?;
        }
        // A new log is 0640, as logrotate creates the next one: the adm group may read
        // it (through /var/log/vassal-warden, 0750 root:adm), nobody else.
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&self.path)
            .map_err(wrap)?;
        // One write(2) of the whole line: O_APPEND keeps concurrent writers' lines whole.
        f.write_all(&line).map_err(wrap)?;
        f.sync_data().map_err(wrap)?;
        Ok(())
    }
}

/// The actions on the vassal file `config` recorded in the last `tail` bytes of the log:
/// what another writer (an operator's `vassal-warden reload`, another warden) did since
/// this one read the log.
pub(crate) fn recent_actions(path: &Path, config: &Path, tail: u64) -> Vec<Past> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let start = len.saturating_sub(tail);
    let mut text = String::new();
    if f.seek(SeekFrom::Start(start)).is_err() || f.read_to_string(&mut text).is_err() {
        return Vec::new();
    }
    // Past a cut, the first line is partial.
    let lines = text.lines().skip(usize::from(start > 0));
    lines
        .filter_map(|l| serde_json::from_str::<Record>(l).ok())
        .filter(|r| r.config == config)
        .filter_map(|r| match &r.event {
            Event::Action(a) if !a.dry_run => Some(Past {
                at: parse_timestamp(&r.ts)?,
                kind: a.action,
                manual: a.is_manual(),
            }),
            _ => None,
        })
        .collect()
}

/// A line of the log that could not be read, with its number.
#[derive(Debug)]
pub(crate) struct BadLine {
    pub line: usize,
    pub message: String,
}

/// Reads every record of the log. Bad lines (a torn last line after a crash, say) are
/// returned apart and do not stop the reading.
pub(crate) fn read_log(path: &Path) -> std::io::Result<(Vec<Record>, Vec<BadLine>)> {
    let f = File::open(path)?;
    let mut records = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(&line) {
            Ok(r) => records.push(r),
            Err(e) => bad.push(BadLine {
                line: i + 1,
                message: e.to_string(),
            }),
        }
    }
    Ok((records, bad))
}

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
            schema: SCHEMA,
            ts: timestamp(SystemTime::now()),
            incident: "i1".into(),
            vassal: "a.ini".into(),
            config: "/v/a.ini".into(),
            event: Event::Suppressed(Suppressed {
                reason: Reason::Cooldown,
                action: None,
                detail: None,
            }),
        };
        log.append(&r).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o027, 0, "a new log is 0640 at most: {mode:o}");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"ts\": \"tor")
            .unwrap();
        let (records, bad) = read_log(&path).unwrap();
        assert_eq!(records, vec![r]);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].line, 2);
    }

    #[test]
    fn unwritable_log_error_names_the_file() {
        let log = AuditLog::new(PathBuf::from("/proc/vassal-warden-test/incidents.jsonl"));
        let r = Record {
            schema: SCHEMA,
            ts: "2026-01-01T00:00:00Z".into(),
            incident: "i".into(),
            vassal: "a.ini".into(),
            config: "/v/a.ini".into(),
            event: Event::Suppressed(Suppressed {
                reason: Reason::Cooldown,
                action: None,
                detail: None,
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
}
