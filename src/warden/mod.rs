//! The warden: gathers each vassal's inputs on each pass, carries out what the decision
//! core (`episode`) decides, and keeps the state between passes.
//!
//! This module owns the order of the stages for a vassal — map, sample, decide (with
//! attribution), record, check, act, verify, record — and the state that lives between
//! passes: per-process streaks and baselines, and each vassal's `Episode` (rebuilt from
//! the incident log at start, so a restart never causes an action the running warden
//! would have suppressed). It makes no decision of its own beyond the last checks right
//! before acting (same process, Emperor running, file still a vassal config). A failure on
//! one vassal is logged with what to do and the rest go on. No action is taken before its
//! `detected` record is on disk. What is written to the log, owed to it and said once in
//! the journal is the `ledger`'s; the reads the core asks for are in `reads`.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, error, info, warn};

use crate::act;
use crate::audit::{self, Action, Detected, Event as Rec, Outcome, Record, Suppressed};
use crate::capture::{Capture, Captures, Sampled};
use crate::config::{Config, Policy};
use crate::episode::{self, Decision, Episode, Incident, Pass, Proc, Taken, Then, Timings};
use crate::forensics::Baseline;
use crate::inventory::{Inventory, Vassal};
use crate::mapping::{Mapping, Procs};
use crate::metrics::{self, Outlets, Side, Sides};
use crate::pauses;
use crate::policy::{self, Fire, Plan, ProcState};
use crate::procs::{self, ProcId, Role};
use crate::sample::Sampler;
use crate::sockets::PassTables;
use crate::text::{counted, one_line};

mod ledger;
mod paused;
mod reads;

use crate::vocab::{ActionKind, OutcomeResult, Reason};
use ledger::{Ledger, Topic};
use reads::Reads;

/// An action to carry out and how to record it.
struct Request<'a> {
    plan: &'a Plan,
    note: Option<String>,
    incident: &'a str,
    now: SystemTime,
    /// An operator's reason, for a manual reload.
    reason: Option<String>,
    /// Leaking workers that follow once the plan's own are replaced.
    rest: Vec<ProcId>,
}

pub(crate) struct Warden {
    cfg: Config,
    /// Record what would be done, do nothing (`--dry-run` or `dry-run = true`).
    dry_run: bool,
    /// `--dry-run` was given: a re-read config cannot turn it off.
    forced_dry_run: bool,
    /// The incident log and what hears of each record.
    ledger: Ledger,
    inv: Inventory,
    sampler: Sampler,
    states: HashMap<ProcId, ProcState>,
    baselines: HashMap<ProcId, Baseline>,
    /// The socket tables this pass has read, for the baselines of the processes it sees
    /// first; emptied at the start and end of each pass.
    tables: PassTables,
    /// Captures of the code that leaks, per vassal.
    captures: Captures,
    episodes: HashMap<PathBuf, Episode>,
    /// How long actions take on this host, learned from outcomes.
    timings: Timings,
    /// The vassal, kind and time of the last action taken, for the service status.
    last_action: Option<(String, ActionKind, SystemTime)>,
    origin: Instant,
    seq: u64,
    /// How long passes take.
    passes: metrics::Histogram,
    /// Each running vassal's master and fullest worker on the last pass.
    sides: HashMap<PathBuf, Sides>,
    /// Where each pass's metrics go (nowhere but in the daemon).
    outlets: Outlets,
    /// The last exposition rendered: its buffer is reused.
    exposition: String,
    /// The vassals an operator paused.
    paused: paused::Paused,
}

/// The journal line of an incident: what is over and what follows, with its fields.
fn log_over(name: &str, incident: &str, inc: &Incident, plan: &str) {
    let f = &inc.offender;
    let top = inc.report.top.first();
    warn!(vassal = %name, incident = %incident, pid = f.id.pid, role = %f.role, fds = f.fds, limit = f.limit,
          rule = inc.fire.rule().as_str(), top = top.map_or("", |t| t.target.as_str()), plan,
          "{}: {} {} at {}/{} fds{}: {}", one_line(name), f.role, f.id.pid, f.fds, f.limit,
          top.map_or_else(String::new, |t| format!(" ({} ×{})", one_line(&t.target), t.count)),
          then_words(&inc.then));
}

/// What follows an incident, in the words of a journal line.
fn then_words(then: &Then) -> String {
    match then {
        Then::Act { plan, .. } => match plan {
            Plan::RecycleWorkers(ids) => format!(
                "recycling {} {}",
                if ids.len() == 1 { "worker" } else { "workers" },
                pid_list(&ids.iter().map(|i| i.pid).collect::<Vec<_>>())
            ),
            Plan::ChainReload(_) => "chain reload (workers replaced one at a time)".to_owned(),
            Plan::Touch => "touching its file (graceful reload)".to_owned(),
            Plan::Alert(reason) => format!("alerting only ({reason})"),
        },
        Then::Alert { reason, .. } => format!("alerting only ({reason})"),
        Then::Hold { hold, would } => format!("held ({}); would {}", hold.reason(), would.name()),
    }
}

/// What was done, in the words of a journal line.
fn acted_words(kind: ActionKind, pids: &[i32], path: &Path) -> String {
    let path = one_line(&path.display().to_string());
    match kind {
        ActionKind::RecycleWorker => format!("recycled {} (SIGHUP)", pid_list(pids)),
        ActionKind::ChainReload => format!("touched {path} (chain reload)"),
        ActionKind::Touch => format!("touched {path} (graceful reload)"),
    }
}

/// PIDs as a reader lists them: `3071, 3072`.
fn pid_list(pids: &[i32]) -> String {
    pids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// How many vassals `STATUS=` names in a list before it counts the rest.
const SUMMARY_NAMES: usize = 3;

/// The first `max` of `names`, sorted, and how many more: `a.ini, b.ini and 4 more`.
fn some_of(mut names: Vec<String>, max: usize) -> String {
    names.sort();
    let more = names.len().saturating_sub(max);
    names.truncate(max);
    let mut s = names.join(", ");
    if more > 0 {
        let _ = write!(s, " and {more} more");
    }
    s
}

impl Warden {
    #[must_use]
    pub(crate) fn new(cfg: Config, dry_run: bool) -> Warden {
        let ledger = Ledger::new(cfg.audit_log.clone(), cfg.remind);
        let captures = Captures::new(cfg.capture);
        let mut w = Warden {
            dry_run: dry_run || cfg.dry_run,
            forced_dry_run: dry_run,
            cfg,
            ledger,
            inv: Inventory::default(),
            sampler: Sampler::default(),
            states: HashMap::new(),
            baselines: HashMap::new(),
            tables: PassTables::default(),
            captures,
            episodes: HashMap::new(),
            timings: Timings::default(),
            last_action: None,
            origin: Instant::now(),
            seq: 0,
            passes: metrics::Histogram::default(),
            sides: HashMap::new(),
            outlets: Outlets::default(),
            paused: paused::Paused::default(),
            exposition: String::new(),
        };
        w.restore_from_log();
        w
    }

    /// Publishes the metrics of every pass to `outlets` (the daemon's endpoint and
    /// textfile).
    pub(crate) fn publish_to(&mut self, outlets: Outlets) {
        self.outlets = outlets;
    }

    /// Stops publishing and withdraws the metrics textfile (a clean stop).
    pub(crate) fn withdraw_metrics(&mut self) {
        std::mem::take(&mut self.outlets).withdraw();
    }

    /// Loads the kernel side of captures, when they are on: a host that cannot says why
    /// in the journal, once.
    pub(crate) fn prepare_captures(&mut self) {
        match self.captures.availability() {
            Ok(()) => info!("captures of the code that leaks are available"),
            Err(why) => debug!("captures of the code that leaks: {why}"),
        }
    }

    /// Starts the alert hook, when one is configured (the daemon's, not a command's: a
    /// command ends before a hook would run).
    pub(crate) fn start_hooks(&mut self) {
        self.ledger.set_hook(self.cfg.hook());
    }

    /// Lets the hook's queued runs finish as the daemon stops, for a few seconds at most.
    pub(crate) fn stop_hooks(&mut self) {
        self.ledger.stop_hooks();
    }

    #[must_use]
    pub(crate) fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// One line for the service manager: vassals watched, processes over the line, the
    /// vassals the warden holds back from (and why) or has given up on, the last action.
    #[must_use]
    pub(crate) fn summary(&self) -> String {
        let over = self.states.values().filter(|s| s.is_over()).count();
        let now = SystemTime::now();
        let (mut held, mut given_up) = (Vec::new(), Vec::new());
        for (path, v) in &self.inv.vassals {
            let Some(ep) = self.episodes.get(path) else {
                continue;
            };
            let name = one_line(&v.file.name);
            if ep.standing(&v.policy, now).given_up {
                given_up.push(name);
            } else if let Some(open) = ep.open().filter(|o| o.reason != Reason::Paused) {
                held.push(format!("{name} ({})", open.reason.as_str()));
            }
        }
        let paused: Vec<String> = self
            .paused
            .holding(now)
            .map(|p| format!("{} (until {})", one_line(&p.vassal), p.until))
            .collect();
        let mut line = format!(
            "{} watched, {} over the line",
            counted(self.inv.vassals.len(), "vassal", "vassals"),
            counted(over, "process", "processes")
        );
        for (what, names) in [("held", held), ("given up", given_up), ("paused", paused)] {
            if !names.is_empty() {
                let _ = write!(line, ", {what}: {}", some_of(names, SUMMARY_NAMES));
            }
        }
        match &self.last_action {
            None => line.push_str(", no action yet"),
            Some((vassal, kind, at)) => {
                let _ = write!(
                    line,
                    ", last action: {kind} {vassal} at {}",
                    audit::timestamp(*at)
                );
            }
        }
        line
    }

    /// Re-reads the configuration from where it was loaded (on SIGHUP) and applies it to
    /// every vassal. A file that does not load is logged and the configuration in force
    /// is kept. The incident log stays where it is until a restart. Returns the interval
    /// now in force.
    pub(crate) fn reload_config(&mut self) -> Duration {
        match Config::load(self.cfg.path.as_deref()) {
            Ok(mut new) => {
                if new.audit_log != self.cfg.audit_log {
                    warn!(
                        "audit-log changed to {}: the warden keeps writing {} until it is restarted",
                        new.audit_log.display(),
                        self.cfg.audit_log.display()
                    );
                    new.audit_log.clone_from(&self.cfg.audit_log);
                }
                if (&new.metrics, &new.metrics_textfile)
                    != (&self.cfg.metrics, &self.cfg.metrics_textfile)
                {
                    warn!(
                        "metrics or metrics-textfile changed: the warden keeps publishing as before until it is restarted"
                    );
                    new.metrics = self.cfg.metrics;
                    new.metrics_textfile.clone_from(&self.cfg.metrics_textfile);
                }
                self.dry_run = self.forced_dry_run || new.dry_run;
                self.ledger.set_hook(new.hook());
                self.ledger.set_remind(new.remind);
                self.captures.configure(new.capture);
                self.cfg = new;
                self.inv.repolicy(&self.cfg);
                info!(dry_run = self.dry_run, "configuration re-read");
            }
            Err(e) => error!("cannot re-read the configuration: {e}; the one in force is kept"),
        }
        self.cfg.interval
    }

    #[must_use]
    pub(crate) fn audit_log(&self) -> &Path {
        self.ledger.path()
    }

    #[must_use]
    pub(crate) fn inventory(&self) -> &Inventory {
        &self.inv
    }

    /// Rebuilds each vassal's episode from the incident log and its rotated
    /// predecessor (the last few MiB of each).
    fn restore_from_log(&mut self) {
        match self.ledger.history() {
            Ok(history) => {
                self.episodes = Episode::replay(&history);
                let vassals = &self.inv.vassals;
                self.timings.replay(&history, |config| {
                    vassals
                        .get(config)
                        .map_or(f64::INFINITY, |v| v.policy.verify.as_secs_f64())
                });
            }
            Err(e) => {
                warn!(file = %self.ledger.path().display(), "cannot read the incident log to restore cooldowns: {e}; they start empty; make it readable by the warden");
            }
        }
    }

    fn next_incident(&mut self, now: SystemTime) -> String {
        self.seq += 1;
        let ts = audit::timestamp(now).replace(['-', ':'], "");
        format!("{ts}-{}-{}", std::process::id(), self.seq)
    }

    /// Ends the episodes the log left open for vassal files that are gone (removed
    /// while no warden ran), once the vassals have been listed at start.
    pub(crate) fn end_orphaned_episodes(&mut self) {
        let gone: Vec<PathBuf> = self
            .episodes
            .iter()
            .filter(|(p, ep)| ep.open().is_some() && !self.inv.vassals.contains_key(*p))
            .map(|(p, _)| p.clone())
            .collect();
        let now = SystemTime::now();
        for path in gone {
            let Some(open) = self.episodes.get_mut(&path).and_then(Episode::close) else {
                continue;
            };
            let name = path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            info!(vassal = %name, incident = %open.incident, "{}: {} ended: its vassal file is gone", one_line(&name), open.reason);
            // Gone with its file: its owner is not known any more.
            self.ledger.write(Record {
                owner: None,
                schema: audit::SCHEMA,
                ts: audit::timestamp(now),
                incident: open.incident.clone(),
                vassal: name,
                config: path,
                event: Rec::Ended(audit::Episode::of(
                    &open,
                    now,
                    None,
                    Some("the vassal file is gone".into()),
                )),
            });
        }
    }

    /// Re-lists Emperors and vassals; logs what changed.
    pub(crate) fn refresh(&mut self) {
        let changes = self.inv.refresh(&self.cfg);
        for p in &changes.added {
            if let Some(v) = self.inv.vassals.get(p) {
                match &v.ini {
                    Ok(_) => {
                        info!(vassal = %v.file.name, config = %p.display(), "{}: watching vassal {}", one_line(&v.file.name), one_line(&p.display().to_string()));
                    }
                    Err(e) => {
                        warn!(vassal = %v.file.name, "{}: {e}; it is watched but will not be touched until it reads as a vassal config", one_line(&v.file.name));
                    }
                }
                for problem in &v.policy_problems {
                    warn!(vassal = %v.file.name, "{}: [vassal-warden] {problem}; the rest of its policy applies", one_line(&p.display().to_string()));
                }
            }
        }
        for p in &changes.reread {
            if let Some(v) = self.inv.vassals.get(p) {
                if let Err(e) = &v.ini {
                    warn!(vassal = %v.file.name, "{}: {e}; it will not be touched until it reads as a vassal config", one_line(&v.file.name));
                }
                if v.pending_change {
                    warn!(vassal = %v.file.name, "{}: changed without a newer mtime: the running vassal does not run it yet", one_line(&p.display().to_string()));
                }
            }
        }
        for v in changes.removed {
            info!(vassal = %v.file.name, "{}: vassal file removed; no longer watched", one_line(&v.file.name));
            if let Some(ep) = self.episodes.get_mut(&v.file.path) {
                let d = ep.removed(Instant::now());
                let open = ep.close();
                write_outcome(&mut self.ledger, &v, d);
                if let Some(open) = open {
                    let why = "the vassal file was removed".into();
                    write_ended(&mut self.ledger, &v, &open, None, why);
                }
            }
        }
    }

    /// Each source's directory (a glob's fixed part) and its parent: the parent's events
    /// tell when the directory itself is deleted and created again.
    #[must_use]
    pub(crate) fn watch_dirs(&self) -> Vec<PathBuf> {
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
    pub(crate) fn concerns(&self, path: &Path) -> bool {
        self.inv.sources.iter().any(|s| {
            let dir = s.dir();
            path == dir || path.parent() == Some(dir.as_path()) || dir.starts_with(path)
        })
    }

    /// One pass: map, sample, decide, and act or verify, for every vassal. Returns how
    /// many processes were sampled.
    pub(crate) fn tick(&mut self) -> usize {
        let now_i = Instant::now();
        // An Emperor that restarted has new PIDs: find it again before mapping.
        if self.inv.emperors.iter().any(|e| !e.is_running()) {
            info!("an Emperor stopped or restarted; rescanning");
            self.refresh();
        }
        self.inv.map_all();
        self.say_source_problems();
        self.refresh_pauses();
        self.ledger.retry_owed("-");
        let paths: Vec<PathBuf> = self.inv.vassals.keys().cloned().collect();
        let mut seen: HashSet<ProcId> = HashSet::new();
        self.tables = PassTables::default();
        for path in paths {
            self.tick_vassal(&path, now_i, &mut seen);
        }
        self.tables = PassTables::default();
        self.states.retain(|id, _| seen.contains(id));
        self.baselines.retain(|id, _| seen.contains(id));
        let inv = &self.inv;
        self.captures.retain(|p| inv.vassals.contains_key(p));
        // A vassal file removed: an incident of it that could not be recorded is over.
        self.ledger
            .retain_unwritten(|p| inv.vassals.contains_key(p));
        self.captures.poll();
        self.record_followed();
        self.sampler
            .retain(|pid| seen.iter().any(|id| id.pid == pid));
        let elapsed = now_i.elapsed();
        tracing::trace!(
            elapsed_us = elapsed.as_micros(),
            processes = seen.len(),
            "tick"
        );
        self.passes.observe(elapsed);
        self.publish_metrics(seen.len());
        seen.len()
    }

    /// Renders this pass's metrics and hands them to the outlets: the endpoint and the
    /// textfile read only this text, never the warden.
    fn publish_metrics(&mut self, processes: usize) {
        if self.outlets.is_empty() {
            return;
        }
        let inv = &self.inv;
        self.sides.retain(|p, _| inv.vassals.contains_key(p));
        let hook_failures = self.ledger.hook_failures();
        let owed = self.ledger.owed();
        let counts = self
            .ledger
            .counts(|name| inv.vassals.values().any(|v| v.file.name == name));
        let now = SystemTime::now();
        let mut names = HashSet::new();
        let mut views = Vec::with_capacity(inv.vassals.len());
        // Two vassals with one name (under two Emperors) share its series: the first by
        // path shows its gauges; the counts are of both.
        for (path, v) in inv
            .vassals
            .iter()
            .filter(|(_, v)| names.insert(&v.file.name))
        {
            let standing = self
                .episodes
                .get(path)
                .map(|ep| ep.standing(&v.policy, now));
            views.push(metrics::VassalView {
                name: &v.file.name,
                state: v.mapping.state(),
                sides: self.sides.get(path).copied().unwrap_or_default(),
                flapping: standing.is_some_and(|s| s.flapping),
                given_up: standing.is_some_and(|s| s.given_up),
                last_action: standing.and_then(|s| s.last_action),
                counts: counts.of(&v.file.name),
                hook_failures: hook_failures.get(&v.file.name).copied().unwrap_or(0),
                episode: self
                    .episodes
                    .get(path)
                    .and_then(Episode::open)
                    .map(|o| (o.reason.as_str(), o.since)),
                paused_until: self.paused.of(path, now).map(pauses::Pause::until),
                owner: v.policy.owner.as_deref(),
            });
        }
        views.sort_by(|a, b| a.name.cmp(b.name));
        let w = metrics::WardenView {
            vassals: inv.vassals.len(),
            emperors: inv.emperors.len(),
            processes,
            owed,
            last_pass: now,
            passes: &self.passes,
        };
        metrics::render(&mut self.exposition, &w, &views);
        self.outlets.publish(&self.exposition);
    }

    /// A bad source (an Emperor stats server that trickles or lies) is one warning in the
    /// log, not one per pass; it is said again only once it changed.
    fn say_source_problems(&mut self) {
        for (pid, view) in &self.inv.views {
            let topic = Topic::Source(*pid);
            match &view.stats_error {
                Some(e) => {
                    if self.ledger.said.is_news(topic, e) {
                        warn!(emperor = pid, "{e}");
                    }
                }
                None => self.ledger.said.forget(&topic),
            }
        }
    }

    /// True while some vassal's action is being verified.
    #[must_use]
    pub(crate) fn any_pending(&self) -> bool {
        self.episodes.values().any(Episode::is_pending)
    }

    /// Samples every process of a running vassal and feeds each one's streaks.
    fn sample(
        &mut self,
        name: &str,
        procs: &Procs,
        policy: &Policy,
        now_i: Instant,
        seen: &mut HashSet<ProcId>,
    ) -> Vec<Proc> {
        let t = now_i.duration_since(self.origin).as_secs_f64();
        let interval = self.cfg.interval;
        let mut out = Vec::new();
        // Every process of the vassal, whatever its role: only the cure differs.
        for (id, role) in procs.with_roles() {
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
                .or_insert_with(|| Baseline::take_in(id.pid, s.fds, &mut self.tables));
            let lead = policy::auto_lead(self.timings.of(role), interval);
            let state = self.states.entry(id).or_default();
            let fire = state.feed(policy, t, s.fds, s.limit, lead);
            let urgent =
                role == Role::Worker && policy::urgent(state.eta(policy, s.fds, s.limit), lead);
            if let Some(f) = fire {
                debug!(vassal = %name, pid = id.pid, fds = s.fds, limit = s.limit, rule = f.rule().as_str(), "fired");
            }
            out.push(Proc {
                id,
                role,
                fds: s.fds,
                limit: s.limit,
                line: policy::line(policy, s.limit),
                fire,
                urgent,
            });
        }
        out
    }

    fn tick_vassal(&mut self, path: &Path, now_i: Instant, seen: &mut HashSet<ProcId>) {
        let Some(v) = self.inv.vassals.get(path) else {
            return;
        };
        let policy = v.policy.clone();
        let Mapping::Running(procs) = &v.mapping else {
            self.sides.remove(path);
            // Its processes are not seen: an incident that could not be recorded stays
            // owed through a respawn or an Emperor's restart, not for ever.
            let name = v.file.name.clone();
            self.ledger.absent(path, &name, now_i);
            if let Some(ep) = self.episodes.get_mut(path) {
                let d = ep.decide_stopped(&policy, Instant::now());
                self.record_outcome(path, d);
            }
            return;
        };
        let procs = procs.clone();
        let name = v.file.name.clone();
        let sampled = self.sample(&name, &procs, &policy, now_i, seen);
        self.ledger.present(path);
        // An incident that could not be recorded and is over (every process back under
        // its line, none firing) is owed no longer.
        if sampled.iter().all(|p| !p.over() && p.fire.is_none()) && !sampled.is_empty() {
            self.ledger.drop_unwritten(path, &name);
        }
        self.captures.consider(
            path,
            &name,
            &for_capture(&sampled),
            &self.baselines,
            &mut self.tables,
            policy.capture_at,
        );
        match self.sides.get_mut(path) {
            Some(s) => *s = sides(&sampled),
            None => {
                self.sides.insert(path.to_owned(), sides(&sampled));
            }
        }
        let busy =
            self.episodes.values().filter(|e| e.is_pending()).count() >= self.cfg.max_concurrent;
        let now = SystemTime::now();
        let paused = self.paused.of(path, now).map(pauses::Pause::describe);
        let pass = Pass {
            paused: paused.as_deref(),
            now,
            mono: Instant::now(),
            workers: &procs.workers,
            procs: &sampled,
            busy,
            dry_run: self.dry_run,
            remind: self.cfg.remind,
        };
        let mut reads = Reads {
            ledger: &mut self.ledger,
            vassal: &self.inv.vassals[path],
            inv: &self.inv,
            baselines: &self.baselines,
            master: procs.master,
            top: policy.top,
            tables: &mut self.tables,
        };
        let decision = self
            .episodes
            .entry(path.to_owned())
            .or_default()
            .decide(&policy, &pass, &mut reads);
        self.carry_out(path, &procs, &policy, pass.now, decision);
    }

    /// Does what the core decided for the vassal at `path` on this pass.
    fn carry_out(
        &mut self,
        path: &Path,
        procs: &Procs,
        policy: &Policy,
        now: SystemTime,
        decision: Decision,
    ) {
        match decision {
            Decision::Nothing => {}
            Decision::Outcome(_) => self.record_outcome(path, decision),
            Decision::Incident(inc) => self.incident(path, procs, policy, now, &inc),
            Decision::Continue {
                incident,
                plan,
                rest,
            } => self.continue_leak(path, procs, &incident, &plan, rest),
            Decision::Remind { open, fds } => {
                let v = &self.inv.vassals[path];
                write_reminder(&mut self.ledger, v, &open, fds, now);
            }
            Decision::Ended { open, fds, detail } => {
                let v = &self.inv.vassals[path];
                write_ended(&mut self.ledger, v, &open, fds, detail);
            }
        }
    }

    /// What incident `incident` of `path` says of the code that leaks, its offender `f`.
    fn capture_for(
        &mut self,
        path: &Path,
        policy: &Policy,
        incident: &str,
        f: &episode::Proc,
    ) -> Option<Capture> {
        let wanted = policy.capture_at.is_some();
        self.captures.take(
            path,
            wanted,
            incident,
            (f.id, f.fds),
            &self.baselines,
            &mut self.tables,
        )
    }

    /// Records what the captures that went on past their incidents found: a `capture`
    /// record of each incident.
    fn record_followed(&mut self) {
        for f in self.captures.followed() {
            let Some(v) = self.inv.vassals.get(&f.vassal) else {
                continue;
            };
            info!(vassal = %v.file.name, sites = f.capture.sites.len(), reports = f.capture.reports,
                  incidents = ?f.incidents, "{}: code that leaks found after the incident ({} site(s))",
                  one_line(&v.file.name), f.capture.sites.len());
            for incident in &f.incidents {
                let event = Rec::Capture(audit::Captured {
                    capture: f.capture.clone().into(),
                });
                self.ledger
                    .write(record(SystemTime::now(), incident, v, event));
            }
        }
    }

    /// Records the outcome of an action under verification, if `d` is one, and learns
    /// from it how long actions take.
    fn record_outcome(&mut self, path: &Path, d: Decision) {
        if let Decision::Outcome(o) = &d
            && o.result == OutcomeResult::Recovered
        {
            // A reload held past `verify` by a hung worker teaches no more than `verify`:
            // the time predictions lead by is every vassal's.
            let verify = self
                .inv
                .vassals
                .get(path)
                .map_or(f64::INFINITY, |v| v.policy.verify.as_secs_f64());
            self.timings.observe(o.kind, o.seconds.min(verify));
        }
        if let Some(v) = self.inv.vassals.get(path) {
            write_outcome(&mut self.ledger, v, d);
        }
    }

    /// Records an incident the core decided on, then holds, alerts, or checks and acts.
    /// An incident whose first record cannot be written (nor, when it acts, the room for
    /// the action's record) is decided again on the next pass, and nothing is done.
    fn incident(
        &mut self,
        path: &Path,
        procs: &Procs,
        policy: &Policy,
        now: SystemTime,
        inc: &Incident,
    ) {
        // An incident whose first record could not be written keeps its id, and is said
        // once, until the record is on disk.
        let again = self.ledger.unwritten(path);
        let said = again.is_some();
        let incident = again.unwrap_or_else(|| self.next_incident(now));
        let capture = self.capture_for(path, policy, &incident, &inc.offender);
        let v = &self.inv.vassals[path];
        if let Some((open, why)) = &inc.closes {
            write_ended(
                &mut self.ledger,
                v,
                open,
                Some(inc.offender.fds),
                why.clone(),
            );
        }
        let f = &inc.offender;
        let plan_name = match &inc.then {
            Then::Hold { would, .. } => would.name(),
            Then::Alert { .. } => "alert",
            Then::Act { plan, .. } => plan.name(),
        };
        if said {
            debug!(vassal = %v.file.name, incident = %incident, fds = f.fds, "still over threshold; its record is not written yet");
        } else {
            log_over(&v.file.name, &incident, inc, plan_name);
        }
        let first = detected(policy, inc, capture);
        // Record first, or not at all: no action without its records on disk. Room for
        // both records is made before the first is written, so that a full disk stops
        // the incident before it starts, not between its records.
        let room = match &inc.then {
            Then::Act { plan, note, .. } => {
                audit::line_len(&record(now, &incident, v, first.clone()))
                    + planned_len(now, &incident, v, plan, note.clone(), None)
            }
            _ => 0,
        };
        if self
            .ledger
            .write_first_with_room(&record(now, &incident, v, first), room)
            .is_err()
        {
            self.episodes
                .entry(path.to_owned())
                .or_default()
                .unrecorded();
            return;
        }
        match &inc.then {
            Then::Hold { hold, would } => {
                let detail =
                    episode::hold_detail(hold, policy, self.cfg.max_concurrent, would.name());
                self.suppress(path, incident, (hold.reason(), detail), now, false);
            }
            Then::Alert { reason, note } => {
                log_alert(&v.file.name, &incident, reason);
                let detail = note.clone().unwrap_or_else(|| "action = alert".into());
                self.suppress(path, incident, (reason.clone(), detail), now, false);
            }
            Then::Act { plan, note, rest } => {
                if let Err((reason, detail)) = self.precheck(path, f.id, plan) {
                    warn!(vassal = %v.file.name, reason = reason.as_str(), "{}: not acting: {detail}", one_line(&v.file.name));
                    self.suppress(path, incident, (reason, detail), now, true);
                    return;
                }
                let req = Request {
                    plan,
                    note: note.clone(),
                    incident: &incident,
                    now,
                    reason: None,
                    rest: rest.clone(),
                };
                if self.execute(path, procs, &req).is_err() {
                    self.episodes
                        .entry(path.to_owned())
                        .or_default()
                        .unrecorded();
                }
            }
        }
    }

    /// Records that `incident` is not acted on, and why: from now on it is a lasting
    /// episode of the vassal (`refused`: by the last checks before acting).
    fn suppress(
        &mut self,
        path: &Path,
        incident: String,
        (reason, detail): (Reason, String),
        now: SystemTime,
        refused: bool,
    ) {
        let v = &self.inv.vassals[path];
        info!(vassal = %v.file.name, reason = reason.as_str(), "{}: {detail}", one_line(&v.file.name));
        let event = Rec::Suppressed(Suppressed {
            reason: reason.clone(),
            action: None,
            detail: Some(detail),
            manual: false,
        });
        self.ledger.write(record(now, &incident, v, event));
        let ep = self.episodes.entry(path.to_owned()).or_default();
        if refused {
            ep.refused(incident, reason, now);
        } else {
            ep.opened(incident, reason, now);
        }
    }

    /// Recycles the next workers of a leak already recorded, each checked again first.
    fn continue_leak(
        &mut self,
        path: &Path,
        procs: &Procs,
        incident: &str,
        plan: &Plan,
        rest: Vec<ProcId>,
    ) {
        let name = &self.inv.vassals[path].file.name;
        if let Plan::RecycleWorkers(ids) = plan {
            let pids: Vec<i32> = ids.iter().map(|i| i.pid).collect();
            info!(vassal = %name, incident, pids = ?pids,
                  "{}: recycling the next workers that leak the same way: {}", one_line(name), pid_list(&pids));
        }
        let req = Request {
            plan,
            note: Some("the same leak, in the next workers".into()),
            incident,
            now: SystemTime::now(),
            reason: None,
            rest,
        };
        if self.execute(path, procs, &req).is_err()
            && let Plan::RecycleWorkers(ids) = plan
        {
            // Not recycled, for want of room for its record: they are next again.
            let mut next = ids.clone();
            next.extend(req.rest);
            self.episodes
                .entry(path.to_owned())
                .or_default()
                .put_back(incident.to_owned(), next);
        }
    }

    /// Carries out `req.plan` and records it; on success (`Ok(true)`) the vassal's
    /// action is pending verification. `Err`: the action's record could not be made room
    /// for (or a record is still owed), so nothing was done.
    fn execute(
        &mut self,
        path: &Path,
        procs: &Procs,
        req: &Request<'_>,
    ) -> Result<bool, audit::WriteError> {
        let v = &self.inv.vassals[path];
        let Some(mut action) = planned(v, req.plan, req.note.clone(), req.reason.clone()) else {
            return Ok(false);
        };
        let kind = action.action;
        let room = planned_len(
            req.now,
            req.incident,
            v,
            req.plan,
            req.note.clone(),
            req.reason.clone(),
        );
        self.ledger.room_to_act(&v.file.name, room)?;
        let mut replace = procs.workers.clone();
        let result = match req.plan {
            Plan::Touch | Plan::ChainReload(_) => {
                let target = match req.plan {
                    Plan::ChainReload(f) => act::TouchTarget {
                        path: f,
                        nofollow: false,
                        loaded: None,
                        owner: Some(crate::trust::authority(&v.file.path).unwrap_or(NOBODY)),
                    },
                    _ => act::TouchTarget {
                        path: &v.file.path,
                        nofollow: self.nofollow(v),
                        loaded: v.loaded_mtime(),
                        owner: Some(crate::trust::authority(&v.file.path).unwrap_or(NOBODY)),
                    },
                };
                touch(&target, &mut action)
            }
            Plan::RecycleWorkers(ids) => {
                let r = recycle(procs.master, ids, &mut action);
                replace.clone_from(ids);
                replace.retain(|id| action.pids.contains(&id.pid));
                r
            }
            Plan::Alert(_) => return Ok(false),
        };
        if let Err(detail) = result {
            error!(vassal = %v.file.name, incident = %req.incident, action = %kind, "{}: {kind} failed: {detail}; the next pass climbs the ladder", one_line(&v.file.name));
            let event = Rec::Suppressed(Suppressed {
                reason: Reason::ActionFailed,
                action: Some(kind),
                detail: Some(detail),
                manual: false,
            });
            self.ledger.write(record(req.now, req.incident, v, event));
            self.episodes
                .entry(path.to_owned())
                .or_default()
                .failed(kind);
            return Ok(false);
        }
        info!(vassal = %v.file.name, incident = %req.incident, action = %action.action, pids = ?action.pids,
              "{}: {}", one_line(&v.file.name), acted_words(kind, &action.pids, &action.path));
        self.last_action = Some((v.file.name.clone(), kind, SystemTime::now()));
        self.ledger
            .write(record(req.now, req.incident, v, Rec::Action(action)));
        for (id, _) in procs.with_roles() {
            if let Some(s) = self.states.get_mut(&id) {
                s.reset();
            }
        }
        let mercy = reload_mercy(v, kind, procs.workers.len());
        let taken = Taken {
            now: req.now,
            mono: Instant::now(),
            kind,
            manual: req.reason.is_some(),
            replace,
            before: procs.workers.clone(),
            mercy,
        };
        let episode = self.episodes.entry(path.to_owned()).or_default();
        episode.acted(taken, req.incident.to_owned(), req.rest.clone());
        Ok(true)
    }

    fn nofollow(&self, v: &Vassal) -> bool {
        v.emperor
            .and_then(|p| self.inv.emperor(p))
            .is_some_and(|e| e.nofollow)
    }

    /// The checks just before acting. `Err((reason, detail))` refuses.
    fn precheck(&self, path: &Path, id: ProcId, plan: &Plan) -> Result<(), (Reason, String)> {
        let v = &self.inv.vassals[path];
        if !procs::is_same_process(id) {
            return Err((
                Reason::PidChanged,
                format!("PID {} is gone or was reused since it was sampled", id.pid),
            ));
        }
        let emperor = v.emperor.and_then(|p| self.inv.emperor(p));
        if !emperor.is_some_and(crate::emperor::Emperor::is_running) {
            return Err((
                Reason::NoEmperor,
                "no running Emperor watches this vassal, so a reload could not happen".into(),
            ));
        }
        if matches!(plan, Plan::Touch) {
            // Read the file again now: it may have changed since the decision.
            if let Err(e) = crate::emperor::read_vassal(&v.file.path, &v.cwd) {
                return Err((
                    Reason::IniInvalid,
                    format!("{e}; a reload would make the Emperor start a broken vassal"),
                ));
            }
        }
        Ok(())
    }

    /// An operator's reload of one vassal (`vassal-warden reload`): the same checks as an
    /// automatic touch, recorded with the reason, then verified.
    pub(crate) fn manual_reload(
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
        let v = &self.inv.vassals[&path];
        if let Err((why, detail)) = self.precheck(&path, procs.master, &Plan::Touch) {
            let event = Rec::Suppressed(Suppressed {
                reason: why,
                action: None,
                detail: Some(format!("{reason}: {detail}")),
                manual: true,
            });
            // Refused either way; a failure to record it is logged.
            let _ = self.ledger.write_first(&record(now, &incident, v, event));
            anyhow::bail!("not reloading {}: {detail}", v.file.name);
        }
        if dry_run {
            let event = Rec::Action(Action {
                action: ActionKind::Touch,
                path: v.file.path.clone(),
                mtime_before: None,
                mtime_after: None,
                dry_run: true,
                pids: Vec::new(),
                reason: Some(reason),
                note: None,
                manual: true,
            });
            self.ledger.write_first(&record(now, &incident, v, event))?;
            return Ok(OutcomeResult::Recovered);
        }
        let req = Request {
            plan: &Plan::Touch,
            note: None,
            incident: &incident,
            now,
            reason: Some(reason),
            rest: Vec::new(),
        };
        match self.execute(&path, &procs, &req) {
            Ok(true) => {}
            Ok(false) => anyhow::bail!(
                "the touch failed; see the incident log {}",
                self.ledger.path().display()
            ),
            Err(e) => anyhow::bail!("{e}; not touched, since its record could not be written"),
        }
        self.await_outcome(&path);
        if let Err(e) = self.ledger.pay_owed() {
            anyhow::bail!("{e}; the vassal was touched, but not all of its records are written");
        }
        let read = audit::read_tail(self.ledger.path(), audit::HISTORY_TAIL)?;
        Ok(read
            .records
            .iter()
            .rev()
            .find_map(|r| match &r.event {
                Rec::Outcome(o) if r.incident == incident => Some(o.result),
                _ => None,
            })
            .unwrap_or(OutcomeResult::NotRecovered))
    }

    /// Passes over one vassal until its action is verified (or its time is up).
    fn await_outcome(&mut self, path: &Path) {
        // A reload held by its old workers is verified for up to twice `verify`.
        let verify = self.inv.vassals[path].policy.verify.saturating_mul(2);
        let start = Instant::now();
        while self.any_pending() && start.elapsed() <= verify.saturating_add(Duration::from_secs(1))
        {
            std::thread::sleep(self.cfg.interval.min(Duration::from_millis(500)));
            self.inv.map_all();
            let mut seen = HashSet::new();
            self.tables = PassTables::default();
            self.tick_vassal(path, Instant::now(), &mut seen);
            self.tables = PassTables::default();
        }
    }
}

/// uWSGI's own default `worker-reload-mercy`.
const DEFAULT_MERCY: Duration = Duration::from_secs(60);

/// How long uWSGI may take to end the old workers of a graceful reload of `v` by `kind`,
/// `workers` of them: its `worker-reload-mercy` (60 s unless the vassal file sets it),
/// once for a touch, once a worker for a chain reload (one after the other). `None`
/// for a recycle: uWSGI's master does not time out a worker sent SIGHUP from outside.
fn reload_mercy(v: &Vassal, kind: ActionKind, workers: usize) -> Option<Duration> {
    let each = v
        .ini
        .as_ref()
        .ok()
        .and_then(|ini| ini.get("worker-reload-mercy"))
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or(DEFAULT_MERCY, Duration::from_secs);
    let times = match kind {
        ActionKind::RecycleWorker => return None,
        ActionKind::Touch => 1,
        ActionKind::ChainReload => u32::try_from(workers.max(1)).unwrap_or(u32::MAX),
    };
    Some(each.saturating_mul(times))
}

/// What a capture needs of a pass's samples.
fn for_capture(sampled: &[Proc]) -> Vec<Sampled> {
    sampled
        .iter()
        .map(|p| Sampled {
            id: p.id,
            fds: p.fds,
            line: p.line,
        })
        .collect()
}

/// The master and the fullest process of every other role (the one nearest its soft
/// limit) of a pass's samples, for the metrics.
fn sides(sampled: &[Proc]) -> Sides {
    let mut out = Sides::default();
    for p in sampled {
        let side = Side {
            fds: p.fds,
            limit: p.limit,
            line: p.line,
        };
        out.add(p.role, side);
    }
    out
}

/// Records that a lasting episode is still on.
fn write_reminder(
    ledger: &mut Ledger,
    v: &Vassal,
    open: &episode::Open,
    fds: Option<u64>,
    now: SystemTime,
) {
    let lasted = open.lasted(now);
    warn!(vassal = %v.file.name, incident = %open.incident, reason = open.reason.as_str(),
          "{}: still {} after {}", one_line(&v.file.name), open.reason, humantime::format_duration(lasted));
    let event = Rec::Reminder(audit::Episode::of(open, now, fds, None));
    ledger.write(record(now, &open.incident, v, event));
}

/// Records the end of a lasting episode.
fn write_ended(
    ledger: &mut Ledger,
    v: &Vassal,
    open: &episode::Open,
    fds: Option<u64>,
    detail: String,
) {
    let now = SystemTime::now();
    info!(vassal = %v.file.name, incident = %open.incident, reason = open.reason.as_str(),
          "{}: {} is over after {}: {detail}", one_line(&v.file.name), open.reason, humantime::format_duration(open.lasted(now)));
    let event = Rec::Ended(audit::Episode::of(open, now, fds, Some(detail)));
    ledger.write(record(now, &open.incident, v, event));
}

/// Records the outcome of an action under verification, if `d` is one.
fn write_outcome(ledger: &mut Ledger, v: &Vassal, d: Decision) {
    let Decision::Outcome(o) = d else { return };
    if o.result == OutcomeResult::Recovered {
        info!(vassal = %v.file.name, incident = %o.incident, fds = o.fds_after, seconds = o.seconds,
              "{}: recovered: {} after {:.1} s", one_line(&v.file.name),
              o.fds_after.map_or_else(|| "its processes".to_owned(), |n| format!("{n} fds")), o.seconds);
    } else {
        // A remediation that did not work: an error, for whoever watches the journal.
        error!(vassal = %v.file.name, incident = %o.incident, fds = o.fds_after, seconds = o.seconds,
               result = ?o.result, "{}: not recovered ({}) after {:.1} s: {}", one_line(&v.file.name), o.result, o.seconds,
               o.detail.as_deref().unwrap_or(""));
    }
    let event = Rec::Outcome(Outcome {
        result: o.result,
        fds_after: o.fds_after,
        seconds: o.seconds,
        detail: o.detail,
    });
    ledger.write(record(SystemTime::now(), &o.incident, v, event));
}

/// A record of the log about vassal `v`.
fn record(now: SystemTime, incident: &str, v: &Vassal, event: Rec) -> Record {
    Record {
        owner: v.policy.owner.clone(),
        schema: audit::SCHEMA,
        ts: audit::timestamp(now),
        incident: incident.to_owned(),
        vassal: v.file.name.clone(),
        config: v.file.path.clone(),
        event,
    }
}

/// The action record `plan` makes, before it is taken (without its mtimes and PIDs).
fn planned(
    v: &Vassal,
    plan: &Plan,
    note: Option<String>,
    reason: Option<String>,
) -> Option<Action> {
    Some(Action {
        action: plan.kind()?,
        path: match plan {
            Plan::ChainReload(f) => f.clone(),
            _ => v.file.path.clone(),
        },
        mtime_before: None,
        mtime_after: None,
        dry_run: false,
        pids: Vec::new(),
        manual: reason.is_some(),
        reason,
        note,
    })
}

/// The length of the longest line the action record of `plan` can take: its mtimes and
/// every worker it may signal filled in.
fn planned_len(
    now: SystemTime,
    incident: &str,
    v: &Vassal,
    plan: &Plan,
    note: Option<String>,
    reason: Option<String>,
) -> u64 {
    let Some(mut a) = planned(v, plan, note, reason) else {
        return 0;
    };
    let mtime = audit::timestamp_precise(now);
    a.mtime_before = Some(mtime.clone());
    a.mtime_after = Some(mtime);
    if let Plan::RecycleWorkers(ids) = plan {
        a.pids = ids.iter().map(|i| i.pid).collect();
    }
    audit::line_len(&record(now, incident, v, Rec::Action(a)))
}

/// The `detected` record of an incident.
fn detected(policy: &Policy, inc: &Incident, capture: Option<Capture>) -> Rec {
    let f = &inc.offender;
    let usage = if f.limit == 0 {
        1.0
    } else {
        f.fds as f64 / f.limit as f64
    };
    let (slope, eta) = match inc.fire {
        Fire::Predict { slope, eta } => (Some(slope), Some(eta)),
        _ => (None, None),
    };
    Rec::Detected(Detected {
        pid: f.id.pid,
        role: f.role,
        fds: f.fds,
        limit: f.limit,
        usage,
        rule: policy::rule_text(policy, &inc.fire, f.fds, f.limit),
        rule_name: Some(inc.fire.rule()),
        slope,
        eta_seconds: eta,
        top: inc.report.top.iter().map(Into::into).collect(),
        by_kind: inc.report.by_kind.clone(),
        capture: capture.map(Into::into),
    })
}

/// An alert in the journal: a warning, or an error when every remediation was tried.
fn log_alert(vassal: &str, incident: &str, reason: &Reason) {
    if *reason == Reason::LadderExhausted {
        error!(
            vassal,
            incident,
            reason = reason.as_str(),
            "alert: given up, not acting"
        );
    } else {
        warn!(
            vassal,
            incident,
            reason = reason.as_str(),
            "alert: not acting"
        );
    }
}

/// The owner assumed for a file whose owner cannot be read: nobody, trusted for nothing.
const NOBODY: u32 = 65534;

/// Touches the target so that uWSGI sees it as newer, filling in the action's mtimes.
fn touch(target: &act::TouchTarget<'_>, action: &mut Action) -> Result<(), String> {
    target.path.clone_into(&mut action.path);
    let touched = act::touch(target, SystemTime::now()).map_err(|e| {
        format!(
            "cannot touch {}: {e}; check that the warden may set its mtime",
            target.path.display()
        )
    })?;
    // The file whose mtime changed: a symlinked vassal's target, unless the Emperor
    // `lstat()`s the link.
    action.path = touched.path;
    action.mtime_before = Some(audit::timestamp_precise(touched.before));
    action.mtime_after = Some(audit::timestamp_precise(touched.after));
    Ok(())
}

/// SIGHUPs each of `ids`, checked to still be a worker of `master`; the action lists the
/// ones signalled. Fails only when none could be.
fn recycle(master: ProcId, ids: &[ProcId], action: &mut Action) -> Result<(), String> {
    let mut errors = Vec::new();
    for id in ids {
        match act::recycle_worker(master, *id) {
            Ok(()) => action.pids.push(id.pid),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if action.pids.is_empty() {
        Err(errors.join("; "))
    } else {
        Ok(())
    }
}
