//! Policy: the rules the decision core applies, and the vocabulary it speaks.
//!
//! This module is pure: no clock (times are passed in), no files, no /proc. It owns the
//! vocabulary of decisions and records (`Rule`, `ActionKind`, `Reason`, `Step`), when a
//! process counts as over the line (`reload-at`, `max-fds`, with hysteresis), the
//! prediction (least squares over recent samples; `predict = auto`'s lead), whether a plan
//! may be carried out now (cooldown and `max-reloads` for reloads, the host-wide cap, dry
//! run), which action is the gentlest that will work and how many workers go at once, and
//! when an action counts as having worked. `episode` combines these over a vassal's life.
//! Everything here is tested with plain tables of cases.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use crate::config::{ActionMode, Policy, Predict};
use crate::procs::{ProcId, Role};
use crate::vocab::{ActionKind, Reason, Rule};

/// A vassal's place on the ladder of actions: each action that did not work moves it one
/// step up, a recovery moves it back to the bottom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) enum Step {
    /// The gentlest action that will work.
    #[default]
    Gentlest,
    /// A recycle or chain reload did not work: a touch is next.
    Touch,
    /// A touch did not work: alert only.
    Exhausted,
}

/// Why the ladder climbed to where it stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Climb {
    /// An action was taken and did not bring the fds down.
    #[default]
    DidNotWork,
    /// An action could not be taken: refused (a signal not permitted, a file its owner
    /// could not write), or a touch that moved nothing.
    CouldNotAct,
}

impl Step {
    /// Where the ladder stands after an action of `kind` did not work.
    #[must_use]
    pub(crate) fn after_failed(kind: ActionKind) -> Step {
        match kind {
            ActionKind::RecycleWorker | ActionKind::ChainReload => Step::Touch,
            ActionKind::Touch => Step::Exhausted,
        }
    }
}

/// The fd count at or above which a process is over the line: `reload-at` of its soft
/// limit, capped by `max-fds`.
#[must_use]
pub(crate) fn line(policy: &Policy, soft_limit: u64) -> u64 {
    let l = policy.reload_at.line(soft_limit);
    policy.max_fds.map_or(l, |cap| l.min(cap))
}

/// Below this count a process's streak clears.
#[must_use]
pub(crate) fn clear_line(policy: &Policy, soft_limit: u64) -> u64 {
    let l = line(policy, soft_limit) as f64;
    // Hysteresis is within 0..=1, so this lies between 0 and the line.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let clear = (l * (1.0 - policy.hysteresis)).floor() as u64;
    clear
}

/// What fired.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Fire {
    /// Over `reload-at` of the soft limit.
    ReloadAt { line: u64 },
    /// Over the absolute `max-fds` cap (which was the lower of the two).
    MaxFds { cap: u64 },
    /// The soft limit will be reached within `predict`: growth in fds per second and the
    /// estimated seconds left.
    Predict { slope: f64, eta: f64 },
}

impl Fire {
    #[must_use]
    pub(crate) fn rule(&self) -> Rule {
        match self {
            Fire::ReloadAt { .. } => Rule::ReloadAt,
            Fire::MaxFds { .. } => Rule::MaxFds,
            Fire::Predict { .. } => Rule::Predict,
        }
    }
}

/// Per-process state: streaks and recent samples.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProcState {
    over: u32,
    predicted: u32,
    /// (seconds, fds), oldest first.
    samples: VecDeque<(f64, u64)>,
}

impl ProcState {
    /// Over the line at the last sample.
    #[must_use]
    pub(crate) fn is_over(&self) -> bool {
        self.over > 0
    }

    /// Feeds one sample taken at `t` seconds (any fixed origin). Returns what fired, if
    /// the process has now met a rule: over the line for `for` consecutive samples, or its
    /// limit projected within the prediction horizon (`for` samples in a row with
    /// `predict = DURATION`; at once with `predict = auto`, whose `lead` is how long the
    /// warden needs to act on this process, learned from its own outcomes).
    pub(crate) fn feed(
        &mut self,
        policy: &Policy,
        t: f64,
        fds: u64,
        soft_limit: u64,
        lead: Duration,
    ) -> Option<Fire> {
        let l = line(policy, soft_limit);
        if fds >= l {
            self.over = self.over.saturating_add(1);
        } else if fds < clear_line(policy, soft_limit) {
            self.over = 0;
        }
        self.samples.push_back((t, fds));
        while self.samples.len() > policy.predict_window.max(AUTO_WINDOW) {
            self.samples.pop_front();
        }
        let predicted = predict(policy, &self.samples, fds, soft_limit, lead);
        if predicted.is_some() {
            self.predicted = self.predicted.saturating_add(1);
        } else {
            self.predicted = 0;
        }
        if self.over >= policy.for_samples {
            let by_cap = policy
                .max_fds
                .is_some_and(|cap| cap == l && policy.reload_at.line(soft_limit) > cap);
            return Some(if by_cap {
                Fire::MaxFds { cap: l }
            } else {
                Fire::ReloadAt { line: l }
            });
        }
        let needed = match policy.predict {
            Predict::Auto => 1,
            _ => policy.for_samples,
        };
        if self.predicted >= needed {
            return predicted;
        }
        None
    }

    /// How long until the limit (`max-fds` when lower) at the rate of the last
    /// `AUTO_WINDOW` samples (at least 3), if the count grows; `fds` is the last sample.
    #[must_use]
    pub(crate) fn eta(&self, policy: &Policy, fds: u64, soft_limit: u64) -> Option<f64> {
        let limit = policy.max_fds.map_or(soft_limit, |cap| cap.min(soft_limit));
        let recent: VecDeque<(f64, u64)> = self
            .samples
            .iter()
            .skip(self.samples.len().saturating_sub(AUTO_WINDOW))
            .copied()
            .collect();
        let slope = slope(&recent)?;
        (slope > 0.0).then(|| limit.saturating_sub(fds) as f64 / slope)
    }

    /// Forgets the streaks (after an action), keeping the samples.
    pub(crate) fn reset(&mut self) {
        self.over = 0;
        self.predicted = 0;
    }
}

/// With `predict = auto`, the slope is fitted over this many recent samples (at least 3
/// are needed): a leak that just started is seen at its own rate, not diluted by a flat
/// past.
const AUTO_WINDOW: usize = 5;

/// The prediction horizon of `predict = auto` for a process the warden needs `action`
/// to act on (the learned time from action to verified recovery, which already counts
/// up to one interval, since recovery is seen at a sample), sampled every `interval`: the
/// action's time, plus one interval as the margin for the sample that sees it coming.
#[must_use]
pub(crate) fn auto_lead(action: Duration, interval: Duration) -> Duration {
    action.saturating_add(interval)
}

/// Whether a worker whose limit is `eta` seconds away cannot wait for a batch ahead of it:
/// it would wait about `lead` (the batch's recovery, then the next pass) and then need
/// `lead` again for its own recycle. Such a worker of a leak goes with the batch.
#[must_use]
pub(crate) fn urgent(eta: Option<f64>, lead: Duration) -> bool {
    eta.is_some_and(|e| e <= 2.0 * lead.as_secs_f64())
}

/// Least-squares slope of fds over time, in fds per second.
#[must_use]
pub(crate) fn slope(samples: &VecDeque<(f64, u64)>) -> Option<f64> {
    let n = samples.len() as f64;
    if samples.len() < 3 {
        return None;
    }
    let mean_t = samples.iter().map(|s| s.0).sum::<f64>() / n;
    let mean_f = samples.iter().map(|s| s.1 as f64).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (t, f) in samples {
        num += (t - mean_t) * (*f as f64 - mean_f);
        den += (t - mean_t) * (t - mean_t);
    }
    (den > 0.0).then(|| num / den)
}

/// The prediction rule: usage at least `predict-floor`, enough samples, growing, and the
/// limit reached within the horizon (`predict = DURATION`, or `lead` with `auto`).
fn predict(
    policy: &Policy,
    samples: &VecDeque<(f64, u64)>,
    fds: u64,
    soft_limit: u64,
    lead: Duration,
) -> Option<Fire> {
    let (horizon, window) = match policy.predict {
        Predict::Off => return None,
        Predict::Within(d) => (d, policy.predict_window.max(3)),
        Predict::Auto => (lead, AUTO_WINDOW),
    };
    let limit = policy.max_fds.map_or(soft_limit, |cap| cap.min(soft_limit));
    let needed = match policy.predict {
        Predict::Auto => 3,
        _ => window,
    };
    if samples.len() < needed || (fds as f64) < limit as f64 * policy.predict_floor {
        return None;
    }
    let recent: VecDeque<(f64, u64)> = samples
        .iter()
        .skip(samples.len().saturating_sub(window))
        .copied()
        .collect();
    let slope = slope(&recent)?;
    if slope <= 0.0 {
        return None;
    }
    let eta = (limit.saturating_sub(fds)) as f64 / slope;
    (eta <= horizon.as_secs_f64()).then_some(Fire::Predict { slope, eta })
}

/// Human text of what fired, for the `detected` record.
#[must_use]
pub(crate) fn rule_text(policy: &Policy, fire: &Fire, fds: u64, soft_limit: u64) -> String {
    let samples = if policy.for_samples == 1 {
        "sample"
    } else {
        "samples"
    };
    let n = policy.for_samples;
    match fire {
        Fire::ReloadAt { line } => match policy.reload_at {
            crate::config::Threshold::Fraction(_) => format!(
                "{fds} fds >= {line} ({} of soft limit {soft_limit}) for {n} {samples}",
                policy.reload_at
            ),
            crate::config::Threshold::Count(_) => {
                format!("{fds} fds >= {line} (reload-at) for {n} {samples}")
            }
        },
        Fire::MaxFds { cap } => {
            format!("{fds} fds >= {cap} (max-fds; soft limit {soft_limit}) for {n} {samples}")
        }
        Fire::Predict { slope, eta } => match policy.predict {
            Predict::Within(d) => format!(
                "{fds} fds growing {slope:.2}/s: soft limit {soft_limit} in {eta:.0}s, within predict {} ({n} {samples})",
                humantime::format_duration(d)
            ),
            _ => format!(
                "{fds} fds growing {slope:.2}/s: soft limit {soft_limit} in {eta:.1}s, sooner than the warden can act with a margin (predict = auto)"
            ),
        },
    }
}

/// One past action on a vassal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Past {
    pub at: SystemTime,
    pub kind: ActionKind,
    /// Taken by an operator (`vassal-warden reload`), not by the warden's policy.
    pub manual: bool,
}

impl Past {
    /// A touch or a chain reload: the whole vassal is reloaded. A worker recycle is not:
    /// it replaces one process, and a recycled process is never seen again.
    #[must_use]
    fn is_reload(&self) -> bool {
        self.kind != ActionKind::RecycleWorker
    }
}

/// What the warden remembers of a vassal's past actions (not dry runs), oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct History {
    pub actions: Vec<Past>,
}

impl History {
    /// Adds an action unless it is already known, keeping order. Times are kept to the
    /// whole second, as the incident log has them, so that an action read back from the
    /// log is the same as the one remembered.
    pub(crate) fn learn(&mut self, mut p: Past) {
        p.at = whole_second(p.at);
        if !self.actions.contains(&p) {
            let at = self.actions.partition_point(|a| a.at <= p.at);
            self.actions.insert(at, p);
        }
    }

    /// The last reload, by anyone.
    fn last_reload(&self) -> Option<SystemTime> {
        self.actions
            .iter()
            .rev()
            .find(|a| a.is_reload())
            .map(|a| a.at)
    }

    /// The warden's own reloads within `window` of `now`, oldest first. An operator's
    /// action starts the count again: a person looked and chose to go on.
    fn recent_reloads(&self, now: SystemTime, window: Duration) -> Vec<SystemTime> {
        let after_manual = self
            .actions
            .iter()
            .rposition(|a| a.manual)
            .map_or(0, |i| i + 1);
        self.actions[after_manual..]
            .iter()
            .filter(|a| a.is_reload() && since(now, a.at) < window)
            .map(|a| a.at)
            .collect()
    }
}

/// Why a vassal over the line is not acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hold {
    /// `max-reloads` reloads in the window: the next one is allowed in `next`, when the
    /// oldest of them leaves the window. A brake, not an abandonment.
    Flapping {
        recent: usize,
        next: Duration,
    },
    /// A reload less than `cooldown` ago.
    Cooldown {
        remaining: Duration,
    },
    /// Too many actions in progress on the host.
    Busy,
    DryRun,
}

impl Hold {
    #[must_use]
    pub(crate) fn reason(&self) -> Reason {
        match self {
            Hold::Flapping { .. } => Reason::Flapping,
            Hold::Cooldown { .. } => Reason::Cooldown,
            Hold::Busy => Reason::Busy,
            Hold::DryRun => Reason::DryRun,
        }
    }
}

fn whole_second(t: SystemTime) -> SystemTime {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => SystemTime::UNIX_EPOCH + Duration::from_secs(d.as_secs()),
        Err(_) => t,
    }
}

fn since(now: SystemTime, then: SystemTime) -> Duration {
    // A clock that went backwards counts as "just now": never act early.
    now.duration_since(then).unwrap_or(Duration::ZERO)
}

/// May `plan` be carried out now? `busy`: the host-wide cap on actions in progress is
/// reached. The cooldown and `max-reloads` guard reloads of the vassal (a touch or a
/// chain reload): they keep a reload from being repeated on the same vassal too soon or
/// too often. They do not hold back a worker recycle, which acts on a process that was
/// never acted on before (a recycled worker is replaced by a new one); what keeps recycles
/// from storming is verification (one action at a time, and the ladder when it does not
/// work), the spreading of recycles over the workers (half at a time, unless more are
/// about to reach their limits), and the streaks a new worker must build before it fires.
pub(crate) fn gate(
    policy: &Policy,
    now: SystemTime,
    hist: &History,
    plan: &Plan,
    busy: bool,
    dry_run: bool,
) -> Result<(), Hold> {
    if matches!(plan, Plan::Touch | Plan::ChainReload(_)) {
        let window = policy.max_reloads_window;
        let recent = hist.recent_reloads(now, window);
        let max = usize::try_from(policy.max_reloads).unwrap_or(usize::MAX);
        if recent.len() >= max {
            let oldest = recent[recent.len() - max];
            return Err(Hold::Flapping {
                recent: recent.len(),
                next: window.saturating_sub(since(now, oldest)),
            });
        }
        if let Some(last) = hist.last_reload() {
            let s = since(now, last);
            if s < policy.cooldown {
                return Err(Hold::Cooldown {
                    remaining: policy.cooldown.saturating_sub(s),
                });
            }
        }
    }
    if matches!(plan, Plan::Alert(_)) {
        return Ok(());
    }
    if busy {
        return Err(Hold::Busy);
    }
    if dry_run {
        return Err(Hold::DryRun);
    }
    Ok(())
}

/// The steps of the ladder, gentlest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// SIGHUP these workers: each finishes its request and the master respawns it.
    RecycleWorkers(Vec<ProcId>),
    /// Touch the vassal's `touch-chain-reload` file: workers replaced one at a time.
    ChainReload(std::path::PathBuf),
    /// Touch the vassal ini: the master re-executes, which clears its fds and the workers'.
    Touch,
    /// Record and alert only, for this reason.
    Alert(Reason),
}

impl Plan {
    /// The action this plan takes; `None` for an alert.
    #[must_use]
    pub(crate) fn kind(&self) -> Option<ActionKind> {
        match self {
            Plan::RecycleWorkers(_) => Some(ActionKind::RecycleWorker),
            Plan::ChainReload(_) => Some(ActionKind::ChainReload),
            Plan::Touch => Some(ActionKind::Touch),
            Plan::Alert(_) => None,
        }
    }

    #[must_use]
    pub(crate) fn name(&self) -> &'static str {
        self.kind().map_or("alert", ActionKind::as_str)
    }
}

/// What is known about the leak when choosing what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Situation {
    /// The leak lives in the master: the process that fired is the master, or the leaking
    /// targets of the worker that fired are mostly inherited from it. Only a reload of the
    /// master clears it.
    pub in_master: bool,
    /// What the process that fired is. Only a worker can be recycled, and a chain reload
    /// replaces only workers: a mule, spooler, gateway or attached program over its line
    /// is replaced by a reload of the vassal; a sub-Emperor only alerted on.
    pub role: Role,
    /// The workers that leak, most urgent first: the one that fired, and every other
    /// worker whose growth is in the same target, whether over the line yet or not,
    /// the urgent ones before the others.
    pub leaking: Vec<ProcId>,
    /// How many of `leaking`, from the first, go now whatever the batch: the one that
    /// fired, and every other that is `urgent` (it would reach its limit before its turn
    /// came, as workers that leak in lockstep do).
    pub urgent: usize,
    /// How many workers the vassal has.
    pub workers: usize,
    /// The vassal's `touch-chain-reload` file, if it declares one that exists.
    pub chain_file: Option<std::path::PathBuf>,
    /// The ini on disk differs from what the master runs (a deploy kept the old mtime):
    /// a touch would also apply it.
    pub pending_change: bool,
    /// The ini does not read as a vassal config: a touch would start a broken vassal.
    pub ini_invalid: bool,
    /// The vassal's place on the ladder.
    pub escalation: Step,
    /// Why it climbed there last.
    pub climb: Climb,
}

/// How many workers may be recycled at once: half of them (at least one), so that the
/// vassal keeps serving with the others while they are replaced.
#[must_use]
pub(crate) fn batch_size(workers: usize) -> usize {
    (workers / 2).max(1)
}

/// Picks the gentlest action that will work, and a note for the record. A recycle takes
/// the first `batch_size` leaking workers, and every urgent one; the rest follow once
/// those are replaced.
#[must_use]
pub(crate) fn choose(mode: ActionMode, s: &Situation) -> (Plan, Option<String>) {
    let in_master = s.in_master;
    let batch = || {
        let n = batch_size(s.workers).max(s.urgent).min(s.leaking.len());
        Plan::RecycleWorkers(s.leaking[..n].to_vec())
    };
    let pending_note = || {
        s.pending_change.then(|| {
            "the ini on disk changed since the vassal started; recycling workers leaves it unapplied"
                .to_owned()
        })
    };
    if s.escalation == Step::Exhausted {
        let why = match s.climb {
            Climb::CouldNotAct => "the touch could not be made (its action_failed record says why)",
            Climb::DidNotWork => "a touch did not bring the fds down",
        };
        return (Plan::Alert(Reason::LadderExhausted), Some(why.into()));
    }
    let gentle = s.escalation == Step::Gentlest;
    match mode {
        ActionMode::Alert => (Plan::Alert(Reason::AlertOnly), None),
        // A sub-Emperor holds what its vassals need of it (one fd or more each): a touch
        // of its vassal file would restart every vassal it runs.
        _ if s.role == Role::Emperor => (
            Plan::Alert(Reason::RunsVassals),
            Some("a reload would restart every vassal this sub-Emperor runs; raise its limit or find what it holds".into()),
        ),
        ActionMode::RecycleWorker if gentle && !s.leaking.is_empty() => (batch(), pending_note()),
        ActionMode::ChainReload => match (&s.chain_file, gentle) {
            (Some(f), true) if matches!(s.role, Role::Master | Role::Worker) => {
                (Plan::ChainReload(f.clone()), None)
            }
            _ => touch_or_hold(s),
        },
        ActionMode::Auto if gentle && !in_master && !s.leaking.is_empty() => {
            // Most workers leak and uWSGI can replace them one by one itself, unless more
            // than a batch are urgent: one by one, the last would wait past its limit.
            if let Some(f) = s
                .chain_file
                .as_ref()
                .filter(|_| s.leaking.len() * 2 > s.workers && s.urgent <= batch_size(s.workers))
            {
                return (Plan::ChainReload(f.clone()), None);
            }
            // A lone worker: recycling it stops the vassal as a reload would, and a
            // reload also clears what the master holds. Unless a reload would deploy.
            if s.workers > 1 {
                return (batch(), pending_note());
            }
            if s.pending_change {
                return (
                    batch(),
                    Some("the ini on disk changed since the vassal started; a touch would apply it, so workers are recycled instead".to_owned()),
                );
            }
            touch_or_hold(s)
        }
        ActionMode::Touch | ActionMode::RecycleWorker | ActionMode::Auto => touch_or_hold(s),
    }
}

fn touch_or_hold(s: &Situation) -> (Plan, Option<String>) {
    if s.ini_invalid {
        return (
            Plan::Alert(Reason::IniInvalid),
            Some("the ini does not read as a vassal config; a reload would make the Emperor start a broken vassal".into()),
        );
    }
    if s.pending_change {
        // A touch would deploy whatever is on disk: not the warden's call to make.
        return (
            Plan::Alert(Reason::PendingChange),
            Some("the ini on disk changed since the vassal started (old mtime kept); a touch would apply it".into()),
        );
    }
    (Plan::Touch, None)
}

/// What a vassal looks like after an action, for verification.
#[derive(Debug, Clone)]
pub(crate) struct After<'a> {
    /// The workers the action meant to replace (all of them for a touch or chain reload).
    pub replace: &'a [ProcId],
    /// Workers now.
    pub workers: &'a [ProcId],
    /// The fd count and line of every process now (master and workers).
    pub counts: &'a [(u64, u64)],
}

/// Has the action worked? It has when every worker it meant to replace is gone from the
/// vassal (and the vassal has workers again) and every process is back under its line.
#[must_use]
pub(crate) fn recovered(after: &After<'_>) -> bool {
    let replaced = after.replace.iter().all(|w| !after.workers.contains(w))
        && (after.replace.is_empty() || !after.workers.is_empty());
    let under = after.counts.iter().all(|(fds, line)| fds < line);
    replaced && under
}

/// The mtime to give a file so that uWSGI sees it as newer: the current second, or one
/// second past the old mtime if that is later. uWSGI compares whole seconds against the
/// mtime it last saw (emperor.c), so a touch within the same second as the last change
/// would do nothing.
#[must_use]
pub(crate) fn touch_mtime(old_secs: i64, now_secs: i64) -> i64 {
    now_secs.max(old_secs.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Threshold;

    fn policy(reload_at: Threshold, for_samples: u32) -> Policy {
        Policy {
            reload_at,
            for_samples,
            predict: Predict::Off,
            ..Policy::default()
        }
    }

    fn feed_all(p: &Policy, limit: u64, counts: &[u64]) -> Vec<Option<&'static str>> {
        feed_every(p, limit, counts, 1.0, Duration::from_secs(8))
    }

    /// Feeds `counts` taken every `step` seconds, with an auto prediction lead of `lead`.
    fn feed_every(
        p: &Policy,
        limit: u64,
        counts: &[u64],
        step: f64,
        lead: Duration,
    ) -> Vec<Option<&'static str>> {
        let mut st = ProcState::default();
        counts
            .iter()
            .enumerate()
            .map(|(i, f)| {
                st.feed(p, i as f64 * step, *f, limit, lead)
                    .map(|x| x.rule().as_str())
            })
            .collect()
    }

    #[test]
    fn streak_needs_consecutive_samples() {
        let p = policy(Threshold::Fraction(0.8), 2);
        // Line 820 of 1024; clears below 738 (10% hysteresis).
        let fires = feed_all(&p, 1024, &[819, 820, 700, 830, 840, 900, 10]);
        assert_eq!(
            fires,
            [
                None,
                None,
                None,
                None,
                Some("reload-at"),
                Some("reload-at"),
                None
            ]
        );
    }

    #[test]
    fn hovering_at_the_line_does_not_clear_the_streak() {
        let p = policy(Threshold::Count(100), 3);
        // 95..99 is under the line but above the clear line (90): the streak holds.
        let fires = feed_all(&p, 1000, &[100, 97, 101, 99, 102]);
        assert_eq!(fires, [None, None, None, None, Some("reload-at")]);
        // Dropping clearly below (89 < 90) clears it.
        let fires = feed_all(&p, 1000, &[100, 101, 89, 100, 101]);
        assert_eq!(fires, [None, None, None, None, None]);
    }

    #[test]
    fn max_fds_caps_a_huge_soft_limit() {
        let p = Policy {
            max_fds: Some(5000),
            ..policy(Threshold::Fraction(0.8), 1)
        };
        let huge = 1_073_741_816;
        assert_eq!(line(&p, huge), 5000);
        assert_eq!(feed_all(&p, huge, &[4999, 5000]), [None, Some("max-fds")]);
        // With an ordinary limit, reload-at is the lower one and names itself.
        assert_eq!(line(&p, 1024), 820);
        assert_eq!(feed_all(&p, 1024, &[820]), [Some("reload-at")]);
    }

    fn predicting() -> Policy {
        Policy {
            predict: Predict::Within(Duration::from_secs(60)),
            predict_floor: 0.3,
            predict_window: 10,
            ..policy(Threshold::Fraction(0.9), 2)
        }
    }

    #[test]
    fn prediction_fires_on_a_steady_leak_before_the_line() {
        let p = predicting();
        // 5 fds a second from 300 of 1000: the limit is 140 s away at first, 60 s away
        // at 700.
        let counts: Vec<u64> = (0..100).map(|i| 300 + 5 * i).collect();
        let fires = feed_all(&p, 1000, &counts);
        let first = fires.iter().position(Option::is_some).unwrap();
        assert_eq!(fires[first], Some("predict"));
        assert!(
            counts[first] < 900,
            "fired at {} fds, not before the line",
            counts[first]
        );
        assert!(
            counts[first] >= 700,
            "fired at {} fds, earlier than 60 s out",
            counts[first]
        );
    }

    #[test]
    fn prediction_ignores_noise_without_a_trend_and_low_usage() {
        let p = predicting();
        // Flat at ~500 with ±40 of noise: no trend, never fires.
        let noisy: Vec<u64> = (0..200)
            .map(|i| 500 + [0, 40, 10, 35, 0, 25][i % 6] - 20)
            .collect();
        assert!(feed_all(&p, 1000, &noisy).iter().all(Option::is_none));
        // A fast leak below the floor (30%) does not fire on prediction.
        let low: Vec<u64> = (0..50).map(|i| 10 + 5 * i).collect();
        assert!(feed_all(&p, 1000, &low).iter().all(Option::is_none));
        // The same leak with noise still fires.
        let leak: Vec<u64> = (0..100)
            .map(|i| 300 + 5 * i + [0, 30, 5, 25, 10, 0][usize::try_from(i % 6).unwrap()])
            .collect();
        assert!(feed_all(&p, 1000, &leak).contains(&Some("predict")));
    }

    #[test]
    fn least_squares_slope() {
        let s: VecDeque<(f64, u64)> = [(0.0, 10), (1.0, 12), (2.0, 14), (3.0, 16)]
            .into_iter()
            .collect();
        assert!((slope(&s).unwrap() - 2.0).abs() < 1e-9);
    }

    #[test]
    fn rule_texts() {
        let p = policy(Threshold::Fraction(0.8), 2);
        assert_eq!(
            rule_text(&p, &Fire::ReloadAt { line: 820 }, 830, 1024),
            "830 fds >= 820 (80% of soft limit 1024) for 2 samples"
        );
        let p = policy(Threshold::Count(40), 1);
        assert_eq!(
            rule_text(&p, &Fire::ReloadAt { line: 40 }, 41, 64),
            "41 fds >= 40 (reload-at) for 1 sample"
        );
    }

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    fn reload(s: u64) -> Past {
        Past {
            at: t(s),
            kind: ActionKind::Touch,
            manual: false,
        }
    }

    fn recycle(s: u64) -> Past {
        Past {
            kind: ActionKind::RecycleWorker,
            ..reload(s)
        }
    }

    #[test]
    fn cooldown_busy_and_dry_run() {
        let p = Policy {
            cooldown: Duration::from_secs(600),
            ..Policy::default()
        };
        let touch = Plan::Touch;
        let none = History::default();
        assert_eq!(gate(&p, t(0), &none, &touch, false, false), Ok(()));
        assert_eq!(
            gate(&p, t(0), &none, &touch, false, true),
            Err(Hold::DryRun)
        );
        assert_eq!(gate(&p, t(0), &none, &touch, true, false), Err(Hold::Busy));
        let once = History {
            actions: vec![reload(0)],
        };
        assert_eq!(
            gate(&p, t(60), &once, &touch, false, false),
            Err(Hold::Cooldown {
                remaining: Duration::from_secs(540)
            })
        );
        assert_eq!(gate(&p, t(600), &once, &touch, false, false), Ok(()));
        // Clock went backwards: still in cooldown.
        assert!(
            gate(
                &p,
                t(0) - Duration::from_secs(5),
                &once,
                &touch,
                false,
                false
            )
            .is_err()
        );
    }

    #[test]
    fn cooldown_and_max_reloads_guard_reloads_not_recycles_of_other_workers() {
        let p = Policy {
            cooldown: Duration::from_secs(600),
            max_reloads: 1,
            ..Policy::default()
        };
        let recycle_12 = Plan::RecycleWorkers(vec![id(12)]);
        // A worker was just recycled; another one crosses the line: it is healed too.
        let recycled = History {
            actions: vec![recycle(0)],
        };
        assert_eq!(
            gate(&p, t(46), &recycled, &recycle_12, false, false),
            Ok(())
        );
        // And a touch after recycles (the ladder's next step) is not held by them.
        assert_eq!(
            gate(&p, t(46), &recycled, &Plan::Touch, false, false),
            Ok(())
        );
        // After a touch, recycles still go on; another touch waits.
        let touched = History {
            actions: vec![reload(0)],
        };
        assert_eq!(gate(&p, t(46), &touched, &recycle_12, false, false), Ok(()));
        assert!(gate(&p, t(46), &touched, &Plan::Touch, false, false).is_err());
        // The host-wide cap and dry run hold every action; an alert is never held.
        assert_eq!(
            gate(&p, t(46), &recycled, &recycle_12, true, false),
            Err(Hold::Busy)
        );
        let alert = Plan::Alert(Reason::AlertOnly);
        assert_eq!(gate(&p, t(1), &touched, &alert, true, true), Ok(()));
    }

    #[test]
    fn flapping_is_a_rate_not_an_abandonment() {
        let p = Policy {
            cooldown: Duration::from_secs(60),
            max_reloads: 3,
            max_reloads_window: Duration::from_secs(3600),
            ..Policy::default()
        };
        let touch = Plan::Touch;
        let h = History {
            actions: vec![reload(0), reload(100), reload(200)],
        };
        // Three reloads in the hour: the next when the first leaves the window.
        assert_eq!(
            gate(&p, t(300), &h, &touch, false, false),
            Err(Hold::Flapping {
                recent: 3,
                next: Duration::from_secs(3300)
            })
        );
        // Whether or not the leak kept firing meanwhile.
        assert_eq!(gate(&p, t(3600), &h, &touch, false, false), Ok(()));
        // Recycles are no reloads: they never count.
        let mixed = History {
            actions: vec![reload(0), recycle(50), recycle(60), reload(100)],
        };
        assert_eq!(gate(&p, t(300), &mixed, &touch, false, false), Ok(()));
        // An operator's reload starts the count again.
        let mut lifted = h.clone();
        lifted.learn(Past {
            manual: true,
            ..reload(250)
        });
        assert_eq!(gate(&p, t(320), &lifted, &touch, false, false), Ok(()));
    }

    fn id(pid: i32) -> ProcId {
        ProcId { pid, start_time: 1 }
    }

    fn situation() -> Situation {
        Situation {
            in_master: false,
            role: Role::Worker,
            leaking: vec![id(11)],
            urgent: 1,
            workers: 4,
            chain_file: None,
            pending_change: false,
            ini_invalid: false,
            escalation: Step::Gentlest,
            climb: Climb::DidNotWork,
        }
    }

    #[test]
    fn at_the_top_of_the_ladder_the_alert_says_whether_the_touch_failed_or_was_refused() {
        let top = Situation {
            escalation: Step::Exhausted,
            ..situation()
        };
        let (plan, note) = choose(ActionMode::Auto, &top);
        assert_eq!(plan, Plan::Alert(Reason::LadderExhausted));
        assert_eq!(note.as_deref(), Some("a touch did not bring the fds down"));
        let refused = Situation {
            climb: Climb::CouldNotAct,
            ..top
        };
        let (_, note) = choose(ActionMode::Auto, &refused);
        assert!(note.unwrap().starts_with("the touch could not be made"));
    }

    #[test]
    fn auto_picks_the_gentlest_action_that_will_work() {
        use ActionMode::Auto;
        let s = situation();
        assert_eq!(choose(Auto, &s).0, Plan::RecycleWorkers(vec![id(11)]));
        // Leak in the master, or inherited from it: only a touch clears it.
        let master = Situation {
            in_master: true,
            role: Role::Master,
            ..s.clone()
        };
        assert_eq!(choose(Auto, &master).0, Plan::Touch);
        // Most workers leak: a chain reload when declared, else recycles, half of the
        // workers at a time (the rest follow), so that the vassal keeps serving.
        let many = Situation {
            leaking: vec![id(11), id(12), id(13)],
            ..s.clone()
        };
        assert_eq!(
            choose(Auto, &many).0,
            Plan::RecycleWorkers(vec![id(11), id(12)])
        );
        // A lone worker: no other keeps serving, so the vassal is reloaded as a whole...
        let one = Situation {
            workers: 1,
            ..s.clone()
        };
        assert_eq!(choose(Auto, &one).0, Plan::Touch);
        // ...unless that would deploy a pending change.
        let one_pending = Situation {
            pending_change: true,
            ..one
        };
        assert_eq!(
            choose(Auto, &one_pending).0,
            Plan::RecycleWorkers(vec![id(11)])
        );
        let chain = Situation {
            chain_file: Some("/srv/chain".into()),
            ..many.clone()
        };
        assert_eq!(
            choose(Auto, &chain).0,
            Plan::ChainReload("/srv/chain".into())
        );
        // A pending deploy: recycle instead of touching, and say so.
        let pending = Situation {
            pending_change: true,
            ..many.clone()
        };
        let (plan, note) = choose(Auto, &pending);
        assert_eq!(plan, Plan::RecycleWorkers(vec![id(11), id(12)]));
        assert!(note.unwrap().contains("leaves it unapplied"));
        // ...and alert rather than deploy when only a touch would help.
        let pending_master = Situation {
            in_master: true,
            role: Role::Master,
            pending_change: true,
            ..s.clone()
        };
        assert_eq!(
            choose(Auto, &pending_master).0,
            Plan::Alert(Reason::PendingChange)
        );
        // A broken ini is never touched, and that is the reason given.
        let broken = Situation {
            ini_invalid: true,
            ..pending_master
        };
        assert_eq!(choose(Auto, &broken).0, Plan::Alert(Reason::IniInvalid));
        // Recycling a worker does not read the ini: still allowed.
        let broken_worker = Situation {
            ini_invalid: true,
            ..s.clone()
        };
        assert_eq!(
            choose(Auto, &broken_worker).0,
            Plan::RecycleWorkers(vec![id(11)])
        );
    }

    #[test]
    fn a_process_that_is_not_a_worker_is_cured_by_a_reload_never_a_recycle() {
        for role in [
            Role::Mule,
            Role::Spooler,
            Role::Gateway,
            Role::Attached,
            Role::Unknown,
        ] {
            let s = Situation {
                role,
                leaking: Vec::new(),
                chain_file: Some("/srv/chain".into()),
                ..situation()
            };
            // A chain reload replaces workers only: a touch, whatever the mode asks.
            for mode in [
                ActionMode::Auto,
                ActionMode::RecycleWorker,
                ActionMode::ChainReload,
                ActionMode::Touch,
            ] {
                assert_eq!(choose(mode, &s).0, Plan::Touch, "{role} under {mode:?}");
            }
            assert_eq!(
                choose(ActionMode::Alert, &s).0,
                Plan::Alert(Reason::AlertOnly)
            );
            let broken = Situation {
                ini_invalid: true,
                ..s
            };
            assert_eq!(
                choose(ActionMode::Auto, &broken).0,
                Plan::Alert(Reason::IniInvalid)
            );
        }
    }

    #[test]
    fn a_sub_emperor_over_its_line_is_alerted_on_never_reloaded() {
        let s = Situation {
            role: Role::Emperor,
            leaking: Vec::new(),
            chain_file: Some("/srv/chain".into()),
            ..situation()
        };
        for mode in [
            ActionMode::Auto,
            ActionMode::RecycleWorker,
            ActionMode::ChainReload,
            ActionMode::Touch,
        ] {
            let (plan, note) = choose(mode, &s);
            assert_eq!(plan, Plan::Alert(Reason::RunsVassals), "{mode:?}");
            assert!(note.unwrap().contains("every vassal"));
        }
        assert_eq!(
            choose(ActionMode::Alert, &s).0,
            Plan::Alert(Reason::AlertOnly)
        );
    }

    /// Two workers leaking in lockstep: waiting for the first to be replaced would take
    /// the second past its limit, so both go now. One that leaks but is not urgent waits
    /// for its turn.
    #[test]
    fn every_urgent_worker_is_recycled_now_whatever_the_batch() {
        let lockstep = Situation {
            leaking: vec![id(11), id(12)],
            urgent: 2,
            workers: 2,
            ..situation()
        };
        assert_eq!(
            choose(ActionMode::Auto, &lockstep).0,
            Plan::RecycleWorkers(vec![id(11), id(12)])
        );
        let behind = Situation {
            urgent: 1,
            ..lockstep.clone()
        };
        assert_eq!(
            choose(ActionMode::Auto, &behind).0,
            Plan::RecycleWorkers(vec![id(11)])
        );
        // uWSGI's chain reload replaces workers one at a time: not for workers that are
        // all urgent.
        let chain = Situation {
            chain_file: Some("/srv/chain".into()),
            ..lockstep.clone()
        };
        assert_eq!(
            choose(ActionMode::Auto, &chain).0,
            Plan::RecycleWorkers(vec![id(11), id(12)])
        );
        let chain_behind = Situation { urgent: 1, ..chain };
        assert_eq!(
            choose(ActionMode::Auto, &chain_behind).0,
            Plan::ChainReload("/srv/chain".into())
        );
        let three_of_four = Situation {
            leaking: vec![id(11), id(12), id(13), id(14)],
            urgent: 3,
            workers: 4,
            ..situation()
        };
        assert_eq!(
            choose(ActionMode::RecycleWorker, &three_of_four).0,
            Plan::RecycleWorkers(vec![id(11), id(12), id(13)])
        );
    }

    /// Urgent: the limit within two leads at the recent rate, and only while the count
    /// grows. A count that stays high, however high, is not.
    #[test]
    fn a_worker_is_urgent_when_its_limit_is_nearer_than_two_leads() {
        let p = policy(Threshold::Fraction(0.8), 2);
        let lead = Duration::from_secs(3);
        let mut growing = ProcState::default();
        for (t, fds) in [(0.0, 500), (2.0, 600), (4.0, 700)] {
            growing.feed(&p, t, fds, 1024, lead);
        }
        // 50 fds a second, 324 to go: 6.5 s, within 2 × 3 s? No; within 2 × 4 s, yes.
        let eta = growing.eta(&p, 700, 1024).unwrap();
        assert!((eta - 6.48).abs() < 0.01, "{eta}");
        assert!(!urgent(Some(eta), lead));
        assert!(urgent(Some(eta), Duration::from_secs(4)));
        let mut high = ProcState::default();
        for (t, fds) in [(0.0, 950), (2.0, 950), (4.0, 950)] {
            high.feed(&p, t, fds, 1024, lead);
        }
        assert_eq!(high.eta(&p, 950, 1024), None);
        assert!(!urgent(None, lead));
        // Too few samples to tell a rate.
        let mut young = ProcState::default();
        young.feed(&p, 0.0, 900, 1024, lead);
        young.feed(&p, 2.0, 1000, 1024, lead);
        assert_eq!(young.eta(&p, 1000, 1024), None);
    }

    #[test]
    fn batches_are_half_the_workers_and_at_least_one() {
        assert_eq!([1, 2, 3, 4, 5, 8].map(batch_size), [1, 1, 1, 2, 2, 4]);
    }

    #[test]
    fn auto_prediction_acts_while_there_is_still_time_to() {
        let p = Policy {
            predict: Predict::Auto,
            ..policy(Threshold::Fraction(0.8), 2)
        };
        let lead = auto_lead(Duration::from_secs(2), Duration::from_secs(2));
        assert_eq!(lead, Duration::from_secs(4));
        // 100 fds a second per worker, sampled every 2 s, limit 1024: acts on the first
        // sample whose projection is within the lead (810 fds, 2.1 s left; a recycled
        // worker takes no new request), before the line.
        let counts: Vec<u64> = (0..6).map(|i| 10 + 200 * i).collect();
        let fires = feed_every(&p, 1024, &counts, 2.0, lead);
        assert_eq!(
            fires,
            [None, None, None, None, Some("predict"), Some("predict")]
        );
        // A slow leak (1 fd a minute) is far from its limit: only the line catches it.
        let slow: Vec<u64> = (0..50).map(|i| 500 + i / 30).collect();
        assert!(
            feed_every(&p, 1024, &slow, 2.0, lead)
                .iter()
                .all(Option::is_none)
        );
        // Flat and busy, but not growing: nothing.
        let flat: Vec<u64> = (0..20).map(|i| 700 + (i % 3) * 5).collect();
        assert!(
            feed_every(&p, 1024, &flat, 2.0, lead)
                .iter()
                .all(Option::is_none)
        );
    }

    #[test]
    fn the_ladder_goes_one_step_at_a_time() {
        let s = situation();
        let first = choose(ActionMode::Auto, &s).0;
        assert_eq!(first.name(), "recycle-worker");
        let second = choose(
            ActionMode::Auto,
            &Situation {
                escalation: Step::after_failed(first.kind().unwrap()),
                ..s.clone()
            },
        )
        .0;
        assert_eq!(second, Plan::Touch);
        let third = choose(
            ActionMode::Auto,
            &Situation {
                escalation: Step::after_failed(second.kind().unwrap()),
                ..s.clone()
            },
        )
        .0;
        assert_eq!(third, Plan::Alert(Reason::LadderExhausted));
        assert_eq!(
            choose(ActionMode::Alert, &s).0,
            Plan::Alert(Reason::AlertOnly)
        );
        assert_eq!(choose(ActionMode::Touch, &s).0, Plan::Touch);
    }

    #[test]
    fn recovery_needs_replaced_workers_and_counts_under_the_line() {
        type Case<'a> = (&'a [ProcId], &'a [ProcId], &'a [(u64, u64)], bool);
        let old = [id(10), id(11)];
        let cases: [Case<'_>; 6] = [
            (
                &old,
                &[id(10), id(11)],
                &[(14, 40), (50, 40), (10, 40)],
                false,
            ),
            (
                &old,
                &[id(12), id(11)],
                &[(14, 40), (10, 40), (10, 40)],
                false,
            ),
            (
                &old,
                &[id(12), id(13)],
                &[(14, 40), (10, 40), (10, 40)],
                true,
            ),
            (
                &old,
                &[id(12), id(13)],
                &[(14, 40), (45, 40), (10, 40)],
                false,
            ),
            (&old, &[], &[(14, 40)], false),
            // Recycling one worker: the other keeps its PID.
            (
                &old[1..],
                &[id(10), id(12)],
                &[(14, 40), (20, 40), (10, 40)],
                true,
            ),
        ];
        for (i, (replace, workers, counts, want)) in cases.into_iter().enumerate() {
            let a = After {
                replace,
                workers,
                counts,
            };
            assert_eq!(recovered(&a), want, "case {i}");
        }
    }

    #[test]
    fn touch_mtime_respects_whole_seconds() {
        assert_eq!(touch_mtime(100, 200), 200);
        assert_eq!(touch_mtime(200, 200), 201);
        assert_eq!(touch_mtime(300, 200), 301);
    }
}
