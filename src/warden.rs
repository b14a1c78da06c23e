//! The warden: what happens to each vassal on each tick, and the state kept between ticks.
//!
//! This module owns the order of the stages for a vassal — map, sample, decide,
//! attribute, record, act, verify, record — and the state that lives between ticks:
//! per-process streaks and samples, baselines, each vassal's history of actions (rebuilt
//! from the incident log at start, so a restart never causes an action the running warden
//! would have suppressed), its place on the ladder, and the action being verified. A
//! failure on one vassal is logged with what to do and the rest go on. No action is taken
//! before its `detected` record is on disk.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, error, info, warn};

use crate::act;
use crate::audit::{
    self, Action, AuditLog, Detected, Event as Rec, Outcome, OutcomeResult, Record, Role,
    Suppressed,
};
use crate::config::Config;
use crate::forensics::{self, Baseline};
use crate::inventory::{Inventory, Vassal};
use crate::mapping::{Mapping, Procs};
use crate::policy::{self, Fire, History, Hold, Plan, ProcState, Situation};
use crate::procs::{self, ProcId};
use crate::sample::Sampler;

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub dry_run: bool,
    pub once: bool,
}

/// An action under verification.
#[derive(Debug)]
struct Pending {
    incident: String,
    started: Instant,
    /// The workers the action meant to replace.
    replace: Vec<ProcId>,
    /// The ladder step to take if this does not work.
    escalate_to: u8,
}

/// Per-vassal state that lives between ticks.
#[derive(Debug, Default)]
struct VassalState {
    hist: History,
    /// When a hold or an alert was last recorded; cleared when the vassal is back under
    /// the line or an outcome is recorded, so each episode is recorded once, not per tick.
    noted: Option<(SystemTime, String)>,
    pending: Option<Pending>,
    escalation: u8,
}

/// A process that fired on this tick.
#[derive(Debug, Clone, Copy)]
struct Fired {
    id: ProcId,
    role: Role,
    fds: u64,
    limit: u64,
    line: u64,
    fire: Fire,
}

pub struct Warden {
    cfg: Config,
    opts: Options,
    audit: AuditLog,
    inv: Inventory,
    sampler: Sampler,
    states: HashMap<ProcId, ProcState>,
    baselines: HashMap<ProcId, Baseline>,
    vassals: HashMap<PathBuf, VassalState>,
    origin: Instant,
    seq: u64,
}

impl Warden {
    #[must_use]
    pub fn new(cfg: Config, opts: Options) -> Warden {
        let audit = AuditLog::new(cfg.audit_log.clone());
        let mut w = Warden {
            opts: Options {
                dry_run: opts.dry_run || cfg.dry_run,
                once: opts.once,
            },
            cfg,
            audit,
            inv: Inventory::default(),
            sampler: Sampler::default(),
            states: HashMap::new(),
            baselines: HashMap::new(),
            vassals: HashMap::new(),
            origin: Instant::now(),
            seq: 0,
        };
        w.restore_from_log();
        w
    }

    #[must_use]
    pub fn options(&self) -> Options {
        self.opts
    }

    #[must_use]
    pub fn audit_log(&self) -> &Path {
        self.audit.path()
    }

    #[must_use]
    pub fn inventory(&self) -> &Inventory {
        &self.inv
    }

    /// Rebuilds each vassal's history from the incident log: actions (cooldown and
    /// `max-reloads`), the last time a rule fired, whether it was flapping, and its place
    /// on the ladder.
    fn restore_from_log(&mut self) {
        let path = self.audit.path().to_owned();
        let records = match audit::read_log(&path) {
            Ok((records, bad)) => {
                for b in bad {
                    warn!(file = %path.display(), line = b.line, "unreadable incident log line skipped: {}", b.message);
                }
                records
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                warn!(file = %path.display(), "cannot read the incident log to restore cooldowns: {e}; they start empty");
                return;
            }
        };
        let mut last_action_kind: HashMap<PathBuf, String> = HashMap::new();
        for r in records {
            let Some(ts) = audit::parse_timestamp(&r.ts) else {
                continue;
            };
            let st = self.vassals.entry(r.config.clone()).or_default();
            match &r.event {
                Rec::Action(a) if !a.dry_run => {
                    st.hist.actions.push(ts);
                    st.hist.flapping = false;
                    last_action_kind.insert(r.config.clone(), a.action.clone());
                }
                Rec::Detected(_) => st.hist.last_fire = Some(ts),
                Rec::Suppressed(s) if s.reason == "flapping" => st.hist.flapping = true,
                Rec::Outcome(o) => {
                    st.escalation = match (
                        o.result,
                        last_action_kind.get(&r.config).map(String::as_str),
                    ) {
                        (OutcomeResult::NotRecovered, Some("touch")) => 2,
                        (OutcomeResult::NotRecovered, Some(_)) => 1,
                        _ => 0,
                    };
                }
                _ => {}
            }
        }
        for st in self.vassals.values_mut() {
            st.hist.actions.sort();
        }
    }

    fn next_incident(&mut self, now: SystemTime) -> String {
        self.seq += 1;
        let ts = audit::timestamp(now).replace(['-', ':'], "");
        format!("{ts}-{}-{}", std::process::id(), self.seq)
    }

    fn write(
        &self,
        now: SystemTime,
        incident: &str,
        v: &Vassal,
        event: Rec,
    ) -> Result<(), audit::WriteError> {
        let r = Record {
            schema: audit::SCHEMA,
            ts: audit::timestamp(now),
            incident: incident.to_owned(),
            vassal: v.file.name.clone(),
            config: v.file.path.clone(),
            event,
        };
        let res = self.audit.append(&r);
        if let Err(e) = &res {
            error!(vassal = %v.file.name, "{e}");
        }
        res
    }

    /// Re-lists Emperors and vassals; logs what changed.
    pub fn refresh(&mut self) {
        let changes = self.inv.refresh(&self.cfg);
        for p in &changes.added {
            if let Some(v) = self.inv.vassals.get(p) {
                match &v.ini {
                    Ok(_) => info!(vassal = %v.file.name, config = %p.display(), "watching vassal"),
                    Err(e) => {
                        warn!(vassal = %v.file.name, "{e}; it is watched but will not be touched until it reads as a vassal config");
                    }
                }
                for problem in &v.policy_problems {
                    warn!(vassal = %v.file.name, "{}: [vassal-warden] {problem}; the rest of its policy applies", p.display());
                }
            }
        }
        for p in &changes.reread {
            if let Some(v) = self.inv.vassals.get(p) {
                if let Err(e) = &v.ini {
                    warn!(vassal = %v.file.name, "{e}; it will not be touched until it reads as a vassal config");
                }
                if v.pending_change {
                    warn!(vassal = %v.file.name, "{} changed without a newer mtime: the running vassal does not run it yet", p.display());
                }
            }
        }
        let now = SystemTime::now();
        for v in changes.removed {
            info!(vassal = %v.file.name, "vassal file removed; no longer watched");
            if let Some(p) = self
                .vassals
                .get_mut(&v.file.path)
                .and_then(|s| s.pending.take())
            {
                let _ = self.write(
                    now,
                    &p.incident,
                    &v,
                    Rec::Outcome(Outcome {
                        result: OutcomeResult::Vanished,
                        fds_after: None,
                        seconds: p.started.elapsed().as_secs_f64(),
                        detail: Some("the vassal file was removed".into()),
                    }),
                );
            }
        }
    }

    /// Each source's directory (a glob's fixed part) and its parent: the parent's events
    /// tell when the directory itself is deleted and created again.
    #[must_use]
    pub fn watch_dirs(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        for s in &self.inv.sources {
            let dir = s.dir();
            for d in [Some(dir.as_path()), dir.parent()].into_iter().flatten() {
                if !out.iter().any(|o| o == d) {
                    out.push(d.to_owned());
                }
            }
        }
        out
    }

    /// Whether a file event at `path` can change the set of vassals: a file in a vassal
    /// directory (or a glob's directory), or such a directory itself.
    #[must_use]
    pub fn concerns(&self, path: &Path) -> bool {
        self.inv.sources.iter().any(|s| {
            let dir = s.dir();
            path == dir || path.parent() == Some(dir.as_path()) || dir.starts_with(path)
        })
    }

    /// One pass: map, sample, decide, and act or verify, for every vassal. Returns how
    /// many processes were sampled.
    pub fn tick(&mut self) -> usize {
        let now_i = Instant::now();
        // An Emperor that restarted has new PIDs: find it again before mapping.
        if self.inv.emperors.iter().any(|e| !e.is_running()) {
            info!("an Emperor stopped or restarted; rescanning");
            self.refresh();
        }
        self.inv.map_all();
        let paths: Vec<PathBuf> = self.inv.vassals.keys().cloned().collect();
        let mut seen: HashSet<ProcId> = HashSet::new();
        for path in paths {
            self.tick_vassal(&path, now_i, &mut seen);
        }
        self.states.retain(|id, _| seen.contains(id));
        self.baselines.retain(|id, _| seen.contains(id));
        self.sampler
            .retain(|pid| seen.iter().any(|id| id.pid == pid));
        tracing::trace!(
            elapsed_us = now_i.elapsed().as_micros(),
            processes = seen.len(),
            "tick"
        );
        seen.len()
    }

    /// True while some vassal's action is being verified.
    #[must_use]
    pub fn any_pending(&self) -> bool {
        self.vassals.values().any(|s| s.pending.is_some())
    }

    fn tick_vassal(&mut self, path: &Path, now_i: Instant, seen: &mut HashSet<ProcId>) {
        let Some(v) = self.inv.vassals.get(path) else {
            return;
        };
        let Mapping::Running(procs) = &v.mapping else {
            if let Some(p) = self.vassals.get(path).and_then(|s| s.pending.as_ref())
                && p.started.elapsed() > v.policy.verify
            {
                self.finish(
                    path,
                    OutcomeResult::NotRecovered,
                    None,
                    Some("the vassal's master is gone".into()),
                );
            }
            return;
        };
        let procs = procs.clone();
        let policy = v.policy.clone();
        let name = v.file.name.clone();
        let t = now_i.duration_since(self.origin).as_secs_f64();
        let mut counts = Vec::new();
        let mut fired: Vec<Fired> = Vec::new();
        let mut workers_over = Vec::new();
        for (i, id) in procs.all().enumerate() {
            let role = if i == 0 { Role::Master } else { Role::Worker };
            let s = match self.sampler.sample(id, now_i) {
                Ok(s) => s,
                Err(e) => {
                    debug!(vassal = %name, pid = id.pid, "not sampled (process gone?): {e}");
                    continue;
                }
            };
            seen.insert(id);
            self.baselines
                .entry(id)
                .or_insert_with(|| Baseline::take(id.pid, s.fds));
            let line = policy::line(&policy, s.limit);
            counts.push((s.fds, line));
            if role == Role::Worker && s.fds >= line {
                workers_over.push(id);
            }
            if let Some(fire) = self
                .states
                .entry(id)
                .or_default()
                .feed(&policy, t, s.fds, s.limit)
            {
                debug!(vassal = %name, pid = id.pid, fds = s.fds, limit = s.limit, rule = fire.name(), "fired");
                fired.push(Fired {
                    id,
                    role,
                    fds: s.fds,
                    limit: s.limit,
                    line,
                    fire,
                });
            }
        }
        let st = self.vassals.entry(path.to_owned()).or_default();
        if let Some(p) = &st.pending {
            let after = policy::After {
                replace: &p.replace,
                workers: &procs.workers,
                counts: &counts,
            };
            let max = counts.iter().map(|(f, _)| *f).max();
            if policy::recovered(&after) {
                self.finish(path, OutcomeResult::Recovered, max, None);
            } else if p.started.elapsed() > policy.verify {
                let detail = if p.replace.iter().any(|w| procs.workers.contains(w)) {
                    "workers were not replaced"
                } else {
                    "fd counts are still over the line"
                };
                self.finish(path, OutcomeResult::NotRecovered, max, Some(detail.into()));
            }
            return;
        }
        if counts.iter().all(|(f, l)| f < l) {
            st.noted = None;
        }
        // The record is about the process closest to its limit.
        let offender = fired
            .iter()
            .max_by(|a, b| {
                (a.fds as f64 / a.line.max(1) as f64)
                    .total_cmp(&(b.fds as f64 / b.line.max(1) as f64))
            })
            .copied();
        if let Some(f) = offender {
            self.incident(path, &procs, f, workers_over);
        }
    }

    fn finish(
        &mut self,
        path: &Path,
        result: OutcomeResult,
        fds_after: Option<u64>,
        detail: Option<String>,
    ) {
        let Some(st) = self.vassals.get_mut(path) else {
            return;
        };
        // A new episode starts after each outcome: the next hold is recorded again.
        st.noted = None;
        let Some(p) = st.pending.take() else { return };
        st.escalation = if result == OutcomeResult::Recovered {
            0
        } else {
            p.escalate_to
        };
        let Some(v) = self.inv.vassals.get(path) else {
            return;
        };
        let seconds = p.started.elapsed().as_secs_f64();
        if result == OutcomeResult::Recovered {
            info!(vassal = %v.file.name, fds = fds_after, seconds, "recovered");
        } else {
            warn!(vassal = %v.file.name, fds = fds_after, seconds, "not recovered: {}", detail.as_deref().unwrap_or(""));
        }
        let _ = self.write(
            SystemTime::now(),
            &p.incident,
            v,
            Rec::Outcome(Outcome {
                result,
                fds_after,
                seconds,
                detail,
            }),
        );
    }

    /// A process of the vassal at `path` fired: decide, attribute, record, check, act.
    fn incident(&mut self, path: &Path, procs: &Procs, f: Fired, workers_over: Vec<ProcId>) {
        let now = SystemTime::now();
        let busy = self
            .vassals
            .values()
            .filter(|s| s.pending.is_some())
            .count()
            >= self.cfg.max_concurrent;
        let Some(v) = self.inv.vassals.get(path) else {
            return;
        };
        let policy = v.policy.clone();
        let name = v.file.name.clone();
        let ini_error = crate::emperor::read_vassal(&v.file.path).err();
        let ini_invalid = ini_error.is_some();
        let pending_change = v.pending_change;
        let emperor_up = v
            .emperor
            .and_then(|p| self.inv.emperor(p))
            .is_some_and(crate::emperor::Emperor::is_running);
        let st = self.vassals.entry(path.to_owned()).or_default();
        let mut hold = policy::gate(&policy, now, &st.hist, busy, self.opts.dry_run);
        if hold.is_ok() {
            // Before acting, learn what others recorded meanwhile (an operator's manual
            // reload, say): their actions count for cooldown and `max-reloads` too.
            for t in audit::recent_actions(self.audit.path(), path, 256 * 1024) {
                if !st.hist.actions.contains(&t) && st.hist.last_action().is_none_or(|l| t > l) {
                    st.hist.actions.push(t);
                }
            }
            hold = policy::gate(&policy, now, &st.hist, busy, self.opts.dry_run);
        }
        st.hist.flapping = matches!(hold, Err(Hold::Flapping { .. }));
        st.hist.last_fire = Some(now);
        // What the decision depends on: the same episode with the same inputs is recorded
        // once per cooldown, not once per tick.
        let key = match &hold {
            Err(h) => h.reason().to_owned(),
            Ok(()) => format!(
                "act:{ini_invalid}:{pending_change}:{emperor_up}:{}",
                st.escalation
            ),
        };
        if let Some((noted, k)) = &st.noted
            && *k == key
            && now.duration_since(*noted).unwrap_or_default() < policy.cooldown
        {
            return;
        }
        let escalation = st.escalation;
        let incident = self.next_incident(now);

        // Attribute: name what leaks, before anything else.
        let master = (f.role == Role::Worker).then_some(procs.master.pid);
        let report = match forensics::report(
            f.id.pid,
            policy.top,
            self.baselines.get(&f.id),
            master,
        ) {
            Ok(r) => r,
            Err(e) => {
                debug!(vassal = %name, pid = f.id.pid, "process gone before it could be read: {e}");
                return;
            }
        };
        let Some(v) = self.inv.vassals.get(path) else {
            return;
        };
        // Mostly inherited: the leading target (the one that grew, when known) is held
        // through the master for at least half of its count.
        let leading = report
            .top
            .iter()
            .find(|t| t.growth.is_some_and(|g| g > 0))
            .or_else(|| report.top.first());
        let inherited = leading.is_some_and(|t| {
            t.inherited.unwrap_or(0) * 2 >= t.count && t.inherited.unwrap_or(0) > 0
        });
        let chain_file = v
            .ini
            .as_ref()
            .ok()
            .and_then(|i| i.get("touch-chain-reload"))
            .map(PathBuf::from)
            .filter(|p| p.exists());
        let situation = Situation {
            master_leaks: f.role == Role::Master,
            inherited,
            workers_over,
            workers: procs.workers.len(),
            chain_file,
            pending_change: v.pending_change,
            ini_invalid,
            escalation,
        };
        let (plan, note) = policy::choose(policy.action, &situation);
        #[allow(clippy::cast_precision_loss)]
        let usage = if f.limit == 0 {
            1.0
        } else {
            f.fds as f64 / f.limit as f64
        };
        warn!(vassal = %name, pid = f.id.pid, role = %f.role, fds = f.fds, limit = f.limit, rule = f.fire.name(),
              top = report.top.first().map_or("", |t| t.target.as_str()), plan = plan.name(), "over threshold");
        let (slope, eta) = match f.fire {
            Fire::Predict { slope, eta } => (Some(slope), Some(eta)),
            _ => (None, None),
        };
        let detected = Rec::Detected(Detected {
            pid: f.id.pid,
            role: f.role,
            fds: f.fds,
            limit: f.limit,
            usage,
            rule: policy::rule_text(&policy, &f.fire, f.fds, f.limit),
            rule_name: Some(f.fire.name().to_owned()),
            slope,
            eta_seconds: eta,
            top: report.top.iter().map(Into::into).collect(),
            by_kind: report.by_kind,
        });
        let recorded = self.write(now, &incident, v, detected);
        if let Some(st) = self.vassals.get_mut(path) {
            st.noted = Some((now, key));
        }
        if recorded.is_err() {
            // Record first, or not at all: no action without its record on disk.
            return;
        }
        let suppress = |w: &Warden, reason: &str, detail: String| {
            let v = &w.inv.vassals[path];
            info!(vassal = %v.file.name, reason, "{detail}");
            let _ = w.write(
                now,
                &incident,
                v,
                Rec::Suppressed(Suppressed {
                    reason: reason.into(),
                    detail: Some(detail),
                }),
            );
        };
        if let Err(h) = hold {
            let detail = match &h {
                Hold::Flapping { recent } => format!(
                    "{recent} actions within {}: alerting only until it has been quiet for that long",
                    humantime::format_duration(policy.max_reloads_window)
                ),
                Hold::Cooldown { remaining } => format!(
                    "acted on less than {} ago; next action allowed in {}",
                    humantime::format_duration(policy.cooldown),
                    humantime::format_duration(Duration::from_secs(remaining.as_secs()))
                ),
                Hold::Busy => format!(
                    "{} reload(s) already in progress on this host (max-concurrent)",
                    self.cfg.max_concurrent
                ),
                Hold::DryRun => format!("dry run: would {}", plan.name()),
            };
            suppress(self, h.reason(), detail);
            return;
        }
        if let Plan::Alert(reason) = plan {
            warn!(vassal = %name, reason, "alert: not acting");
            let mut detail = note.unwrap_or_else(|| "action = alert".into());
            if let Some(e) = ini_error.filter(|_| reason == "ini_invalid") {
                detail = format!("{e}; {detail}");
            }
            suppress(self, reason, detail);
            return;
        }
        if let Err((reason, detail)) = self.precheck(path, f.id, &plan) {
            warn!(vassal = %name, reason, "not acting: {detail}");
            suppress(self, reason, detail);
            return;
        }
        self.execute(path, procs, &plan, note, &incident, now, None);
    }

    /// Carries out `plan` and records it; on success the vassal's action is pending
    /// verification.
    #[allow(clippy::too_many_arguments)]
    fn execute(
        &mut self,
        path: &Path,
        procs: &Procs,
        plan: &Plan,
        note: Option<String>,
        incident: &str,
        now: SystemTime,
        reason: Option<String>,
    ) -> bool {
        let v = &self.inv.vassals[path];
        let nofollow = v
            .emperor
            .and_then(|p| self.inv.emperor(p))
            .is_some_and(|e| e.nofollow);
        let mut action = Action {
            action: plan.name().into(),
            path: v.file.path.clone(),
            mtime_before: None,
            mtime_after: None,
            dry_run: false,
            pids: Vec::new(),
            reason,
            note,
        };
        let mut replace = procs.workers.clone();
        let result: Result<(), String> = match plan {
            Plan::Touch | Plan::ChainReload(_) => {
                let (file, follow_rule) = match plan {
                    Plan::ChainReload(f) => (f.clone(), false),
                    _ => (v.file.path.clone(), nofollow),
                };
                action.path.clone_from(&file);
                act::touch(&file, follow_rule, SystemTime::now())
                    .map(|(before, after)| {
                        action.mtime_before = Some(audit::timestamp_precise(before));
                        action.mtime_after = Some(audit::timestamp_precise(after));
                    })
                    .map_err(|e| {
                        format!(
                            "cannot touch {}: {e}; check that the warden may set its mtime",
                            file.display()
                        )
                    })
            }
            Plan::RecycleWorkers(ids) => {
                replace.clone_from(ids);
                let mut errors = Vec::new();
                for id in ids {
                    match act::recycle_worker(procs.master, *id) {
                        Ok(()) => action.pids.push(id.pid),
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                if action.pids.is_empty() {
                    Err(errors.join("; "))
                } else {
                    replace.retain(|id| action.pids.contains(&id.pid));
                    Ok(())
                }
            }
            Plan::Alert(_) => Ok(()),
        };
        if let Err(detail) = result {
            error!(vassal = %v.file.name, "{detail}");
            let _ = self.write(
                now,
                incident,
                v,
                Rec::Suppressed(Suppressed {
                    reason: "action_failed".into(),
                    detail: Some(detail),
                }),
            );
            return false;
        }
        info!(vassal = %v.file.name, action = %action.action, pids = ?action.pids, "acted");
        let _ = self.write(now, incident, v, Rec::Action(action));
        for id in procs.all() {
            if let Some(s) = self.states.get_mut(&id) {
                s.reset();
            }
        }
        let st = self.vassals.entry(path.to_owned()).or_default();
        st.hist.actions.push(now);
        st.pending = Some(Pending {
            incident: incident.to_owned(),
            started: Instant::now(),
            replace,
            escalate_to: plan.escalate(),
        });
        true
    }

    /// The checks just before acting. `Err((reason, detail))` refuses.
    fn precheck(&self, path: &Path, id: ProcId, plan: &Plan) -> Result<(), (&'static str, String)> {
        let v = &self.inv.vassals[path];
        if !procs::is_same_process(id) {
            return Err((
                "pid_changed",
                format!("PID {} is gone or was reused since it was sampled", id.pid),
            ));
        }
        let emperor = v.emperor.and_then(|p| self.inv.emperor(p));
        if !emperor.is_some_and(crate::emperor::Emperor::is_running) {
            return Err((
                "no_emperor",
                "no running Emperor watches this vassal, so a reload could not happen".into(),
            ));
        }
        if matches!(plan, Plan::Touch) {
            // Read the file again now: it may have changed since the last rescan.
            if let Err(e) = crate::emperor::read_vassal(&v.file.path) {
                return Err((
                    "ini_invalid",
                    format!("{e}; a reload would make the Emperor start a broken vassal"),
                ));
            }
        }
        Ok(())
    }

    /// An operator's reload of one vassal (`vassal-warden reload`): the same checks as an
    /// automatic touch, recorded with the reason, then verified.
    pub fn manual_reload(
        &mut self,
        name: &str,
        reason: &str,
        dry_run: bool,
    ) -> anyhow::Result<OutcomeResult> {
        self.refresh();
        self.inv.map_all();
        let path = self
            .inv
            .find(name)
            .map(|v| v.file.path.clone())
            .ok_or_else(|| {
                anyhow::anyhow!("no vassal named `{name}`; `vassal-warden status` lists them")
            })?;
        let v = &self.inv.vassals[&path];
        let Mapping::Running(procs) = v.mapping.clone() else {
            anyhow::bail!(
                "vassal `{}` has no running master; nothing to reload",
                v.file.name
            );
        };
        let now = SystemTime::now();
        let incident = self.next_incident(now);
        let reason = format!("manual: {reason}");
        if let Err((why, detail)) = self.precheck(&path, procs.master, &Plan::Touch) {
            let v = &self.inv.vassals[&path];
            let _ = self.write(
                now,
                &incident,
                v,
                Rec::Suppressed(Suppressed {
                    reason: why.into(),
                    detail: Some(format!("{reason}: {detail}")),
                }),
            );
            anyhow::bail!("not reloading {}: {detail}", v.file.name);
        }
        let v = &self.inv.vassals[&path];
        if dry_run {
            self.write(
                now,
                &incident,
                v,
                Rec::Action(Action {
                    action: "touch".into(),
                    path: v.file.path.clone(),
                    mtime_before: None,
                    mtime_after: None,
                    dry_run: true,
                    pids: Vec::new(),
                    reason: Some(reason),
                    note: None,
                }),
            )?;
            return Ok(OutcomeResult::Recovered);
        }
        if !self.execute(
            &path,
            &procs,
            &Plan::Touch,
            None,
            &incident,
            now,
            Some(reason),
        ) {
            anyhow::bail!(
                "the touch failed; see the incident log {}",
                self.audit.path().display()
            );
        }
        let verify = self.inv.vassals[&path].policy.verify;
        let start = Instant::now();
        while self.any_pending() && start.elapsed() <= verify + Duration::from_secs(1) {
            std::thread::sleep(self.cfg.interval.min(Duration::from_millis(500)));
            self.inv.map_all();
            let mut seen = HashSet::new();
            self.tick_vassal(&path, Instant::now(), &mut seen);
        }
        let (records, _) = audit::read_log(self.audit.path())?;
        Ok(records
            .iter()
            .rev()
            .find_map(|r| match &r.event {
                Rec::Outcome(o) if r.incident == incident => Some(o.result),
                _ => None,
            })
            .unwrap_or(OutcomeResult::NotRecovered))
    }
}
