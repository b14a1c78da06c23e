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

mod assess;
mod decide;
mod replay;
mod timings;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use crate::config::{ActionMode, Policy};
use crate::forensics::Report;
use crate::policy::{self, Climb, Fire, History, Hold, Past, Plan, Step};
use crate::procs::{ProcId, Role};
use crate::vocab::{ActionKind, OutcomeResult, Reason};

pub(crate) use assess::{Concern, ConcernKind, Level, assess, hold_detail};
pub(crate) use replay::{Entry, Happened};
pub(crate) use timings::Timings;

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
    /// A worker whose limit is near at its recent rate (`policy::urgent`): it could not
    /// wait its turn behind a batch of recycles.
    pub urgent: bool,
}

impl Proc {
    /// At or over its line.
    pub(crate) fn over(&self) -> bool {
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
    /// An operator paused the vassal: what its records say of the pause (who, until,
    /// why). Nothing is done to it; its incidents are recorded as `paused`, never
    /// reminded, and a leak's next workers wait.
    pub paused: Option<&'a str>,
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
pub(super) struct Verdict {
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
        /// Paused, or not: a pause that begins or ends is decided anew.
        paused: bool,
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
    /// How long uWSGI may take to end the old workers of this reload (`Taken::mercy`).
    mercy: Option<Duration>,
}

/// How long past a reload's mercy its verification waits for the old workers to be
/// gone: the Emperor's scan that sees the touch, and uWSGI's own checks.
pub(crate) const MERCY_MARGIN: Duration = Duration::from_secs(15);

/// The rest of a leak whose first workers were recycled: `incident` and who is next.
#[derive(Debug, Clone, PartialEq)]
struct Queue {
    incident: String,
    workers: Vec<ProcId>,
}

/// Where a vassal stands (`Episode::standing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Standing {
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
    /// Why the ladder last climbed.
    climb: Climb,
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
}

impl Episode {
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
            self.climb = Climb::DidNotWork;
        }
        self.pending = Some(Pending {
            incident,
            kind: taken.kind,
            started: taken.mono,
            replace: taken.replace,
            before: taken.before,
            rest,
            mercy: taken.mercy,
        });
    }

    /// An action of `kind` was tried and failed (a signal refused, a touch not allowed):
    /// the ladder climbs, so the next pass tries the next step instead of the same one.
    pub(crate) fn failed(&mut self, kind: ActionKind) {
        self.step = self.step.max(Step::after_failed(kind));
        self.climb = Climb::CouldNotAct;
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
    /// For a graceful reload (a touch, a chain reload): how long uWSGI may take to end
    /// its old workers before it kills them (the vassal's `worker-reload-mercy`). While
    /// one of them is still there, the reload is under way, and its verification waits
    /// for it past `verify`, up to this and `MERCY_MARGIN`, and never past twice
    /// `verify`.
    pub mercy: Option<Duration>,
}

/// How long from `then` to `now`; nothing when the clock went back.
fn since(now: SystemTime, then: SystemTime) -> Duration {
    now.duration_since(then).unwrap_or_default()
}

#[cfg(test)]
mod tests;
