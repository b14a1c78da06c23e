//! Episodes: what to do about one vassal on one pass, and the state kept between passes.
//!
//! This module is the decision core. It takes a vassal's state (its recorded history,
//! its place on the ladder, the action being verified, the episode last recorded) and a
//! pass's inputs (samples, facts about its file and Emperor, time) and returns what to do:
//! nothing, an outcome to record, or an incident to record that then holds (with a typed
//! reason), alerts, or acts with a plan. It owns every rule of that choice: which process
//! is the offender, whether its leak is mostly inherited from the master, when an episode
//! is recorded again, how the ladder moves, and how the state is rebuilt from the log.
//!
//! It does no I/O and reads no clock: times come in the `Pass`, and the two things that
//! cost a read (what the process holds open, and what others recorded in the log since)
//! come through `Lookups`, which the caller implements and this module calls at most once
//! each per pass, and only when the answer can change the decision. `policy` supplies the
//! rules of one sample and one gate; `warden` gathers the inputs and carries out the steps.

use std::collections::HashMap;
#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use crate::audit::{Event, OutcomeResult, Record, Role};
use crate::config::Policy;
use crate::forensics::Report;
use crate::policy::{self, ActionKind, Fire, History, Hold, Plan, Reason, Situation, Step};
use crate::procs::ProcId;

/// One sampled process of the vassal on this pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Proc {
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
pub struct Facts {
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
pub struct Pass<'a> {
    pub now: SystemTime,
    /// The same moment on the monotonic clock, for verification times.
    pub mono: Instant,
    pub master: ProcId,
    /// Every worker the mapping found (sampled or not).
    pub workers: &'a [ProcId],
    /// The processes that could be sampled, master first.
    pub procs: &'a [Proc],
    /// The host-wide cap on actions in progress is reached.
    pub busy: bool,
    pub dry_run: bool,
}

/// The reads the core may ask for during a pass.
pub trait Lookups {
    /// When actions on this vassal were recorded by anyone (an operator's `reload`,
    /// another warden), from the log's tail.
    fn recorded_actions(&mut self) -> Vec<SystemTime>;
    /// The vassal file and its Emperor, as they are now.
    fn facts(&mut self) -> Facts;
    /// What `offender` holds open; `None` when it is gone.
    fn attribute(&mut self, offender: &Proc) -> Option<Report>;
}

/// What the episode's record says next, after `detected`.
#[derive(Debug, Clone, PartialEq)]
pub enum Then {
    /// Over the line, but not acted on now; `would` is what it would have done.
    Hold { hold: Hold, would: Plan },
    /// Record and alert only.
    Alert {
        reason: Reason,
        note: Option<String>,
    },
    /// Act with this plan (after the last checks).
    Act { plan: Plan, note: Option<String> },
}

/// A process fired: what to record and what follows.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    pub offender: Proc,
    pub fire: Fire,
    pub report: Report,
    pub then: Then,
}

/// The verdict on an action under verification.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub incident: String,
    pub result: OutcomeResult,
    pub fds_after: Option<u64>,
    pub seconds: f64,
    pub detail: Option<String>,
}

/// What to do on this pass.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Nothing,
    Outcome(Verdict),
    Incident(Box<Incident>),
}

/// What the key of an episode is made of: the same episode with the same inputs is
/// recorded once per cooldown, not once per pass.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NoteKey {
    Hold(Reason),
    Act {
        ini_invalid: bool,
        pending_change: bool,
        emperor_up: bool,
        step: Step,
    },
}

/// An action under verification.
#[derive(Debug, Clone, PartialEq)]
struct Pending {
    incident: String,
    started: Instant,
    /// The workers the action meant to replace.
    replace: Vec<ProcId>,
    /// The ladder's step if this does not work.
    on_failure: Step,
}

/// Per-vassal state between passes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Episode {
    hist: History,
    /// When a hold or an alert was last recorded, and for what; cleared when the vassal
    /// is back under the line or an outcome is recorded.
    noted: Option<(SystemTime, NoteKey)>,
    pending: Option<Pending>,
    step: Step,
}

impl Episode {
    /// True while an action is being verified.
    #[must_use]
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    #[must_use]
    pub fn step(&self) -> Step {
        self.step
    }

    #[must_use]
    pub fn history(&self) -> &History {
        &self.hist
    }

    /// The decision for a running vassal on this pass.
    pub fn decide(
        &mut self,
        policy: &Policy,
        pass: &Pass<'_>,
        lookups: &mut dyn Lookups,
    ) -> Decision {
        if self.pending.is_some() {
            return self.verify(policy, pass);
        }
        if pass.procs.iter().all(|p| !p.over()) {
            self.noted = None;
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
        let hold = self.gate(policy, pass, lookups);
        self.hist.flapping = matches!(hold, Err(Hold::Flapping { .. }));
        self.hist.last_fire = Some(pass.now);
        let key = match &hold {
            Err(h) => NoteKey::Hold(h.reason()),
            Ok(()) => NoteKey::Act {
                ini_invalid: facts.ini_error.is_some(),
                pending_change: facts.pending_change,
                emperor_up: facts.emperor_up,
                step: self.step,
            },
        };
        if let Some((noted, k)) = &self.noted
            && *k == key
            && pass.now.duration_since(*noted).unwrap_or_default() < policy.cooldown
        {
            return Decision::Nothing;
        }
        // Attribute: name what leaks, before anything is recorded.
        let Some(report) = lookups.attribute(&offender) else {
            return Decision::Nothing;
        };
        self.noted = Some((pass.now, key));
        let situation = Situation {
            master_leaks: offender.role == Role::Master,
            inherited: mostly_inherited(&report),
            workers_over: pass
                .procs
                .iter()
                .filter(|p| p.role == Role::Worker && p.over())
                .map(|p| p.id)
                .collect(),
            workers: pass.workers.len(),
            chain_file: facts.chain_file.clone(),
            pending_change: facts.pending_change,
            ini_invalid: facts.ini_error.is_some(),
            escalation: self.step,
        };
        let (plan, note) = policy::choose(policy.action, &situation);
        let then = match (hold, plan) {
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
            (Ok(()), plan) => Then::Act { plan, note },
        };
        Decision::Incident(Box::new(Incident {
            offender,
            fire,
            report,
            then,
        }))
    }

    /// May the vassal be acted on now? Before saying yes, learn what others recorded
    /// meanwhile: their actions count for cooldown and `max-reloads` too.
    fn gate(
        &mut self,
        policy: &Policy,
        pass: &Pass<'_>,
        lookups: &mut dyn Lookups,
    ) -> Result<(), Hold> {
        policy::gate(policy, pass.now, &self.hist, pass.busy, pass.dry_run)?;
        let mut learned = false;
        for t in lookups.recorded_actions() {
            if !self.hist.actions.contains(&t) && self.hist.last_action().is_none_or(|l| t > l) {
                self.hist.actions.push(t);
                learned = true;
            }
        }
        if learned {
            policy::gate(policy, pass.now, &self.hist, pass.busy, pass.dry_run)?;
        }
        Ok(())
    }

    /// The verdict on the action under verification, once there is one.
    fn verify(&mut self, policy: &Policy, pass: &Pass<'_>) -> Decision {
        let Some(p) = &self.pending else {
            return Decision::Nothing;
        };
        let counts: Vec<(u64, u64)> = pass.procs.iter().map(|p| (p.fds, p.line)).collect();
        let after = policy::After {
            replace: &p.replace,
            workers: pass.workers,
            counts: &counts,
        };
        let fds_after = counts.iter().map(|(f, _)| *f).max();
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
    pub fn decide_stopped(&mut self, policy: &Policy, mono: Instant) -> Decision {
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
    pub fn removed(&mut self, mono: Instant) -> Decision {
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

    /// Ends the verification: a new episode starts, and the ladder moves.
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
        self.step = if result == OutcomeResult::Recovered {
            Step::Gentlest
        } else {
            p.on_failure
        };
        Decision::Outcome(Verdict {
            incident: p.incident,
            result,
            fds_after,
            seconds: mono.saturating_duration_since(p.started).as_secs_f64(),
            detail,
        })
    }

    /// An action of `incident` was taken at `now`: it counts for cooldown and is verified
    /// from now on. `replace` are the workers it means to replace.
    pub fn acted(
        &mut self,
        now: SystemTime,
        mono: Instant,
        kind: ActionKind,
        incident: String,
        replace: Vec<ProcId>,
    ) {
        self.hist.actions.push(now);
        self.pending = Some(Pending {
            incident,
            started: mono,
            replace,
            on_failure: Step::after_failed(kind),
        });
    }

    /// Rebuilds every vassal's episode from the records of the incident log, oldest
    /// first: actions (cooldown and `max-reloads`), the last time a rule fired, whether it
    /// was flapping, and its place on the ladder.
    #[must_use]
    pub fn replay<'a>(records: impl IntoIterator<Item = &'a Record>) -> HashMap<PathBuf, Episode> {
        let mut out: HashMap<PathBuf, Episode> = HashMap::new();
        let mut last_kind: HashMap<PathBuf, ActionKind> = HashMap::new();
        for r in records {
            let Some(ts) = crate::audit::parse_timestamp(&r.ts) else {
                continue;
            };
            let ep = out.entry(r.config.clone()).or_default();
            match &r.event {
                Event::Action(a) if !a.dry_run => {
                    ep.hist.actions.push(ts);
                    ep.hist.flapping = false;
                    last_kind.insert(r.config.clone(), a.action);
                }
                Event::Detected(_) => ep.hist.last_fire = Some(ts),
                Event::Suppressed(s) if s.reason == Reason::Flapping => ep.hist.flapping = true,
                Event::Outcome(o) => {
                    ep.step = match (o.result, last_kind.get(&r.config)) {
                        (OutcomeResult::NotRecovered, Some(kind)) => Step::after_failed(*kind),
                        _ => Step::Gentlest,
                    };
                }
                _ => {}
            }
        }
        for ep in out.values_mut() {
            ep.hist.actions.sort();
        }
        out
    }
}

/// Whether a worker's leak lives in its master: the leading target (the first that grew,
/// when growth is known; else the largest) is held through the master for at least half
/// of its count. Only a reload of the master clears such a leak.
#[must_use]
pub fn mostly_inherited(report: &Report) -> bool {
    let leading = report
        .top
        .iter()
        .find(|t| t.growth.is_some_and(|g| g > 0))
        .or_else(|| report.top.first());
    leading.is_some_and(|t| {
        let inherited = t.inherited.unwrap_or(0);
        inherited > 0 && inherited * 2 >= t.count
    })
}

/// The detail of a hold, for its `suppressed` record.
#[must_use]
pub fn hold_detail(hold: &Hold, policy: &Policy, max_concurrent: usize, plan: &str) -> String {
    match hold {
        Hold::Flapping { recent } => format!(
            "{recent} actions within {}: alerting only until it has been quiet for that long",
            humantime::format_duration(policy.max_reloads_window)
        ),
        Hold::Cooldown { remaining } => format!(
            "acted on less than {} ago; next action allowed in {}",
            humantime::format_duration(policy.cooldown),
            humantime::format_duration(Duration::from_secs(remaining.as_secs()))
        ),
        Hold::Busy => {
            format!("{max_concurrent} reload(s) already in progress on this host (max-concurrent)")
        }
        Hold::DryRun => format!("dry run: would {plan}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Action, Detected, Outcome, Suppressed, Target};
    use crate::config::{ActionMode, Threshold};

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
            cooldown: Duration::from_secs(600),
            verify: Duration::from_secs(30),
            ..Policy::default()
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

    fn target(count: u64, growth: Option<i64>, inherited: Option<u64>) -> Target {
        Target {
            target: "/srv/app/static/cat.jpg".into(),
            kind: "file".into(),
            count,
            growth,
            inherited,
        }
    }

    /// Lookups from plain data, counting the reads asked for.
    #[derive(Default)]
    struct Fake {
        facts: Facts,
        others: Vec<SystemTime>,
        top: Vec<Target>,
        gone: bool,
        attributed: Vec<i32>,
        log_reads: usize,
    }

    impl Lookups for Fake {
        fn recorded_actions(&mut self) -> Vec<SystemTime> {
            self.log_reads += 1;
            self.others.clone()
        }
        fn facts(&mut self) -> Facts {
            self.facts.clone()
        }
        fn attribute(&mut self, offender: &Proc) -> Option<Report> {
            self.attributed.push(offender.id.pid);
            (!self.gone).then(|| Report {
                pid: offender.id.pid,
                fds: offender.fds,
                top: self.top.clone(),
                by_kind: std::collections::BTreeMap::new(),
                growth: None,
            })
        }
    }

    fn up() -> Fake {
        Fake {
            facts: Facts {
                emperor_up: true,
                ..Facts::default()
            },
            top: vec![target(30, Some(30), None)],
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

    fn pass(now: u64, mono: Instant, procs: &[Proc]) -> Pass<'_> {
        Pass {
            now: at(now),
            mono: mono + Duration::from_secs(now),
            master: id(10),
            workers: &WORKERS,
            procs,
            busy: false,
            dry_run: false,
        }
    }

    fn then(d: Decision) -> Then {
        match d {
            Decision::Incident(i) => i.then,
            other => panic!("expected an incident, got {other:?}"),
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
        let mut ep = Episode::default();
        let mut fake = up();
        let Decision::Incident(inc) = ep.decide(&policy(), &pass(0, mono, &procs), &mut fake)
        else {
            panic!("no incident");
        };
        // 30 of a line of 20 is further over than 41 of 40.
        assert_eq!(inc.offender.id, id(12));
        assert_eq!(fake.attributed, [12]);
        // Both workers over their line are recycled, the gentlest that will work.
        assert_eq!(
            inc.then,
            Then::Act {
                plan: Plan::RecycleWorkers(vec![id(11), id(12)]),
                note: None
            }
        );
    }

    #[test]
    fn nothing_fired_means_nothing_read_and_nothing_recorded() {
        let mono = Instant::now();
        let procs = [proc(10, Role::Master, 14), proc(11, Role::Worker, 39)];
        let mut ep = Episode::default();
        let mut fake = up();
        assert_eq!(
            ep.decide(&policy(), &pass(0, mono, &procs), &mut fake),
            Decision::Nothing
        );
        assert!(fake.attributed.is_empty());
        assert_eq!(fake.log_reads, 0);
    }

    #[test]
    fn a_hold_is_recorded_once_per_episode_and_not_read_again() {
        let mono = Instant::now();
        let p = policy();
        let procs = [proc(10, Role::Master, 14), proc(11, Role::Worker, 45)];
        let mut ep = Episode::default();
        let mut fake = up();
        assert!(matches!(
            then(ep.decide(&p, &pass(0, mono, &procs), &mut fake)),
            Then::Act { .. }
        ));
        ep.acted(
            at(0),
            mono,
            ActionKind::RecycleWorker,
            "i1".into(),
            vec![id(11)],
        );
        // The worker was replaced and the vassal is back under the line.
        let fresh = [proc(10, Role::Master, 14), proc(15, Role::Worker, 10)];
        let workers = [id(15)];
        let mut after = pass(5, mono, &fresh);
        after.workers = &workers;
        let Decision::Outcome(v) = ep.decide(&p, &after, &mut fake) else {
            panic!("no outcome");
        };
        assert_eq!(
            (v.result, v.incident.as_str()),
            (OutcomeResult::Recovered, "i1")
        );
        assert!((v.seconds - 5.0).abs() < 1e-9);
        // Another worker crosses within the cooldown: one hold is recorded...
        let again = [proc(10, Role::Master, 14), proc(15, Role::Worker, 50)];
        let mut next = pass(60, mono, &again);
        next.workers = &workers;
        let hold = then(ep.decide(&p, &next, &mut fake));
        assert!(
            // One worker of one: recycling it would leave none, so a touch is what it would do.
            matches!(&hold, Then::Hold { hold: Hold::Cooldown { remaining }, would: Plan::Touch }
                if *remaining == Duration::from_secs(540)),
            "{hold:?}"
        );
        // ...and not again on the next passes, which read nothing.
        let reads = fake.attributed.len();
        for s in [62, 64, 300] {
            let mut later = pass(s, mono, &again);
            later.workers = &workers;
            assert_eq!(ep.decide(&p, &later, &mut fake), Decision::Nothing);
        }
        assert_eq!(fake.attributed.len(), reads);
    }

    #[test]
    fn a_change_of_inputs_is_a_new_record_and_going_under_the_line_ends_the_episode() {
        let mono = Instant::now();
        let p = Policy {
            action: ActionMode::Touch,
            ..policy()
        };
        let over = [proc(10, Role::Master, 50)];
        let mut ep = Episode::default();
        let mut fake = up();
        fake.facts.pending_change = true;
        assert!(matches!(
            then(ep.decide(&p, &pass(0, mono, &over), &mut fake)),
            Then::Alert {
                reason: Reason::PendingChange,
                ..
            }
        ));
        assert_eq!(
            ep.decide(&p, &pass(2, mono, &over), &mut fake),
            Decision::Nothing
        );
        // The deploy is applied by someone: the same episode, other inputs.
        fake.facts.pending_change = false;
        assert!(matches!(
            then(ep.decide(&p, &pass(4, mono, &over), &mut fake)),
            Then::Act {
                plan: Plan::Touch,
                ..
            }
        ));
        // Back under the line, then over again: a new episode, recorded again.
        fake.facts.pending_change = true;
        let _ = ep.decide(&p, &pass(6, mono, &over), &mut fake);
        let under = [proc(10, Role::Master, 12)];
        assert_eq!(
            ep.decide(&p, &pass(8, mono, &under), &mut fake),
            Decision::Nothing
        );
        assert!(matches!(
            ep.decide(&p, &pass(10, mono, &over), &mut fake),
            Decision::Incident(_)
        ));
    }

    #[test]
    fn a_broken_ini_is_named_in_the_alert() {
        let mono = Instant::now();
        let over = [proc(10, Role::Master, 50)];
        let mut fake = up();
        fake.facts.ini_error = Some("/v/a.ini: no [uwsgi] section".into());
        let t = then(Episode::default().decide(&policy(), &pass(0, mono, &over), &mut fake));
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
        let over = [proc(10, Role::Master, 14), proc(11, Role::Worker, 45)];
        let mut fake = up();
        fake.others = vec![at(100)];
        let t = then(Episode::default().decide(&policy(), &pass(160, mono, &over), &mut fake));
        assert!(
            matches!(t, Then::Hold { hold: Hold::Cooldown { remaining }, .. } if remaining == Duration::from_secs(540)),
            "{t:?}"
        );
        // The log is read only when the vassal's own history would let it act.
        let mut ep = Episode::default();
        ep.acted(at(0), mono, ActionKind::Touch, "i".into(), vec![]);
        ep.pending = None;
        let mut fake = up();
        assert!(matches!(
            then(ep.decide(&policy(), &pass(10, mono, &over), &mut fake)),
            Then::Hold { .. }
        ));
        assert_eq!(fake.log_reads, 0);
    }

    #[test]
    fn a_process_gone_before_attribution_records_nothing() {
        let mono = Instant::now();
        let over = [proc(10, Role::Master, 50)];
        let mut ep = Episode::default();
        let mut fake = Fake { gone: true, ..up() };
        assert_eq!(
            ep.decide(&policy(), &pass(0, mono, &over), &mut fake),
            Decision::Nothing
        );
        // Not noted: the next pass tries again.
        fake.gone = false;
        assert!(matches!(
            ep.decide(&policy(), &pass(2, mono, &over), &mut fake),
            Decision::Incident(_)
        ));
    }

    #[test]
    fn the_ladder_climbs_on_failures_and_resets_on_recovery() {
        let mono = Instant::now();
        let p = policy();
        let stuck = [proc(10, Role::Master, 14), proc(11, Role::Worker, 45)];
        let mut ep = Episode::default();
        ep.acted(
            at(0),
            mono,
            ActionKind::RecycleWorker,
            "i1".into(),
            vec![id(11)],
        );
        // Within verify: still waiting.
        assert_eq!(
            ep.decide(&p, &pass(10, mono, &stuck), &mut up()),
            Decision::Nothing
        );
        let Decision::Outcome(v) = ep.decide(&p, &pass(31, mono, &stuck), &mut up()) else {
            panic!("no outcome");
        };
        assert_eq!(v.result, OutcomeResult::NotRecovered);
        assert_eq!(v.detail.as_deref(), Some("workers were not replaced"));
        assert_eq!(ep.step(), Step::Touch);
        ep.acted(
            at(700),
            mono,
            ActionKind::Touch,
            "i2".into(),
            WORKERS.to_vec(),
        );
        let Decision::Outcome(v) = ep.decide_stopped(&p, mono + Duration::from_secs(731)) else {
            panic!("no outcome");
        };
        assert_eq!(v.detail.as_deref(), Some("the vassal's master is gone"));
        assert_eq!(ep.step(), Step::Exhausted);
        ep.acted(at(1400), mono, ActionKind::Touch, "i3".into(), vec![]);
        assert!(matches!(
            ep.removed(mono),
            Decision::Outcome(Verdict {
                result: OutcomeResult::Vanished,
                ..
            })
        ));
        // A vanished vassal does not count as recovered.
        assert_eq!(ep.step(), Step::Exhausted);
    }

    #[test]
    fn inherited_leaks_are_judged_by_the_leading_target() {
        let report = |top: Vec<Target>| Report {
            pid: 1,
            fds: 0,
            top,
            by_kind: std::collections::BTreeMap::new(),
            growth: None,
        };
        let cases = [
            (vec![target(30, Some(30), Some(30))], true),
            (vec![target(30, Some(30), Some(15))], true),
            (vec![target(30, Some(30), Some(14))], false),
            (vec![target(30, None, Some(0))], false),
            (vec![target(30, None, None)], false),
            // The one that grew leads, even when it is not the largest.
            (
                vec![target(50, Some(0), Some(50)), target(20, Some(20), None)],
                false,
            ),
            (
                vec![target(50, Some(0), None), target(20, Some(20), Some(20))],
                true,
            ),
            (vec![], false),
        ];
        for (i, (top, want)) in cases.into_iter().enumerate() {
            assert_eq!(mostly_inherited(&report(top)), want, "case {i}");
        }
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

    fn action(kind: ActionKind, dry_run: bool) -> Event {
        Event::Action(Action {
            action: kind,
            path: "/v/a.ini".into(),
            mtime_before: None,
            mtime_after: None,
            dry_run,
            pids: vec![],
            reason: None,
            note: None,
        })
    }

    fn outcome(result: OutcomeResult) -> Event {
        Event::Outcome(Outcome {
            result,
            fds_after: None,
            seconds: 1.0,
            detail: None,
        })
    }

    #[test]
    fn replay_rebuilds_history_flapping_and_the_ladder() {
        let detected = Event::Detected(Detected {
            pid: 1,
            role: Role::Worker,
            fds: 50,
            limit: 64,
            usage: 0.8,
            rule: String::new(),
            rule_name: None,
            slope: None,
            eta_seconds: None,
            top: vec![],
            by_kind: std::collections::BTreeMap::new(),
        });
        let flapping = Event::Suppressed(Suppressed {
            reason: Reason::Flapping,
            detail: None,
        });
        let log = [
            rec(0, "/v/a.ini", detected.clone()),
            rec(1, "/v/a.ini", action(ActionKind::RecycleWorker, false)),
            rec(40, "/v/a.ini", outcome(OutcomeResult::NotRecovered)),
            rec(50, "/v/b.ini", action(ActionKind::Touch, false)),
            rec(60, "/v/b.ini", outcome(OutcomeResult::NotRecovered)),
            rec(70, "/v/c.ini", action(ActionKind::Touch, true)),
            rec(80, "/v/c.ini", detected),
            rec(81, "/v/c.ini", flapping),
            rec(90, "/v/d.ini", action(ActionKind::Touch, false)),
            rec(95, "/v/d.ini", outcome(OutcomeResult::NotRecovered)),
            rec(99, "/v/d.ini", action(ActionKind::RecycleWorker, false)),
            rec(120, "/v/d.ini", outcome(OutcomeResult::Recovered)),
        ];
        let eps = Episode::replay(&log);
        let a = &eps[Path::new("/v/a.ini")];
        assert_eq!(a.step(), Step::Touch);
        assert_eq!(a.history().actions, [at(1)]);
        assert_eq!(a.history().last_fire, Some(at(0)));
        assert_eq!(eps[Path::new("/v/b.ini")].step(), Step::Exhausted);
        // A dry run is not an action; a flapping hold is remembered.
        let c = &eps[Path::new("/v/c.ini")];
        assert!(c.history().actions.is_empty());
        assert!(c.history().flapping);
        assert_eq!(c.step(), Step::Gentlest);
        assert_eq!(eps[Path::new("/v/d.ini")].step(), Step::Gentlest);
        assert!(eps.values().all(|e| !e.is_pending()));
    }
}
