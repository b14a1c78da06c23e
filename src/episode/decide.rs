//! The decision on one pass: verify an action under way, continue a leak already
//! recorded, or find the offender, ask what it holds open, choose and gate a plan, and
//! say whether the episode is new, the same (reminded) or over. Also the rules of a
//! leak's shape: mostly inherited from the master, the same leak in other workers.

use std::time::{Duration, Instant};

use super::{
    Decision, Episode, Facts, Incident, Lookups, MERCY_MARGIN, Note, NoteKey, Pass, Proc, Queue,
    Then, Verdict, since,
};
use crate::config::Policy;
use crate::forensics::{Group, Report};
use crate::policy::{self, Climb, Hold, Plan, Situation, Step};
use crate::procs::{ProcId, Role};
use crate::vocab::{ActionKind, OutcomeResult, Reason};

impl Episode {
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
        if pass.paused.is_none()
            && let Some(d) = self.next_batch(policy, pass)
        {
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
            self.climb = Climb::DidNotWork;
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
        let (plan, note) = match pass.paused {
            Some(why) => (Plan::Alert(Reason::Paused), Some(why.to_owned())),
            None => policy::choose(policy.action, &situation),
        };
        let hold = self.gate(policy, pass, &plan, lookups);
        let key = key_of(&hold, &facts, self.step, policy, pass);
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
        if n.key != key_of(&hold, facts, self.step, policy, pass) {
            return None;
        }
        match n.open {
            // A pause is the operator's own silence: not reminded.
            Some(open)
                if since(pass.now, open.said) >= pass.remind && open.reason != Reason::Paused =>
            {
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
        let mut urgent = 0;
        if offender.role == Role::Worker && !inherited {
            leaking.push(offender.id);
            urgent = 1;
            // The urgent ones first, then the fullest.
            let mut others: Vec<&Proc> = pass
                .procs
                .iter()
                .filter(|p| p.role == Role::Worker && p.id != offender.id)
                .collect();
            others.sort_by(|a, b| {
                b.urgent
                    .cmp(&a.urgent)
                    .then(b.usage_of_line().total_cmp(&a.usage_of_line()))
            });
            for w in others {
                if lookups.attribute(w).is_some_and(|r| same_leak(report, &r)) {
                    leaking.push(w.id);
                    urgent += usize::from(w.urgent);
                }
            }
        }
        Situation {
            in_master: offender.role == Role::Master || inherited,
            role: offender.role,
            leaking,
            urgent,
            workers: pass.workers.len(),
            chain_file: facts.chain_file.clone(),
            pending_change: facts.pending_change,
            ini_invalid: facts.ini_error.is_some(),
            escalation: self.step,
            climb: self.climb,
        }
    }

    /// May `plan` be carried out now? Before saying yes, learn what others recorded
    /// meanwhile: their actions count for cooldown and `max-reloads` too. A pause says
    /// nothing is done, whatever holds.
    fn gate(
        &mut self,
        policy: &Policy,
        pass: &Pass<'_>,
        plan: &Plan,
        lookups: &mut dyn Lookups,
    ) -> Result<(), Hold> {
        if pass.paused.is_some() {
            return Ok(());
        }
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
    /// Only those at their line already, or within its hysteresis band, or urgent, go now
    /// (a batch, and every urgent one); one that leaks but is still lower is left to fire
    /// on its own, so that it is not recycled long before it needs to be.
    fn next_batch(&mut self, policy: &Policy, pass: &Pass<'_>) -> Option<Decision> {
        let q = self.queue.take()?;
        let due = |w: &ProcId| {
            pass.procs
                .iter()
                .any(|p| p.id == *w && p.fds >= policy::clear_line(policy, p.limit))
        };
        let urgent = |w: &ProcId| pass.procs.iter().any(|p| p.id == *w && p.urgent);
        let mut alive: Vec<ProcId> = q
            .workers
            .into_iter()
            .filter(|w| pass.workers.contains(w) && (due(w) || urgent(w)))
            .collect();
        // The urgent ones go now, whatever the batch.
        alive.sort_by_key(|w| !urgent(w));
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
        let n = policy::batch_size(pass.workers.len())
            .max(alive.iter().filter(|w| urgent(w)).count())
            .min(alive.len());
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
        if elapsed <= policy.verify {
            return Decision::Nothing;
        }
        // A graceful reload under way (an old worker gone or a new one there, and not
        // yet all old ones gone with new ones up) is waited for: uWSGI ends the old
        // workers within its mercy (a worker finishing a request, or one that hangs), then
        // starts the new ones. A reload that shows no sign of starting is judged now.
        let old_left = p.before.iter().any(|w| pass.workers.contains(w));
        let old_gone = p.before.iter().any(|w| !pass.workers.contains(w));
        let new_up = pass.workers.iter().any(|w| !p.before.contains(w));
        let under_way = (old_gone || new_up) && (old_left || !new_up);
        let detail = match p.mercy {
            Some(mercy) if under_way => {
                if elapsed <= mercy_wait(mercy, policy) {
                    return Decision::Nothing;
                }
                let what = if old_left {
                    "old workers were still there"
                } else {
                    "no new worker had started"
                };
                format!(
                    "{what} {} s after the reload began (uWSGI's mercy for its old workers: {} s)",
                    elapsed.as_secs(),
                    mercy.as_secs()
                )
            }
            _ if p.replace.iter().any(|w| pass.workers.contains(w)) => {
                "workers were not replaced".into()
            }
            _ => "fd counts are still over the line".into(),
        };
        self.finish(
            pass.mono,
            OutcomeResult::NotRecovered,
            fds_after,
            Some(detail),
        )
    }

    /// The decision for a vassal with no running master on this pass: an action under
    /// verification fails once its time is up (for a graceful reload, its mercy's wait:
    /// the master may be missed for a pass while it starts again).
    pub(crate) fn decide_stopped(&mut self, policy: &Policy, mono: Instant) -> Decision {
        let Some(p) = &self.pending else {
            return Decision::Nothing;
        };
        let wait = p.mercy.map_or(policy.verify, |m| mercy_wait(m, policy));
        if mono.saturating_duration_since(p.started) <= wait {
            return Decision::Nothing;
        }
        self.finish(
            mono,
            OutcomeResult::NotRecovered,
            None,
            Some("the vassal's master is gone".into()),
        )
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
        if result != OutcomeResult::Vanished {
            self.climb = Climb::DidNotWork;
        }
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
}

/// How long the same episode with the same inputs goes without being recorded again.
fn renote(policy: &Policy) -> Duration {
    policy.cooldown.max(RENOTE_AT_LEAST)
}

/// The shortest time between two records of one unchanged episode, whatever `cooldown`.
const RENOTE_AT_LEAST: Duration = Duration::from_secs(300);

/// The reason an incident's record gives when it holds or alerts; `None` when it acts.
fn held_reason(then: &Then) -> Option<Reason> {
    match then {
        Then::Hold { hold, .. } => Some(hold.reason()),
        Then::Alert { reason, .. } => Some(reason.clone()),
        Then::Act { .. } => None,
    }
}

fn key_of(
    hold: &Result<(), Hold>,
    facts: &Facts,
    step: Step,
    policy: &Policy,
    pass: &Pass<'_>,
) -> NoteKey {
    match hold {
        Err(h) => NoteKey::Hold(h.reason()),
        Ok(()) => NoteKey::Act {
            ini_invalid: facts.ini_error.is_some(),
            pending_change: facts.pending_change,
            emperor_up: facts.emperor_up,
            step,
            action: policy.action,
            paused: pass.paused.is_some(),
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
pub(super) fn mostly_inherited(report: &Report) -> bool {
    leading(report).is_some_and(|t| {
        let inherited = t.inherited.unwrap_or(0);
        inherited > 0 && inherited * 2 >= t.count
    })
}

/// Whether `other` leaks the same way as `offender`: most of what `other` grew since the
/// warden first saw it is in the offender's leading target.
#[must_use]
pub(super) fn same_leak(offender: &Report, other: &Report) -> bool {
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

/// How long a graceful reload is waited for, its old workers given `mercy` by uWSGI:
/// that and `MERCY_MARGIN` (the Emperor's scan, the master's start again), at least
/// `verify` and never past twice `verify` (the mercy is the vassal file's to set,
/// `verify` root's to bound).
fn mercy_wait(mercy: Duration, policy: &Policy) -> Duration {
    mercy
        .saturating_add(MERCY_MARGIN)
        .clamp(policy.verify, policy.verify.saturating_mul(2))
}
