//! The history the core is rebuilt from: the log's records as the log projects them
//! (`Entry`, made by `audit`), replayed oldest first into each vassal's `Episode`.
//!
//! The core knows no file format: what a line of the log looks like, how its times are
//! written and how an old record says it was an operator's are the log's business. Here
//! is only what each kind of entry means for cooldowns, the ladder and lasting episodes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::SystemTime;

use super::{Episode, Note, NoteKey, Open};
use crate::policy::{Climb, Past, Plan, Step};
use crate::vocab::{ActionKind, OutcomeResult, Reason};

/// One record of the log, as the core reads its history.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub at: SystemTime,
    /// The vassal file it is about.
    pub config: PathBuf,
    pub incident: String,
    pub what: Happened,
}

/// What a record says happened.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Happened {
    /// A process crossed its line.
    Detected,
    /// An action was taken (or, in a dry run, only recorded); `manual`: by an operator.
    Acted {
        kind: ActionKind,
        dry_run: bool,
        manual: bool,
    },
    /// An incident not acted on, and why; `action`: the one that failed, for
    /// `action_failed`; `manual`: an operator's reload that was refused.
    Suppressed {
        reason: Reason,
        action: Option<ActionKind>,
        manual: bool,
    },
    /// A lasting episode still on, with when it started (when the record says).
    Reminded {
        reason: Reason,
        since: Option<SystemTime>,
    },
    /// A lasting episode ended.
    Ended,
    /// The verdict on an action, and how long it took.
    Verified { result: OutcomeResult, seconds: f64 },
}

impl Episode {
    /// Rebuilds every vassal's episode from its history, oldest first: the actions (for
    /// cooldown and `max-reloads`, judged later under the current config), the place on
    /// the ladder, and the lasting episode still open.
    #[must_use]
    pub(crate) fn replay<'a>(
        history: impl IntoIterator<Item = &'a Entry>,
    ) -> HashMap<PathBuf, Episode> {
        let mut out: HashMap<PathBuf, Episode> = HashMap::new();
        let mut last_kind: HashMap<PathBuf, ActionKind> = HashMap::new();
        for e in history {
            let ep = out.entry(e.config.clone()).or_default();
            match &e.what {
                Happened::Acted {
                    kind,
                    dry_run: false,
                    manual,
                } => {
                    ep.hist.learn(Past {
                        at: e.at,
                        kind: *kind,
                        manual: *manual,
                    });
                    if *manual {
                        ep.step = Step::Gentlest;
                        ep.climb = Climb::DidNotWork;
                    }
                    last_kind.insert(e.config.clone(), *kind);
                    // An action ends any lasting episode (logs before `ended` records).
                    ep.noted = None;
                }
                Happened::Suppressed {
                    reason: Reason::ActionFailed,
                    action: Some(kind),
                    ..
                } => {
                    ep.step = ep.step.max(Step::after_failed(*kind));
                    ep.climb = Climb::CouldNotAct;
                }
                Happened::Suppressed {
                    reason: Reason::ActionFailed,
                    ..
                } => {}
                // An operator's refused reload is not the vassal's episode, and a process
                // gone is decided anew.
                Happened::Suppressed {
                    reason,
                    manual: false,
                    ..
                } if *reason != Reason::PidChanged => {
                    ep.noted = Some(replayed(&e.incident, reason, e.at, e.at));
                }
                // A reminder carries its episode whole: one whose start was rotated
                // away is rebuilt from it.
                Happened::Reminded { reason, since } => match &mut ep.noted {
                    Some(Note { open: Some(o), .. }) if o.incident == e.incident => o.said = e.at,
                    _ => {
                        let since = since.unwrap_or(e.at);
                        ep.noted = Some(replayed(&e.incident, reason, since, e.at));
                    }
                },
                Happened::Ended if ep.open().is_some_and(|o| o.incident == e.incident) => {
                    ep.noted = None;
                }
                Happened::Verified { result, .. } => {
                    ep.step = match (result, last_kind.get(&e.config)) {
                        (OutcomeResult::NotRecovered, Some(kind)) => Step::after_failed(*kind),
                        (OutcomeResult::Vanished, _) => ep.step,
                        _ => Step::Gentlest,
                    };
                    if *result != OutcomeResult::Vanished {
                        ep.climb = Climb::DidNotWork;
                    }
                }
                _ => {}
            }
        }
        out
    }
}

/// A lasting episode rebuilt from the log: its inputs are not known, only its reason.
fn replayed(incident: &str, reason: &Reason, since: SystemTime, said: SystemTime) -> Note {
    Note {
        at: said,
        key: NoteKey::Replayed(reason.clone()),
        would: Plan::Alert(reason.clone()),
        open: Some(Open {
            incident: incident.to_owned(),
            reason: reason.clone(),
            since,
            said,
        }),
    }
}
