//! Episodes: what to do about one vassal on one pass, and the state kept between passes.
//!
//! This module is the decision core. It takes a vassal's state (its recorded history,
//! its place on the ladder, the action being verified, the episode last recorded, the
//! rest of a leak still to recycle) and a pass's inputs (samples, time) and returns what
//! to do: nothing, an outcome to record, an incident to record that then holds (with a
//! typed reason), alerts, or acts with a plan, or the next workers of a leak already
//! recorded. It owns every rule of that choice: which process is the offender, whether
//! its leak is mostly inherited from the master, which other workers share it, when an
//! episode is recorded again, how the ladder moves, how the state is rebuilt from the log,
//! how long actions take on this host, and what is wrong with a vassal now (`assess`).
//!
//! It does no I/O and reads no clock: times come in the `Pass`, and what costs a read
//! (what a process holds open, what others recorded in the log since, the vassal file as
//! it is now) comes through `Lookups`, which the caller implements and this module asks
//! only when the answer can change the decision. `policy` supplies the rules of one
//! sample, one gate and one choice; `warden` gathers the inputs and carries out the steps.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::audit::{Event, Record, Role};
use crate::config::{ActionMode, Policy};
use crate::forensics::{Group, Report};
use crate::policy::{self, Fire, History, Hold, Past, Plan, Situation, Step};
use crate::procs::ProcId;
use crate::vocab::{ActionKind, OutcomeResult, Reason};

/// One sampled process of the vassal on this pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Proc {
    pub id: ProcId,
    pub role: Role,
    pub fds: u64,
    pub limit: u64,
    /// The count at or above which it is over the line.
    pub line: u64,
    /// The rule that fired for it on this pass, if any.
    pub fire: Option<Fire>,
}

impl Proc {
    fn over(&self) -> bool {
        self.fds >= self.line
    }

    fn usage_of_line(&self) -> f64 {
        self.fds as f64 / self.line.max(1) as f64
    }
}

/// What is known about the vassal file and its Emperor on this pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Facts {
    /// Why the file does not read as a vassal config, if it does not.
    pub ini_error: Option<String>,
    /// The file changed under an old mtime.
    pub pending_change: bool,
    /// An Emperor that watches the file runs.
    pub emperor_up: bool,
    /// The vassal's `touch-chain-reload` file, when it declares one that exists.
    pub chain_file: Option<PathBuf>,
}

/// One pass's inputs for one running vassal.
#[derive(Debug, Clone)]
pub(crate) struct Pass<'a> {
    pub now: SystemTime,
    /// The same moment on the monotonic clock, for verification times.
    pub mono: Instant,
    /// Every worker the mapping found (sampled or not).
    pub workers: &'a [ProcId],
    /// The processes that could be sampled, master first.
    pub procs: &'a [Proc],
    /// The host-wide cap on actions in progress is reached.
    pub busy: bool,
    pub dry_run: bool,
    /// How often an episode that lasts is said again (`remind`).
    pub remind: Duration,
}

/// The reads the core may ask for during a pass.
pub(crate) trait Lookups {
    /// The actions on this vassal recorded by anyone (an operator's `reload`, another
    /// warden), from the log's tail.
    fn recorded_actions(&mut self) -> Vec<Past>;
    /// The vassal file and its Emperor, as they are now.
    fn facts(&mut self) -> Facts;
    /// What `p` holds open; `None` when it is gone.
    fn attribute(&mut self, p: &Proc) -> Option<Report>;
}

/// What the episode's record says next, after `detected`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Then {
    /// Over the line, but not acted on now; `would` is what it would have done.
    Hold { hold: Hold, would: Plan },
    /// Record and alert only.
    Alert {
        reason: Reason,
        note: Option<String>,
    },
    /// Act with this plan (after the last checks); `rest` are the leaking workers that
    /// follow once the plan's own workers are replaced.
    Act {
        plan: Plan,
        note: Option<String>,
        rest: Vec<ProcId>,
    },
}

/// A process fired: what to record and what follows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Incident {
    pub offender: Proc,
    pub fire: Fire,
    pub report: Report,
    pub then: Then,
    /// The lasting episode this incident ends, and why it ends: recorded first.
    pub closes: Option<(Open, String)>,
}

impl Open {
    /// How long it has lasted at `now`.
    #[must_use]
    pub(crate) fn lasted(&self, now: SystemTime) -> Duration {
        since(now, self.since)
    }

    /// Its `reminder` or `ended` record's fields at `now`.
    #[must_use]
    pub(crate) fn record(
        &self,
        now: SystemTime,
        fds: Option<u64>,
        detail: Option<String>,
    ) -> crate::audit::Episode {
        crate::audit::Episode {
            reason: self.reason.clone(),
            since: crate::audit::timestamp(self.since),
            seconds: self.lasted(now).as_secs_f64(),
            fds,
            detail,
        }
    }
}

/// An episode recorded as lasting (held, alert only, refused): the incident whose
/// `suppressed` record started it, its reason, when it started and when it was last
/// said (started or reminded).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Open {
    pub incident: String,
    pub reason: Reason,
    pub since: SystemTime,
    pub said: SystemTime,
}

/// The verdict on an action under verification.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Verdict {
    pub incident: String,
    pub result: OutcomeResult,
    /// The action that was verified.
    pub kind: ActionKind,
    pub fds_after: Option<u64>,
    pub seconds: f64,
    pub detail: Option<String>,
}

/// What to do on this pass.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    Nothing,
    Outcome(Verdict),
    Incident(Box<Incident>),
    /// The next workers of a leak already recorded (`incident`) are recycled now that the
    /// previous ones are replaced.
    Continue {
        incident: String,
        plan: Plan,
        rest: Vec<ProcId>,
    },
    /// A lasting episode is still on after `remind`: say so again. `fds`: the highest
    /// count among the vassal's processes now.
    Remind {
        open: Open,
        fds: Option<u64>,
    },
    /// A lasting episode is over, for the reason `detail` gives.
    Ended {
        open: Open,
        fds: Option<u64>,
        detail: String,
    },
}

/// What the key of an episode is made of: the same episode with the same inputs is
/// recorded once, then reminded every `remind`, not once per pass.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NoteKey {
    Hold(Reason),
    /// Rebuilt from the log at start: the inputs are not known, only the reason. The
    /// first decision whose record would carry that reason continues it.
    Replayed(Reason),
    Act {
        ini_invalid: bool,
        pending_change: bool,
        emperor_up: bool,
        step: Step,
        /// `action =`: a re-read config that changes it is decided anew.
        action: ActionMode,
    },
}

/// The episode last recorded: when, with which key, what it would have done, and, once
/// recorded as lasting, its record.
#[derive(Debug, Clone, PartialEq)]
struct Note {
    at: SystemTime,
    key: NoteKey,
    would: Plan,
    open: Option<Open>,
}

/// An action under verification.
#[derive(Debug, Clone, PartialEq)]
struct Pending {
    incident: String,
    kind: ActionKind,
    started: Instant,
    /// The workers the action meant to replace.
    replace: Vec<ProcId>,
    /// The workers when it was taken: those not among them are their replacements.
    before: Vec<ProcId>,
    /// Leaking workers that follow once these are replaced.
    rest: Vec<ProcId>,
}

/// The rest of a leak whose first workers were recycled: `incident` and who is next.
#[derive(Debug, Clone, PartialEq)]
struct Queue {
    incident: String,
    workers: Vec<ProcId>,
}

/// Where a vassal stands (`Episode::standing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Standing {
    pub flapping: bool,
    pub given_up: bool,
    pub last_action: Option<SystemTime>,
}

/// Per-vassal state between passes.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Episode {
    hist: History,
    noted: Option<Note>,
    pending: Option<Pending>,
    queue: Option<Queue>,
    step: Step,
}

impl Episode {
    /// True while an action is being verified.
    #[must_use]
    pub(crate) fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Where the vassal stands, for the metrics: flapping (a reload now would be held
    /// by `max-reloads`), given up (the ladder's top: alerting only), and the time of its
    /// last action (not a dry run), the warden's or an operator's.
    #[must_use]
    pub(crate) fn standing(&self, policy: &Policy, now: SystemTime) -> Standing {
        Standing {
            flapping: matches!(
                policy::gate(policy, now, &self.hist, &Plan::Touch, false, false),
                Err(Hold::Flapping { .. })
            ),
            given_up: self.step == Step::Exhausted,
            last_action: self.hist.actions.last().map(|a| a.at),
        }
    }

    #[cfg(test)]
    pub(crate) fn step(&self) -> Step {
        self.step
    }

    #[cfg(test)]
    pub(crate) fn history(&self) -> &History {
        &self.hist
    }

    /// The decision for a running vassal on this pass.
    pub(crate) fn decide(
        &mut self,
        policy: &Policy,
        pass: &Pass<'_>,
        lookups: &mut dyn Lookups,
    ) -> Decision {
        if self.pending.is_some() {
            return self.verify(policy, pass);
        }
        if let Some(d) = self.next_batch(policy, pass) {
            return d;
        }
        let fds_now = pass.procs.iter().map(|p| p.fds).max();
        // Over only when every process sampled is under its line and none still fires
        // (a count in the hysteresis band, or a prediction, keeps it on): an episode
        // does not end and start again while a count hovers at the line. A pass that
        // sampled nothing says nothing.
        let quiet = pass.procs.iter().all(|p| !p.over() && p.fire.is_none());
        if quiet && !pass.procs.is_empty() {
            // The episode is over: the next one is recorded again, from the bottom of
            // the ladder.
            self.step = Step::Gentlest;
            if let Some(open) = self.noted.take().and_then(|n| n.open) {
                return Decision::Ended {
                    open,
                    fds: fds_now,
                    detail: "every process is back under its line".into(),
                };
            }
        }
        // The record is about the process closest to its line.
        let Some((offender, fire)) = pass
            .procs
            .iter()
            .filter_map(|p| p.fire.map(|f| (*p, f)))
            .max_by(|a, b| a.0.usage_of_line().total_cmp(&b.0.usage_of_line()))
        else {
            return Decision::Nothing;
        };
        let facts = lookups.facts();
        if let Some(d) = self.same_episode(policy, pass, &facts, fds_now, lookups) {
            return d;
        }
        // Attribute: name what leaks, before anything is recorded.
        let Some(report) = lookups.attribute(&offender) else {
            return Decision::Nothing;
        };
        let situation = self.situation(pass, &offender, &report, &facts, lookups);
        let (plan, note) = policy::choose(policy.action, &situation);
        let hold = self.gate(policy, pass, &plan, lookups);
        let key = key_of(&hold, &facts, self.step, policy);
        let then = then(hold, plan.clone(), note, &situation, &facts);
        let open = self.noted.take().and_then(|n| n.open);
        // A lasting episode rebuilt at start goes on if the same reason holds now.
        if let Some(o) = &open
            && held_reason(&then).as_ref() == Some(&o.reason)
        {
            self.noted = Some(Note {
                at: pass.now,
                key,
                would: plan,
                open: open.clone(),
            });
            return Decision::Nothing;
        }
        self.noted = Some(Note {
            at: pass.now,
            key,
            would: plan,
            open: None,
        });
        let closes = open.map(|o| {
            let why = match held_reason(&then) {
                Some(r) => format!("it is {r} now"),
                None => "an action is allowed now".into(),
            };
            (o, why)
        });
        Decision::Incident(Box::new(Incident {
            offender,
            fire,
            report,
            then,
            closes,
        }))
    }

    /// The decision when the episode last recorded goes on unchanged (same hold, same
    /// inputs): nothing, or a reminder once `remind` has passed since it was last said.
    /// `None`: it changed, and is decided anew.
    fn same_episode(
        &mut self,
        policy: &Policy,
        pass: &Pass<'_>,
        facts: &Facts,
        fds_now: Option<u64>,
        lookups: &mut dyn Lookups,
    ) -> Option<Decision> {
        let n = self.noted.clone()?;
        let hold = self.gate(policy, pass, &n.would, lookups);
        if n.key != key_of(&hold, facts, self.step, policy) {
            return None;
        }
        match n.open {
            Some(open) if since(pass.now, open.said) >= pass.remind => {
                if let Some(Note { open: Some(o), .. }) = &mut self.noted {
                    o.said = pass.now;
                }
                Some(Decision::Remind { open, fds: fds_now })
            }
            Some(_) => Some(Decision::Nothing),
            None if since(pass.now, n.at) < renote(policy) => Some(Decision::Nothing),
            None => None,
        }
    }

    /// What is known about the leak: where it lives and which workers share it.
    fn situation(
        &self,
        pass: &Pass<'_>,
        offender: &Proc,
        report: &Report,
        facts: &Facts,
        lookups: &mut dyn Lookups,
    ) -> Situation {
        let inherited = mostly_inherited(report);
        let mut leaking = Vec::new();
        if offender.role == Role::Worker && !inherited {
            leaking.push(offender.id);
            let mut others: Vec<&Proc> = pass
                .procs
                .iter()
                .filter(|p| p.role == Role::Worker && p.id != offender.id)
                .collect();
            others.sort_by(|a, b| b.usage_of_line().total_cmp(&a.usage_of_line()));
            for w in others {
                if lookups.attribute(w).is_some_and(|r| same_leak(report, &r)) {
                    leaking.push(w.id);
                }
            }
        }
        Situation {
            in_master: offender.role == Role::Master || inherited,
            leaking,
            workers: pass.workers.len(),
            chain_file: facts.chain_file.clone(),
            pending_change: facts.pending_change,
            ini_invalid: facts.ini_error.is_some(),
            escalation: self.step,
        }
    }

    /// May `plan` be carried out now? Before saying yes, learn what others recorded
    /// meanwhile: their actions count for cooldown and `max-reloads` too.
    fn gate(
        &mut self,
        policy: &Policy,
        pass: &Pass<'_>,
        plan: &Plan,
        lookups: &mut dyn Lookups,
    ) -> Result<(), Hold> {
        policy::gate(policy, pass.now, &self.hist, plan, pass.busy, pass.dry_run)?;
        // An alert is never held: what others did cannot change that, so the log is not
        // read (an alert-only episode asks on every pass while it lasts).
        if matches!(plan, Plan::Alert(_)) {
            return Ok(());
        }
        let before = self.hist.actions.len();
        for p in lookups.recorded_actions() {
            self.hist.learn(p);
        }
        if self.hist.actions.len() > before {
            policy::gate(policy, pass.now, &self.hist, plan, pass.busy, pass.dry_run)?;
        }
        Ok(())
    }

    /// The next workers of a leak whose first ones were recycled and replaced.
    /// Only those at their line already, or within its hysteresis band, go now; one that
    /// leaks but is still lower is left to fire on its own, so that it is not recycled long
    /// before it needs to be.
    fn next_batch(&mut self, policy: &Policy, pass: &Pass<'_>) -> Option<Decision> {
        let q = self.queue.take()?;
        let due = |w: &ProcId| {
            pass.procs
                .iter()
                .any(|p| p.id == *w && p.fds >= policy::clear_line(policy, p.limit))
        };
        let alive: Vec<ProcId> = q
            .workers
            .into_iter()
            .filter(|w| pass.workers.contains(w) && due(w))
            .collect();
        if alive.is_empty() || self.step != Step::Gentlest {
            return None;
        }
        if pass.busy {
            self.queue = Some(Queue {
                incident: q.incident,
                workers: alive,
            });
            return Some(Decision::Nothing);
        }
        let n = policy::batch_size(pass.workers.len()).min(alive.len());
        Some(Decision::Continue {
            incident: q.incident,
            plan: Plan::RecycleWorkers(alive[..n].to_vec()),
            rest: alive[n..].to_vec(),
        })
    }

    /// The verdict on the action under verification, once there is one. A recycle is
    /// judged by its own workers (replaced, and their replacements under the line) and
    /// the master; a reload by every process.
    fn verify(&mut self, policy: &Policy, pass: &Pass<'_>) -> Decision {
        let Some(p) = &self.pending else {
            return Decision::Nothing;
        };
        let judged: Vec<(u64, u64)> = pass
            .procs
            .iter()
            .filter(|q| {
                p.kind != ActionKind::RecycleWorker
                    || q.role == Role::Master
                    || !p.before.contains(&q.id)
            })
            .map(|q| (q.fds, q.line))
            .collect();
        let after = policy::After {
            replace: &p.replace,
            workers: pass.workers,
            counts: &judged,
        };
        let fds_after = pass.procs.iter().map(|q| q.fds).max();
        let elapsed = pass.mono.saturating_duration_since(p.started);
        if policy::recovered(&after) {
            return self.finish(pass.mono, OutcomeResult::Recovered, fds_after, None);
        }
        if elapsed > policy.verify {
            let detail = if p.replace.iter().any(|w| pass.workers.contains(w)) {
                "workers were not replaced"
            } else {
                "fd counts are still over the line"
            };
            return self.finish(
                pass.mono,
                OutcomeResult::NotRecovered,
                fds_after,
                Some(detail.into()),
            );
        }
        Decision::Nothing
    }

    /// The decision for a vassal with no running master on this pass: an action under
    /// verification fails once its time is up.
    pub(crate) fn decide_stopped(&mut self, policy: &Policy, mono: Instant) -> Decision {
        match &self.pending {
            Some(p) if mono.saturating_duration_since(p.started) > policy.verify => self.finish(
                mono,
                OutcomeResult::NotRecovered,
                None,
                Some("the vassal's master is gone".into()),
            ),
            _ => Decision::Nothing,
        }
    }

    /// The vassal file was removed: an action under verification has vanished with it.
    pub(crate) fn removed(&mut self, mono: Instant) -> Decision {
        self.queue = None;
        if self.pending.is_none() {
            return Decision::Nothing;
        }
        self.finish(
            mono,
            OutcomeResult::Vanished,
            None,
            Some("the vassal file was removed".into()),
        )
    }

    /// Ends the verification: a new episode starts, and the ladder moves. After a
    /// recovered recycle, the rest of the leaking workers follow.
    fn finish(
        &mut self,
        mono: Instant,
        result: OutcomeResult,
        fds_after: Option<u64>,
        detail: Option<String>,
    ) -> Decision {
        self.noted = None;
        let Some(p) = self.pending.take() else {
            return Decision::Nothing;
        };
        self.step = match result {
            OutcomeResult::Recovered => Step::Gentlest,
            OutcomeResult::NotRecovered => Step::after_failed(p.kind),
            OutcomeResult::Vanished => self.step,
        };
        if result == OutcomeResult::Recovered && !p.rest.is_empty() {
            self.queue = Some(Queue {
                incident: p.incident.clone(),
                workers: p.rest,
            });
        }
        Decision::Outcome(Verdict {
            incident: p.incident,
            result,
            kind: p.kind,
            fds_after,
            seconds: mono.saturating_duration_since(p.started).as_secs_f64(),
            detail,
        })
    }

    /// An action of `incident` was taken: it counts for cooldown and is verified from
    /// now on. `replace` are the workers it means to replace, `before` every worker at
    /// the time, `rest` the leaking workers that follow.
    pub(crate) fn acted(&mut self, taken: Taken, incident: String, rest: Vec<ProcId>) {
        self.hist.learn(Past {
            at: taken.now,
            kind: taken.kind,
            manual: taken.manual,
        });
        if taken.manual {
            self.step = Step::Gentlest;
        }
        self.pending = Some(Pending {
            incident,
            kind: taken.kind,
            started: taken.mono,
            replace: taken.replace,
            before: taken.before,
            rest,
        });
    }

    /// An action of `kind` was tried and failed (a signal refused, a touch not allowed):
    /// the ladder climbs, so the next pass tries the next step instead of the same one.
    pub(crate) fn failed(&mut self, kind: ActionKind) {
        self.step = self.step.max(Step::after_failed(kind));
        self.noted = None;
        self.queue = None;
    }

    /// The incident this pass decided could not be recorded (the log is full or not
    /// writable): it is forgotten, so the very next pass decides and records it again,
    /// instead of taking it as recorded for a whole cooldown.
    pub(crate) fn unrecorded(&mut self) {
        self.noted = None;
    }

    /// The next workers of a leak (`Decision::Continue`) could not be recycled because
    /// their record could not be written first: they stay next, for the next pass.
    pub(crate) fn put_back(&mut self, incident: String, workers: Vec<ProcId>) {
        self.queue = Some(Queue { incident, workers });
    }

    /// The incident just decided was recorded as held or alerting, as `incident` with
    /// `reason`: from now on it is a lasting episode, reminded and closed.
    pub(crate) fn opened(&mut self, incident: String, reason: Reason, now: SystemTime) {
        if let Some(n) = &mut self.noted {
            n.open = Some(Open {
                incident,
                reason,
                since: now,
                said: now,
            });
        }
    }

    /// The last checks refused the action, for `reason`: the rest of a leak is not
    /// pursued, and the refusal lasts as an episode, unless it is that the process is
    /// gone, which the very next pass decides anew.
    pub(crate) fn refused(&mut self, incident: String, reason: Reason, now: SystemTime) {
        self.queue = None;
        if reason == Reason::PidChanged {
            self.noted = None;
            return;
        }
        // The decision's inputs said it could act; the checks found otherwise. The
        // episode's key says what they found, so that the pass whose inputs say it can
        // act again decides anew (and acts), instead of taking it as the same episode.
        if let Some(Note {
            key:
                NoteKey::Act {
                    ini_invalid,
                    emperor_up,
                    ..
                },
            ..
        }) = &mut self.noted
        {
            match reason {
                Reason::IniInvalid => *ini_invalid = true,
                Reason::NoEmperor => *emperor_up = false,
                _ => {}
            }
        }
        self.opened(incident, reason, now);
    }

    /// Ends the lasting episode, if one is open (the vassal file was removed).
    pub(crate) fn close(&mut self) -> Option<Open> {
        self.noted.take().and_then(|n| n.open)
    }

    /// The lasting episode, if one is open.
    #[must_use]
    pub(crate) fn open(&self) -> Option<&Open> {
        self.noted.as_ref().and_then(|n| n.open.as_ref())
    }

    /// Rebuilds every vassal's episode from the records of the incident log, oldest
    /// first: the actions (for cooldown and `max-reloads`, judged later under the
    /// current config) and the place on the ladder.
    #[must_use]
    pub(crate) fn replay<'a>(
        records: impl IntoIterator<Item = &'a Record>,
    ) -> HashMap<PathBuf, Episode> {
        let mut out: HashMap<PathBuf, Episode> = HashMap::new();
        let mut last_kind: HashMap<PathBuf, ActionKind> = HashMap::new();
        for r in records {
            let Some(ts) = crate::audit::parse_timestamp(&r.ts) else {
                continue;
            };
            let ep = out.entry(r.config.clone()).or_default();
            match &r.event {
                Event::Action(a) if !a.dry_run => {
                    let manual = a.is_manual();
                    ep.hist.learn(Past {
                        at: ts,
                        kind: a.action,
                        manual,
                    });
                    if manual {
                        ep.step = Step::Gentlest;
                    }
                    last_kind.insert(r.config.clone(), a.action);
                    // An action ends any lasting episode (logs before `ended` records).
                    ep.noted = None;
                }
                Event::Suppressed(s) if s.reason == Reason::ActionFailed => {
                    if let Some(kind) = s.action {
                        ep.step = ep.step.max(Step::after_failed(kind));
                    }
                }
                // An operator's refused reload (`manual: …`) is not the vassal's episode.
                Event::Suppressed(s)
                    if s.reason != Reason::PidChanged
                        && !s
                            .detail
                            .as_deref()
                            .is_some_and(|d| d.starts_with("manual:")) =>
                {
                    ep.noted = Some(Note {
                        at: ts,
                        key: NoteKey::Replayed(s.reason.clone()),
                        would: Plan::Alert(s.reason.clone()),
                        open: Some(Open {
                            incident: r.incident.clone(),
                            reason: s.reason.clone(),
                            since: ts,
                            said: ts,
                        }),
                    });
                }
                // A reminder carries its episode whole: one whose start was rotated
                // away is rebuilt from it.
                Event::Reminder(e) => match &mut ep.noted {
                    Some(Note { open: Some(o), .. }) if o.incident == r.incident => o.said = ts,
                    _ => {
                        ep.noted = Some(Note {
                            at: ts,
                            key: NoteKey::Replayed(e.reason.clone()),
                            would: Plan::Alert(e.reason.clone()),
                            open: Some(Open {
                                incident: r.incident.clone(),
                                reason: e.reason.clone(),
                                since: crate::audit::parse_timestamp(&e.since).unwrap_or(ts),
                                said: ts,
                            }),
                        });
                    }
                },
                Event::Ended(_) if ep.open().is_some_and(|o| o.incident == r.incident) => {
                    ep.noted = None;
                }
                Event::Outcome(o) => {
                    ep.step = match (o.result, last_kind.get(&r.config)) {
                        (OutcomeResult::NotRecovered, Some(kind)) => Step::after_failed(*kind),
                        (OutcomeResult::Vanished, _) => ep.step,
                        _ => Step::Gentlest,
                    };
                }
                _ => {}
            }
        }
        out
    }
}

/// An action as it was taken, for `Episode::acted`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Taken {
    pub now: SystemTime,
    pub mono: Instant,
    pub kind: ActionKind,
    /// An operator's (`vassal-warden reload`): it resets the ladder and the count of
    /// `max-reloads`.
    pub manual: bool,
    pub replace: Vec<ProcId>,
    pub before: Vec<ProcId>,
}

/// How long the same episode with the same inputs goes without being recorded again.
fn renote(policy: &Policy) -> Duration {
    policy.cooldown.max(RENOTE_AT_LEAST)
}

/// The shortest time between two records of one unchanged episode, whatever `cooldown`.
pub(crate) const RENOTE_AT_LEAST: Duration = Duration::from_secs(300);

/// The reason an incident's record gives when it holds or alerts; `None` when it acts.
fn held_reason(then: &Then) -> Option<Reason> {
    match then {
        Then::Hold { hold, .. } => Some(hold.reason()),
        Then::Alert { reason, .. } => Some(reason.clone()),
        Then::Act { .. } => None,
    }
}

fn since(now: SystemTime, then: SystemTime) -> Duration {
    now.duration_since(then).unwrap_or_default()
}

fn key_of(hold: &Result<(), Hold>, facts: &Facts, step: Step, policy: &Policy) -> NoteKey {
    match hold {
        Err(h) => NoteKey::Hold(h.reason()),
        Ok(()) => NoteKey::Act {
            ini_invalid: facts.ini_error.is_some(),
            pending_change: facts.pending_change,
            emperor_up: facts.emperor_up,
            step,
            action: policy.action,
        },
    }
}

fn then(
    hold: Result<(), Hold>,
    plan: Plan,
    note: Option<String>,
    s: &Situation,
    facts: &Facts,
) -> Then {
    match (hold, plan) {
        (Err(hold), would) => Then::Hold { hold, would },
        (Ok(()), Plan::Alert(reason)) => {
            // Say why the file cannot be touched, not only that it cannot.
            let note = match (&reason, &facts.ini_error) {
                (Reason::IniInvalid, Some(e)) => {
                    Some(format!("{e}; {}", note.as_deref().unwrap_or_default()))
                }
                _ => note,
            };
            Then::Alert { reason, note }
        }
        (Ok(()), plan) => {
            let rest = match &plan {
                Plan::RecycleWorkers(now) => s
                    .leaking
                    .iter()
                    .filter(|w| !now.contains(w))
                    .copied()
                    .collect(),
                _ => Vec::new(),
            };
            Then::Act { plan, note, rest }
        }
    }
}

/// The target a report's leak is in: the first that grew, when growth is known; else the
/// largest.
fn leading(report: &Report) -> Option<&Group> {
    report
        .top
        .iter()
        .find(|t| t.growth.is_some_and(|g| g > 0))
        .or_else(|| report.top.first())
}

/// Whether a worker's leak lives in its master: its leading target is held through the
/// master for at least half of its count. Only a reload of the master clears such a leak.
#[must_use]
pub(crate) fn mostly_inherited(report: &Report) -> bool {
    leading(report).is_some_and(|t| {
        let inherited = t.inherited.unwrap_or(0);
        inherited > 0 && inherited * 2 >= t.count
    })
}

/// Whether `other` leaks the same way as `offender`: most of what `other` grew since the
/// warden first saw it is in the offender's leading target.
#[must_use]
pub(crate) fn same_leak(offender: &Report, other: &Report) -> bool {
    let Some(lead) = leading(offender).filter(|t| t.growth.is_some_and(|g| g > 0)) else {
        return false;
    };
    let grown: i64 = other
        .top
        .iter()
        .filter_map(|t| t.growth)
        .filter(|g| *g > 0)
        .sum();
    let in_lead = other
        .top
        .iter()
        .find(|t| t.target == lead.target && t.kind == lead.kind)
        .and_then(|t| t.growth)
        .unwrap_or(0);
    in_lead > 0 && in_lead * 2 >= grown
}

/// How long an action takes on this host, from action to verified recovery, learned
/// from the warden's own outcomes: a new figure counts at once when it is longer, and
/// lowers the estimate slowly when it is shorter, so that one quick recovery does not make
/// the warden late for the next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Timings {
    recycle: Duration,
    reload: Duration,
}

impl Default for Timings {
    /// Before any outcome: a worker is replaced in 1–2 s, an Emperor notices a touch
    /// within its 3 s scan and the master re-executes in about 2 s (uwsgi-facts.md).
    fn default() -> Self {
        Timings {
            recycle: Duration::from_secs(3),
            reload: Duration::from_secs(6),
        }
    }
}

impl Timings {
    /// Learns from an action of `kind` that recovered after `seconds`.
    pub(crate) fn observe(&mut self, kind: ActionKind, seconds: f64) {
        let Ok(d) = Duration::try_from_secs_f64(seconds) else {
            return;
        };
        let slot = match kind {
            ActionKind::RecycleWorker => &mut self.recycle,
            ActionKind::ChainReload | ActionKind::Touch => &mut self.reload,
        };
        *slot = if d >= *slot {
            d
        } else {
            slot.mul_f64(0.8).saturating_add(d.mul_f64(0.2))
        };
    }

    /// How long acting on a process of `role` takes: a worker is recycled; a master (or
    /// anything else, which is only ever cured by a reload) is reloaded.
    #[must_use]
    pub(crate) fn of(&self, role: Role) -> Duration {
        match role {
            Role::Worker => self.recycle,
            _ => self.reload,
        }
    }

    /// Learns from every recovered outcome in the log.
    pub(crate) fn replay<'a>(&mut self, records: impl IntoIterator<Item = &'a Record>) {
        let mut last_kind: HashMap<&Path, ActionKind> = HashMap::new();
        for r in records {
            match &r.event {
                Event::Action(a) if !a.dry_run => {
                    last_kind.insert(&r.config, a.action);
                }
                Event::Outcome(o) if o.result == OutcomeResult::Recovered => {
                    if let Some(kind) = last_kind.get(r.config.as_path()) {
                        self.observe(*kind, o.seconds);
                    }
                }
                _ => {}
            }
        }
    }
}

/// How bad a concern is, in the Nagios tradition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Level {
    Ok,
    /// Something to look at: over the line, a reload held back, a leak that keeps coming.
    Warning,
    /// The site is failing or about to, and the warden will not fix it by itself now.
    Critical,
}

impl Level {
    /// The exit code of a monitoring check: 0, 1, 2.
    #[must_use]
    pub(crate) fn exit_code(self) -> i32 {
        self as i32
    }
}

/// Something wrong with a vassal, said for a person.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Concern {
    pub level: Level,
    pub text: String,
}

/// How a concern about what keeps the warden from acting begins.
pub(crate) const CANNOT_ACT: &str = "the warden cannot act on it";

/// A process counts as at its limit within this fraction of it: the next requests fail.
const AT_LIMIT: f64 = 0.98;

/// What is wrong with a vassal now, from one fresh sample of its processes (`procs`,
/// master first), its episode as rebuilt from the log, the policy in force, and why the
/// warden could not act on it (`cannot_act`: no Emperor, a broken file). A process over
/// its line is a warning while the warden can still act on it, and critical when it is
/// at its limit or the warden is held back or has given up.
#[must_use]
pub(crate) fn assess(
    ep: &Episode,
    policy: &Policy,
    now: SystemTime,
    procs: &[Proc],
    cannot_act: Option<&str>,
) -> Vec<Concern> {
    let mut out = Vec::new();
    let over: Vec<&Proc> = procs.iter().filter(|p| p.over()).collect();
    let mut say = |level, text: String| out.push(Concern { level, text });
    for p in &over {
        let at_limit = p.fds as f64 >= p.limit as f64 * AT_LIMIT;
        say(
            if at_limit {
                Level::Critical
            } else {
                Level::Warning
            },
            format!(
                "{} {} holds {} of {} fds ({:.1}%){}",
                p.role,
                p.id.pid,
                p.fds,
                p.limit,
                p.fds as f64 * 100.0 / p.limit.max(1) as f64,
                if at_limit {
                    ": at its limit"
                } else {
                    ", over the line"
                }
            ),
        );
    }
    let stuck = if over.is_empty() {
        Level::Warning
    } else {
        Level::Critical
    };
    if let Some(why) = cannot_act {
        say(stuck, format!("{CANNOT_ACT}: {why}"));
    }
    match ep.step {
        Step::Exhausted if !over.is_empty() => say(
            Level::Critical,
            "given up: a reload did not bring the fds down; alerting only until a person acts (`vassal-warden reload` lifts it)".into(),
        ),
        Step::Touch if !over.is_empty() => say(
            Level::Warning,
            "a recycle did not work or was refused; a touch is next".into(),
        ),
        _ => {}
    }
    match policy::gate(policy, now, &ep.hist, &Plan::Touch, false, false) {
        Err(Hold::Flapping { recent, next }) => say(
            stuck,
            format!(
                "flapping: {recent} reloads within {}, the leak comes back; next reload allowed in {} — the code needs a fix",
                humantime::format_duration(policy.max_reloads_window),
                humantime::format_duration(Duration::from_secs(next.as_secs()))
            ),
        ),
        Err(Hold::Cooldown { remaining }) if !over.is_empty() => say(
            Level::Warning,
            format!(
                "in cooldown: reloaded less than {} ago; next reload allowed in {}",
                humantime::format_duration(policy.cooldown),
                humantime::format_duration(Duration::from_secs(remaining.as_secs()))
            ),
        ),
        _ => {}
    }
    out
}

/// The detail of a hold, for its `suppressed` record.
#[must_use]
pub(crate) fn hold_detail(
    hold: &Hold,
    policy: &Policy,
    max_concurrent: usize,
    plan: &str,
) -> String {
    let human = |d: Duration| humantime::format_duration(Duration::from_secs(d.as_secs()));
    match hold {
        Hold::Flapping { recent, next } => format!(
            "{recent} reloads within {}: the leak comes back after each; next {plan} allowed in {} — the code leaks and needs a fix",
            humantime::format_duration(policy.max_reloads_window),
            human(*next)
        ),
        Hold::Cooldown { remaining } => format!(
            "reloaded less than {} ago; next {plan} allowed in {}",
            humantime::format_duration(policy.cooldown),
            human(*remaining)
        ),
        Hold::Busy => {
            format!("{max_concurrent} action(s) already in progress on this host (max-concurrent)")
        }
        Hold::DryRun => format!("dry run: would {plan}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Action, Outcome, Suppressed};
    use crate::config::{ActionMode, Predict, Threshold};
    use crate::forensics::Kind;

    fn id(pid: i32) -> ProcId {
        ProcId { pid, start_time: 1 }
    }

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    fn policy() -> Policy {
        Policy {
            reload_at: Threshold::Count(40),
            for_samples: 1,
            predict: Predict::Off,
            cooldown: Duration::from_secs(600),
            verify: Duration::from_secs(30),
            ..Policy::default()
        }
    }

    fn touching() -> Policy {
        Policy {
            action: ActionMode::Touch,
            ..policy()
        }
    }

    fn proc(pid: i32, role: Role, fds: u64) -> Proc {
        Proc {
            id: id(pid),
            role,
            fds,
            limit: 64,
            line: 40,
            fire: (fds >= 40).then_some(Fire::ReloadAt { line: 40 }),
        }
    }

    fn target(name: &str, count: u64, growth: Option<i64>, inherited: Option<u64>) -> Group {
        Group {
            target: name.into(),
            kind: Kind::File,
            count,
            growth,
            inherited,
        }
    }

    fn cat(count: u64, growth: Option<i64>, inherited: Option<u64>) -> Group {
        target("/srv/app/static/cat.jpg", count, growth, inherited)
    }

    fn report(top: Vec<Group>) -> Report {
        Report {
            pid: 1,
            fds: 0,
            top,
            by_kind: std::collections::BTreeMap::new(),
            growth: None,
        }
    }

    /// Lookups from plain data, counting the reads asked for.
    #[derive(Default)]
    struct Fake {
        facts: Facts,
        others: Vec<Past>,
        /// What each PID holds; a PID not listed leaks nothing.
        tops: HashMap<i32, Vec<Group>>,
        gone: bool,
        attributed: Vec<i32>,
        log_reads: usize,
    }

    impl Lookups for Fake {
        fn recorded_actions(&mut self) -> Vec<Past> {
            self.log_reads += 1;
            self.others.clone()
        }
        fn facts(&mut self) -> Facts {
            self.facts.clone()
        }
        fn attribute(&mut self, p: &Proc) -> Option<Report> {
            self.attributed.push(p.id.pid);
            (!self.gone).then(|| report(self.tops.get(&p.id.pid).cloned().unwrap_or_default()))
        }
    }

    /// An Emperor up; PIDs 10 (master) to 14 are read as given, and `leaking` PIDs hold
    /// 30 more of the cat than when first seen.
    fn up(leaking: &[i32]) -> Fake {
        Fake {
            facts: Facts {
                emperor_up: true,
                ..Facts::default()
            },
            tops: leaking
                .iter()
                .map(|p| (*p, vec![cat(30, Some(30), None)]))
                .collect(),
            ..Fake::default()
        }
    }

    const WORKERS: [ProcId; 4] = [
        ProcId {
            pid: 11,
            start_time: 1,
        },
        ProcId {
            pid: 12,
            start_time: 1,
        },
        ProcId {
            pid: 13,
            start_time: 1,
        },
        ProcId {
            pid: 14,
            start_time: 1,
        },
    ];

    fn pass<'a>(now: u64, mono: Instant, workers: &'a [ProcId], procs: &'a [Proc]) -> Pass<'a> {
        Pass {
            now: at(now),
            mono: mono + Duration::from_secs(now),
            workers,
            procs,
            busy: false,
            dry_run: false,
            remind: crate::config::DEFAULT_REMIND,
        }
    }

    /// `pass`, with a lasting episode reminded every 1000 s.
    fn pass_reminding<'a>(
        now: u64,
        mono: Instant,
        workers: &'a [ProcId],
        procs: &'a [Proc],
    ) -> Pass<'a> {
        Pass {
            remind: Duration::from_secs(1000),
            ..pass(now, mono, workers, procs)
        }
    }

    /// Touches, once an hour at most.
    fn touching_once_an_hour() -> Policy {
        Policy {
            max_reloads: 1,
            ..touching()
        }
    }

    /// A vassal touched at 0, recovered at 5, over the line again at 60: flapping,
    /// recorded as incident `i2`. The workers after the touch, and the processes over.
    fn flapping_at_60(p: &Policy, mono: Instant) -> (Episode, Fake, [ProcId; 1], [Proc; 2]) {
        let mut ep = Episode::default();
        let mut fake = up(&[]);
        let over = [proc(10, Role::Master, 45)];
        let d = ep.decide(p, &pass_reminding(0, mono, &WORKERS, &over), &mut fake);
        assert!(matches!(
            then(d),
            Then::Act {
                plan: Plan::Touch,
                ..
            }
        ));
        ep.acted(
            taken(0, mono, ActionKind::Touch, &WORKERS),
            "i1".into(),
            vec![],
        );
        let fresh_workers = [id(15)];
        let fresh = [proc(10, Role::Master, 14), proc(15, Role::Worker, 10)];
        let d = ep.decide(
            p,
            &pass_reminding(5, mono, &fresh_workers, &fresh),
            &mut fake,
        );
        assert!(matches!(d, Decision::Outcome(_)), "{d:?}");
        let again = [proc(10, Role::Master, 50), proc(15, Role::Worker, 10)];
        let Decision::Incident(inc) = ep.decide(
            p,
            &pass_reminding(60, mono, &fresh_workers, &again),
            &mut fake,
        ) else {
            panic!("no incident");
        };
        assert!(matches!(
            inc.then,
            Then::Hold {
                hold: Hold::Flapping { .. },
                ..
            }
        ));
        assert_eq!(inc.closes, None);
        ep.opened("i2".into(), Reason::Flapping, at(60));
        (ep, fake, fresh_workers, again)
    }

    #[test]
    fn a_lasting_episode_is_recorded_once_reminded_then_closed_when_it_changes() {
        let mono = Instant::now();
        let p = touching_once_an_hour();
        // The leak comes back at once: flapping, recorded once...
        let (mut ep, mut fake, fresh_workers, again) = flapping_at_60(&p, mono);
        // ...then nothing until `remind` has passed since it was last said...
        for s in [62, 500, 1059] {
            let d = ep.decide(
                &p,
                &pass_reminding(s, mono, &fresh_workers, &again),
                &mut fake,
            );
            assert_eq!(d, Decision::Nothing, "at {s}");
        }
        let opened = Open {
            incident: "i2".into(),
            reason: Reason::Flapping,
            since: at(60),
            said: at(60),
        };
        let d = ep.decide(
            &p,
            &pass_reminding(1060, mono, &fresh_workers, &again),
            &mut fake,
        );
        assert_eq!(
            d,
            Decision::Remind {
                open: opened.clone(),
                fds: Some(50)
            }
        );
        let d = ep.decide(
            &p,
            &pass_reminding(2000, mono, &fresh_workers, &again),
            &mut fake,
        );
        assert_eq!(d, Decision::Nothing);
        let d = ep.decide(
            &p,
            &pass_reminding(2060, mono, &fresh_workers, &again),
            &mut fake,
        );
        assert!(
            matches!(d, Decision::Remind { ref open, .. } if open.said == at(1060)),
            "{d:?}"
        );
        // The hour is over: a reload is allowed again, and the flapping episode ends with it.
        let Decision::Incident(inc) = ep.decide(
            &p,
            &pass_reminding(3601, mono, &fresh_workers, &again),
            &mut fake,
        ) else {
            panic!("no incident");
        };
        assert!(matches!(
            inc.then,
            Then::Act {
                plan: Plan::Touch,
                ..
            }
        ));
        let (closed, why) = inc.closes.expect("the flapping episode is closed");
        assert_eq!(
            (closed.incident.as_str(), closed.reason),
            ("i2", Reason::Flapping)
        );
        assert_eq!(why, "an action is allowed now");
    }

    /// `action = alert`: a master over its line at 0, recorded as incident `i1`, alert
    /// only. The policy and the processes over.
    fn alerting_at_0(mono: Instant) -> (Episode, Fake, Policy, [Proc; 1]) {
        let p = Policy {
            action: ActionMode::Alert,
            ..policy()
        };
        let mut ep = Episode::default();
        let mut fake = up(&[]);
        let over = [proc(10, Role::Master, 45)];
        let d = ep.decide(&p, &pass(0, mono, &WORKERS, &over), &mut fake);
        assert!(matches!(
            then(d),
            Then::Alert {
                reason: Reason::AlertOnly,
                ..
            }
        ));
        ep.opened("i1".into(), Reason::AlertOnly, at(0));
        (ep, fake, p, over)
    }

    #[test]
    fn a_lasting_episode_ends_when_every_process_is_back_under_the_line() {
        let mono = Instant::now();
        let (mut ep, mut fake, p, over) = alerting_at_0(mono);
        assert_eq!(
            ep.decide(&p, &pass(10, mono, &WORKERS, &over), &mut fake),
            Decision::Nothing
        );
        let under = [proc(10, Role::Master, 20)];
        let d = ep.decide(&p, &pass(20, mono, &WORKERS, &under), &mut fake);
        let Decision::Ended { open, fds, detail } = d else {
            panic!("not ended: {d:?}");
        };
        assert_eq!((open.incident.as_str(), fds), ("i1", Some(20)));
        assert_eq!(detail, "every process is back under its line");
        // Ended once; the next time over the line is a new episode, with nothing to close.
        assert_eq!(
            ep.decide(&p, &pass(30, mono, &WORKERS, &under), &mut fake),
            Decision::Nothing
        );
        let Decision::Incident(inc) = ep.decide(&p, &pass(40, mono, &WORKERS, &over), &mut fake)
        else {
            panic!("no incident");
        };
        assert_eq!(inc.closes, None);
    }

    #[test]
    fn a_change_of_reason_closes_the_episode_and_records_the_new_one() {
        let mono = Instant::now();
        let p = touching();
        let mut ep = Episode::default();
        let mut fake = up(&[]);
        let over = [proc(10, Role::Master, 45)];
        // The Emperor is gone: the touch is refused, and that lasts.
        let d = ep.decide(&p, &pass(0, mono, &WORKERS, &over), &mut fake);
        assert!(matches!(then(d), Then::Act { .. }));
        ep.refused("i1".into(), Reason::NoEmperor, at(0));
        fake.facts.emperor_up = false;
        assert_eq!(
            ep.decide(&p, &pass(10, mono, &WORKERS, &over), &mut fake),
            Decision::Nothing
        );
        // The file stops reading as a vassal config: a new reason, a new episode.
        fake.facts.ini_error = Some("broken".into());
        let Decision::Incident(inc) = ep.decide(&p, &pass(20, mono, &WORKERS, &over), &mut fake)
        else {
            panic!("no incident");
        };
        assert!(
            matches!(
                &inc.then,
                Then::Alert {
                    reason: Reason::IniInvalid,
                    ..
                }
            ),
            "{:?}",
            inc.then
        );
        let (closed, why) = inc.closes.expect("the refusal is closed");
        assert_eq!(
            (closed.incident.as_str(), why.as_str()),
            ("i1", "it is ini_invalid now")
        );
    }

    #[test]
    fn a_refusal_ends_when_what_refused_is_fixed_and_the_action_follows() {
        let mono = Instant::now();
        let p = touching();
        let mut ep = Episode::default();
        let mut fake = up(&[]);
        let over = [proc(10, Role::Master, 45)];
        // The file read fine when decided, not when checked (a deploy mid-write).
        let _ = ep.decide(&p, &pass(0, mono, &WORKERS, &over), &mut fake);
        ep.refused("i1".into(), Reason::IniInvalid, at(0));
        // It reads fine now: the touch is decided again, and the refusal ends first.
        let Decision::Incident(inc) = ep.decide(&p, &pass(2, mono, &WORKERS, &over), &mut fake)
        else {
            panic!("not decided again");
        };
        assert!(
            matches!(
                inc.then,
                Then::Act {
                    plan: Plan::Touch,
                    ..
                }
            ),
            "{:?}",
            inc.then
        );
        let (closed, why) = inc.closes.expect("the refusal is closed");
        assert_eq!(
            (closed.incident.as_str(), why.as_str()),
            ("i1", "an action is allowed now")
        );
    }

    #[test]
    fn a_reread_config_that_lifts_alert_only_is_decided_anew() {
        let mono = Instant::now();
        let (mut ep, mut fake, alert, over) = alerting_at_0(mono);
        assert_eq!(
            ep.decide(&alert, &pass(2, mono, &WORKERS, &over), &mut fake),
            Decision::Nothing
        );
        let Decision::Incident(inc) =
            ep.decide(&touching(), &pass(4, mono, &WORKERS, &over), &mut fake)
        else {
            panic!("not decided anew");
        };
        assert!(
            matches!(
                inc.then,
                Then::Act {
                    plan: Plan::Touch,
                    ..
                }
            ),
            "{:?}",
            inc.then
        );
        assert_eq!(inc.closes.map(|(o, _)| o.incident).as_deref(), Some("i1"));
    }

    #[test]
    fn an_episode_does_not_end_while_a_count_hovers_at_its_line_or_nothing_was_sampled() {
        let mono = Instant::now();
        let (mut ep, mut fake, p, _) = alerting_at_0(mono);
        // Just under the line, still firing (in the hysteresis band): the same episode.
        let hovering = [Proc {
            fds: 39,
            ..proc(10, Role::Master, 45)
        }];
        assert!(hovering[0].fire.is_some());
        for s in [2, 4, 6] {
            let d = ep.decide(&p, &pass(s, mono, &WORKERS, &hovering), &mut fake);
            assert_eq!(d, Decision::Nothing, "at {s}");
        }
        // A pass that sampled nothing (every read failed) ends nothing.
        assert_eq!(
            ep.decide(&p, &pass(8, mono, &WORKERS, &[]), &mut fake),
            Decision::Nothing
        );
        assert!(ep.open().is_some());
    }

    #[test]
    fn a_process_gone_before_the_action_is_decided_again_not_remembered() {
        let mono = Instant::now();
        let p = touching();
        let mut ep = Episode::default();
        let mut fake = up(&[]);
        let over = [proc(10, Role::Master, 45)];
        let _ = ep.decide(&p, &pass(0, mono, &WORKERS, &over), &mut fake);
        ep.refused("i1".into(), Reason::PidChanged, at(0));
        assert!(ep.open().is_none());
        let d = ep.decide(&p, &pass(2, mono, &WORKERS, &over), &mut fake);
        assert!(matches!(then(d), Then::Act { .. }));
    }

    #[test]
    fn a_lasting_episode_rebuilt_from_the_log_goes_on_without_a_new_record() {
        let mono = Instant::now();
        let p = touching_once_an_hour();
        let flapping = |detail: &str| {
            Event::Suppressed(Suppressed {
                reason: Reason::Flapping,
                action: None,
                detail: Some(detail.into()),
            })
        };
        let episode = |seconds: f64| crate::audit::Episode {
            reason: Reason::Flapping,
            since: crate::audit::timestamp(at(60)),
            seconds,
            fds: None,
            detail: None,
        };
        let of = |ts: u64, incident: &str, event: Event| Record {
            incident: incident.into(),
            ..rec(ts, "/v/a.ini", event)
        };
        let mut log = vec![
            of(0, "a", action(ActionKind::Touch, false, None)),
            of(5, "a", outcome(OutcomeResult::Recovered, 5.0)),
            of(60, "old", flapping("held")),
            of(1060, "old", Event::Reminder(episode(1000.0))),
        ];
        let mut ep = Episode::replay(&log).remove(Path::new("/v/a.ini")).unwrap();
        assert_eq!(
            ep.open().map(|o| (o.incident.as_str(), o.said)),
            Some(("old", at(1060)))
        );
        // Still flapping after the restart: the same episode, no new record...
        let mut fake = up(&[]);
        let over = [proc(10, Role::Master, 45)];
        let d = ep.decide(&p, &pass_reminding(1100, mono, &WORKERS, &over), &mut fake);
        assert_eq!(d, Decision::Nothing);
        // ...reminded on time, under its own incident.
        let d = ep.decide(&p, &pass_reminding(2060, mono, &WORKERS, &over), &mut fake);
        assert!(
            matches!(d, Decision::Remind { ref open, .. } if open.incident == "old"),
            "{d:?}"
        );
        // An episode the log closed is not rebuilt.
        log.push(of(1500, "old", Event::Ended(episode(1440.0))));
        let ep = Episode::replay(&log).remove(Path::new("/v/a.ini")).unwrap();
        assert!(ep.open().is_none());
        // An episode whose start was rotated away is rebuilt from its last reminder.
        let reminded = [of(5000, "older", Event::Reminder(episode(4940.0)))];
        let ep = Episode::replay(&reminded)
            .remove(Path::new("/v/a.ini"))
            .unwrap();
        let o = ep.open().expect("rebuilt from the reminder");
        assert_eq!(
            (o.incident.as_str(), o.since, o.said),
            ("older", at(60), at(5000))
        );
        // Nor is an operator's refused reload an episode of the vassal.
        let refused = Event::Suppressed(Suppressed {
            reason: Reason::NoEmperor,
            action: None,
            detail: Some("manual: deploy: no running Emperor watches this vassal".into()),
        });
        log.push(of(1600, "op", refused));
        let ep = Episode::replay(&log).remove(Path::new("/v/a.ini")).unwrap();
        assert!(ep.open().is_none());
    }

    fn then(d: Decision) -> Then {
        match d {
            Decision::Incident(i) => i.then,
            other => panic!("expected an incident, got {other:?}"),
        }
    }

    fn taken(now: u64, mono: Instant, kind: ActionKind, replace: &[ProcId]) -> Taken {
        Taken {
            now: at(now),
            mono: mono + Duration::from_secs(now),
            kind,
            manual: false,
            replace: replace.to_vec(),
            before: WORKERS.to_vec(),
        }
    }

    #[test]
    fn the_offender_is_the_process_closest_to_its_line() {
        let mono = Instant::now();
        let procs = [
            proc(10, Role::Master, 14),
            proc(11, Role::Worker, 41),
            Proc {
                line: 20,
                fire: Some(Fire::ReloadAt { line: 20 }),
                ..proc(12, Role::Worker, 30)
            },
            proc(13, Role::Worker, 10),
        ];
        let mut fake = up(&[11, 12]);
        let d = Episode::default().decide(&policy(), &pass(0, mono, &WORKERS, &procs), &mut fake);
        let Decision::Incident(inc) = d else {
            panic!("no incident: {d:?}");
        };
        // 30 of a line of 20 is further over than 41 of 40.
        assert_eq!(inc.offender.id, id(12));
        // The offender first, then every other worker, most urgent first.
        assert_eq!(fake.attributed, [12, 11, 13]);
        // Both leaking workers are recycled, half of the four workers at once.
        assert_eq!(
            inc.then,
            Then::Act {
                plan: Plan::RecycleWorkers(vec![id(12), id(11)]),
                note: None,
                rest: vec![]
            }
        );
    }

    #[test]
    fn nothing_fired_means_nothing_read_and_nothing_recorded() {
        let mono = Instant::now();
        let procs = [proc(10, Role::Master, 14), proc(11, Role::Worker, 39)];
        let mut fake = up(&[11]);
        let d = Episode::default().decide(&policy(), &pass(0, mono, &WORKERS, &procs), &mut fake);
        assert_eq!(d, Decision::Nothing);
        assert!(fake.attributed.is_empty());
        assert_eq!(fake.log_reads, 0);
    }

    #[test]
    fn a_hold_is_recorded_once_per_episode_and_not_read_again() {
        let mono = Instant::now();
        let p = touching();
        let over = [proc(10, Role::Master, 45)];
        let mut ep = Episode::default();
        let mut fake = up(&[]);
        assert!(matches!(
            then(ep.decide(&p, &pass(0, mono, &WORKERS, &over), &mut fake)),
            Then::Act {
                plan: Plan::Touch,
                ..
            }
        ));
        ep.acted(
            taken(0, mono, ActionKind::Touch, &WORKERS),
            "i1".into(),
            vec![],
        );
        // The workers were replaced and the vassal is back under the line.
        let fresh_workers = [id(15)];
        let fresh = [proc(10, Role::Master, 14), proc(15, Role::Worker, 10)];
        let Decision::Outcome(v) = ep.decide(&p, &pass(5, mono, &fresh_workers, &fresh), &mut fake)
        else {
            panic!("no outcome");
        };
        assert_eq!(
            (v.result, v.incident.as_str()),
            (OutcomeResult::Recovered, "i1")
        );
        assert!((v.seconds - 5.0).abs() < 1e-9);
        // The master leaks again within the cooldown: one hold is recorded...
        let again = [proc(10, Role::Master, 50), proc(15, Role::Worker, 10)];
        let hold = then(ep.decide(&p, &pass(60, mono, &fresh_workers, &again), &mut fake));
        assert!(
            matches!(&hold, Then::Hold { hold: Hold::Cooldown { remaining }, would: Plan::Touch }
                if *remaining == Duration::from_secs(540)),
            "{hold:?}"
        );
        // ...and not again on the next passes, which read nothing more.
        let reads = fake.attributed.len();
        for s in [62, 64, 300] {
            let d = ep.decide(&p, &pass(s, mono, &fresh_workers, &again), &mut fake);
            assert_eq!(d, Decision::Nothing);
        }
        assert_eq!(fake.attributed.len(), reads);
        // When the cooldown is over, it acts.
        assert!(matches!(
            then(ep.decide(&p, &pass(601, mono, &fresh_workers, &again), &mut fake)),
            Then::Act {
                plan: Plan::Touch,
                ..
            }
        ));
    }

    #[test]
    fn an_incident_that_could_not_be_recorded_is_decided_again_on_the_next_pass() {
        let mono = Instant::now();
        let p = touching();
        let over = [proc(10, Role::Master, 45)];
        let mut ep = Episode::default();
        let mut fake = up(&[]);
        let first = then(ep.decide(&p, &pass(0, mono, &WORKERS, &over), &mut fake));
        assert!(
            matches!(
                first,
                Then::Act {
                    plan: Plan::Touch,
                    ..
                }
            ),
            "{first:?}"
        );
        // Its `detected` record could not be written: nothing was done, and the very
        // next pass decides the same again instead of waiting out a cooldown.
        ep.unrecorded();
        let again = then(ep.decide(&p, &pass(2, mono, &WORKERS, &over), &mut fake));
        assert_eq!(again, first);
        // Once recorded (not forgotten), the same episode is not recorded again.
        assert_eq!(
            ep.decide(&p, &pass(4, mono, &WORKERS, &over), &mut fake),
            Decision::Nothing
        );
    }

    #[test]
    fn workers_put_back_are_next_again() {
        let mono = Instant::now();
        let p = policy();
        let mut ep = Episode::default();
        let mut fake = up(&[12]);
        let workers = [id(11), id(12)];
        let procs = [
            proc(10, Role::Master, 14),
            proc(11, Role::Worker, 10),
            proc(12, Role::Worker, 41),
        ];
        ep.put_back("i1".into(), vec![id(12)]);
        assert_eq!(
            ep.decide(&p, &pass(0, mono, &workers, &procs), &mut fake),
            Decision::Continue {
                incident: "i1".into(),
                plan: Plan::RecycleWorkers(vec![id(12)]),
                rest: vec![]
            }
        );
    }

    #[test]
    fn another_worker_crossing_after_a_recycle_is_recycled_at_once() {
        let mono = Instant::now();
        let p = policy();
        let mut ep = Episode::default();
        let mut fake = up(&[11]);
        let first = [
            proc(10, Role::Master, 14),
            proc(11, Role::Worker, 45),
            proc(12, Role::Worker, 20),
        ];
        let workers = [id(11), id(12)];
        assert!(matches!(
            then(ep.decide(&p, &pass(0, mono, &workers, &first), &mut fake)),
            Then::Act { plan: Plan::RecycleWorkers(ref w), .. } if *w == [id(11)]
        ));
        ep.acted(
            Taken {
                before: workers.to_vec(),
                ..taken(0, mono, ActionKind::RecycleWorker, &[id(11)])
            },
            "i1".into(),
            vec![],
        );
        // 11 replaced by 15; 12 is still busy, but it was not acted on: recovered.
        let replaced = [id(15), id(12)];
        let after = [
            proc(10, Role::Master, 14),
            proc(15, Role::Worker, 10),
            proc(12, Role::Worker, 38),
        ];
        assert!(matches!(
            ep.decide(&p, &pass(3, mono, &replaced, &after), &mut fake),
            Decision::Outcome(Verdict {
                result: OutcomeResult::Recovered,
                ..
            })
        ));
        // 46 s later 12 crosses: recycled as gently, no cooldown in the way.
        fake.tops.insert(12, vec![cat(30, Some(30), None)]);
        let crossed = [
            proc(10, Role::Master, 14),
            proc(15, Role::Worker, 10),
            proc(12, Role::Worker, 44),
        ];
        assert_eq!(
            then(ep.decide(&p, &pass(46, mono, &replaced, &crossed), &mut fake)),
            Then::Act {
                plan: Plan::RecycleWorkers(vec![id(12)]),
                note: None,
                rest: vec![]
            }
        );
    }

    #[test]
    fn a_leak_in_several_workers_is_one_leak_recycled_in_turns() {
        let mono = Instant::now();
        let p = policy();
        let mut ep = Episode::default();
        // 11 is over the line; 12 leaks the same file but is not over yet; 13 is fine.
        let mut fake = up(&[11, 12]);
        fake.tops
            .insert(13, vec![target("/srv/app/db.sqlite", 3, Some(1), None)]);
        let workers = [id(11), id(12), id(13)];
        let procs = [
            proc(10, Role::Master, 14),
            proc(11, Role::Worker, 45),
            proc(12, Role::Worker, 30),
            proc(13, Role::Worker, 12),
        ];
        let Then::Act { plan, rest, .. } =
            then(ep.decide(&p, &pass(0, mono, &workers, &procs), &mut fake))
        else {
            panic!("no action");
        };
        // One of three at a time; 12 follows.
        assert_eq!(
            (plan, rest.clone()),
            (Plan::RecycleWorkers(vec![id(11)]), vec![id(12)])
        );
        ep.acted(
            Taken {
                before: workers.to_vec(),
                ..taken(0, mono, ActionKind::RecycleWorker, &[id(11)])
            },
            "i1".into(),
            rest,
        );
        // 11 is replaced by 15; 12 is now over the line, but it is next, not a failure.
        let now_workers = [id(15), id(12), id(13)];
        let after = [
            proc(10, Role::Master, 14),
            proc(15, Role::Worker, 10),
            proc(12, Role::Worker, 41),
            proc(13, Role::Worker, 12),
        ];
        assert!(matches!(
            ep.decide(&p, &pass(3, mono, &now_workers, &after), &mut fake),
            Decision::Outcome(Verdict {
                result: OutcomeResult::Recovered,
                ..
            })
        ));
        // The next pass recycles 12, under the same incident.
        assert_eq!(
            ep.decide(&p, &pass(5, mono, &now_workers, &after), &mut fake),
            Decision::Continue {
                incident: "i1".into(),
                plan: Plan::RecycleWorkers(vec![id(12)]),
                rest: vec![]
            }
        );
        // A queued worker that is gone by then is skipped.
        let mut ep2 = Episode::default();
        ep2.acted(
            taken(0, mono, ActionKind::RecycleWorker, &[id(11)]),
            "i2".into(),
            vec![id(14)],
        );
        let _ = ep2.decide(&p, &pass(3, mono, &now_workers, &after[..2]), &mut fake);
        assert!(!matches!(
            ep2.decide(&p, &pass(5, mono, &now_workers, &after[..2]), &mut fake),
            Decision::Continue { .. }
        ));
        // So is one that leaks but is still under its line's hysteresis band (36 of a
        // line of 40): it fires on its own when its time comes, not long before.
        let mut ep3 = Episode::default();
        ep3.acted(
            taken(0, mono, ActionKind::RecycleWorker, &[id(11)]),
            "i3".into(),
            vec![id(12)],
        );
        let low = [
            proc(10, Role::Master, 14),
            proc(15, Role::Worker, 10),
            proc(12, Role::Worker, 35),
        ];
        let _ = ep3.decide(&p, &pass(3, mono, &now_workers, &low), &mut fake);
        assert_eq!(
            ep3.decide(&p, &pass(5, mono, &now_workers, &low), &mut fake),
            Decision::Nothing
        );
    }

    #[test]
    fn a_failed_action_climbs_the_ladder_instead_of_retrying() {
        let mono = Instant::now();
        let p = policy();
        let mut ep = Episode::default();
        let mut fake = up(&[11]);
        let workers = [id(11), id(12)];
        let procs = [
            proc(10, Role::Master, 14),
            proc(11, Role::Worker, 45),
            proc(12, Role::Worker, 10),
        ];
        assert!(matches!(
            then(ep.decide(&p, &pass(0, mono, &workers, &procs), &mut fake)),
            Then::Act {
                plan: Plan::RecycleWorkers(_),
                ..
            }
        ));
        // The signal was refused (EPERM): the next pass touches instead.
        ep.failed(ActionKind::RecycleWorker);
        assert_eq!(ep.step(), Step::Touch);
        assert!(matches!(
            then(ep.decide(&p, &pass(2, mono, &workers, &procs), &mut fake)),
            Then::Act {
                plan: Plan::Touch,
                ..
            }
        ));
        // A failed touch: alert only.
        ep.failed(ActionKind::Touch);
        assert!(matches!(
            then(ep.decide(&p, &pass(4, mono, &workers, &procs), &mut fake)),
            Then::Alert {
                reason: Reason::LadderExhausted,
                ..
            }
        ));
    }

    #[test]
    fn flapping_keeps_healing_at_the_rate_max_reloads_allows() {
        let mono = Instant::now();
        let p = Policy {
            max_reloads: 2,
            max_reloads_window: Duration::from_secs(3600),
            cooldown: Duration::from_secs(60),
            ..touching()
        };
        let mut ep = Episode::default();
        let mut fake = up(&[]);
        let over = [proc(10, Role::Master, 45)];
        let under = [proc(10, Role::Master, 12)];
        for (n, s) in [0u64, 600].into_iter().enumerate() {
            assert!(
                matches!(
                    then(ep.decide(&p, &pass(s, mono, &WORKERS, &over), &mut fake)),
                    Then::Act {
                        plan: Plan::Touch,
                        ..
                    }
                ),
                "reload {n}"
            );
            ep.acted(
                taken(s, mono, ActionKind::Touch, &[]),
                format!("i{n}"),
                vec![],
            );
            assert!(matches!(
                ep.decide(&p, &pass(s + 5, mono, &WORKERS, &under), &mut fake),
                Decision::Outcome(_)
            ));
        }
        // Where it stands, for the metrics: flapping, the last action the second reload.
        let standing = ep.standing(&p, at(1200));
        assert!(standing.flapping && !standing.given_up, "{standing:?}");
        assert_eq!(standing.last_action, Some(at(600)));
        assert!(!ep.standing(&p, at(600 + 3600)).flapping);
        // The third return within the hour is held, and says when the next reload is due.
        let t = then(ep.decide(&p, &pass(1200, mono, &WORKERS, &over), &mut fake));
        assert!(
            matches!(t, Then::Hold { hold: Hold::Flapping { recent: 2, next }, .. } if next == Duration::from_secs(2400)),
            "{t:?}"
        );
        // Still firing all along: recorded once per cooldown, and once the first reload
        // leaves the window, it reloads.
        assert_eq!(
            ep.decide(&p, &pass(1230, mono, &WORKERS, &over), &mut fake),
            Decision::Nothing
        );
        assert!(matches!(
            then(ep.decide(&p, &pass(3601, mono, &WORKERS, &over), &mut fake)),
            Then::Act {
                plan: Plan::Touch,
                ..
            }
        ));
    }

    #[test]
    fn a_broken_ini_is_named_in_the_alert() {
        let mono = Instant::now();
        let over = [proc(10, Role::Master, 50)];
        let mut fake = up(&[]);
        fake.facts.ini_error = Some("/v/a.ini: no [uwsgi] section".into());
        let t =
            then(Episode::default().decide(&policy(), &pass(0, mono, &WORKERS, &over), &mut fake));
        let Then::Alert {
            reason: Reason::IniInvalid,
            note: Some(note),
        } = t
        else {
            panic!("{t:?}");
        };
        assert!(note.starts_with("/v/a.ini: no [uwsgi] section; "), "{note}");
    }

    #[test]
    fn actions_others_recorded_count_for_cooldown() {
        let mono = Instant::now();
        let over = [proc(10, Role::Master, 45)];
        let mut fake = up(&[]);
        fake.others = vec![Past {
            at: at(100),
            kind: ActionKind::Touch,
            manual: true,
        }];
        let t = then(Episode::default().decide(
            &touching(),
            &pass(160, mono, &WORKERS, &over),
            &mut fake,
        ));
        assert!(
            matches!(t, Then::Hold { hold: Hold::Cooldown { remaining }, .. } if remaining == Duration::from_secs(540)),
            "{t:?}"
        );
        // The log is read only when the vassal's own history would let it act.
        let mut ep = Episode::default();
        ep.hist.learn(Past {
            at: at(0),
            kind: ActionKind::Touch,
            manual: false,
        });
        let mut fake = up(&[]);
        assert!(matches!(
            then(ep.decide(&touching(), &pass(10, mono, &WORKERS, &over), &mut fake)),
            Then::Hold { .. }
        ));
        assert_eq!(fake.log_reads, 0);
    }

    #[test]
    fn a_process_gone_before_attribution_records_nothing() {
        let mono = Instant::now();
        let over = [proc(10, Role::Master, 50)];
        let mut ep = Episode::default();
        let mut fake = Fake {
            gone: true,
            ..up(&[])
        };
        assert_eq!(
            ep.decide(&policy(), &pass(0, mono, &WORKERS, &over), &mut fake),
            Decision::Nothing
        );
        // Not noted: the next pass tries again.
        fake.gone = false;
        assert!(matches!(
            ep.decide(&policy(), &pass(2, mono, &WORKERS, &over), &mut fake),
            Decision::Incident(_)
        ));
    }

    #[test]
    fn the_ladder_climbs_on_failures_and_resets_when_the_episode_ends() {
        let mono = Instant::now();
        let p = policy();
        let stuck = [proc(10, Role::Master, 14), proc(11, Role::Worker, 45)];
        let mut ep = Episode::default();
        ep.acted(
            taken(0, mono, ActionKind::RecycleWorker, &[id(11)]),
            "i1".into(),
            vec![],
        );
        // Within verify: still waiting.
        assert_eq!(
            ep.decide(&p, &pass(10, mono, &WORKERS, &stuck), &mut up(&[])),
            Decision::Nothing
        );
        let Decision::Outcome(v) = ep.decide(&p, &pass(31, mono, &WORKERS, &stuck), &mut up(&[]))
        else {
            panic!("no outcome");
        };
        assert_eq!(v.result, OutcomeResult::NotRecovered);
        assert_eq!(v.kind, ActionKind::RecycleWorker);
        assert_eq!(v.detail.as_deref(), Some("workers were not replaced"));
        assert_eq!(ep.step(), Step::Touch);
        ep.acted(
            taken(700, mono, ActionKind::Touch, &WORKERS),
            "i2".into(),
            vec![],
        );
        let Decision::Outcome(v) = ep.decide_stopped(&p, mono + Duration::from_secs(731)) else {
            panic!("no outcome");
        };
        assert_eq!(v.detail.as_deref(), Some("the vassal's master is gone"));
        assert_eq!(ep.step(), Step::Exhausted);
        ep.acted(
            taken(1400, mono, ActionKind::Touch, &[]),
            "i3".into(),
            vec![],
        );
        assert!(matches!(
            ep.removed(mono),
            Decision::Outcome(Verdict {
                result: OutcomeResult::Vanished,
                ..
            })
        ));
        // A vanished vassal does not count as recovered...
        assert_eq!(ep.step(), Step::Exhausted);
        // ...but once every process is back under the line, the next leak starts gently.
        let under = [proc(10, Role::Master, 14), proc(11, Role::Worker, 12)];
        assert_eq!(
            ep.decide(&p, &pass(1500, mono, &WORKERS, &under), &mut up(&[])),
            Decision::Nothing
        );
        assert_eq!(ep.step(), Step::Gentlest);
    }

    #[test]
    fn inherited_leaks_are_judged_by_the_leading_target() {
        let cases = [
            (vec![cat(30, Some(30), Some(30))], true),
            (vec![cat(30, Some(30), Some(15))], true),
            (vec![cat(30, Some(30), Some(14))], false),
            (vec![cat(30, None, Some(0))], false),
            (vec![cat(30, None, None)], false),
            // The one that grew leads, even when it is not the largest.
            (
                vec![target("/a", 50, Some(0), Some(50)), cat(20, Some(20), None)],
                false,
            ),
            (
                vec![target("/a", 50, Some(0), None), cat(20, Some(20), Some(20))],
                true,
            ),
            (vec![], false),
        ];
        for (i, (top, want)) in cases.into_iter().enumerate() {
            assert_eq!(mostly_inherited(&report(top)), want, "case {i}");
        }
    }

    #[test]
    fn the_same_leak_is_most_of_the_growth_in_the_offenders_leading_target() {
        let offender = report(vec![
            cat(40, Some(30), None),
            target("/log", 1, Some(1), None),
        ]);
        let cases = [
            (vec![cat(12, Some(10), None)], true),
            (
                vec![cat(12, Some(10), None), target("/tmp/x", 9, Some(9), None)],
                true,
            ),
            (
                vec![cat(12, Some(4), None), target("/tmp/x", 9, Some(9), None)],
                false,
            ),
            // Holding the file is not leaking it.
            (vec![cat(12, Some(0), None)], false),
            (vec![cat(12, None, None)], false),
            (vec![target("/log", 3, Some(3), None)], false),
            (vec![], false),
        ];
        for (i, (top, want)) in cases.into_iter().enumerate() {
            assert_eq!(same_leak(&offender, &report(top)), want, "case {i}");
        }
        // An offender whose growth is unknown names no leak to share.
        assert!(!same_leak(
            &report(vec![cat(40, None, None)]),
            &report(vec![cat(12, Some(10), None)])
        ));
    }

    fn rec(ts: u64, config: &str, event: Event) -> Record {
        Record {
            schema: crate::audit::SCHEMA,
            ts: crate::audit::timestamp(at(ts)),
            incident: "i".into(),
            vassal: "a.ini".into(),
            config: config.into(),
            event,
        }
    }

    fn action(kind: ActionKind, dry_run: bool, reason: Option<&str>) -> Event {
        Event::Action(Action {
            action: kind,
            path: "/v/a.ini".into(),
            mtime_before: None,
            mtime_after: None,
            dry_run,
            pids: vec![],
            reason: reason.map(Into::into),
            note: None,
        })
    }

    fn outcome(result: OutcomeResult, seconds: f64) -> Event {
        Event::Outcome(Outcome {
            result,
            fds_after: None,
            seconds,
            detail: None,
        })
    }

    #[test]
    fn replay_rebuilds_history_and_the_ladder() {
        let failed = Event::Suppressed(Suppressed {
            reason: Reason::ActionFailed,
            action: Some(ActionKind::RecycleWorker),
            detail: None,
        });
        let log = [
            rec(
                1,
                "/v/a.ini",
                action(ActionKind::RecycleWorker, false, None),
            ),
            rec(40, "/v/a.ini", outcome(OutcomeResult::NotRecovered, 30.0)),
            rec(50, "/v/b.ini", action(ActionKind::Touch, false, None)),
            rec(60, "/v/b.ini", outcome(OutcomeResult::NotRecovered, 30.0)),
            rec(70, "/v/c.ini", action(ActionKind::Touch, true, None)),
            rec(90, "/v/d.ini", action(ActionKind::Touch, false, None)),
            rec(95, "/v/d.ini", outcome(OutcomeResult::NotRecovered, 30.0)),
            rec(
                99,
                "/v/d.ini",
                action(ActionKind::Touch, false, Some("manual: fixed")),
            ),
            rec(110, "/v/e.ini", failed),
        ];
        let eps = Episode::replay(&log);
        let a = &eps[Path::new("/v/a.ini")];
        assert_eq!(a.step(), Step::Touch);
        assert_eq!(a.history().actions.len(), 1);
        assert_eq!(a.history().actions[0].kind, ActionKind::RecycleWorker);
        assert_eq!(eps[Path::new("/v/b.ini")].step(), Step::Exhausted);
        // A dry run is not an action.
        assert!(eps[Path::new("/v/c.ini")].history().actions.is_empty());
        // An operator's reload lifts the ladder, and is known as manual.
        let d = &eps[Path::new("/v/d.ini")];
        assert_eq!(d.step(), Step::Gentlest);
        assert!(d.history().actions[1].manual);
        // A refused signal climbs the ladder.
        assert_eq!(eps[Path::new("/v/e.ini")].step(), Step::Touch);
        assert!(eps.values().all(|e| !e.is_pending()));
    }

    #[test]
    fn assess_says_what_is_wrong_and_how_badly() {
        let p = touching();
        let levels = |ep: &Episode, now: u64, procs: &[Proc], cannot: Option<&str>| {
            assess(ep, &p, at(now), procs, cannot)
                .iter()
                .map(|c| c.level)
                .collect::<Vec<_>>()
        };
        let fine = [proc(10, Role::Master, 14), proc(11, Role::Worker, 20)];
        let over = [proc(10, Role::Master, 14), proc(11, Role::Worker, 45)];
        let at_limit = [proc(10, Role::Master, 14), proc(11, Role::Worker, 63)];
        let calm = Episode::default();
        assert!(levels(&calm, 0, &fine, None).is_empty());
        assert_eq!(levels(&calm, 0, &over, None), [Level::Warning]);
        assert_eq!(levels(&calm, 0, &at_limit, None), [Level::Critical]);
        let text = &assess(&calm, &p, at(0), &at_limit, None)[0].text;
        assert_eq!(text, "worker 11 holds 63 of 64 fds (98.4%): at its limit");
        // No Emperor: a warning while all is well, critical once something is over.
        assert_eq!(
            levels(&calm, 0, &fine, Some("no Emperor")),
            [Level::Warning]
        );
        assert_eq!(
            levels(&calm, 0, &over, Some("no Emperor")),
            [Level::Warning, Level::Critical]
        );
        // In cooldown while over the line.
        let mut cooling = Episode::default();
        cooling.hist.learn(Past {
            at: at(0),
            kind: ActionKind::Touch,
            manual: false,
        });
        assert_eq!(
            levels(&cooling, 60, &over, None),
            [Level::Warning, Level::Warning]
        );
        assert!(levels(&cooling, 60, &fine, None).is_empty());
        // Flapping: a warning while the site is fine, critical while over the line.
        let mut flapping = cooling.clone();
        for s in [700, 1400, 2100] {
            flapping.hist.learn(Past {
                at: at(s),
                kind: ActionKind::Touch,
                manual: false,
            });
        }
        assert_eq!(levels(&flapping, 2200, &fine, None), [Level::Warning]);
        assert_eq!(
            levels(&flapping, 2200, &over, None),
            [Level::Warning, Level::Critical]
        );
        // Given up.
        let mut given_up = Episode::default();
        given_up.failed(ActionKind::Touch);
        assert!(given_up.standing(&policy(), at(0)).given_up);
        assert!(!Episode::default().standing(&policy(), at(0)).given_up);
        assert_eq!(
            levels(&given_up, 0, &over, None),
            [Level::Warning, Level::Critical]
        );
        assert_eq!(Level::Critical.exit_code(), 2);
    }

    #[test]
    fn timings_rise_at_once_and_fall_slowly() {
        let mut t = Timings::default();
        assert_eq!(t.of(Role::Worker), Duration::from_secs(3));
        t.observe(ActionKind::RecycleWorker, 5.0);
        assert_eq!(t.of(Role::Worker), Duration::from_secs(5));
        t.observe(ActionKind::RecycleWorker, 1.0);
        assert_eq!(t.of(Role::Worker), Duration::from_secs_f64(4.2));
        assert_eq!(t.of(Role::Master), Duration::from_secs(6));
        // Nonsense is ignored.
        t.observe(ActionKind::Touch, f64::NAN);
        assert_eq!(t.of(Role::Master), Duration::from_secs(6));
        // From the log: recovered outcomes of each kind.
        let mut r = Timings::default();
        r.replay(&[
            rec(0, "/v/a.ini", action(ActionKind::Touch, false, None)),
            rec(9, "/v/a.ini", outcome(OutcomeResult::Recovered, 9.0)),
            rec(
                20,
                "/v/a.ini",
                action(ActionKind::RecycleWorker, false, None),
            ),
            rec(60, "/v/a.ini", outcome(OutcomeResult::NotRecovered, 40.0)),
        ]);
        assert_eq!(r.of(Role::Master), Duration::from_secs(9));
        assert_eq!(r.of(Role::Worker), Duration::from_secs(3));
    }
}
