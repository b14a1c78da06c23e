//! The daemon: one loop over a channel fed by inotify (notify), signals and a ticker
//! (the channel's receive timeout).
//!
//! This module owns the order of the stages for each vassal on each tick — map, sample,
//! decide, attribute, record, act, verify, record — and the state that lives between
//! ticks: streaks, baselines, last actions (rebuilt from the incident log at start, so a
//! restart never causes a touch the running warden would have suppressed) and reloads
//! being verified. A failure on one vassal is logged with what to do and the loop moves
//! on. No record is skipped: an action is taken only after its `detected` record is on
//! disk.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

use notify::{RecursiveMode, Watcher};
use tracing::{debug, error, info, warn};

use crate::act;
use crate::audit::{
    self, Action, AuditLog, Detected, Event as Rec, Outcome, OutcomeResult, Record, Role,
    Suppressed,
};
use crate::config::Config;
use crate::emperor::Source;
use crate::forensics::{self, Baseline};
use crate::inventory::{Inventory, Vassal};
use crate::mapping::Mapping;
use crate::policy::{self, Hold, Streak};
use crate::procs::{self, ProcId};
use crate::sample::Sampler;

/// How often the Emperors and vassal files are re-listed even without inotify events
/// (also the fallback when inotify is out of watches).
const RESCAN_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub dry_run: bool,
    pub once: bool,
}

enum Event {
    Fs,
    FsError(String),
    Signal(i32),
}

/// A reload under verification.
#[derive(Debug)]
struct Pending {
    incident: String,
    started: Instant,
    old_workers: Vec<ProcId>,
}

/// Per-vassal state that lives between ticks.
#[derive(Debug, Default)]
struct VassalState {
    last_action: Option<SystemTime>,
    /// When a hold (cooldown, dry run, refusal) was last recorded; cleared when the vassal
    /// is back under the line, so each episode is recorded once, not once per tick.
    noted: Option<SystemTime>,
    pending: Option<Pending>,
}

pub struct Warden {
    cfg: Config,
    opts: Options,
    audit: AuditLog,
    inv: Inventory,
    sampler: Sampler,
    streaks: HashMap<ProcId, Streak>,
    baselines: HashMap<ProcId, Baseline>,
    state: HashMap<PathBuf, VassalState>,
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
            streaks: HashMap::new(),
            baselines: HashMap::new(),
            state: HashMap::new(),
            seq: 0,
        };
        w.restore_from_log();
        w
    }

    /// Rebuilds last actions from the incident log.
    fn restore_from_log(&mut self) {
        let path = self.audit.path().to_owned();
        match audit::read_log(&path) {
            Ok((records, bad)) => {
                for b in bad {
                    warn!(file = %path.display(), line = b.line, "unreadable incident log line skipped: {}", b.message);
                }
                for r in records {
                    if let Rec::Action(a) = &r.event
                        && !a.dry_run
                        && let Some(ts) = audit::parse_timestamp(&r.ts)
                    {
                        let st = self.state.entry(r.config.clone()).or_default();
                        if st.last_action.is_none_or(|t| t < ts) {
                            st.last_action = Some(ts);
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(file = %path.display(), "cannot read the incident log to restore cooldowns: {e}; cooldowns start empty");
            }
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
            if let Some(Vassal {
                ini: Err(e), file, ..
            }) = self.inv.vassals.get(p)
            {
                warn!(vassal = %file.name, "{e}; it will not be touched until it reads as a vassal config");
            }
        }
        let now = SystemTime::now();
        for v in changes.removed {
            info!(vassal = %v.file.name, "vassal file removed; no longer watched");
            if let Some(st) = self.state.get_mut(&v.file.path)
                && let Some(p) = st.pending.take()
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

    /// Directories to watch with inotify: each source directory, and a glob's fixed prefix.
    /// Each source's directory (a glob's fixed part) and its parent: the parent's events
    /// tell when the directory itself is deleted and created again.
    fn watch_dirs(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        for s in &self.inv.sources {
            let dir = match s {
                Source::Dir(d) => d.clone(),
                Source::Glob(g) => PathBuf::from(g.split(['*', '?', '[']).next().unwrap_or("/")),
            };
            for d in [Some(dir.as_path()), dir.parent()].into_iter().flatten() {
                if !out.iter().any(|o| o == d) {
                    out.push(d.to_owned());
                }
            }
        }
        out
    }

    /// One pass: map, sample, decide, and act or verify, for every vassal.
    pub fn tick(&mut self) {
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
        self.streaks.retain(|id, _| seen.contains(id));
        self.baselines.retain(|id, _| seen.contains(id));
        self.sampler
            .retain(|pid| seen.iter().any(|id| id.pid == pid));
        tracing::trace!(
            elapsed_us = now_i.elapsed().as_micros(),
            processes = seen.len(),
            "tick"
        );
    }

    fn tick_vassal(&mut self, path: &Path, now_i: Instant, seen: &mut HashSet<ProcId>) {
        let Some(v) = self.inv.vassals.get(path) else {
            return;
        };
        let Mapping::Running(procs) = &v.mapping else {
            if let Some(p) = self.state.get(path).and_then(|s| s.pending.as_ref())
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
        let mut counts = Vec::new();
        let mut fired: Option<(ProcId, Role, u64, u64)> = None;
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
            let fires = self
                .streaks
                .entry(id)
                .or_default()
                .feed(&policy, s.fds, s.limit);
            if fires {
                debug!(vassal = %name, pid = id.pid, fds = s.fds, limit = s.limit, "over threshold");
                // The fullest process is the one the record is about.
                if fired.is_none_or(|(_, _, f, _)| s.fds > f) {
                    fired = Some((id, role, s.fds, s.limit));
                }
            }
        }
        let st = self.state.entry(path.to_owned()).or_default();
        if let Some(p) = &st.pending {
            let after = policy::After {
                old_workers: &p.old_workers,
                workers: &procs.workers,
                counts: &counts,
            };
            let max = counts.iter().map(|(f, _)| *f).max();
            if policy::recovered(&after) {
                self.finish(path, OutcomeResult::Recovered, max, None);
            } else if p.started.elapsed() > policy.verify {
                let detail = if p.old_workers.iter().any(|w| procs.workers.contains(w)) {
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
        if let Some((id, role, fds, limit)) = fired {
            self.incident(path, id, role, fds, limit);
        }
    }

    fn finish(
        &mut self,
        path: &Path,
        result: OutcomeResult,
        fds_after: Option<u64>,
        detail: Option<String>,
    ) {
        let Some(st) = self.state.get_mut(path) else {
            return;
        };
        // A new episode starts after each outcome: the next hold is recorded again.
        st.noted = None;
        let Some(p) = st.pending.take() else {
            return;
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

    /// A process of the vassal at `path` fired: record, check, act.
    fn incident(&mut self, path: &Path, id: ProcId, role: Role, fds: u64, limit: u64) {
        let now = SystemTime::now();
        let Some(v) = self.inv.vassals.get(path) else {
            return;
        };
        let st = self.state.entry(path.to_owned()).or_default();
        let hold = policy::gate(&v.policy, now, st.last_action, self.opts.dry_run);
        if hold.is_err()
            && let Some(noted) = st.noted
            && now.duration_since(noted).unwrap_or_default() < v.policy.cooldown
        {
            return;
        }
        let policy = v.policy.clone();
        let name = v.file.name.clone();
        let incident = self.next_incident(now);
        let Some(v) = self.inv.vassals.get(path) else {
            return;
        };

        // Attribute: name what leaks, before anything else.
        let master = match (&v.mapping, role) {
            (Mapping::Running(p), Role::Worker) => Some(p.master.pid),
            _ => None,
        };
        let report = match forensics::report(id.pid, policy.top, self.baselines.get(&id), master) {
            Ok(r) => r,
            Err(e) => {
                debug!(vassal = %name, pid = id.pid, "process gone before it could be read: {e}");
                return;
            }
        };
        #[allow(clippy::cast_precision_loss)]
        let usage = if limit == 0 {
            1.0
        } else {
            fds as f64 / limit as f64
        };
        warn!(vassal = %name, pid = id.pid, %role, fds, limit, top = report.top.first().map_or("", |t| t.target.as_str()), "over threshold");
        let detected = Rec::Detected(Detected {
            pid: id.pid,
            role,
            fds,
            limit,
            usage,
            rule: policy::rule_text(&policy, fds, limit),
            top: report.top,
            by_kind: report.by_kind,
        });
        let recorded = self.write(now, &incident, v, detected);
        let st = self.state.entry(path.to_owned()).or_default();
        st.noted = Some(now);
        if recorded.is_err() {
            // Record first, or not at all: no action without its record on disk.
            return;
        }
        if let Err(h) = hold {
            let detail = match &h {
                Hold::Cooldown { remaining } => format!(
                    "reloaded less than {} ago; next reload allowed in {}",
                    humantime::format_duration(policy.cooldown),
                    humantime::format_duration(Duration::from_secs(remaining.as_secs()))
                ),
                Hold::DryRun => "dry run: the vassal was not touched".to_owned(),
            };
            info!(vassal = %name, reason = h.reason(), "{detail}");
            let _ = self.write(
                now,
                &incident,
                v,
                Rec::Suppressed(Suppressed {
                    reason: h.reason().into(),
                    detail: Some(detail),
                }),
            );
            return;
        }
        if let Err((reason, detail)) = self.precheck(path, id) {
            warn!(vassal = %name, reason, "not touching: {detail}");
            let v = &self.inv.vassals[path];
            let _ = self.write(
                now,
                &incident,
                v,
                Rec::Suppressed(Suppressed {
                    reason: reason.into(),
                    detail: Some(detail),
                }),
            );
            return;
        }
        let v = &self.inv.vassals[path];
        let nofollow = v
            .emperor
            .and_then(|p| self.inv.emperor(p))
            .is_some_and(|e| e.nofollow);
        let old_workers = match &v.mapping {
            Mapping::Running(p) => p.workers.clone(),
            _ => Vec::new(),
        };
        match act::touch(&v.file.path, nofollow, SystemTime::now()) {
            Ok((before, after)) => {
                info!(vassal = %name, path = %v.file.path.display(), "touched for a graceful reload");
                let _ = self.write(
                    now,
                    &incident,
                    v,
                    Rec::Action(Action {
                        action: "touch".into(),
                        path: v.file.path.clone(),
                        mtime_before: Some(audit::timestamp_precise(before)),
                        mtime_after: Some(audit::timestamp_precise(after)),
                        dry_run: false,
                    }),
                );
                let st = self.state.entry(path.to_owned()).or_default();
                st.last_action = Some(now);
                st.pending = Some(Pending {
                    incident,
                    started: Instant::now(),
                    old_workers,
                });
            }
            Err(e) => {
                let detail = format!(
                    "cannot touch {}: {e}; check that the warden may write its mtime",
                    v.file.path.display()
                );
                error!(vassal = %name, "{detail}");
                let _ = self.write(
                    now,
                    &incident,
                    v,
                    Rec::Suppressed(Suppressed {
                        reason: "touch_failed".into(),
                        detail: Some(detail),
                    }),
                );
            }
        }
    }

    /// The checks just before acting. `Err((reason, detail))` refuses.
    fn precheck(&self, path: &Path, id: ProcId) -> Result<(), (&'static str, String)> {
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
                "no running Emperor watches this vassal, so a touch would do nothing".into(),
            ));
        }
        // Read the file again now: it may have changed since the last rescan.
        if let Err(e) = crate::emperor::read_vassal(&v.file.path) {
            return Err((
                "ini_invalid",
                format!("{e}; a reload would make the Emperor start a broken vassal"),
            ));
        }
        Ok(())
    }

    fn any_pending(&self) -> bool {
        self.state.values().any(|s| s.pending.is_some())
    }

    #[must_use]
    pub fn inventory(&self) -> &Inventory {
        &self.inv
    }
}

/// The inotify watches, re-made when a watched directory is replaced.
struct Watches {
    watcher: notify::RecommendedWatcher,
    /// Directory → its inode when the watch was made.
    watched: HashMap<PathBuf, u64>,
}

impl Watches {
    fn sync(&mut self, dirs: Vec<PathBuf>) {
        use std::os::unix::fs::MetadataExt;
        for d in dirs {
            let ino = std::fs::metadata(&d)
                .ok()
                .filter(std::fs::Metadata::is_dir)
                .map(|m| m.ino());
            if ino.is_some() && self.watched.get(&d).copied() == ino {
                continue;
            }
            if self.watched.remove(&d).is_some() {
                // The kernel dropped the watch with the old directory; this may fail.
                let _ = self.watcher.unwatch(&d);
            }
            let Some(ino) = ino else { continue };
            match self.watcher.watch(&d, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    debug!(dir = %d.display(), "watching directory");
                    self.watched.insert(d, ino);
                }
                Err(e) => warn!(
                    dir = %d.display(),
                    "cannot watch with inotify: {e}; if it says no space left, raise the sysctl fs.inotify.max_user_watches; \
                     changes are still picked up by a rescan every {}s",
                    RESCAN_EVERY.as_secs()
                ),
            }
        }
    }
}

/// Runs the daemon until SIGTERM or SIGINT (or after one pass with `--once`).
pub fn run(cfg: Config, opts: Options) -> anyhow::Result<()> {
    let interval = cfg.interval;
    let mut w = Warden::new(cfg, opts);
    info!(
        audit_log = %w.audit.path().display(),
        interval = %humantime::format_duration(interval),
        dry_run = w.opts.dry_run,
        "vassal-warden starting"
    );
    w.refresh();
    for e in &w.inv.emperors {
        info!(pid = e.pid, sources = ?e.sources.iter().map(ToString::to_string).collect::<Vec<_>>(), nofollow = e.nofollow, stats = ?e.stats, "found Emperor");
    }
    if w.inv.emperors.is_empty() {
        warn!(
            "no running uWSGI Emperor found; vassals are watched but nothing will be touched until one runs"
        );
    }

    if opts.once {
        w.inv.map_all();
        w.tick();
        while w.any_pending() {
            std::thread::sleep(interval);
            w.tick();
        }
        return Ok(());
    }

    let (tx, rx) = mpsc::channel::<Event>();
    let fs_tx = tx.clone();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let _ = fs_tx.send(match res {
            Ok(_) => Event::Fs,
            Err(e) => Event::FsError(e.to_string()),
        });
    })?;
    let mut watches = Watches {
        watcher,
        watched: HashMap::new(),
    };
    watches.sync(w.watch_dirs());

    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])?;
    let sig_tx = tx;
    std::thread::spawn(move || {
        for s in signals.forever() {
            if sig_tx.send(Event::Signal(s)).is_err() {
                break;
            }
        }
    });

    let mut next_tick = Instant::now();
    let mut next_rescan = Instant::now() + RESCAN_EVERY;
    loop {
        let timeout = next_tick.saturating_duration_since(Instant::now());
        match rx.recv_timeout(timeout) {
            Ok(Event::Fs) => {
                // Coalesce a burst (a deploy adding hundreds of files) into one rescan.
                std::thread::sleep(Duration::from_millis(20));
                while let Ok(ev) = rx.try_recv() {
                    if let Event::Signal(s) = ev {
                        return stop(s);
                    }
                }
                w.refresh();
                watches.sync(w.watch_dirs());
            }
            Ok(Event::FsError(e)) => warn!(
                "inotify error: {e}; if it says no space left, raise the sysctl fs.inotify.max_user_watches; \
                 changes are still picked up by a rescan every {}s",
                RESCAN_EVERY.as_secs()
            ),
            Ok(Event::Signal(signal_hook::consts::SIGHUP)) => {
                info!("SIGHUP: rescanning Emperors and vassal files");
                w.refresh();
                watches.sync(w.watch_dirs());
            }
            Ok(Event::Signal(s)) => return stop(s),
            Err(RecvTimeoutError::Timeout) => {
                if Instant::now() >= next_rescan {
                    w.refresh();
                    watches.sync(w.watch_dirs());
                    next_rescan = Instant::now() + RESCAN_EVERY;
                }
                w.tick();
                next_tick += interval;
                let now = Instant::now();
                if next_tick < now {
                    next_tick = now + interval;
                }
            }
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
    }
}

#[allow(clippy::unnecessary_wraps)]
fn stop(signal: i32) -> anyhow::Result<()> {
    info!(signal, "stopping");
    Ok(())
}
