//! `status`: every vassal, its processes, their fds against the soft limit and the line
//! at which the warden acts.
//!
//! This module owns the status report: built once from the inventory and one fresh
//! sample of each process, then rendered as a table or as JSON. `check` reuses the
//! per-vassal part. It reads /proc; it does not decide or act.

use std::io::{self, Write};
use std::path::PathBuf;

use serde::Serialize;

use super::table::{self, Align, Table};
use super::{Episodes, Report, usage};
use crate::audit::Role;
use crate::episode::{self, Concern, Episode, Level};
use crate::inventory::{Inventory, Vassal};
use crate::mapping::Mapping;
use crate::mapping::State;
use crate::procs::ProcId;
use crate::{policy, sample};

/// What `status` shows and `status --json` prints.
#[derive(Debug, Serialize)]
pub(super) struct StatusReport {
    /// PIDs of the running Emperors.
    emperors: Vec<i32>,
    sources: Vec<String>,
    sources_from: &'static str,
    vassals: Vec<VassalStatus>,
    /// Why the incident log could not be read, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    log_problem: Option<String>,
}

/// One vassal: where its file is, what it runs as, and how it was mapped.
#[derive(Debug, Serialize)]
pub(super) struct VassalStatus {
    pub vassal: String,
    pub config: PathBuf,
    pub state: State,
    pub emperor: Option<i32>,
    pub method: Option<String>,
    /// Master first, then workers.
    pub processes: Vec<ProcStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// What is wrong now, worst first: over the line, held back, given up, flapping,
    /// paused.
    pub concerns: Vec<Concern>,
    /// An operator's pause in force: until when, by whom, why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<crate::pauses::Pause>,
}

/// One process of a vassal, sampled now.
#[derive(Debug, Serialize)]
pub(super) struct ProcStatus {
    pub pid: i32,
    pub role: Role,
    pub fds: Option<u64>,
    pub limit: Option<u64>,
    pub usage: Option<f64>,
    /// The fd count at which the policy fires.
    pub line: Option<u64>,
}

impl StatusReport {
    pub(super) fn build(inv: &Inventory, episodes: &Episodes) -> StatusReport {
        StatusReport {
            emperors: inv.emperors.iter().map(|e| e.pid).collect(),
            sources: inv.sources.iter().map(ToString::to_string).collect(),
            sources_from: inv.sources_from,
            vassals: inv
                .vassals
                .values()
                .map(|v| VassalStatus::of(v, episodes))
                .collect(),
            log_problem: episodes.problem.clone(),
        }
    }

    /// `vassal: concern` for every concern, worst first.
    pub(super) fn concerns(&self) -> Vec<(Level, String)> {
        let mut all: Vec<(Level, String)> = self
            .vassals
            .iter()
            .flat_map(|v| {
                v.concerns
                    .iter()
                    .map(|c| (c.level, format!("{}: {}", v.vassal, c.text)))
            })
            .collect();
        all.sort_by_key(|c| std::cmp::Reverse(c.0));
        all
    }

    pub(super) fn counts(&self) -> (usize, usize) {
        let procs = self.vassals.iter().map(|v| v.processes.len()).sum();
        (self.vassals.len(), procs)
    }
}

impl VassalStatus {
    /// Samples each process now; which processes they are is the inventory's last look.
    /// What is wrong is judged with the vassal's episode as the incident log tells it.
    pub(super) fn of(v: &Vassal, episodes: &Episodes) -> VassalStatus {
        let (method, processes) = match &v.mapping {
            Mapping::Running(p) => (
                Some(p.method.to_string()),
                p.with_roles()
                    .map(|(id, role)| ProcStatus::sample(id.pid, role, v))
                    .collect(),
            ),
            _ => (None, Vec::new()),
        };
        let ep = episodes.of(&v.file.path);
        let cannot_act = match (&v.mapping, &v.ini) {
            (Mapping::NoEmperor, _) => Some("no running Emperor watches its file".to_owned()),
            (Mapping::Disputed { master, with }, _) => Some(format!(
                "{with} maps to the same master (PID {master}): neither is acted on"
            )),
            (_, Err(e)) => Some(format!("its file does not read as a vassal config ({e})")),
            _ => None,
        };
        let sampled: Vec<episode::Proc> =
            processes.iter().filter_map(ProcStatus::as_proc).collect();
        let mut concerns = episode::assess(
            ep.unwrap_or(&Episode::default()),
            &v.policy,
            std::time::SystemTime::now(),
            &sampled,
            cannot_act.as_deref(),
        );
        let paused = episodes.paused(&v.file.path).cloned();
        if let Some(p) = &paused {
            concerns.push(Concern {
                level: Level::Warning,
                kind: episode::ConcernKind::Paused,
                text: format!(
                    "{}; nothing is done to it until then (`vassal-warden resume {}` ends it now)",
                    p.describe(),
                    v.file.name
                ),
            });
        }
        concerns.sort_by_key(|c| std::cmp::Reverse(c.level));
        VassalStatus {
            paused,
            vassal: v.file.name.clone(),
            config: v.file.path.clone(),
            state: v.mapping.state(),
            emperor: v.emperor,
            method,
            processes,
            problem: v.ini.as_ref().err().map(ToString::to_string),
            concerns,
        }
    }
}

impl ProcStatus {
    fn as_proc(&self) -> Option<episode::Proc> {
        Some(episode::Proc {
            id: ProcId {
                pid: self.pid,
                start_time: 0,
            },
            role: self.role,
            fds: self.fds?,
            limit: self.limit?,
            line: self.line?,
            fire: None,
            urgent: false,
        })
    }

    fn sample(pid: i32, role: Role, v: &Vassal) -> ProcStatus {
        let fds = sample::fd_count(pid).ok();
        let limit = sample::soft_limit(pid).ok();
        ProcStatus {
            pid,
            role,
            fds,
            limit,
            usage: fds.zip(limit).map(|(f, l)| usage(f, l)),
            // Every process is watched against its line, whatever its role.
            line: limit.map(|l| policy::line(&v.policy, l)),
        }
    }
}

impl Report for StatusReport {
    fn write_text(&self, w: &mut dyn Write) -> io::Result<()> {
        if let Some(p) = &self.log_problem {
            writeln!(w, "{}", crate::text::one_line(p))?;
        }
        if self.emperors.is_empty() {
            writeln!(
                w,
                "no running uWSGI Emperor found: nothing will be touched until one runs"
            )?;
        }
        let mut t = Table::new(&[
            ("VASSAL", Align::Left),
            ("STATE", Align::Left),
            ("PID", Align::Right),
            ("ROLE", Align::Left),
            ("FDS", Align::Right),
            ("LIMIT", Align::Right),
            ("USED", Align::Right),
            ("LINE", Align::Right),
            ("MAPPED BY", Align::Left),
        ]);
        for v in &self.vassals {
            if v.processes.is_empty() {
                t.row(vec![v.vassal.clone(), v.state.to_string()]);
            }
            for (i, p) in v.processes.iter().enumerate() {
                // The vassal's own cells only on its first row.
                let first = |s: &str| if i == 0 { s.to_owned() } else { String::new() };
                t.row(vec![
                    first(&v.vassal),
                    first(v.state.as_str()),
                    p.pid.to_string(),
                    p.role.to_string(),
                    table::count(p.fds),
                    table::limit(p.limit),
                    table::usage(p.usage),
                    table::count(p.line),
                    first(v.method.as_deref().unwrap_or("")),
                ]);
            }
            if let Some(problem) = &v.problem {
                t.note(&format!("  ! {problem}"));
            }
            for c in &v.concerns {
                let tag = if c.level == Level::Critical {
                    "CRITICAL"
                } else {
                    "warning"
                };
                t.note(&format!("  ! {tag}: {}", c.text));
            }
        }
        t.write(w)
    }
}
