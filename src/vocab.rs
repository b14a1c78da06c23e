//! The vocabulary of decisions and records: the words the incident log, the metrics, the
//! hook and the decision core share.
//!
//! This module is a leaf: closed enums, each with its wire name (`as_str`, the same as
//! serde's), and the list of every value where something must name them all (the metrics
//! start each at 0; the hook accepts each name). Nothing here decides or reads anything.
//! The names a hook hears of (`HookEvent`) are derived from the enums themselves, so a
//! new reason or result is a hook event without a list kept by hand.

use serde::{Deserialize, Serialize};

/// Which rule fired, as the incident log names it (`rule_name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Rule {
    ReloadAt,
    MaxFds,
    Predict,
}

impl Rule {
    #[must_use]
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Rule::ReloadAt => "reload-at",
            Rule::MaxFds => "max-fds",
            Rule::Predict => "predict",
        }
    }
}

/// What the warden did to a vassal, as the incident log names it (`action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum ActionKind {
    /// SIGHUP to chosen workers.
    RecycleWorker,
    /// A touch of the vassal's `touch-chain-reload` file.
    ChainReload,
    /// A touch of the vassal file.
    Touch,
}

impl ActionKind {
    /// Every kind, for what lists them all (metrics start each at 0).
    pub(crate) const ALL: [ActionKind; 3] = [
        ActionKind::RecycleWorker,
        ActionKind::ChainReload,
        ActionKind::Touch,
    ];

    #[must_use]
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ActionKind::RecycleWorker => "recycle-worker",
            ActionKind::ChainReload => "chain-reload",
            ActionKind::Touch => "touch",
        }
    }
}

impl std::fmt::Display for ActionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a vassal over the line was not acted on, as the incident log names it
/// (`suppressed.reason`). `Other` keeps a reason this version does not know (a newer
/// warden wrote it), so that reading a log never fails on one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Reason {
    /// More than `max-reloads` actions in the window, or not yet quiet since.
    Flapping,
    /// Acted on less than `cooldown` ago.
    Cooldown,
    /// The host-wide cap on actions in progress (`max-concurrent`) is reached.
    Busy,
    /// Dry run: the action is recorded, not taken.
    DryRun,
    /// `action = alert`.
    AlertOnly,
    /// The top of the ladder: a touch did not bring the fds down.
    LadderExhausted,
    /// The vassal file does not read as a vassal config: a touch would break the vassal.
    IniInvalid,
    /// The file changed under an old mtime: a touch would deploy it.
    PendingChange,
    /// The process is gone or its PID was reused since it was sampled.
    PidChanged,
    /// No running Emperor watches the file: a touch could not reload it.
    NoEmperor,
    /// The action was tried and failed.
    ActionFailed,
    /// The process over its line is a sub-Emperor: a reload of its vassal would restart
    /// every vassal it runs, which is no gentle cure.
    RunsVassals,
    /// An operator paused the vassal (`vassal-warden pause`): recorded, not acted on.
    Paused,
    #[serde(untagged)]
    Other(String),
}

impl Reason {
    /// Every reason this version writes, for what lists them all (metrics start each at
    /// 0). A new reason goes here too.
    pub(crate) const KNOWN: [Reason; 13] = [
        Reason::Flapping,
        Reason::Cooldown,
        Reason::Busy,
        Reason::DryRun,
        Reason::AlertOnly,
        Reason::LadderExhausted,
        Reason::IniInvalid,
        Reason::PendingChange,
        Reason::PidChanged,
        Reason::NoEmperor,
        Reason::ActionFailed,
        Reason::RunsVassals,
        Reason::Paused,
    ];

    #[must_use]
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Reason::Flapping => "flapping",
            Reason::Cooldown => "cooldown",
            Reason::Busy => "busy",
            Reason::DryRun => "dry_run",
            Reason::AlertOnly => "alert_only",
            Reason::LadderExhausted => "ladder_exhausted",
            Reason::IniInvalid => "ini_invalid",
            Reason::PendingChange => "pending_change",
            Reason::PidChanged => "pid_changed",
            Reason::NoEmperor => "no_emperor",
            Reason::ActionFailed => "action_failed",
            Reason::RunsVassals => "runs_vassals",
            Reason::Paused => "paused",
            Reason::Other(s) => s,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an action under verification ended, as the incident log names it
/// (`outcome.result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OutcomeResult {
    Recovered,
    NotRecovered,
    Vanished,
}

impl OutcomeResult {
    /// Every result, for what lists them all (metrics start each at 0).
    pub(crate) const ALL: [OutcomeResult; 3] = [
        OutcomeResult::Recovered,
        OutcomeResult::NotRecovered,
        OutcomeResult::Vanished,
    ];

    #[must_use]
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OutcomeResult::Recovered => "recovered",
            OutcomeResult::NotRecovered => "not_recovered",
            OutcomeResult::Vanished => "vanished",
        }
    }
}

impl std::fmt::Display for OutcomeResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of a record of the incident log, as its `event` field names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RecordKind {
    Detected,
    Action,
    Outcome,
    Suppressed,
    Reminder,
    Ended,
    /// The code that leaks, found after the incident's `detected` record was written.
    Capture,
    /// An operator paused the vassal until a time.
    Pause,
    /// The pause is over: lifted by an operator, or its time came.
    Resume,
}

impl RecordKind {
    pub(crate) const ALL: [RecordKind; 9] = [
        RecordKind::Detected,
        RecordKind::Action,
        RecordKind::Outcome,
        RecordKind::Suppressed,
        RecordKind::Reminder,
        RecordKind::Ended,
        RecordKind::Capture,
        RecordKind::Pause,
        RecordKind::Resume,
    ];

    #[must_use]
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RecordKind::Detected => "detected",
            RecordKind::Action => "action",
            RecordKind::Outcome => "outcome",
            RecordKind::Suppressed => "suppressed",
            RecordKind::Reminder => "reminder",
            RecordKind::Ended => "ended",
            RecordKind::Capture => "capture",
            RecordKind::Pause => "pause",
            RecordKind::Resume => "resume",
        }
    }
}

/// A name `on-event-for` accepts: a record answers to its kind, and to its outcome's
/// result or its reason; `log_write_failed` is said of a record that could not be
/// written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum HookEvent {
    Record(RecordKind),
    Result(OutcomeResult),
    Reason(Reason),
    LogWriteFailed,
}

impl HookEvent {
    /// Every name, derived from the enums it is made of.
    #[must_use]
    pub(crate) fn all() -> Vec<HookEvent> {
        let records = RecordKind::ALL.into_iter().map(HookEvent::Record);
        let results = OutcomeResult::ALL.into_iter().map(HookEvent::Result);
        let reasons = Reason::KNOWN.into_iter().map(HookEvent::Reason);
        records
            .chain(results)
            .chain(reasons)
            .chain([HookEvent::LogWriteFailed])
            .collect()
    }

    /// What needs a human: an action that did not work, a vassal the warden gave up on
    /// or that flaps, an action refused or failed, a vassal only alerted on, a record
    /// lost. The reminders and the end of such an episode match too, by its reason.
    #[must_use]
    pub(crate) fn defaults() -> Vec<HookEvent> {
        vec![
            HookEvent::Result(OutcomeResult::NotRecovered),
            HookEvent::Reason(Reason::Flapping),
            HookEvent::Reason(Reason::LadderExhausted),
            HookEvent::Reason(Reason::ActionFailed),
            HookEvent::Reason(Reason::IniInvalid),
            HookEvent::Reason(Reason::PendingChange),
            HookEvent::Reason(Reason::NoEmperor),
            HookEvent::Reason(Reason::AlertOnly),
            HookEvent::Reason(Reason::RunsVassals),
            HookEvent::LogWriteFailed,
        ]
    }

    /// The event named `name`, if it is one.
    #[must_use]
    pub(crate) fn parse(name: &str) -> Option<HookEvent> {
        HookEvent::all().into_iter().find(|e| e.as_str() == name)
    }

    #[must_use]
    pub(crate) fn as_str(&self) -> &str {
        match self {
            HookEvent::Record(k) => k.as_str(),
            HookEvent::Result(r) => r.as_str(),
            HookEvent::Reason(r) => r.as_str(),
            HookEvent::LogWriteFailed => "log_write_failed",
        }
    }
}

impl std::fmt::Display for HookEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each name as serde writes it: the wire names and `as_str` never drift apart.
    fn wire<T: Serialize>(v: &T) -> String {
        serde_json::to_value(v)
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn every_name_is_the_one_the_log_writes() {
        for k in ActionKind::ALL {
            assert_eq!(wire(&k), k.as_str());
        }
        for r in OutcomeResult::ALL {
            assert_eq!(wire(&r), r.as_str());
        }
        for r in Reason::KNOWN {
            assert_eq!(wire(&r), r.as_str());
        }
        for r in [Rule::ReloadAt, Rule::MaxFds, Rule::Predict] {
            assert_eq!(wire(&r), r.as_str());
        }
    }

    #[test]
    fn hook_events_are_exactly_the_union_of_the_vocabulary() {
        let names: Vec<String> = HookEvent::all()
            .iter()
            .map(|e| e.as_str().to_owned())
            .collect();
        let mut union: Vec<String> = RecordKind::ALL
            .iter()
            .map(|k| k.as_str().to_owned())
            .collect();
        union.extend(OutcomeResult::ALL.iter().map(|r| r.as_str().to_owned()));
        union.extend(Reason::KNOWN.iter().map(|r| r.as_str().to_owned()));
        union.push("log_write_failed".into());
        assert_eq!(names, union);
        let unique: std::collections::HashSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "no name stands for two events");
        for n in &names {
            assert_eq!(
                HookEvent::parse(n).map(|e| e.as_str().to_owned()).as_ref(),
                Some(n)
            );
        }
        assert_eq!(HookEvent::parse("all"), None);
        assert_eq!(HookEvent::parse("Detected"), None);
        assert!(
            HookEvent::defaults()
                .iter()
                .all(|d| HookEvent::all().contains(d))
        );
    }
}
