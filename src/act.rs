//! Acting on a vassal: the touch that makes the Emperor reload it gracefully, the touch of
//! a `touch-chain-reload` file, and the recycling of one worker.
//!
//! This module owns the only writes the warden makes to a vassal: mtimes. The new mtime
//! comes from `policy::touch_mtime` (whole seconds, see uwsgi-facts.md). A plain Emperor
//! `stat()`s the file, so a symlink's target is touched; an Emperor with
//! `emperor-nofollow` `lstat()`s it, so the link itself is touched (`utimensat` with
//! `AT_SYMLINK_NOFOLLOW`). The one signal it sends is SIGHUP to a worker (a graceful
//! recycle: it finishes its request and the master respawns it), after checking that the
//! PID is still that worker of that master. It never signals a master or an Emperor.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, UTIME_OMIT};

use rustix::process::{Pid, Signal};

use crate::policy;
use crate::procs::{self, ProcId};

/// The mtime of `path` as the Emperor sees it.
pub(crate) fn mtime(path: &Path, nofollow: bool) -> std::io::Result<SystemTime> {
    let m = if nofollow {
        std::fs::symlink_metadata(path)?
    } else {
        std::fs::metadata(path)?
    };
    m.modified()
}

fn to_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Touches `path` so the Emperor reloads the vassal. Returns the mtimes before and after.
pub(crate) fn touch(
    path: &Path,
    nofollow: bool,
    now: SystemTime,
) -> std::io::Result<(SystemTime, SystemTime)> {
    let before = mtime(path, nofollow)?;
    let new_secs = policy::touch_mtime(to_secs(before), to_secs(now));
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: new_secs,
            tv_nsec: 0,
        },
    };
    let flags = if nofollow {
        AtFlags::SYMLINK_NOFOLLOW
    } else {
        AtFlags::empty()
    };
    rustix::fs::utimensat(CWD, path, &times, flags)?;
    let after = mtime(path, nofollow)?;
    Ok((before, after))
}

/// Why a worker was not recycled.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecycleError {
    #[error("PID {0} is no longer a worker of master {1}: not signalled")]
    NotAWorker(i32, i32),
    #[error(
        "PID {0} under master {1} is a {2}, not a worker: not signalled (only workers are recycled)"
    )]
    NotWorkerRole(i32, i32, procs::Role),
    #[error("cannot signal PID {0}: {1}")]
    Signal(i32, std::io::Error),
}

/// Sends SIGHUP to `worker` if it is still the same process, still a child of `master`
/// (both identified by PID and start time), and still a worker by what it runs and the
/// signal handlers it has now (`procs::role_of`).
pub(crate) fn recycle_worker(master: ProcId, worker: ProcId) -> Result<(), RecycleError> {
    let still_child = procs::is_same_process(master)
        && procs::stat(worker.pid)
            .is_some_and(|s| s.start_time == worker.start_time && s.ppid == master.pid);
    if !still_child {
        return Err(RecycleError::NotAWorker(worker.pid, master.pid));
    }
    match procs::role_of(master, worker) {
        procs::Role::Worker => {}
        role => return Err(RecycleError::NotWorkerRole(worker.pid, master.pid, role)),
    }
    let pid = Pid::from_raw(worker.pid).ok_or(RecycleError::NotAWorker(worker.pid, master.pid))?;
    rustix::process::kill_process(pid, Signal::HUP)
        .map_err(|e| RecycleError::Signal(worker.pid, e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn touch_moves_mtime_past_a_future_one() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.ini");
        std::fs::write(&p, "[uwsgi]\n").unwrap();
        let now = SystemTime::now();
        let future = to_secs(now) + 5;
        rustix::fs::utimensat(
            CWD,
            &p,
            &Timestamps {
                last_access: Timespec {
                    tv_sec: 0,
                    tv_nsec: UTIME_OMIT,
                },
                last_modification: Timespec {
                    tv_sec: future,
                    tv_nsec: 0,
                },
            },
            AtFlags::empty(),
        )
        .unwrap();
        let (before, after) = touch(&p, false, now).unwrap();
        assert_eq!(to_secs(before), future);
        assert_eq!(to_secs(after), future + 1);
    }

    #[test]
    fn nofollow_touches_the_link_not_the_target() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("real.ini");
        let link = d.path().join("link.ini");
        std::fs::write(&target, "[uwsgi]\n").unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let target_before = mtime(&target, false).unwrap();
        let later = SystemTime::now() + Duration::from_secs(10);
        let (_, after) = touch(&link, true, later).unwrap();
        assert_eq!(mtime(&link, true).unwrap(), after);
        assert_eq!(mtime(&target, false).unwrap(), target_before);
        // Following the link touches the target.
        let (_, after) = touch(&link, false, later + Duration::from_secs(10)).unwrap();
        assert_eq!(mtime(&target, false).unwrap(), after);
    }
}
