//! `fds`: the leak report, live, for one process or for every process of a vassal.
//!
//! This module owns the fds report: one shape whatever the target — the vassal's name
//! (none for a bare PID) and one entry per process, master first — rendered as a grouped
//! listing or as JSON. Naming and grouping the fds is `forensics`'s; this module only
//! picks the processes, adds their limits, and lays out the result. It never acts.

use std::io::{self, Write};

use anyhow::Context;
use serde::Serialize;

use super::table::{self, Align, Table};
use super::{Failure, Report, usage};
use crate::audit::Role;
use crate::forensics::{self, Group};
use crate::inventory::Inventory;
use crate::mapping::Mapping;
use crate::sample;

/// What `fds` shows and `fds --json` prints, for a PID or a vassal alike.
#[derive(Debug, Serialize)]
pub(super) struct FdsReport {
    /// The vassal asked for; none when a PID was.
    vassal: Option<String>,
    /// Master first, then workers; for a PID, that one process.
    processes: Vec<ProcessFds>,
    /// For a vassal: the code that leaks, as its latest incident that captured it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_capture: Option<LastCapture>,
}

/// A capture recorded in the incident log.
#[derive(Debug, Serialize)]
struct LastCapture {
    incident: String,
    ts: String,
    capture: crate::audit::Capture,
}

/// The latest `detected` or `capture` record of the vassal file `config` that carries a
/// capture with sites, in the log and its newest rotation.
fn last_capture(audit_log: &std::path::Path, config: &std::path::Path) -> Option<LastCapture> {
    let read = crate::audit::read_history(audit_log, 16 << 20, 1).ok()?;
    read.records.into_iter().rev().find_map(|r| {
        let capture = match r.event {
            crate::audit::Event::Detected(d) => d.capture,
            crate::audit::Event::Capture(c) => Some(c.capture),
            _ => None,
        };
        capture
            .filter(|c| r.config == config && !c.sites.is_empty())
            .map(|capture| LastCapture {
                incident: r.incident,
                ts: r.ts,
                capture,
            })
    })
}

/// One process: its fds named and grouped, against its soft limit.
#[derive(Debug, Serialize)]
struct ProcessFds {
    /// Known when the process was found through its vassal.
    role: Option<Role>,
    limit: Option<u64>,
    usage: Option<f64>,
    #[serde(flatten)]
    report: forensics::Report,
}

impl ProcessFds {
    fn new(role: Option<Role>, report: forensics::Report) -> ProcessFds {
        let limit = sample::soft_limit(report.pid).ok();
        ProcessFds {
            role,
            limit,
            usage: limit.map(|l| usage(report.fds, l)),
            report,
        }
    }
}

impl FdsReport {
    /// One process, whoever runs it.
    pub(super) fn for_pid(pid: i32, top: usize) -> Result<FdsReport, Failure> {
        let report = forensics::report(pid, top, None, None).with_context(|| {
            format!("cannot read the open fds of PID {pid}: is it running, and is the warden root?")
        })?;
        Ok(FdsReport {
            vassal: None,
            processes: vec![ProcessFds::new(None, report)],
            last_capture: None,
        })
    }

    /// Every process of the vassal named `target`. A process that vanishes while it is
    /// read is reported on stderr and left out.
    pub(super) fn for_vassal(
        inv: &Inventory,
        target: &str,
        top: usize,
        audit_log: &std::path::Path,
    ) -> Result<FdsReport, Failure> {
        let v = inv.find(target).ok_or_else(|| {
            let sources: Vec<String> = inv.sources.iter().map(ToString::to_string).collect();
            anyhow::anyhow!(
                "no vassal named `{target}` in {}; `vassal-warden status` lists them",
                sources.join(", ")
            )
        })?;
        let Mapping::Running(procs) = &v.mapping else {
            return Err(anyhow::anyhow!(
                "vassal `{}` has no running processes ({})",
                v.file.name,
                v.mapping.state()
            )
            .into());
        };
        let mut processes = Vec::new();
        for (id, role) in procs.with_roles() {
            // For a child of the master, fds shared with the master are marked inherited.
            let master = (role != Role::Master).then_some(procs.master.pid);
            match forensics::report(id.pid, top, None, master) {
                Ok(r) => processes.push(ProcessFds::new(Some(role), r)),
                Err(e) => eprintln!(
                    "vassal-warden: PID {} ({role}) vanished while being read: {e}",
                    id.pid
                ),
            }
        }
        Ok(FdsReport {
            vassal: Some(v.file.name.clone()),
            processes,
            last_capture: last_capture(audit_log, &v.file.path),
        })
    }
}

impl Report for FdsReport {
    fn write_text(&self, w: &mut dyn Write) -> io::Result<()> {
        let vassal = self
            .vassal
            .as_deref()
            .map(|v| format!("{v} "))
            .unwrap_or_default();
        for p in &self.processes {
            let role = p.role.map(|r| format!(" ({r})")).unwrap_or_default();
            writeln!(
                w,
                "{vassal}PID {}{role}: {} fds / soft limit {} ({} used)",
                p.report.pid,
                p.report.fds,
                table::limit(p.limit),
                table::usage(p.usage)
            )?;
            targets(&p.report.top).write(w)?;
            let kinds: Vec<String> = p
                .report
                .by_kind
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            writeln!(w, "  by kind: {}\n", kinds.join(", "))?;
        }
        if let Some(c) = &self.last_capture {
            writeln!(w, "{vassal}as of incident {} ({}):", c.incident, c.ts)?;
            super::traceback::write(w, &c.capture, "  ")?;
        }
        Ok(())
    }
}

fn targets(top: &[Group]) -> Table {
    let mut t = Table::new(&[
        ("COUNT", Align::Right),
        ("GROWTH", Align::Right),
        ("KIND", Align::Left),
        ("TARGET", Align::Left),
    ])
    .indent(2);
    for target in top {
        let growth = target
            .growth
            .map_or_else(|| "-".into(), |g| format!("{g:+}"));
        let inherited = match target.inherited {
            Some(n) if n == target.count => "  (inherited from the master)".to_owned(),
            Some(n) if n > 0 => format!("  ({n} inherited from the master)"),
            _ => String::new(),
        };
        t.row(vec![
            target.count.to_string(),
            growth,
            target.kind.to_string(),
            format!("{}{inherited}", target.target),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn keys(v: &Value) -> Vec<&str> {
        v.as_object().unwrap().keys().map(String::as_str).collect()
    }

    #[test]
    fn a_pid_and_a_vassal_have_one_json_shape() {
        let pid = std::process::id().cast_signed();
        let by_pid = serde_json::to_value(FdsReport::for_pid(pid, 5).unwrap()).unwrap();
        let report = forensics::report(pid, 5, None, None).unwrap();
        let by_vassal = serde_json::to_value(FdsReport {
            vassal: Some("shop.ini".into()),
            processes: vec![ProcessFds::new(Some(Role::Master), report)],
            last_capture: None,
        })
        .unwrap();

        assert_eq!(keys(&by_pid), keys(&by_vassal));
        assert_eq!(by_pid["vassal"], Value::Null);
        assert_eq!(by_vassal["vassal"], "shop.ini");
        let (one, other) = (&by_pid["processes"][0], &by_vassal["processes"][0]);
        assert_eq!(keys(one), keys(other));
        for key in ["pid", "role", "fds", "limit", "usage", "top", "by_kind"] {
            assert!(one.get(key).is_some(), "no {key} in {one:#}");
        }
        assert_eq!(one["pid"], pid);
        assert_eq!(
            (&one["role"], &other["role"]),
            (&Value::Null, &"master".into())
        );
    }
}
