//! What is wrong with a vassal now, said for a person (`status`, `check`, `health`), and
//! the words of a hold for its record. Pure: the episode, the policy and one fresh
//! sample in, concerns out.

use std::time::{Duration, SystemTime};

use super::{Episode, Proc};
use crate::config::Policy;
use crate::policy::{self, Climb, Hold, Plan, Step};

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
    pub kind: ConcernKind,
    pub text: String,
}

/// What a concern is about, for whoever sorts or filters them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ConcernKind {
    /// A process is over its line, or at its limit.
    OverTheLine,
    /// Something keeps the warden from acting on the vassal (no Emperor, a broken file).
    CannotAct,
    /// The ladder's top: alerting only until a person acts.
    GivenUp,
    /// A recycle did not work: a touch is next.
    Climbing,
    /// Reloads are held by `max-reloads`.
    Flapping,
    /// A reload is held by the cooldown.
    Cooldown,
    /// An operator paused the vassal: nothing is done to it until the pause ends.
    Paused,
}

/// How a concern about what keeps the warden from acting begins.
const CANNOT_ACT: &str = "the warden cannot act on it";

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
    let mut say = |kind, level, text: String| out.push(Concern { level, kind, text });
    for p in &over {
        let at_limit = p.fds as f64 >= p.limit as f64 * AT_LIMIT;
        say(
            ConcernKind::OverTheLine,
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
        say(
            ConcernKind::CannotAct,
            stuck,
            format!("{CANNOT_ACT}: {why}"),
        );
    }
    match ep.step {
        Step::Exhausted if !over.is_empty() => say(
            ConcernKind::GivenUp,
            Level::Critical,
            if ep.climb == Climb::CouldNotAct {
                "given up: the touch could not be made (its action_failed record says why); alerting only until a person acts (`vassal-warden reload` lifts it)"
            } else {
                "given up: a reload did not bring the fds down; alerting only until a person acts (`vassal-warden reload` lifts it)"
            }
            .into(),
        ),
        Step::Touch if !over.is_empty() => say(
            ConcernKind::Climbing,
            Level::Warning,
            "a recycle did not work or was refused; a touch is next".into(),
        ),
        _ => {}
    }
    match policy::gate(policy, now, &ep.hist, &Plan::Touch, false, false) {
        Err(Hold::Flapping { recent, next }) => say(
            ConcernKind::Flapping,
            stuck,
            format!(
                "flapping: {recent} reloads within {}, the leak comes back; next reload allowed in {} — the code needs a fix",
                humantime::format_duration(policy.max_reloads_window),
                humantime::format_duration(Duration::from_secs(next.as_secs()))
            ),
        ),
        Err(Hold::Cooldown { remaining }) if !over.is_empty() => say(
            ConcernKind::Cooldown,
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
