//! The daemon: one loop over a channel fed by inotify (notify), signals and a ticker
//! (the channel's receive timeout).
//!
//! This module owns the event loop and the inotify watches: bursts of file events are
//! coalesced into one rescan, a rescan also runs every 10 s (the fallback when inotify
//! misses something or runs out of watches), and each tick hands over to
//! `Warden::tick`. SIGTERM and SIGINT stop it; SIGHUP rescans.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};
use tracing::{debug, info, warn};

use crate::audit::{self, OwnerLock};
use crate::config::Config;
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

/// Runs the daemon until SIGTERM or SIGINT (or after one pass with `--once`). `lock`
/// keeps other daemons off the incident log; when it could not be taken, it is taken on
/// a later pass.
pub(crate) fn run(cfg: Config, opts: Options, lock: Option<OwnerLock>) -> anyhow::Result<()> {
    let interval = cfg.interval;
    let mut lock = Owner(lock);
    let mut w = Warden::new(cfg, opts.dry_run);
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
        return Ok(());
    }
    lock.retake(w.audit_log())?;

    let (tx, rx) = mpsc::channel::<Event>();
    let fs_tx = tx.clone();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let _ = fs_tx.send(match res {
            // Opening or reading a file (the warden's own rescans do) changes nothing.
            Ok(ev) if matches!(ev.kind, notify::EventKind::Access(_)) => return,
            Ok(ev) => Event::Fs(ev.paths),
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

    let processes = w.tick();
    info!(
        processes,
        vassals = w.inventory().vassals.len(),
        "first pass done; baselines taken"
    );
    event_loop(&mut w, &rx, &mut watches, interval, &mut lock)
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

/// The loop: file events, signals, and a pass every `interval`.
fn event_loop(
    w: &mut Warden,
    rx: &mpsc::Receiver<Event>,
    watches: &mut Watches,
    interval: Duration,
    lock: &mut Owner,
) -> anyhow::Result<()> {
    let mut next_tick = Instant::now() + interval;
    let mut next_rescan = Instant::now() + RESCAN_EVERY;
    loop {
        let timeout = next_tick.saturating_duration_since(Instant::now());
        match rx.recv_timeout(timeout) {
            Ok(Event::Fs(paths)) => {
                // Only changes to vassal files or to the vassal directories themselves: the
                // parent directories are watched for the latter and may be busy.
                if !paths.iter().any(|p| w.concerns(p)) {
                    continue;
                }
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
                lock.retake(w.audit_log())?;
                w.tick();
                // While an action is being verified, look again sooner: a recycled worker
                // is replaced within a second, and the next worker of the same leak (or
                // another vassal, under `max-concurrent`) waits for that verdict.
                let step = if w.any_pending() {
                    interval.min(VERIFY_EVERY)
                } else {
                    interval
                };
                next_tick += step;
                let now = Instant::now();
                if next_tick < now {
                    next_tick = now + step;
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
