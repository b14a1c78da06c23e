//! The pauses the daemon honours: read again from their file whenever it changes, and
//! lifted, with a `resume` record, when their time comes. Pausing and resuming by hand
//! (`vassal-warden pause`, `resume`) also go through here, so that the file and the log
//! always say the same.

use std::path::Path;
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use super::Warden;
use crate::audit::{self, Event as Rec, Record};
use crate::pauses::{self, Pause, Stamp};
use crate::text::one_line;

/// The pauses as last read.
#[derive(Debug, Default)]
pub(super) struct Paused {
    list: Vec<Pause>,
    stamp: Option<Stamp>,
    /// Why the file could not be read, said once until it changes.
    said: Option<String>,
    /// Why the pauses that ended could not be lifted from it, said once likewise.
    said_lifting: Option<String>,
}

impl Paused {
    /// The pause that holds for the vassal file `config` at `now`.
    pub(super) fn of(&self, config: &Path, now: SystemTime) -> Option<&Pause> {
        self.list
            .iter()
            .find(|p| p.config == config && p.holds(now))
    }

    /// Every pause that holds at `now`.
    pub(super) fn holding(&self, now: SystemTime) -> impl Iterator<Item = &Pause> {
        self.list.iter().filter(move |p| p.holds(now))
    }
}

impl Warden {
    /// Reads the pauses again when their file changed, and lifts those whose time has
    /// come (the daemon's, once a pass). A file that cannot be read keeps the pauses last
    /// read, and says why once.
    pub(super) fn refresh_pauses(&mut self) {
        let log = self.ledger.path().to_owned();
        if pauses::stamp(&log) != self.paused.stamp || self.paused.said.is_some() {
            match pauses::read(&log) {
                Ok((list, stamp)) => {
                    self.paused.list = list;
                    self.paused.stamp = stamp;
                    self.paused.said = None;
                }
                Err(why) => {
                    if self.paused.said.as_ref() != Some(&why) {
                        warn!("{why}; the pauses last read stay in force");
                        self.paused.said = Some(why);
                    }
                    return;
                }
            }
        }
        let now = SystemTime::now();
        if self.paused.list.iter().all(|p| p.holds(now)) {
            return;
        }
        let lapsed = pauses::update_within(&log, pauses::PASS_LOCK_WAIT, |list| {
            let (gone, kept): (Vec<Pause>, Vec<Pause>) = std::mem::take(list)
                .into_iter()
                .partition(|p| !p.holds(now));
            *list = kept;
            gone
        });
        match lapsed {
            Ok(gone) => {
                self.paused.said_lifting = None;
                for p in gone {
                    info!(vassal = %p.vassal, "{}: the pause by {} ended at {}", one_line(&p.vassal), p.who, p.until);
                    let record = self.pause_record(
                        &p,
                        now,
                        Rec::Resume(audit::Resumed {
                            who: "vassal-warden".into(),
                            reason: format!("the pause ended at {}", p.until),
                        }),
                    );
                    self.ledger.write(record);
                }
                // Read again on the next pass: the file changed.
                self.paused.stamp = None;
            }
            Err(why) => {
                if self.paused.said_lifting.as_ref() != Some(&why) {
                    warn!("{why}; the pauses that ended stay listed in it, and are tried again");
                    self.paused.said_lifting = Some(why);
                }
            }
        }
    }

    /// Pauses the vassal `name` for `length` (an operator's `pause`): in the file, then in
    /// the log. A pause already there is replaced. Returns the pause.
    pub(crate) fn manual_pause(
        &mut self,
        name: &str,
        length: Duration,
        reason: &str,
    ) -> anyhow::Result<Pause> {
        let (vassal, config) = self.named(name)?;
        let now = SystemTime::now();
        let until = now
            .checked_add(length)
            .filter(|t| audit::parse_timestamp(&audit::timestamp(*t)).is_some())
            .ok_or_else(|| {
                anyhow::anyhow!("a pause of that length ends past what a date can say")
            })?;
        let pause = Pause {
            vassal,
            config,
            since: audit::timestamp(now),
            until: audit::timestamp(until),
            who: pauses::who(),
            reason: reason.to_owned(),
        };
        let log = self.ledger.path().to_owned();
        let before = pauses::update(&log, |list| {
            let i = list.iter().position(|p| p.config == pause.config);
            let before = i.map(|i| list.remove(i));
            list.push(pause.clone());
            before
        })
        .map_err(anyhow::Error::msg)?;
        let record = self.pause_record(
            &pause,
            now,
            Rec::Pause(audit::Paused {
                until: pause.until.clone(),
                who: pause.who.clone(),
                reason: pause.reason.clone(),
            }),
        );
        if let Err(e) = self.ledger.write_first(&record) {
            // Not in the log, so not in force: the file goes back to what it said.
            let undone = pauses::update(&log, |list| {
                list.retain(|p| p.config != pause.config);
                list.extend(before);
            });
            if let Err(why) = undone {
                anyhow::bail!(
                    "{e}; and the pause could not be taken back ({why}): `vassal-warden resume {}` lifts it",
                    pause.vassal
                );
            }
            return Err(e.into());
        }
        Ok(pause)
    }

    /// Lifts the pause of the vassal `name` (an operator's `resume`): from the file, then
    /// in the log. Returns the pause lifted; an error when there was none.
    pub(crate) fn manual_resume(&mut self, name: &str, reason: &str) -> anyhow::Result<Pause> {
        let (vassal, config) = self.named(name)?;
        let now = SystemTime::now();
        let log = self.ledger.path().to_owned();
        // Only a pause that holds: one whose time came is the daemon's to lift, with its
        // own record.
        let lifted = pauses::update(&log, |list| {
            let i = list
                .iter()
                .position(|p| p.config == config && p.holds(now))?;
            Some(list.remove(i))
        })
        .map_err(anyhow::Error::msg)?
        .ok_or_else(|| {
            anyhow::anyhow!("{vassal} is not paused; `vassal-warden status` shows pauses")
        })?;
        let record = self.pause_record(
            &lifted,
            now,
            Rec::Resume(audit::Resumed {
                who: pauses::who(),
                reason: reason.to_owned(),
            }),
        );
        self.ledger.write_first(&record)?;
        Ok(lifted)
    }

    /// The vassal `name` names, as its name and file.
    fn named(&mut self, name: &str) -> anyhow::Result<(String, std::path::PathBuf)> {
        self.refresh();
        self.inv
            .find(name)
            .map(|v| (v.file.name.clone(), v.file.path.clone()))
            .ok_or_else(|| {
                anyhow::anyhow!("no vassal named `{name}`; `vassal-warden status` lists them")
            })
    }

    /// A record of the pause `p`, of an incident of its own.
    fn pause_record(&mut self, p: &Pause, now: SystemTime, event: Rec) -> Record {
        Record {
            owner: self
                .inv
                .vassals
                .get(&p.config)
                .and_then(|v| v.policy.owner.clone()),
            schema: audit::SCHEMA,
            ts: audit::timestamp(now),
            incident: self.next_incident(now),
            vassal: p.vassal.clone(),
            config: p.config.clone(),
            event,
        }
    }
}
