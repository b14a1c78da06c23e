//! The ledger: everything the warden does with the incident log and what hears of it.
//!
//! This module owns the appending of records (the one place they are written), the
//! records owed when the log cannot be written (kept oldest first, bounded, written before
//! anything else), the room reserved before an action, the counts the metrics show (a
//! record is counted once it is on disk, so they never disagree with the log), the hand-off
//! of each record to the alert hook, and what has been said once already in the journal
//! (`SaidOnce`). It decides nothing: the warden says what to write and when.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{debug, error, warn};

use crate::audit::{self, AuditLog, Record, WriteError};
use crate::config::Hook;
use crate::episode::Entry;
use crate::hook::{self, Hooks};
use crate::metrics::Counts;
use crate::policy::Past;
use crate::text::one_line;

/// At most this many owed records are kept; older ones are dropped, with an error.
pub(super) const MAX_OWED: usize = 1000;

/// How often a failure to write the log is logged as an error while it lasts.
const WRITE_ERROR_EVERY: Duration = Duration::from_secs(60);

/// Room kept beyond a record's own length when space is reserved for it (a torn line
/// to end first).
const RESERVE_SLACK: u64 = 64;

/// How long a stopping daemon lets the hook's queued runs go on.
const HOOK_STOP_WAIT: Duration = Duration::from_secs(5);

/// What something said once in the journal is about: it is said again only when what
/// there is to say changes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Topic {
    /// The problem of an Emperor's source of vassals (its stats server), by PID.
    Source(i32),
    /// Why a vassal's `touch-chain-reload` file is not used.
    ChainFile(PathBuf),
    /// An unreadable line of the log, at this offset of this file.
    BadLine(PathBuf, u64),
}

/// What was said last about each topic: the one mechanism for "said once, and again only
/// when it changes".
#[derive(Debug, Default)]
pub(super) struct SaidOnce {
    said: HashMap<Topic, String>,
}

impl SaidOnce {
    /// True when `text` is news about `topic` (never said, or said otherwise): the caller
    /// says it now, and it is remembered.
    pub(super) fn is_news(&mut self, topic: Topic, text: &str) -> bool {
        if self.said.get(&topic).is_some_and(|t| t == text) {
            return false;
        }
        self.said.insert(topic, text.to_owned());
        true
    }

    /// The topic is over: the next thing said about it is news.
    pub(super) fn forget(&mut self, topic: &Topic) {
        self.said.remove(topic);
    }
}

/// How long a vassal with an incident that could not be recorded may be seen without
/// running processes (a master respawning, its Emperor restarting, a dispute) before
/// the incident is taken to be over: long enough for any restart, short enough that a
/// vassal stopped for good does not keep the log owed.
pub(super) const ABSENT_GRACE: Duration = Duration::from_secs(300);

/// An incident whose first record could not be written.
struct Unwritten {
    incident: String,
    /// Since when its vassal has been seen without running processes, if it is now.
    absent_since: Option<Instant>,
}

/// The incident log as the warden writes it, and what hears of each record.
pub(super) struct Ledger {
    log: AuditLog,
    /// Records that could not be written when they were due (after the first record of
    /// their incident), oldest first: written before anything else, and no action is
    /// taken while any is owed.
    owed: VecDeque<Record>,
    /// Incidents whose first record could not be written, by vassal file: owed too (the
    /// incident keeps its id until that record is on disk), though not queued, since
    /// the next pass decides it again with what it sees then.
    unwritten: BTreeMap<PathBuf, Unwritten>,
    /// Until when a failure to write the log is logged at debug level only (it would
    /// otherwise be logged on every pass while the disk is full).
    quiet_until: Option<Instant>,
    /// The records written, counted as they reach the log.
    counts: Counts,
    /// The alert hook, once the daemon starts it.
    hooks: Option<Hooks>,
    /// Hooks a re-read configuration replaced, running what they had queued.
    retired: Vec<Hooks>,
    /// When the hook was last told that a record could not be written.
    hook_told_write: Option<Instant>,
    /// How often the hook is told again that the log cannot be written (`remind`).
    remind: Duration,
    pub(super) said: SaidOnce,
}

impl Ledger {
    pub(super) fn new(path: PathBuf, remind: Duration) -> Ledger {
        Ledger {
            log: AuditLog::new(path),
            owed: VecDeque::new(),
            unwritten: BTreeMap::new(),
            quiet_until: None,
            counts: Counts::default(),
            hooks: None,
            retired: Vec::new(),
            hook_told_write: None,
            remind,
            said: SaidOnce::default(),
        }
    }

    pub(super) fn path(&self) -> &Path {
        self.log.path()
    }

    /// Records owed to the log now: those queued, and the first record of each
    /// incident that could not be written.
    pub(super) fn owed(&self) -> usize {
        self.owed.len() + self.unwritten.len()
    }

    /// The incident of vassal file `config` whose first record could not be written:
    /// deciding it again keeps its id.
    pub(super) fn unwritten(&self, config: &Path) -> Option<String> {
        self.unwritten.get(config).map(|u| u.incident.clone())
    }

    /// The incident of `config` whose first record could not be written is over before
    /// it could be (every process back under its line): it is said, and no longer owed.
    pub(super) fn drop_unwritten(&mut self, config: &Path, vassal: &str) {
        if let Some(u) = self.unwritten.remove(config) {
            error!(vassal, incident = %u.incident, file = %self.log.path().display(),
                   "{}: an incident that could not be recorded is over before its record could be written; it is not in the log", one_line(vassal));
        }
    }

    /// The vassal of `config` is seen without running processes at `now`. Its incident
    /// that could not be recorded stays owed (a master respawning or an Emperor
    /// restarting is not the end of a leak) until it has been absent `ABSENT_GRACE`.
    pub(super) fn absent(&mut self, config: &Path, vassal: &str, now: Instant) {
        let Some(u) = self.unwritten.get_mut(config) else {
            return;
        };
        let since = *u.absent_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= ABSENT_GRACE {
            let incident = u.incident.clone();
            self.unwritten.remove(config);
            error!(vassal, incident = %incident, file = %self.log.path().display(),
                   absent_s = ABSENT_GRACE.as_secs(),
                   "{}: a vassal whose incident could not be recorded has not run for a while; the incident is not in the log", one_line(vassal));
        }
    }

    /// The vassal of `config` runs again: its incident that could not be recorded is
    /// decided again from what its processes show.
    pub(super) fn present(&mut self, config: &Path) {
        if let Some(u) = self.unwritten.get_mut(config) {
            u.absent_since = None;
        }
    }

    /// Forgets the unwritten incidents of the vassal files `keep` refuses (no longer
    /// watched), saying so for each.
    pub(super) fn retain_unwritten(&mut self, keep: impl Fn(&Path) -> bool) {
        let gone: Vec<PathBuf> = self
            .unwritten
            .keys()
            .filter(|p| !keep(p))
            .cloned()
            .collect();
        for config in gone {
            if let Some(u) = self.unwritten.remove(&config) {
                error!(file = %config.display(), incident = %u.incident,
                       "{}: a vassal file whose incident could not be recorded is no longer watched; the incident is not in the log", one_line(&config.display().to_string()));
            }
        }
    }

    pub(super) fn set_remind(&mut self, remind: Duration) {
        self.remind = remind;
    }

    /// Writes the first record of an incident, after every record still owed. On
    /// failure nothing of it is kept: the caller takes no step it was to precede, and
    /// the incident is decided again on the next pass.
    pub(super) fn write_first(&mut self, r: &Record) -> Result<(), WriteError> {
        self.write_first_with_room(r, 0)
    }

    /// Like `write_first`, once `room` bytes more are reserved in the log (for the
    /// records of the action the incident starts), so that a full disk stops the
    /// incident before it starts, not between its records. On failure the incident is
    /// owed: it keeps its id (`unwritten`) until its first record is on disk.
    pub(super) fn write_first_with_room(
        &mut self,
        r: &Record,
        room: u64,
    ) -> Result<(), WriteError> {
        let res = self
            .pay_owed()
            .and_then(|()| {
                if room > 0 {
                    self.log.reserve(room + RESERVE_SLACK)
                } else {
                    Ok(())
                }
            })
            .and_then(|()| self.append(r));
        match &res {
            Ok(()) => {
                self.unwritten.remove(&r.config);
            }
            Err(e) => {
                self.unwritten.insert(
                    r.config.clone(),
                    Unwritten {
                        incident: r.incident.clone(),
                        absent_since: None,
                    },
                );
                self.write_failed(&r.vassal, e);
            }
        }
        res
    }

    /// Writes a later record of an incident (after its first is on disk). One that
    /// cannot be written now is owed: written on a later pass before anything else.
    pub(super) fn write(&mut self, r: Record) {
        let name = r.vassal.clone();
        self.owed.push_back(r);
        if self.owed.len() > MAX_OWED
            && let Some(lost) = self.owed.pop_front()
        {
            error!(vassal = %lost.vassal, incident = %lost.incident, file = %self.log.path().display(),
                   "{}: a record owed to the incident log is dropped: {MAX_OWED} are owed; free space on its filesystem", one_line(&lost.vassal));
        }
        if let Err(e) = self.pay_owed() {
            self.write_failed(&name, &e);
        }
    }

    /// Writes the records still owed, oldest first.
    pub(super) fn pay_owed(&mut self) -> Result<(), WriteError> {
        while let Some(r) = self.owed.pop_front() {
            if let Err(e) = self.append(&r) {
                self.owed.push_front(r);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Writes the records still owed, and logs a failure (`vassal`: whose pass it is).
    pub(super) fn retry_owed(&mut self, vassal: &str) {
        if let Err(e) = self.pay_owed() {
            self.write_failed(vassal, &e);
        }
    }

    /// Appends one record to the log: the one place records are written. It is counted
    /// for the metrics once it is on disk, and offered to the hook.
    fn append(&mut self, r: &Record) -> Result<(), WriteError> {
        self.log.append(r)?;
        // Writing works: the next failure is told to the hook at once.
        self.hook_told_write = None;
        self.counts.count(r);
        if let Some(h) = &mut self.hooks {
            h.offer(r);
        }
        Ok(())
    }

    /// Makes sure the records of an action can be written before it is taken: every
    /// owed record is written, and `bytes` are reserved in the log.
    pub(super) fn room_to_act(&mut self, vassal: &str, bytes: u64) -> Result<(), WriteError> {
        let res = self
            .pay_owed()
            .and_then(|()| self.log.reserve(bytes + RESERVE_SLACK));
        if let Err(e) = &res {
            self.write_failed(vassal, e);
        }
        res
    }

    /// Logs a failure to write the log: as an error once a minute while it lasts, and to
    /// the hook once every `remind`.
    fn write_failed(&mut self, vassal: &str, e: &WriteError) {
        let now = Instant::now();
        let owed = self.owed();
        if self.quiet_until.is_some_and(|t| now < t) {
            debug!(vassal, owed, "{e}");
            return;
        }
        self.quiet_until = Some(now + WRITE_ERROR_EVERY);
        if self
            .hook_told_write
            .is_none_or(|t| now.duration_since(t) >= self.remind)
            && let Some(h) = &mut self.hooks
        {
            self.hook_told_write = Some(now);
            h.offer_write_failed(vassal, self.log.path(), &e.to_string(), owed);
        }
        error!(
            vassal,
            owed,
            "{}: {e}; no action is taken until its records are written; retrying on every pass",
            one_line(vassal)
        );
    }

    /// The history the episodes are rebuilt from: the log's last few MiB and its
    /// rotations', unreadable lines reported.
    pub(super) fn history(&mut self) -> std::io::Result<Vec<Entry>> {
        let read = audit::read_history(self.path(), audit::HISTORY_TAIL, audit::HISTORY_FILES)?;
        self.report_bad(&read.bad);
        Ok(audit::history(&read.records))
    }

    /// The actions on the vassal file `config` that anyone recorded, from the log's tail.
    pub(super) fn recorded_actions(&mut self, config: &Path) -> Vec<Past> {
        let (past, bad) = audit::recent_actions(self.path(), config, 256 * 1024);
        self.report_bad(&bad);
        past
    }

    /// Logs the unreadable lines of the log not reported yet.
    fn report_bad(&mut self, bad: &[audit::BadLine]) {
        for b in bad {
            if self
                .said
                .is_news(Topic::BadLine(b.file.clone(), b.offset), &b.message)
            {
                warn!("{b}");
            }
        }
    }

    /// The counts of records written, keeping only the vassals `keep` names.
    pub(super) fn counts(&mut self, keep: impl Fn(&str) -> bool) -> &Counts {
        self.counts.retain(keep);
        &self.counts
    }

    /// Each vassal's failed hook runs.
    pub(super) fn hook_failures(&self) -> std::collections::BTreeMap<String, u64> {
        self.hooks.as_ref().map(Hooks::failures).unwrap_or_default()
    }

    /// Runs `hook` for the records from now on (none: no hook). A hook that is already
    /// the one running goes on; one replaced runs what it has queued, then its thread
    /// ends, and its failure counts carry over.
    pub(super) fn set_hook(&mut self, hook: Option<Hook>) {
        if self.hooks.as_ref().map(Hooks::hook) == hook.as_ref() {
            return;
        }
        let failures = self
            .hooks
            .as_ref()
            .map_or_else(hook::Failures::default, Hooks::failure_counts);
        if let Some(mut old) = self.hooks.take() {
            old.retire();
            self.retired.push(old);
        }
        self.retired.retain(|h| !h.is_done());
        self.hooks = hook.and_then(|h| Hooks::start_counting(h, failures));
    }

    /// Lets the hook's queued runs finish as the daemon stops, for a few seconds at most
    /// (a stop must not wait out a hanging hook); the run still going is then killed.
    pub(super) fn stop_hooks(&mut self) {
        let until = Instant::now() + HOOK_STOP_WAIT;
        for h in self.retired.drain(..).chain(self.hooks.take()) {
            let left = until.saturating_duration_since(Instant::now());
            let wait = h.hook().timeout.min(left);
            h.stop(wait);
        }
    }
}

#[cfg(test)]
mod tests;
