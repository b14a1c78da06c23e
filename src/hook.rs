//! The alert hook (`on-event`): a command run for the records that need a human.
//!
//! This module owns which records a hook hears of (`matches`), what it is given (the
//! record's JSON on stdin, its main fields in the environment), and how it runs: on a
//! thread of its own, fed by a bounded queue, one run at a time, each killed (its whole
//! process group) at its timeout. The sampling loop only offers a record and never
//! waits: a hook that hangs, fails or floods costs dropped runs, each logged and counted,
//! never a delayed pass or action. The program runs without a shell, from an absolute
//! path that only root may change, with a clean environment.

use std::collections::BTreeMap;
use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::audit::{Event, Record};
use crate::config::{Events, Hook};
use crate::text::one_line;
use crate::vocab::HookEvent;

/// Runs waiting at most; beyond, a record's run is dropped (logged and counted).
const QUEUE: usize = 64;

/// The most of a hook's stderr kept for the log.
const STDERR_KEPT: u64 = 512;

/// How often a running hook is checked for its end.
const POLL: Duration = Duration::from_millis(20);

/// The names a record answers to: its kind, and its result or reason.
#[must_use]
pub(crate) fn names(r: &Record) -> (HookEvent, Option<HookEvent>) {
    let other = match &r.event {
        Event::Detected(_)
        | Event::Action(_)
        | Event::Capture(_)
        | Event::Pause(_)
        | Event::Resume(_) => None,
        Event::Outcome(o) => Some(HookEvent::Result(o.result)),
        Event::Suppressed(s) => Some(HookEvent::Reason(s.reason.clone())),
        Event::Reminder(e) | Event::Ended(e) => Some(HookEvent::Reason(e.reason.clone())),
    };
    (HookEvent::Record(r.event.kind()), other)
}

/// True when `events` (from `on-event-for`) asks for the record `r`.
#[must_use]
pub(crate) fn matches(events: &Events, r: &Record) -> bool {
    let (kind, other) = names(r);
    events.wants(&kind) || other.is_some_and(|o| events.wants(&o))
}

/// One run: what goes on stdin, what goes in the environment, and whose it is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Job {
    pub json: String,
    pub env: Vec<(&'static str, String)>,
    /// The vassal it is about (empty for the warden's own), for the failure count.
    pub vassal: String,
}

impl Job {
    /// The run for record `r`.
    #[must_use]
    pub(crate) fn of(r: &Record) -> Job {
        let (kind, other) = names(r);
        let event = kind.as_str();
        let other = other.as_ref().map(HookEvent::as_str);
        let mut env = vec![
            ("WARDEN_EVENT", event.to_owned()),
            ("WARDEN_VASSAL", r.vassal.clone()),
            // Empty when the vassal names no owner.
            ("WARDEN_OWNER", r.owner.clone().unwrap_or_default()),
            ("WARDEN_CONFIG", r.config.display().to_string()),
            ("WARDEN_INCIDENT", r.incident.clone()),
            ("WARDEN_TS", r.ts.clone()),
        ];
        let detail = match &r.event {
            Event::Outcome(o) => {
                env.push(("WARDEN_RESULT", o.result.as_str().to_owned()));
                o.detail.clone()
            }
            Event::Suppressed(s) => s.detail.clone(),
            Event::Reminder(e) | Event::Ended(e) => e.detail.clone(),
            Event::Detected(d) => Some(d.rule.clone()),
            Event::Action(a) => a.note.clone(),
            Event::Capture(c) => Some(format!(
                "{} site(s) of {}",
                c.capture.sites.len(),
                c.capture.target
            )),
            Event::Pause(p) => Some(format!("until {} by {}: {}", p.until, p.who, p.reason)),
            Event::Resume(r) => Some(format!("by {}: {}", r.who, r.reason)),
        };
        if let Event::Suppressed(_) | Event::Reminder(_) | Event::Ended(_) = &r.event {
            env.push(("WARDEN_REASON", other.unwrap_or_default().to_owned()));
        }
        let what = other.unwrap_or(event);
        let summary = match &detail {
            Some(d) => format!("{}: {event} {what}: {d}", r.vassal),
            None => format!("{}: {event} {what}", r.vassal),
        };
        env.push(("WARDEN_DETAIL", detail.unwrap_or_default()));
        env.push(("WARDEN_SUMMARY", summary));
        Job {
            json: serde_json::to_string(r).unwrap_or_default(),
            env,
            vassal: r.vassal.clone(),
        }
    }

    /// The run for a record that could not be written to the incident log `log`.
    #[must_use]
    pub(crate) fn write_failed(vassal: &str, log: &Path, error: &str, owed: usize) -> Job {
        let ts = crate::audit::timestamp(std::time::SystemTime::now());
        let json = serde_json::json!({
            "ts": ts,
            "event": "log_write_failed",
            "vassal": vassal,
            "log": log,
            "error": error,
            "owed": owed,
        });
        let summary = format!(
            "{vassal}: a record could not be written to {}: {error}",
            log.display()
        );
        Job {
            json: json.to_string(),
            env: vec![
                ("WARDEN_EVENT", "log_write_failed".into()),
                ("WARDEN_VASSAL", vassal.to_owned()),
                ("WARDEN_TS", ts),
                ("WARDEN_DETAIL", error.to_owned()),
                ("WARDEN_SUMMARY", summary),
            ],
            vassal: vassal.to_owned(),
        }
    }
}

/// The run in progress, shared with `stop`: its process group, and whether the runs
/// still queued are to be skipped.
#[derive(Debug, Default)]
pub(crate) struct Running {
    pgid: AtomicI32,
    stopping: AtomicBool,
}

/// Failed runs by vassal, shared between the hook's thread and the metrics.
pub(crate) type Failures = Arc<Mutex<BTreeMap<String, u64>>>;

/// The hook's queue and thread.
pub(crate) struct Hooks {
    hook: Hook,
    /// `None` once retired: its thread runs what is queued, then ends.
    tx: Option<SyncSender<Job>>,
    thread: std::thread::JoinHandle<()>,
    running: Arc<Running>,
    failures: Failures,
    /// Runs dropped since the last warning about a full queue, and when that was.
    dropped: (u64, Option<Instant>),
}

impl Hooks {
    /// Starts the hook's thread. `None` when the thread cannot start (logged).
    #[cfg(test)]
    pub(crate) fn start(hook: Hook) -> Option<Hooks> {
        Hooks::start_counting(hook, Failures::default())
    }

    /// Starts the hook's thread, counting failures into `failures` (shared with the hook
    /// it replaces, so the counters go on). `None` when the thread cannot start (logged).
    pub(crate) fn start_counting(hook: Hook, failures: Failures) -> Option<Hooks> {
        let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE);
        let running = Arc::new(Running::default());
        let (h, f, r) = (hook.clone(), failures.clone(), running.clone());
        let started = std::thread::Builder::new()
            .name("on-event".into())
            .spawn(move || {
                for job in rx {
                    if r.stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Err(e) = run_tracked(&h, &job, &r) {
                        warn!(vassal = %job.vassal, "{}: on-event hook {}: {e}; check the hook (the record is in the incident log)", one_line(&job.vassal), h.argv[0]);
                        count(&f, &job.vassal);
                    }
                }
            });
        match started {
            Ok(thread) => {
                info!(hook = %hook.argv.join(" "), events = %hook.events, "on-event hook ready");
                Some(Hooks {
                    hook,
                    tx: Some(tx),
                    thread,
                    running,
                    failures,
                    dropped: (0, None),
                })
            }
            Err(e) => {
                warn!("cannot start the on-event hook's thread: {e}; no hook will run");
                None
            }
        }
    }

    /// Lets the runs already queued finish, for at most `wait` (the daemon stops); then
    /// the rest are skipped and the run in progress is killed, with its process group.
    pub(crate) fn stop(self, wait: Duration) {
        let Hooks {
            tx,
            thread,
            running,
            ..
        } = self;
        drop(tx);
        let until = Instant::now() + wait;
        while !thread.is_finished() && Instant::now() < until {
            std::thread::sleep(POLL);
        }
        if !thread.is_finished() {
            warn!(
                "on-event hook: the runs still queued are skipped, and the one running is killed"
            );
            running.stopping.store(true, Ordering::SeqCst);
            kill_group(running.pgid.load(Ordering::SeqCst));
            let until = Instant::now() + Duration::from_secs(1);
            while !thread.is_finished() && Instant::now() < until {
                std::thread::sleep(POLL);
            }
        }
        if thread.is_finished() {
            let _ = thread.join();
        }
    }

    /// Takes no more runs: those queued still run, then its thread ends (a re-read
    /// configuration replaced the hook).
    pub(crate) fn retire(&mut self) {
        self.tx = None;
    }

    /// True once its thread has ended.
    #[must_use]
    pub(crate) fn is_done(&self) -> bool {
        self.thread.is_finished()
    }

    /// The shared failure counts, for the hook that replaces this one.
    #[must_use]
    pub(crate) fn failure_counts(&self) -> Failures {
        self.failures.clone()
    }

    #[must_use]
    pub(crate) fn hook(&self) -> &Hook {
        &self.hook
    }

    /// Offers record `r` to the hook, if it asks for it. Never waits.
    pub(crate) fn offer(&mut self, r: &Record) {
        if matches(&self.hook.events, r) {
            self.queue(Job::of(r));
        }
    }

    /// Offers a failure to write a record, if the hook asks for those.
    pub(crate) fn offer_write_failed(
        &mut self,
        vassal: &str,
        log: &Path,
        error: &str,
        owed: usize,
    ) {
        if self.hook.events.wants(&HookEvent::LogWriteFailed) {
            self.queue(Job::write_failed(vassal, log, error, owed));
        }
    }

    fn queue(&mut self, job: Job) {
        let vassal = job.vassal.clone();
        let Some(tx) = &self.tx else {
            count(&self.failures, &vassal);
            return;
        };
        match tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                count(&self.failures, &vassal);
                let (n, last) = &mut self.dropped;
                *n += 1;
                if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    warn!(vassal = %vassal, dropped = *n, "{}: on-event hook: {QUEUE} runs are already waiting (is the hook slow or hanging?); this record's run is dropped", one_line(&vassal));
                    (*n, *last) = (0, Some(Instant::now()));
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                count(&self.failures, &vassal);
                warn!(vassal = %vassal, "{}: on-event hook: its thread is gone; no hook runs until the warden restarts", one_line(&vassal));
            }
        }
    }

    /// Failed or dropped runs so far, by vassal.
    #[must_use]
    pub(crate) fn failures(&self) -> BTreeMap<String, u64> {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn count(f: &Failures, vassal: &str) {
    *f.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(vassal.to_owned())
        .or_default() += 1;
}

/// The environment's `PATH` for a hook: the system's, nothing inherited.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn kill_group(pgid: i32) {
    if let Some(g) = rustix::process::Pid::from_raw(pgid) {
        let _ = rustix::process::kill_process_group(g, rustix::process::Signal::KILL);
    }
}

/// Runs `job` once: `Err` says why it failed.
#[cfg(test)]
pub(crate) fn run(hook: &Hook, job: &Job) -> Result<(), String> {
    run_tracked(hook, job, &Running::default())
}

/// Runs `job` once, its process group in `running` while it runs.
fn run_tracked(hook: &Hook, job: &Job, running: &Running) -> Result<(), String> {
    // The program run is the file checked: a link swapped after the check changes nothing.
    let program = trusted(Path::new(&hook.argv[0]))?;
    let stdin = memfd("on-event-stdin")?;
    (&stdin)
        .write_all(job.json.as_bytes())
        .and_then(|()| (&stdin).write_all(b"\n"))
        .and_then(|()| (&stdin).rewind())
        .map_err(|e| format!("cannot stage its input: {e}"))?;
    let stderr = memfd("on-event-stderr")?;
    let mut cmd = Command::new(&program);
    cmd.arg0(&hook.argv[0])
        .args(&hook.argv[1..])
        .env_clear()
        .env("PATH", PATH)
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            stderr
                .try_clone()
                .map_err(|e| format!("cannot stage its stderr: {e}"))?,
        ))
        .process_group(0);
    for (k, v) in &job.env {
        // One line each, control characters escaped: a vassal's name or an error text
        // comes from others, and a hook may put it in a mail header.
        cmd.env(k, crate::text::one_line(v));
    }
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("cannot start it: {e}"))?;
    let pgid = i32::try_from(child.id()).unwrap_or(0);
    running.pgid.store(pgid, Ordering::SeqCst);
    // A stop that came between the check before this run and the store above: it may not
    // have seen this group, so this run ends now.
    if running.stopping.load(Ordering::SeqCst) {
        kill_group(pgid);
    }
    // What it said first, kept once its stderr grew past `STDERR_MAX` and was emptied.
    let mut kept: Option<String> = None;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if started.elapsed() < hook.timeout => {
                bound_stderr(&stderr, &mut kept);
                std::thread::sleep(POLL);
            }
            Ok(None) | Err(_) => {
                kill_group(pgid);
                let _ = child.wait();
                running.pgid.store(0, Ordering::SeqCst);
                return Err(format!(
                    "did not finish within {} (on-event-timeout) and was killed, with its process group",
                    humantime::format_duration(hook.timeout)
                ));
            }
        }
    };
    running.pgid.store(0, Ordering::SeqCst);
    let said = kept.unwrap_or_else(|| said(&stderr));
    if status.success() {
        debug!(vassal = %job.vassal, seconds = started.elapsed().as_secs_f64(), "on-event hook ran");
        return Ok(());
    }
    let how = status.code().map_or_else(
        || {
            format!(
                "was killed by signal {}",
                std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
            )
        },
        |c| format!("exited with status {c}"),
    );
    Err(if said.is_empty() {
        how
    } else {
        format!("{how}: {said}")
    })
}

/// The most a hook's stderr holds in memory: beyond, its start is kept and the rest
/// emptied (the hook's writes go on; what they wrote is not kept).
const STDERR_MAX: u64 = 1 << 20;

fn bound_stderr(f: &std::fs::File, kept: &mut Option<String>) {
    if f.metadata().is_ok_and(|m| m.len() > STDERR_MAX) {
        if kept.is_none() {
            *kept = Some(said(f));
        }
        let _ = f.set_len(0);
    }
}

/// The start of what a hook wrote to stderr, on one line.
fn said(f: &std::fs::File) -> String {
    let mut buf = Vec::new();
    let mut f = f;
    let _ = f.rewind();
    let _ = f.take(STDERR_KEPT).read_to_end(&mut buf);
    crate::text::one_line(String::from_utf8_lossy(&buf).trim())
}

fn memfd(name: &str) -> Result<std::fs::File, String> {
    rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC)
        .map(std::fs::File::from)
        .map_err(|e| format!("cannot create a memfd for it: {e}"))
}

/// Whether the hook's program would be run (`check`): `Err` says why not.
pub(crate) fn check_program(hook: &Hook) -> Result<(), String> {
    let real = trusted(Path::new(&hook.argv[0]))?;
    if std::fs::metadata(&real).is_ok_and(|m| m.mode() & 0o111 == 0) {
        return Err(format!("{} is not executable", real.display()));
    }
    Ok(())
}

/// The hook runs as root: its program, and every directory above it, must be such that
/// only root can change them (a directory others may write needs the sticky bit, and
/// then the program must be root's). Returns the program's real path, links resolved:
/// the file to run.
fn trusted(program: &Path) -> Result<std::path::PathBuf, String> {
    let real = std::fs::canonicalize(program).map_err(|e| format!("cannot find it: {e}"))?;
    let m = std::fs::metadata(&real).map_err(|e| format!("{}: {e}", real.display()))?;
    if !m.is_file() {
        return Err(format!("{} is not a regular file", real.display()));
    }
    if m.uid() != 0 || m.mode() & 0o022 != 0 {
        return Err(format!(
            "{} is not run: only root may own and write it (owner uid {}, mode {:o})",
            real.display(),
            m.uid(),
            m.mode() & 0o7777
        ));
    }
    for dir in real.ancestors().skip(1) {
        let d = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let sticky = d.mode() & 0o1000 != 0;
        if d.uid() != 0 || (d.mode() & 0o022 != 0 && !sticky) {
            return Err(format!(
                "{} is not run: {} could be changed by others than root (owner uid {}, mode {:o})",
                real.display(),
                dir.display(),
                d.uid(),
                d.mode() & 0o7777
            ));
        }
    }
    Ok(real)
}

#[cfg(test)]
mod tests;
