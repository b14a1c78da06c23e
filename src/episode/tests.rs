use std::collections::HashMap;
use std::path::Path;

use super::decide::{mostly_inherited, same_leak};
use super::*;
use crate::audit::{Action, Event, Outcome, Record, Suppressed};
use crate::config::{ActionMode, Predict, Threshold};
use crate::forensics::Group;

mod props;
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
        urgent: false,
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
        paused: None,
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
        paused: None,
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
    let Decision::Incident(inc) = ep.decide(&p, &pass(40, mono, &WORKERS, &over), &mut fake) else {
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
    let Decision::Incident(inc) = ep.decide(&p, &pass(20, mono, &WORKERS, &over), &mut fake) else {
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
    let Decision::Incident(inc) = ep.decide(&p, &pass(2, mono, &WORKERS, &over), &mut fake) else {
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
            manual: false,
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
    let mut ep = replay(&log).remove(Path::new("/v/a.ini")).unwrap();
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
    let ep = replay(&log).remove(Path::new("/v/a.ini")).unwrap();
    assert!(ep.open().is_none());
    // An episode whose start was rotated away is rebuilt from its last reminder.
    let reminded = [of(5000, "older", Event::Reminder(episode(4940.0)))];
    let ep = replay(&reminded).remove(Path::new("/v/a.ini")).unwrap();
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
        manual: false,
    });
    log.push(of(1600, "op", refused));
    let ep = replay(&log).remove(Path::new("/v/a.ini")).unwrap();
    assert!(ep.open().is_none());
}

/// The episodes the log's records rebuild, through the history the log makes of them.
fn replay(records: &[Record]) -> HashMap<PathBuf, Episode> {
    Episode::replay(&crate::audit::history(records))
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
        mercy: None,
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
    let t = then(Episode::default().decide(&policy(), &pass(0, mono, &WORKERS, &over), &mut fake));
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
    let t =
        then(Episode::default().decide(&touching(), &pass(160, mono, &WORKERS, &over), &mut fake));
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

/// A touch at 0 s, its old workers given `mercy` seconds by uWSGI (none: a recycle's
/// way of judging), under a `verify` of 60 s.
fn touched(mono: Instant, mercy: Option<u64>) -> Episode {
    let mut ep = Episode::default();
    ep.acted(
        Taken {
            mercy: mercy.map(Duration::from_secs),
            ..taken(0, mono, ActionKind::Touch, &WORKERS)
        },
        "i1".into(),
        vec![],
    );
    ep
}

/// The pass at `t` s of a vassal whose workers are `workers`; its master over its line
/// unless `under`.
fn reload_pass(
    ep: &mut Episode,
    mono: Instant,
    t: u64,
    workers: &[ProcId],
    under: bool,
) -> Decision {
    let p = verify_60();
    let procs = [
        proc(10, Role::Master, if under { 14 } else { 45 }),
        proc(21, Role::Worker, 14),
    ];
    ep.decide(&p, &pass(t, mono, workers, &procs), &mut up(&[]))
}

fn verify_60() -> Policy {
    Policy {
        verify: Duration::from_secs(60),
        ..policy()
    }
}

/// The detail of a `not_recovered` outcome.
fn not_recovered(d: Decision) -> Option<String> {
    match d {
        Decision::Outcome(o) if o.result == OutcomeResult::NotRecovered => o.detail,
        other => panic!("expected not_recovered, got {other:?}"),
    }
}

const NEW_WORKERS: [ProcId; 2] = [
    ProcId {
        pid: 21,
        start_time: 2,
    },
    ProcId {
        pid: 22,
        start_time: 2,
    },
];

/// A touch's graceful reload under way past `verify` (an old worker hangs, or the old
/// are gone and the new not up yet) is waited for up to its mercy and the margin, never
/// past twice `verify`, and is recovered when its new workers are under the line.
#[test]
fn a_reload_under_way_is_waited_for_within_its_mercy() {
    let mono = Instant::now();
    let hung = &WORKERS[..1];
    let mut ep = touched(mono, Some(60));
    assert_eq!(
        reload_pass(&mut ep, mono, 61, hung, false),
        Decision::Nothing
    );
    assert_eq!(
        reload_pass(&mut ep, mono, 70, &[], false),
        Decision::Nothing
    );
    let Decision::Outcome(v) = reload_pass(&mut ep, mono, 72, &NEW_WORKERS, true) else {
        panic!("no outcome");
    };
    assert_eq!(v.result, OutcomeResult::Recovered);

    // Still under way past mercy and margin (75 s): not recovered, and it says why.
    let mut ep = touched(mono, Some(60));
    assert_eq!(
        reload_pass(&mut ep, mono, 75, hung, false),
        Decision::Nothing
    );
    assert_eq!(
        not_recovered(reload_pass(&mut ep, mono, 76, hung, false)).as_deref(),
        Some(
            "old workers were still there 76 s after the reload began \
             (uWSGI's mercy for its old workers: 60 s)"
        )
    );
    let mut ep = touched(mono, Some(60));
    assert_eq!(
        not_recovered(reload_pass(&mut ep, mono, 76, &[], false)).as_deref(),
        Some(
            "no new worker had started 76 s after the reload began \
             (uWSGI's mercy for its old workers: 60 s)"
        )
    );

    // A mercy of 10 minutes is waited for up to twice verify only.
    let mut ep = touched(mono, Some(600));
    assert_eq!(
        reload_pass(&mut ep, mono, 120, hung, false),
        Decision::Nothing
    );
    not_recovered(reload_pass(&mut ep, mono, 121, hung, false));

    // A pass that misses the master while it starts again ends nothing within the wait.
    let mut ep = touched(mono, Some(60));
    let p = verify_60();
    assert_eq!(
        ep.decide_stopped(&p, mono + Duration::from_secs(61)),
        Decision::Nothing
    );
    not_recovered(ep.decide_stopped(&p, mono + Duration::from_secs(76)));
}

/// Past `verify`, a reload that shows no sign of beginning, one that is done with its
/// master still over the line, and an action with no mercy are judged as they always
/// were.
#[test]
fn a_reload_not_under_way_is_judged_at_verify() {
    let mono = Instant::now();
    let mut ep = touched(mono, Some(60));
    assert_eq!(
        not_recovered(reload_pass(&mut ep, mono, 61, &WORKERS, false)).as_deref(),
        Some("workers were not replaced")
    );
    let mut ep = touched(mono, Some(60));
    assert_eq!(
        not_recovered(reload_pass(&mut ep, mono, 61, &NEW_WORKERS, false)).as_deref(),
        Some("fd counts are still over the line")
    );
    let mut ep = touched(mono, None);
    assert_eq!(
        reload_pass(&mut ep, mono, 60, &WORKERS[..1], false),
        Decision::Nothing
    );
    not_recovered(reload_pass(&mut ep, mono, 61, &WORKERS[..1], false));
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
        owner: None,
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
        manual: false,
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
        manual: false,
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
    let eps = replay(&log);
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
    // Each says what it is about, so that `check` can leave out what it says better.
    let kinds: Vec<ConcernKind> = assess(&calm, &p, at(0), &over, Some("no Emperor"))
        .iter()
        .map(|c| c.kind)
        .collect();
    assert_eq!(kinds, [ConcernKind::OverTheLine, ConcernKind::CannotAct]);
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
    r.replay(
        &crate::audit::history(&[
            rec(0, "/v/a.ini", action(ActionKind::Touch, false, None)),
            rec(9, "/v/a.ini", outcome(OutcomeResult::Recovered, 9.0)),
            rec(
                20,
                "/v/a.ini",
                action(ActionKind::RecycleWorker, false, None),
            ),
            rec(60, "/v/a.ini", outcome(OutcomeResult::NotRecovered, 40.0)),
        ]),
        |_| 60.0,
    );
    assert_eq!(r.of(Role::Master), Duration::from_secs(9));
    assert_eq!(r.of(Role::Worker), Duration::from_secs(3));
    // A reload held past its vassal's verify (a hung worker) teaches only that verify.
    let mut held = Timings::default();
    held.replay(
        &crate::audit::history(&[
            rec(0, "/v/a.ini", action(ActionKind::Touch, false, None)),
            rec(72, "/v/a.ini", outcome(OutcomeResult::Recovered, 72.0)),
        ]),
        |config| {
            if config == Path::new("/v/a.ini") {
                30.0
            } else {
                60.0
            }
        },
    );
    assert_eq!(held.of(Role::Master), Duration::from_secs(30));
}
