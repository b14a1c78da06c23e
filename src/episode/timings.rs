//! How long actions take on this host, learned from the warden's own outcomes: the lead
//! that `predict = auto` gives itself. Pure: figures in, a duration out.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::{Entry, Happened};
use crate::procs::Role;
use crate::vocab::{ActionKind, OutcomeResult};

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

    /// Learns from every recovered outcome in the history.
    /// `cap` is the most a vassal's recovered action teaches (its `verify`: a reload
    /// held longer by a hung worker says nothing of how long reloads take).
    pub(crate) fn replay<'a>(
        &mut self,
        history: impl IntoIterator<Item = &'a Entry>,
        cap: impl Fn(&Path) -> f64,
    ) {
        let mut last_kind: HashMap<&Path, ActionKind> = HashMap::new();
        for e in history {
            match &e.what {
                Happened::Acted {
                    kind,
                    dry_run: false,
                    ..
                } => {
                    last_kind.insert(&e.config, *kind);
                }
                Happened::Verified {
                    result: OutcomeResult::Recovered,
                    seconds,
                } => {
                    if let Some(kind) = last_kind.get(e.config.as_path()) {
                        self.observe(*kind, seconds.min(cap(&e.config)));
                    }
                }
                _ => {}
            }
        }
    }
}
