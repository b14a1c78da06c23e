//! Policy: samples and settings in, a decision out.
//!
//! This module is pure: no clock (times are passed in), no files, no /proc. It owns when a
//! process counts as over the line, how many consecutive samples make it fire, whether a
//! vassal may be acted on now (cooldown, dry run), and when a reload counts as having
//! worked. Everything here is tested with plain tables of cases.

use std::time::{Duration, SystemTime};

use crate::config::{Policy, Threshold};
use crate::procs::ProcId;

/// The fd count at or above which a process is over the line.
#[must_use]
pub fn line(policy: &Policy, soft_limit: u64) -> u64 {
    policy.reload_at.line(soft_limit)
}

/// Consecutive samples over the line, per process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Streak(pub u32);

impl Streak {
    /// Feeds one sample; returns true when the process has now been over the line for
    /// `for` consecutive samples.
    pub fn feed(&mut self, policy: &Policy, fds: u64, soft_limit: u64) -> bool {
        if fds >= line(policy, soft_limit) {
            self.0 = self.0.saturating_add(1);
        } else {
            self.0 = 0;
        }
        self.0 >= policy.for_samples
    }
}

/// Human text of what fired, for the `detected` record.
#[must_use]
pub fn rule_text(policy: &Policy, fds: u64, soft_limit: u64) -> String {
    let l = line(policy, soft_limit);
    let what = match policy.reload_at {
        Threshold::Fraction(_) => format!("{} of soft limit {soft_limit}", policy.reload_at),
        Threshold::Count(_) => "reload-at".to_owned(),
    };
    let samples = if policy.for_samples == 1 {
        "sample"
    } else {
        "samples"
    };
    format!(
        "{fds} fds >= {l} ({what}) for {} {samples}",
        policy.for_samples
    )
}

/// Why a vassal over the line is not acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    Cooldown { remaining: Duration },
    DryRun,
}

impl Hold {
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Hold::Cooldown { .. } => "cooldown",
            Hold::DryRun => "dry_run",
        }
    }
}

/// May the vassal be acted on now?
pub fn gate(
    policy: &Policy,
    now: SystemTime,
    last_action: Option<SystemTime>,
    dry_run: bool,
) -> Result<(), Hold> {
    if let Some(last) = last_action {
        // A clock that went backwards counts as "just now": never act early.
        let since = now.duration_since(last).unwrap_or(Duration::ZERO);
        if since < policy.cooldown {
            return Err(Hold::Cooldown {
                remaining: policy.cooldown.saturating_sub(since),
            });
        }
    }
    if dry_run {
        return Err(Hold::DryRun);
    }
    Ok(())
}

/// What a vassal looks like after an action, for verification.
#[derive(Debug, Clone)]
pub struct After<'a> {
    /// Workers before the action.
    pub old_workers: &'a [ProcId],
    /// Workers now.
    pub workers: &'a [ProcId],
    /// The fd count and line of every process now (master and workers).
    pub counts: &'a [(u64, u64)],
}

/// Has the reload worked? It has when every old worker has been replaced by a new one and
/// every process is back under its line.
#[must_use]
pub fn recovered(after: &After<'_>) -> bool {
    let replaced = after.old_workers.iter().all(|w| !after.workers.contains(w))
        && (after.old_workers.is_empty() || !after.workers.is_empty());
    let under = after.counts.iter().all(|(fds, line)| fds < line);
    replaced && under
}

/// The mtime to give a vassal file so that the Emperor sees it as newer: the current
/// second, or one second past the old mtime if that is later. The Emperor compares whole
/// seconds against the mtime it last saw (emperor.c), so a touch within the same second
/// as the last change would do nothing.
#[must_use]
pub fn touch_mtime(old_secs: i64, now_secs: i64) -> i64 {
    now_secs.max(old_secs + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(reload_at: Threshold, for_samples: u32) -> Policy {
        Policy {
            reload_at,
            for_samples,
            ..Policy::default()
        }
    }

    #[test]
    fn streak_needs_consecutive_samples() {
        let p = policy(Threshold::Fraction(0.8), 2);
        let mut s = Streak::default();
        // (fds, limit, fires)
        let table = [
            (819, 1024, false),
            (820, 1024, false),
            (700, 1024, false),
            (830, 1024, false),
            (840, 1024, true),
            (900, 1024, true),
            (10, 1024, false),
        ];
        for (i, (fds, limit, fires)) in table.into_iter().enumerate() {
            assert_eq!(s.feed(&p, fds, limit), fires, "row {i}");
        }
    }

    #[test]
    fn absolute_count_ignores_the_limit() {
        let p = policy(Threshold::Count(40), 1);
        assert!(Streak::default().feed(&p, 40, 1_000_000_000));
        assert!(!Streak::default().feed(&p, 39, 64));
    }

    #[test]
    fn rule_text_says_what_fired() {
        let p = policy(Threshold::Fraction(0.8), 2);
        assert_eq!(
            rule_text(&p, 830, 1024),
            "830 fds >= 820 (80% of soft limit 1024) for 2 samples"
        );
        let p = policy(Threshold::Count(40), 1);
        assert_eq!(
            rule_text(&p, 41, 64),
            "41 fds >= 40 (reload-at) for 1 sample"
        );
    }

    #[test]
    fn cooldown_and_dry_run() {
        let p = Policy {
            cooldown: Duration::from_secs(600),
            ..Policy::default()
        };
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(gate(&p, t0, None, false), Ok(()));
        assert_eq!(gate(&p, t0, None, true), Err(Hold::DryRun));
        assert_eq!(
            gate(&p, t0 + Duration::from_secs(60), Some(t0), false),
            Err(Hold::Cooldown {
                remaining: Duration::from_secs(540)
            })
        );
        assert_eq!(
            gate(&p, t0 + Duration::from_secs(600), Some(t0), false),
            Ok(())
        );
        // Clock went backwards: still in cooldown.
        assert!(gate(&p, t0 - Duration::from_secs(5), Some(t0), false).is_err());
    }

    #[test]
    fn recovery_needs_new_workers_and_counts_under_the_line() {
        let id = |pid| ProcId { pid, start_time: 1 };
        let old = [id(10), id(11)];
        let cases: [(&[ProcId], &[(u64, u64)], bool); 5] = [
            (&[id(10), id(11)], &[(14, 40), (50, 40), (10, 40)], false),
            (&[id(12), id(11)], &[(14, 40), (10, 40), (10, 40)], false),
            (&[id(12), id(13)], &[(14, 40), (10, 40), (10, 40)], true),
            (&[id(12), id(13)], &[(14, 40), (45, 40), (10, 40)], false),
            (&[], &[(14, 40)], false),
        ];
        for (i, (workers, counts, want)) in cases.into_iter().enumerate() {
            let a = After {
                old_workers: &old,
                workers,
                counts,
            };
            assert_eq!(recovered(&a), want, "case {i}");
        }
    }

    #[test]
    fn touch_mtime_respects_whole_seconds() {
        assert_eq!(touch_mtime(100, 200), 200);
        // Modified this very second: one more.
        assert_eq!(touch_mtime(200, 200), 201);
        // An mtime in the future: one past it.
        assert_eq!(touch_mtime(300, 200), 301);
    }
}
