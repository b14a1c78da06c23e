//! `incidents`: the incident log, filtered by time and vassal.
//!
//! This module owns reading the log for the command line and the two ways of showing it:
//! the records themselves as JSON lines (the log's own wire format, from `audit`), or one
//! table row per incident summing up its records: a lasting episode (its start, its
//! reminders, its end) is one row with its duration. The rotated logs are read too,
//! compressed or not. Unreadable lines are reported on stderr and skipped. It never
//! writes to the log.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::table::{self, Align, Table};
use super::{Failure, Report};
use crate::audit::{self, Event, Record};

/// The longest top target a table row shows; longer ones keep their end.
const TOP_TARGET_CHARS: usize = 34;

/// What `incidents` shows; `incidents --json` prints `records`, one per line.
#[derive(Debug, Serialize)]
pub(super) struct IncidentsReport {
    log: PathBuf,
    /// A warden that never recorded anything has not created its log yet.
    exists: bool,
    /// The records that pass the filters, in log order.
    records: Vec<Record>,
}

/// Which records to keep.
pub(super) struct Filter<'a> {
    /// Only records at or after this time.
    pub since: Option<Duration>,
    /// Only this vassal: the Emperor's name for it, its file name or its stem.
    pub vassal: Option<&'a str>,
}

impl Filter<'_> {
    fn keeps(&self, r: &Record, cutoff: Option<SystemTime>) -> bool {
        let in_time = cutoff.is_none_or(|c| audit::parse_timestamp(&r.ts).is_some_and(|t| t >= c));
        let of_vassal = self.vassal.is_none_or(|n| {
            r.vassal == n
                || r.config.file_name().and_then(|f| f.to_str()) == Some(n)
                || r.config.file_stem().and_then(|f| f.to_str()) == Some(n)
        });
        in_time && of_vassal
    }
}

impl IncidentsReport {
    pub(super) fn read(log: PathBuf, filter: &Filter) -> Result<IncidentsReport, Failure> {
        let audit::Read { records, bad } = match audit::read_all(&log) {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(IncidentsReport {
                    log,
                    exists: false,
                    records: Vec::new(),
                });
            }
            Err(e) => {
                return Err(
                    anyhow::anyhow!("cannot read the incident log {}: {e}", log.display()).into(),
                );
            }
        };
        for b in &bad {
            eprintln!(
                "vassal-warden: {}",
                crate::text::for_terminal(&b.to_string())
            );
        }
        let cutoff = filter.since.map(|d| SystemTime::now() - d);
        let records = records
            .into_iter()
            .filter(|r| filter.keeps(r, cutoff))
            .collect();
        Ok(IncidentsReport {
            log,
            exists: true,
            records,
        })
    }

    /// One summary per incident, in order of first appearance.
    fn summaries(&self) -> Vec<Summary<'_>> {
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut summaries: Vec<Summary> = Vec::new();
        for r in &self.records {
            let i = *index.entry(r.incident.as_str()).or_insert_with(|| {
                summaries.push(Summary::new(r));
                summaries.len() - 1
            });
            summaries[i].absorb(r);
        }
        summaries
    }
}

/// One incident, summed up from its records for a table row.
struct Summary<'a> {
    first: &'a Record,
    pid: String,
    fds: String,
    top: String,
    action: String,
    outcome: String,
    /// How long a lasting episode lasted: to its end, or to its last reminder (`+`).
    lasted: String,
    /// What the `detected` record says of the code that leaks, or a later `capture`
    /// record of the incident.
    capture: Option<&'a crate::audit::Capture>,
}

impl<'a> Summary<'a> {
    fn new(first: &'a Record) -> Summary<'a> {
        Summary {
            first,
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
    fn absorb(&mut self, r: &'a Record) {
        match &r.event {
            Event::Detected(d) => {
                self.capture = d.capture.as_ref();
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
            Event::Capture(c) => self.capture = Some(&c.capture),
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

impl Report for IncidentsReport {
    fn write_text(&self, w: &mut dyn Write) -> io::Result<()> {
        if !self.exists {
            return writeln!(w, "no incidents: {} does not exist yet", self.log.display());
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
        let summaries = self.summaries();
        for s in &summaries {
            t.row(vec![
                s.first.ts.clone(),
                s.first.vassal.clone(),
                s.pid.clone(),
                s.fds.clone(),
                s.top.clone(),
                s.action.clone(),
                s.outcome.clone(),
                s.lasted.clone(),
            ]);
        }
        t.write(w)?;
        // Below the table, the code that leaks, for each incident that captured it.
        for s in &summaries {
            if let Some(c) = s.capture {
                writeln!(w, "\n{} {}:", s.first.incident, s.first.vassal)?;
                super::traceback::write(w, c, "  ")?;
            }
        }
        Ok(())
    }

    /// The log's own format: one record per line, as written.
    fn write_json(&self, w: &mut dyn Write) -> io::Result<()> {
        for r in &self.records {
            serde_json::to_writer(&mut *w, r)?;
            writeln!(w)?;
        }
        Ok(())
    }
}
