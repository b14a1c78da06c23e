//! The daemon: one loop over a channel fed by inotify (notify), signals and a ticker
//! (the channel's receive timeout).
//!
//! This module owns the event loop and the inotify watches: a pass that is due runs
//! before any event is read (no event traffic can starve it); bursts of file events are
//! coalesced into one rescan (at most one per 250 ms); a rescan also runs every 10 s (the
//! fallback when inotify misses something or runs out of watches); each pass hands over
//! to `Warden::tick`. SIGTERM and SIGINT stop it with exit code 0; SIGHUP re-reads the
//! configuration and rescans.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};
use tracing::{debug, info, warn};

use crate::audit::{self, OwnerLock};
use crate::config::Config;
use crate::metrics::Outlets;
use crate::service::Notifier;
use crate::warden::Warden;

/// How `run` runs.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Options {
    /// Record what would be done, do nothing.
    pub dry_run: bool,
    /// One pass (and the verification of what it did), then exit.
    pub once: bool,
}

/// How often a pass runs while an action is being verified (at most; never slower than
/// `interval`).
const VERIFY_EVERY: Duration = Duration::from_millis(250);

/// How often the Emperors and vassal files are re-listed even without inotify events
/// (also the fallback when inotify is out of watches).
const RESCAN_EVERY: Duration = Duration::from_secs(10);

enum Event {
    Fs(Vec<PathBuf>),
    FsError(String),
    Signal(i32),
}

/// The inotify watches, re-made when a watched directory is replaced. Without inotify
/// (no instance could be made) the rescan every 10 s is all there is.
struct Watches {
    watcher: Option<notify::RecommendedWatcher>,
    /// Directory → its inode when the watch was made.
    watched: HashMap<PathBuf, u64>,
    /// What was already said, so that each problem is logged once.
    said: std::collections::HashSet<String>,
}

impl Watches {
    /// Starts inotify, feeding `tx`; without it (no instance could be made), says why
    /// once and goes on with rescans only.
    fn new(tx: mpsc::Sender<Event>) -> Watches {
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let _ = tx.send(match res {
                // Opening or reading a file (the warden's own rescans do) changes nothing.
                Ok(ev) if matches!(ev.kind, notify::EventKind::Access(_)) => return,
                Ok(ev) => Event::Fs(ev.paths),
                Err(e) => Event::FsError(e.to_string()),
            });
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(
                    "cannot use inotify: {e}; if too many instances are open, raise \
                     fs.inotify.max_user_instances (now {}); until then changes are picked up \
                     by a rescan every {}s",
                    std::fs::read_to_string("/proc/sys/fs/inotify/max_user_instances")
                        .map_or_else(|_| "?".to_owned(), |v| v.trim().to_owned()),
                    RESCAN_EVERY.as_secs()
                );
                None
            }
        };
        Watches {
            watcher,
            watched: HashMap::new(),
            said: std::collections::HashSet::new(),
        }
    }

    fn sync(&mut self, dirs: Vec<PathBuf>) {
        use std::os::unix::fs::MetadataExt;
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
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
                let _ = watcher.unwatch(&d);
            }
            let Some(ino) = ino else { continue };
            match watcher.watch(&d, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    debug!(dir = %d.display(), "watching directory");
                    self.watched.insert(d, ino);
                }
                Err(e) => {
                    let text = watch_error(&d, &e);
                    if self.said.insert(text.clone()) {
                        warn!("{text}");
                    }
                }
            }
        }
    }

    /// An error inotify reported while running (a queue overflow, say), logged once.
    fn report(&mut self, e: &str) {
        if self.said.insert(e.to_owned()) {
            warn!(
                "inotify: {e}; changes are still picked up by a rescan every {}s",
                RESCAN_EVERY.as_secs()
            );
        }
    }
}

/// Why `dir` cannot be watched, exactly, and what to do about it.
fn watch_error(dir: &std::path::Path, e: &notify::Error) -> String {
    let sysctl = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/fs/inotify/{name}"))
            .map_or_else(|_| "?".to_owned(), |v| v.trim().to_owned())
    };
    let why = match &e.kind {
        notify::ErrorKind::MaxFilesWatch => format!(
            "the inotify watch limit is reached (fs.inotify.max_user_watches = {}); raise it, \
             e.g. `sysctl fs.inotify.max_user_watches=524288` and the same line in /etc/sysctl.d/",
            sysctl("max_user_watches")
        ),
        notify::ErrorKind::Io(io) if io.raw_os_error() == Some(28) => format!(
            "the inotify watch limit is reached (fs.inotify.max_user_watches = {}); raise it, \
             e.g. `sysctl fs.inotify.max_user_watches=524288` and the same line in /etc/sysctl.d/",
            sysctl("max_user_watches")
        ),
        notify::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
            "permission denied; the warden needs to read the directory".to_owned()
        }
        _ => e.to_string(),
    };
    format!(
        "cannot watch {} with inotify: {why}; until then changes there are picked up by a rescan every {}s",
        dir.display(),
        RESCAN_EVERY.as_secs()
    )
}

/// Runs the daemon until SIGTERM or SIGINT (or after one pass with `--once`). `lock`
/// keeps other daemons off the incident log; when it could not be taken, it is taken on
/// a later pass.
pub(crate) fn run(cfg: Config, opts: Options, lock: Option<OwnerLock>) -> anyhow::Result<()> {
    let interval = cfg.interval;
    let metrics = (cfg.metrics, cfg.metrics_textfile.clone(), cfg.path.clone());
    let mut lock = Owner(lock);
    let mut w = Warden::new(cfg, opts.dry_run);
    w.start_hooks();
    // Loaded now, so that a host that cannot capture says so at start, and the first
    // incident does not wait for the load.
    w.prepare_captures();
    info!(
        audit_log = %w.audit_log().display(),
        interval = %humantime::format_duration(interval),
        dry_run = w.dry_run(),
        "vassal-warden starting"
    );
    w.refresh();
    for e in &w.inventory().emperors {
        info!(pid = e.pid, sources = ?e.sources.iter().map(ToString::to_string).collect::<Vec<_>>(), nofollow = e.nofollow, stats = ?e.stats, "found Emperor");
    }
    if w.inventory().emperors.is_empty() {
        warn!(
            "no running uWSGI Emperor found; vassals are watched but nothing will be touched until one runs"
        );
    }

    if opts.once {
        w.tick();
        while w.any_pending() {
            std::thread::sleep(interval);
            w.tick();
        }
        w.stop_hooks();
        return Ok(());
    }
    lock.retake(w.audit_log())?;
    if lock.0.is_some() {
        // The log is this daemon's: what it left open for files gone since is ended.
        w.end_orphaned_episodes();
    }
    // After the lock: a second daemon on the same log stops before it binds the port.
    w.publish_to(Outlets::start(
        metrics.0,
        metrics.1.as_deref(),
        metrics.2.as_deref(),
    ));

    let (tx, rx) = mpsc::channel::<Event>();
    let mut watches = Watches::new(tx.clone());
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

    let processes = w.tick();
    info!(
        processes,
        vassals = w.inventory().vassals.len(),
        "first pass done; baselines taken"
    );
    let mut service = Notifier::from_env();
    service.ready(&w.summary());
    let ended = event_loop(
        &mut w,
        &rx,
        &mut watches,
        Schedule::new(interval, service),
        &mut lock,
    );
    w.stop_hooks();
    if ended.is_ok() {
        w.withdraw_metrics();
    }
    ended
}

/// The daemon's lock on its incident log, once taken.
struct Owner(Option<OwnerLock>);

impl Owner {
    /// Takes the lock if it is not held yet. Another daemon that took it meanwhile stops
    /// this one.
    fn retake(&mut self, log: &std::path::Path) -> anyhow::Result<()> {
        if self.0.is_some() {
            return Ok(());
        }
        match OwnerLock::take(log) {
            Ok(l) => {
                info!(file = %audit::lock_path(log).display(), "took the lock of the incident log");
                self.0 = Some(l);
                Ok(())
            }
            Err(e @ audit::LockError::Held { .. }) => {
                anyhow::bail!("{}: {e}", log.display())
            }
            Err(e) => {
                debug!("{e}");
                Ok(())
            }
        }
    }
}

/// How long file events are gathered before the rescan they call for: a deploy that
/// drops hundreds of files is one rescan.
const COALESCE: Duration = Duration::from_millis(20);

/// The least time between two rescans called for by file events: a directory that
/// never stops changing costs at most one rescan in this time.
const RESCAN_GAP: Duration = Duration::from_millis(250);

/// What the loop does next, after one event.
enum Next {
    Go,
    Stop,
}

/// The loop state besides the warden: when the next pass and rescans are due.
struct Schedule {
    interval: Duration,
    next_pass: Instant,
    next_rescan: Instant,
    /// A rescan asked for by file events, not before this time.
    rescan_at: Option<Instant>,
    last_rescan: Instant,
    /// systemd, when it runs the warden: readiness, status and the watchdog.
    service: Notifier,
}

impl Schedule {
    fn new(interval: Duration, service: Notifier) -> Schedule {
        let now = Instant::now();
        Schedule {
            interval,
            next_pass: now + interval,
            next_rescan: now + RESCAN_EVERY,
            rescan_at: None,
            last_rescan: now,
            service,
        }
    }

    /// The next thing due: a pass, an asked-for rescan or feeding the watchdog,
    /// whichever comes first.
    fn wake(&self) -> Instant {
        [self.rescan_at, self.service.next_ping()]
            .into_iter()
            .flatten()
            .fold(self.next_pass, Instant::min)
    }
}

/// The loop: file events, signals, a pass every `interval`. A pass that is due runs
/// before any event is read, so no stream of events can delay it by more than one
/// rescan; every event is handled in the order it came; SIGHUP re-reads the config and
/// rescans wherever it arrives; SIGTERM and SIGINT stop (exit 0), and a loop that ends
/// any other way is an error (so a supervisor restarts it).
fn event_loop(
    w: &mut Warden,
    rx: &mpsc::Receiver<Event>,
    watches: &mut Watches,
    mut at: Schedule,
    lock: &mut Owner,
) -> anyhow::Result<()> {
    loop {
        // Fed from the loop itself: a loop that stalls anywhere stops feeding it.
        at.service.ping_if_due();
        let now = Instant::now();
        if now >= at.next_pass {
            // Until the log's lock is taken (its directory was not writable), each pass
            // tries again; another daemon that took it meanwhile stops this one.
            lock.retake(w.audit_log())?;
            pass(w, watches, &mut at);
            continue;
        }
        if at.rescan_at.is_some_and(|r| now >= r) {
            rescan(w, watches, &mut at);
            continue;
        }
        match rx.recv_timeout(at.wake().saturating_duration_since(now)) {
            Ok(ev) => {
                if let Next::Stop = handle(ev, w, watches, &mut at) {
                    return Ok(());
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                anyhow::bail!("the event sources stopped (inotify and signal threads gone)")
            }
        }
    }
}

fn handle(ev: Event, w: &mut Warden, watches: &mut Watches, at: &mut Schedule) -> Next {
    match ev {
        Event::Fs(paths) => {
            // Only changes to vassal files or to the vassal directories themselves: the
            // parent directories are watched for the latter and may be busy.
            if paths.iter().any(|p| w.concerns(p)) && at.rescan_at.is_none() {
                let soonest = at.last_rescan + RESCAN_GAP;
                at.rescan_at = Some((Instant::now() + COALESCE).max(soonest));
            }
        }
        Event::FsError(e) => watches.report(&e),
        Event::Signal(signal_hook::consts::SIGHUP) => {
            info!("SIGHUP: re-reading the configuration and rescanning");
            at.service.reloading();
            let interval = w.reload_config();
            if interval != at.interval {
                at.interval = interval;
                at.next_pass = Instant::now() + interval;
            }
            rescan(w, watches, at);
            at.service.ready(&w.summary());
        }
        Event::Signal(s) => {
            info!(signal = s, "stopping");
            return Next::Stop;
        }
    }
    Next::Go
}

fn rescan(w: &mut Warden, watches: &mut Watches, at: &mut Schedule) {
    w.refresh();
    watches.sync(w.watch_dirs());
    let now = Instant::now();
    at.rescan_at = None;
    at.last_rescan = now;
    at.next_rescan = now + RESCAN_EVERY;
}

fn pass(w: &mut Warden, watches: &mut Watches, at: &mut Schedule) {
    if Instant::now() >= at.next_rescan {
        rescan(w, watches, at);
    }
    let processes = w.tick();
    debug!(processes, "pass done");
    at.service.status(&w.summary());
    // While an action is being verified, look again sooner: a recycled worker is
    // replaced within a second, and the next worker of the same leak (or another
    // vassal, under `max-concurrent`) waits for that verdict.
    let step = if w.any_pending() {
        at.interval.min(VERIFY_EVERY)
    } else {
        at.interval
    };
    at.next_pass += step;
    let now = Instant::now();
    if at.next_pass < now {
        at.next_pass = now + step;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_limit_is_named_with_the_directory_and_the_sysctl_to_raise() {
        let dir = std::path::Path::new("/etc/uwsgi-emperor/vassals");
        for e in [
            notify::Error::new(notify::ErrorKind::MaxFilesWatch),
            notify::Error::io(std::io::Error::from_raw_os_error(28)),
        ] {
            let text = watch_error(dir, &e);
            assert!(
                text.starts_with("cannot watch /etc/uwsgi-emperor/vassals with inotify: the inotify watch limit is reached (fs.inotify.max_user_watches = "),
                "{text}"
            );
            assert!(
                text.contains("sysctl fs.inotify.max_user_watches="),
                "{text}"
            );
            assert!(text.contains("rescan every 10s"), "{text}");
        }
        let denied = watch_error(
            dir,
            &notify::Error::io(std::io::Error::from_raw_os_error(13)),
        );
        assert!(denied.contains("permission denied"), "{denied}");
    }

    #[test]
    fn the_loop_wakes_for_whichever_is_due_first() {
        let mut at = Schedule::new(Duration::from_secs(2), Notifier::default());
        assert_eq!(at.wake(), at.next_pass);
        let soon = Instant::now() + COALESCE;
        at.rescan_at = Some(soon);
        assert_eq!(at.wake(), soon);
    }
}
