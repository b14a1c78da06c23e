//! The core's invariants as properties: random sequences of passes (counts, workers
//! respawned, processes gone, facts changing, actions that succeed, fail, are refused or
//! cannot be recorded, time moving) are run through an episode the way the warden runs
//! it, writing the records the warden writes; after every pass the invariants hold.

use proptest::prelude::*;

use super::*;
use crate::audit::{self, Detected, Episode as Lasting};

/// How the warden fares with what a pass decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carry {
    /// The action is taken and recorded.
    Done,
    /// The action was tried and failed.
    Failed,
    /// The last checks refuse it (the Emperor stopped, the process is gone).
    Refused(bool),
    /// Its first record cannot be written: nothing is done.
    Unwritten,
}

/// One pass of the simulation: its flags are coin flips, each on its own.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Clone)]
struct Turn {
    advance: u64,
    /// Master first, then each worker.
    counts: Vec<u64>,
    /// Workers replaced by a new process before this pass.
    respawned: Vec<bool>,
    /// The leak is held through the master.
    inherited: bool,
    gone: bool,
    emperor_up: bool,
    ini_invalid: bool,
    busy: bool,
    carry: Carry,
}

fn turn(workers: usize) -> impl Strategy<Value = Turn> {
    let carry = prop_oneof![
        4 => Just(Carry::Done),
        1 => Just(Carry::Failed),
        1 => any::<bool>().prop_map(Carry::Refused),
        1 => Just(Carry::Unwritten),
    ];
    (
        1..400u64,
        prop::collection::vec(prop_oneof![2 => 0..40u64, 1 => 40..65u64], workers + 1),
        prop::collection::vec(prop::bool::weighted(0.15), workers),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
        carry,
    )
        .prop_map(
            |(
                advance,
                counts,
                respawned,
                inherited,
                gone,
                emperor_up,
                ini_invalid,
                busy,
                carry,
            )| {
                Turn {
                    advance,
                    counts,
                    respawned,
                    inherited,
                    gone,
                    emperor_up,
                    ini_invalid,
                    busy,
                    carry,
                }
            },
        )
}

fn scenario() -> impl Strategy<Value = (ActionMode, Vec<Turn>)> {
    let mode = prop_oneof![
        3 => Just(ActionMode::Auto),
        1 => Just(ActionMode::Touch),
        1 => Just(ActionMode::RecycleWorker),
        1 => Just(ActionMode::Alert),
    ];
    (mode, 1..6usize)
        .prop_flat_map(|(mode, workers)| (Just(mode), prop::collection::vec(turn(workers), 1..50)))
}

const CONFIG: &str = "/v/a.ini";

/// The run: the episode, the records written, and what the simulation knows.
struct Run {
    ep: Episode,
    log: Vec<Record>,
    policy: Policy,
    mono: Instant,
    t: u64,
    pids: Vec<i32>,
    next_pid: i32,
    incidents: u64,
    /// The ladder came down at a quiet pass, which writes no record: the log cannot say
    /// so until its next outcome.
    reset_unrecorded: bool,
}

impl Run {
    fn record(&mut self, incident: &str, event: Event) {
        let mut r = rec(self.t, CONFIG, event);
        r.incident = incident.to_owned();
        self.log.push(r);
    }

    fn now(&self) -> SystemTime {
        at(self.t)
    }

    /// One pass: decide, check the invariants of the decision, carry it out.
    fn pass(&mut self, turn: &Turn) -> Result<(), TestCaseError> {
        self.t += turn.advance;
        for (pid, again) in self.pids.iter_mut().zip(&turn.respawned) {
            if *again {
                *pid = self.next_pid;
                self.next_pid += 1;
            }
        }
        let workers: Vec<ProcId> = self.pids.iter().map(|p| id(*p)).collect();
        let procs: Vec<Proc> = std::iter::once(10)
            .chain(self.pids.iter().copied())
            .zip(&turn.counts)
            .enumerate()
            .map(|(i, (pid, fds))| {
                let role = if i == 0 { Role::Master } else { Role::Worker };
                // Some workers near their limit are urgent, whether they fire or not.
                Proc {
                    urgent: role == Role::Worker && *fds >= 35,
                    ..proc(pid, role, *fds)
                }
            })
            .collect();
        let inherited = turn.inherited.then_some(30);
        let mut fake = Fake {
            facts: Facts {
                emperor_up: turn.emperor_up,
                ini_error: turn.ini_invalid.then(|| "line 3: no `=`".into()),
                ..Facts::default()
            },
            tops: self
                .pids
                .iter()
                .map(|p| (*p, vec![cat(30, Some(30), inherited)]))
                .collect(),
            gone: turn.gone,
            ..Fake::default()
        };
        let pass = Pass {
            now: self.now(),
            mono: self.mono + Duration::from_secs(self.t),
            workers: &workers,
            procs: &procs,
            busy: turn.busy,
            dry_run: false,
            remind: Duration::from_secs(3600),
            paused: None,
        };
        let before = self.ep.clone();
        let d = self.ep.decide(&self.policy, &pass, &mut fake);
        check_decision(&before, &self.policy, &pass, &d)?;
        let quiet = procs.iter().all(|p| !p.over() && p.fire.is_none());
        self.carry_out(d.clone(), &workers, turn.carry);
        // The ladder only climbs within an episode: it comes down when an action
        // recovered, or when the episode is over (every process quiet).
        let recovered = matches!(&d, Decision::Outcome(v) if v.result == OutcomeResult::Recovered);
        if self.ep.step < before.step {
            prop_assert!(recovered || quiet, "the ladder came down on {d:?}");
            if quiet && !recovered {
                self.reset_unrecorded = true;
            }
        }
        if matches!(d, Decision::Outcome(_)) {
            self.reset_unrecorded = false;
        }
        self.check_replay()
    }

    /// Writes what the warden writes for `d` and tells the episode how it went.
    fn carry_out(&mut self, d: Decision, workers: &[ProcId], carry: Carry) {
        let now = self.now();
        match d {
            Decision::Nothing => {}
            Decision::Outcome(v) => {
                let o = Event::Outcome(audit::Outcome {
                    result: v.result,
                    fds_after: v.fds_after,
                    seconds: v.seconds,
                    detail: v.detail,
                });
                self.record(&v.incident, o);
            }
            Decision::Remind { open, fds } => {
                let e = Event::Reminder(Lasting::of(&open, now, fds, None));
                self.record(&open.incident, e);
            }
            Decision::Ended { open, fds, detail } => {
                let e = Event::Ended(Lasting::of(&open, now, fds, Some(detail)));
                self.record(&open.incident, e);
            }
            Decision::Continue {
                incident,
                plan,
                rest,
            } => match (carry, plan) {
                (Carry::Unwritten, Plan::RecycleWorkers(mut ids)) => {
                    ids.extend(rest);
                    self.ep.put_back(incident, ids);
                }
                (Carry::Failed, plan) => self.failed(&incident, &plan),
                (_, plan) => self.act(&incident, &plan, rest, workers),
            },
            Decision::Incident(inc) => self.incident(*inc, workers, carry),
        }
    }

    fn incident(&mut self, inc: Incident, workers: &[ProcId], carry: Carry) {
        let now = self.now();
        self.incidents += 1;
        let incident = format!("i{}", self.incidents);
        if let Some((open, why)) = &inc.closes {
            let e = Event::Ended(Lasting::of(open, now, None, Some(why.clone())));
            self.record(&open.incident, e);
        }
        if carry == Carry::Unwritten {
            self.ep.unrecorded();
            return;
        }
        self.record(&incident, detected(&inc));
        let suppressed = |reason: Reason, action| {
            Event::Suppressed(audit::Suppressed {
                reason,
                action,
                detail: None,
                manual: false,
            })
        };
        match inc.then {
            Then::Hold { hold, .. } => {
                self.record(&incident, suppressed(hold.reason(), None));
                self.ep.opened(incident, hold.reason(), now);
            }
            Then::Alert { reason, .. } => {
                self.record(&incident, suppressed(reason.clone(), None));
                self.ep.opened(incident, reason, now);
            }
            Then::Act { plan, rest, .. } => match carry {
                Carry::Refused(emperor) => {
                    let reason = if emperor {
                        Reason::NoEmperor
                    } else {
                        Reason::PidChanged
                    };
                    self.record(&incident, suppressed(reason.clone(), None));
                    self.ep.refused(incident, reason, now);
                }
                Carry::Failed => self.failed(&incident, &plan),
                _ => self.act(&incident, &plan, rest, workers),
            },
        }
    }

    /// The action was tried and failed: recorded, and the ladder climbs.
    fn failed(&mut self, incident: &str, plan: &Plan) {
        let kind = plan.kind().expect("an action");
        let e = Event::Suppressed(audit::Suppressed {
            reason: Reason::ActionFailed,
            action: Some(kind),
            detail: None,
            manual: false,
        });
        self.record(incident, e);
        self.ep.failed(kind);
    }

    fn act(&mut self, incident: &str, plan: &Plan, rest: Vec<ProcId>, workers: &[ProcId]) {
        let kind = plan.kind().expect("an action");
        let replace = match plan {
            Plan::RecycleWorkers(ids) => ids.clone(),
            _ => workers.to_vec(),
        };
        let e = Event::Action(Action {
            action: kind,
            path: CONFIG.into(),
            mtime_before: None,
            mtime_after: None,
            dry_run: false,
            pids: Vec::new(),
            reason: None,
            note: None,
            manual: false,
        });
        self.record(incident, e);
        let taken = Taken {
            now: self.now(),
            mono: self.mono + Duration::from_secs(self.t),
            kind,
            manual: false,
            replace,
            before: workers.to_vec(),
            mercy: None,
        };
        self.ep.acted(taken, incident.to_owned(), rest);
    }

    /// What the records written so far rebuild is what the live episode holds: its
    /// actions, its lasting episode, and its place on the ladder (which the log can only
    /// say higher, after a quiet pass that wrote nothing brought it down).
    fn check_replay(&self) -> Result<(), TestCaseError> {
        let lines: Vec<String> = self
            .log
            .iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect();
        let read: Vec<Record> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let rebuilt = Episode::replay(&audit::history(&read))
            .remove(Path::new(CONFIG))
            .unwrap_or_default();
        prop_assert_eq!(&rebuilt.hist, &self.ep.hist);
        prop_assert_eq!(rebuilt.open(), self.ep.open());
        if self.reset_unrecorded {
            prop_assert!(rebuilt.step >= self.ep.step);
        } else {
            prop_assert_eq!(rebuilt.step, self.ep.step);
        }
        Ok(())
    }
}

/// The `detected` record of an incident, as far as replay reads it.
fn detected(inc: &Incident) -> Event {
    Event::Detected(Detected {
        pid: inc.offender.id.pid,
        role: inc.offender.role,
        fds: inc.offender.fds,
        limit: inc.offender.limit,
        usage: 0.0,
        rule: String::new(),
        rule_name: Some(inc.fire.rule()),
        slope: None,
        eta_seconds: None,
        top: Vec::new(),
        by_kind: std::collections::BTreeMap::new(),
        capture: None,
    })
}

/// What a decision must never be: an action while one is pending, an action the gate
/// holds, or more than half of the workers recycled at once unless every one of them is
/// urgent (a leak in lockstep: none may wait past its limit).
fn check_decision(
    before: &Episode,
    policy: &Policy,
    pass: &Pass<'_>,
    d: &Decision,
) -> Result<(), TestCaseError> {
    let plan = match d {
        Decision::Incident(inc) => match &inc.then {
            Then::Act { plan, .. } => Some(plan),
            _ => None,
        },
        Decision::Continue { plan, .. } => Some(plan),
        _ => None,
    };
    if before.is_pending() {
        prop_assert!(
            matches!(d, Decision::Nothing | Decision::Outcome(_)),
            "decided {d:?} while an action was pending"
        );
    }
    let Some(plan) = plan else { return Ok(()) };
    let gate = policy::gate(
        policy,
        pass.now,
        &before.hist,
        plan,
        pass.busy,
        pass.dry_run,
    );
    prop_assert!(gate.is_ok(), "{plan:?} while the gate holds: {gate:?}");
    if let Plan::RecycleWorkers(ids) = plan {
        prop_assert!(!ids.is_empty());
        // Half of them, or the one when there is one: never more, unless every one but
        // the offender is urgent.
        let half = (pass.workers.len() / 2).max(1);
        let urgent = |w: &ProcId| pass.procs.iter().any(|p| p.id == *w && p.urgent);
        prop_assert!(
            ids.len() <= half || ids.iter().skip(1).all(urgent),
            "{} of {} workers at once, not all urgent",
            ids.len(),
            pass.workers.len()
        );
        prop_assert!(ids.iter().all(|w| pass.workers.contains(w)));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_sequence_of_passes_keeps_the_cores_invariants((mode, turns) in scenario()) {
        let workers = turns[0].respawned.len();
        let mut run = Run {
            ep: Episode::default(),
            log: Vec::new(),
            policy: Policy { action: mode, ..policy() },
            mono: Instant::now(),
            t: 0,
            pids: (11..).take(workers).collect(),
            next_pid: 100,
            incidents: 0,
            reset_unrecorded: false,
        };
        for t in &turns {
            run.pass(t)?;
        }
    }
}
