//! `incidents`: the incident log, filtered by time and vassal.
//!
//! This module owns reading the log for the command line and the two ways of showing it:
//! the records themselves as JSON lines (the log's own wire format, from `audit`), or one
//! table row per incident summing up its records: a lasting episode (its start, its
//! reminders, its end) is one row with its duration. The rotated logs are read too,
//! compressed or not. The log is streamed (`audit::each_record`), so memory stays bounded
//! whatever the history: JSON lines go out as they are read, and a table keeps the newest
//! `MAX_ROWS` incidents. `--since` starts where the records reach that time, without
//! reading what is older. Unreadable lines are reported on stderr and skipped. It never
//! writes to the log.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::Failure;
use super::table::{self, Align, Table};
use crate::audit::{self, Event, Line, Record};

/// The longest top target a table row shows; longer ones keep their end.
const TOP_TARGET_CHARS: usize = 34;

/// The most incidents a table shows: the newest. `--json` prints every record.
pub(super) const MAX_ROWS: usize = 10_000;

/// The most unreadable lines reported one by one; the rest are counted.
const MAX_BAD_SAID: usize = 100;

/// Which records to keep.
pub(super) struct Filter<'a> {
    /// Only records at or after this time.
    pub since: Option<SystemTime>,
    /// Only this vassal: the Emperor's name for it, its file name or its stem.
    pub vassal: Option<&'a str>,
}

impl Filter<'_> {
    fn keeps(&self, r: &audit::Raw<'_>) -> bool {
        self.vassal.is_none_or(|n| {
            r.vassal == n
                || r.config.file_name().and_then(|f| f.to_str()) == Some(n)
                || r.config.file_stem().and_then(|f| f.to_str()) == Some(n)
        })
    }
}

/// `--since`: a duration back from now (`24h`, `400d`), or a date or time in UTC
/// (`2026-09-01`, `2026-09-01T12:00:00Z`).
pub(super) fn parse_since(s: &str) -> Result<SystemTime, String> {
    let s = s.trim();
    if let Ok(d) = humantime::parse_duration(s) {
        return SystemTime::now()
            .checked_sub(d)
            .ok_or_else(|| format!("`{s}` reaches back before any date"));
    }
    let stamp = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_owned()
    };
    humantime::parse_rfc3339_weak(&stamp)
        .map_err(|_| format!("`{s}` is neither a duration (24h, 30d) nor a date (2026-09-01) or a time in UTC (2026-09-01T12:00:00Z)"))
}

/// Streams the records of the log at `log` that `filter` keeps: as JSON lines, or as a
/// table of the newest incidents.
pub(super) fn show(log: &Path, filter: &Filter, json: bool) -> Result<(), Failure> {
    let mut rows = Rows::default();
    let mut bad = 0usize;
    // Why the log could not be read, apart from a failure to write what was read.
    let mut unreadable = None;
    let mut exists = false;
    super::emit(|w| {
        let mut wrote: io::Result<()> = Ok(());
        let mut said_bad = |b: &audit::BadLine| {
            bad += 1;
            if bad <= MAX_BAD_SAID {
                eprintln!(
                    "vassal-warden: {}",
                    crate::text::for_terminal(&b.to_string())
                );
            }
        };
        let read = audit::each_record(log, filter.since, |line| {
            match line {
                Line::Bad(b) => said_bad(&b),
                // The log's own line, as written: JSON escapes what a terminal would act on.
                Line::Record(r) if filter.keeps(&r) && json => {
                    wrote = w.write_all(r.bytes).and_then(|()| writeln!(w));
                    if wrote.is_err() {
                        return Err(io::Error::other("stopped"));
                    }
                }
                Line::Record(r) if filter.keeps(&r) => match r.record() {
                    Ok(rec) => rows.absorb(&rec),
                    Err(b) => said_bad(&b),
                },
                Line::Record(_) => {}
            }
            Ok(())
        });
        wrote?;
        match read {
            Ok(e) => exists = e,
            Err(e) => unreadable = Some(e),
        }
        if !json && unreadable.is_none() {
            rows.write(w, log, exists)?;
        }
        Ok(())
    })?;
    if bad > MAX_BAD_SAID {
        eprintln!(
            "vassal-warden: {} more unreadable lines skipped",
            bad - MAX_BAD_SAID
        );
    }
    match unreadable {
        Some(e) => {
            Err(anyhow::anyhow!("cannot read the incident log {}: {e}", log.display()).into())
        }
        None => Ok(()),
    }
}

/// The newest incidents, each summed up from its records, in order of first appearance.
#[derive(Default)]
struct Rows {
    kept: VecDeque<Summary>,
    /// Where each incident's row is: its number since the first row ever made.
    at: HashMap<String, usize>,
    /// How many rows were let go from the front.
    dropped: usize,
}

impl Rows {
    fn absorb(&mut self, r: &Record) {
        let n = if let Some(&n) = self.at.get(&r.incident) {
            n
        } else if self.dropped > 0
            && matches!(
                r.event,
                Event::Outcome(_) | Event::Reminder(_) | Event::Ended(_) | Event::Capture(_)
            )
        {
            // The rest of an incident whose row was let go: no row of its own.
            return;
        } else {
            if self.kept.len() == MAX_ROWS
                && let Some(old) = self.kept.pop_front()
            {
                self.at.remove(&old.incident);
                self.dropped += 1;
            }
            let n = self.dropped + self.kept.len();
            self.kept.push_back(Summary::new(r));
            self.at.insert(r.incident.clone(), n);
            n
        };
        self.kept[n - self.dropped].absorb(r);
    }

    fn write(&self, w: &mut dyn Write, log: &Path, exists: bool) -> io::Result<()> {
        if !exists {
            return writeln!(w, "no incidents: {} does not exist yet", log.display());
        }
        let mut t = Table::new(&[
            ("TIME", Align::Left),
            ("VASSAL", Align::Left),
            ("PID", Align::Right),
            ("FDS/LIMIT", Align::Right),
            ("TOP TARGET", Align::Left),
            ("ACTION", Align::Left),
            ("OUTCOME", Align::Left),
            ("LASTED", Align::Right),
        ]);
        for s in &self.kept {
            t.row(vec![
                s.ts.clone(),
                s.vassal.clone(),
                s.pid.clone(),
                s.fds.clone(),
                s.top.clone(),
                s.action.clone(),
                s.outcome.clone(),
                s.lasted.clone(),
            ]);
        }
        let mut text = Vec::new();
        t.write(&mut text)?;
        // Below the table, the code that leaks, for each incident that captured it.
        for s in &self.kept {
            if let Some(c) = &s.capture {
                writeln!(text, "\n{} {}:", s.incident, s.vassal)?;
                super::traceback::write(&mut text, c, "  ")?;
            }
        }
        if self.dropped > 0 {
            writeln!(
                text,
                "\n({} older incidents not shown: the table holds the newest {MAX_ROWS}; narrow it with --since or --vassal, or read them all with --json)",
                self.dropped
            )?;
        }
        w.write_all(crate::text::for_terminal(&String::from_utf8_lossy(&text)).as_bytes())
    }
}

/// One incident, summed up from its records for a table row.
struct Summary {
    ts: String,
    vassal: String,
    incident: String,
    pid: String,
    fds: String,
    top: String,
    action: String,
    outcome: String,
    /// How long a lasting episode lasted: to its end, or to its last reminder (`+`).
    lasted: String,
    /// What the `detected` record says of the code that leaks, or a later `capture`
    /// record of the incident.
    capture: Option<audit::Capture>,
}

impl Summary {
    fn new(first: &Record) -> Summary {
        Summary {
            ts: first.ts.clone(),
            vassal: first.vassal.clone(),
            incident: first.incident.clone(),
            pid: String::new(),
            fds: String::new(),
            top: String::new(),
            action: "-".into(),
            outcome: "-".into(),
            lasted: "-".into(),
            capture: None,
        }
    }

    /// Later records override earlier ones: the last action and outcome win.
    fn absorb(&mut self, r: &Record) {
        match &r.event {
            Event::Detected(d) => {
                self.capture.clone_from(&d.capture);
                self.pid = d.pid.to_string();
                self.fds = format!("{}/{}", d.fds, table::limit(Some(d.limit)));
                if let Some(t) = d.top.first() {
                    self.top = table::tail(&format!("{} ×{}", t.target, t.count), TOP_TARGET_CHARS);
                }
            }
            Event::Action(a) => self.action = a.action.to_string(),
            Event::Suppressed(s) => self.outcome = format!("suppressed: {}", s.reason),
            Event::Outcome(o) => {
                let fds_after = o.fds_after.map(|f| format!(", {f} fds"));
                self.outcome = format!(
                    "{} in {:.1}s{}",
                    o.result,
                    o.seconds,
                    fds_after.unwrap_or_default()
                );
            }
            // Found after the incident began: it stands for what `detected` promised.
            Event::Capture(c) => self.capture = Some(c.capture.clone()),
            Event::Reminder(e) => self.lasted = format!("{}+", duration(e.seconds)),
            Event::Ended(e) => self.lasted = duration(e.seconds),
            Event::Pause(p) => {
                self.action = "pause".into();
                self.outcome = format!("until {} by {}: {}", p.until, p.who, p.reason);
            }
            Event::Resume(r) => {
                self.action = "resume".into();
                self.outcome = format!("by {}: {}", r.who, r.reason);
            }
        }
    }
}

/// Whole seconds, as people read them (`2h 5m 3s`).
fn duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "?".into();
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let secs = seconds.round() as u64;
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}
