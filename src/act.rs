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

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, Timespec, Timestamps, UTIME_OMIT};

use rustix::process::{Pid, Signal};

use crate::policy;
use crate::procs::{self, ProcId};

fn to_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// What to touch, and on whose word.
#[derive(Debug, Clone)]
pub(crate) struct TouchTarget<'a> {
    pub path: &'a Path,
    /// The Emperor `lstat()`s vassal files (`emperor-nofollow`): touch the link itself.
    pub nofollow: bool,
    /// The mtime (whole seconds) the Emperor last loaded the file at, when known: the
    /// new mtime must pass it too (a file whose mtime went back, `touch -d`, `cp -p`).
    pub loaded: Option<i64>,
    /// The user whose file named this path (the vassal file's owner), or `None` for a
    /// path root chose. A file that user could not write is not touched.
    pub owner: Option<u32>,
}

/// What a touch did: the file it set the mtime of, and that mtime before and after.
#[derive(Debug)]
pub(crate) struct Touched {
    /// The file touched, as the kernel names the descriptor it was touched through: a
    /// symlink's target when the link was followed, the link itself under `nofollow`.
    pub path: PathBuf,
    pub before: SystemTime,
    pub after: SystemTime,
}

/// Touches the target so the Emperor reloads the vassal. Returns the file touched and
/// its mtimes before and after. The file is opened once (`O_PATH`, which opens no device and blocks on no
/// FIFO), checked to be a regular file its owner could write, and touched through that
/// descriptor, so a symlink swapped in between cannot redirect the touch.
pub(crate) fn touch(t: &TouchTarget<'_>, now: SystemTime) -> std::io::Result<Touched> {
    use rustix::fs::{Mode, OFlags};
    let refuse = |why: String| std::io::Error::new(std::io::ErrorKind::PermissionDenied, why);
    let mut flags = OFlags::PATH | OFlags::CLOEXEC;
    if t.nofollow {
        flags |= OFlags::NOFOLLOW;
    }
    let fd = rustix::fs::open(t.path, flags, Mode::empty())?;
    let st = rustix::fs::fstat(&fd)?;
    let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
    let regular = kind == rustix::fs::FileType::RegularFile;
    if !(regular || (t.nofollow && kind == rustix::fs::FileType::Symlink)) {
        return Err(refuse(format!(
            "{} is not a regular file",
            t.path.display()
        )));
    }
    if let Some(owner) = t.owner
        && regular
        && !crate::trust::may_write(owner, st.st_uid, st.st_gid, st.st_mode)
    {
        return Err(refuse(format!(
            "{} belongs to uid {}, and uid {owner}, whose vassal file names it, could not \
             touch it: the warden does not do for a vassal what its owner could not",
            t.path.display(),
            st.st_uid
        )));
    }
    let before = st.st_mtime;
    let floor = t.loaded.map_or(before, |l| l.max(before));
    let new_secs = policy::touch_mtime(floor, to_secs(now));
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
    // Through the descriptor: exactly the file (or link) checked above.
    rustix::fs::utimensat(&fd, "", &times, AtFlags::EMPTY_PATH)?;
    let after = rustix::fs::fstat(&fd)?;
    // The Emperor compares whole seconds: a file at the filesystem's latest time (the
    // kernel clamps a later one) cannot be made newer, and a touch that did not move
    // the mtime past what was loaded reloads nothing.
    if after.st_mtime <= floor {
        return Err(std::io::Error::other(format!(
            "the mtime of {} stayed at {} (the latest this filesystem holds?): the Emperor \
             would see no change, so nothing was reloaded; set it back to now (`touch` \
             it), then `vassal-warden reload`",
            t.path.display(),
            crate::audit::timestamp(from_timespec(after.st_mtime, 0u32))
        )));
    }
    let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .unwrap_or_else(|_| t.path.to_owned());
    Ok(Touched {
        path,
        before: from_timespec(before, st.st_mtime_nsec),
        after: from_timespec(after.st_mtime, after.st_mtime_nsec),
    })
}

fn from_timespec(secs: i64, nsec: impl TryInto<u32>) -> SystemTime {
    let nanos = std::time::Duration::new(0, nsec.try_into().unwrap_or(0));
    let whole = std::time::Duration::from_secs(secs.unsigned_abs());
    let t = if secs >= 0 {
        UNIX_EPOCH.checked_add(whole)
    } else {
        UNIX_EPOCH.checked_sub(whole)
    };
    t.and_then(|t| t.checked_add(nanos)).unwrap_or(UNIX_EPOCH)
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
    let pid = Pid::from_raw(worker.pid).ok_or(RecycleError::NotAWorker(worker.pid, master.pid))?;
    // A descriptor of the process first: the checks below are then about the very process
    // the signal goes to, even if the PID is reused in between.
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .map_err(|_| RecycleError::NotAWorker(worker.pid, master.pid))?;
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
    rustix::process::pidfd_send_signal(&pidfd, Signal::HUP)
        .map_err(|e| RecycleError::Signal(worker.pid, e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::CWD;
    use std::time::Duration;

    fn mtime(path: &Path, nofollow: bool) -> SystemTime {
        let m = if nofollow {
            std::fs::symlink_metadata(path)
        } else {
            std::fs::metadata(path)
        };
        m.unwrap().modified().unwrap()
    }

    fn target(path: &Path, nofollow: bool) -> TouchTarget<'_> {
        TouchTarget {
            path,
            nofollow,
            loaded: None,
            owner: None,
        }
    }

    fn set_mtime(p: &Path, secs: i64) {
        rustix::fs::utimensat(
            CWD,
            p,
            &Timestamps {
                last_access: Timespec {
                    tv_sec: 0,
                    tv_nsec: UTIME_OMIT,
                },
                last_modification: Timespec {
                    tv_sec: secs,
                    tv_nsec: 0,
                },
            },
            AtFlags::empty(),
        )
        .unwrap();
    }

    #[test]
    fn touch_moves_mtime_past_a_future_one() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.ini");
        std::fs::write(&p, "[uwsgi]\n").unwrap();
        let now = SystemTime::now();
        let future = to_secs(now) + 5;
        set_mtime(&p, future);
        let t = touch(&target(&p, false), now).unwrap();
        assert_eq!(to_secs(t.before), future);
        assert_eq!(to_secs(t.after), future + 1);
    }

    #[test]
    fn touch_moves_mtime_past_the_one_the_emperor_loaded() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.ini");
        std::fs::write(&p, "[uwsgi]\n").unwrap();
        let now = SystemTime::now();
        // Loaded this second, then set back to 1960 by hand.
        set_mtime(&p, -315_619_200);
        let t = TouchTarget {
            loaded: Some(to_secs(now)),
            ..target(&p, false)
        };
        let t = touch(&t, now).unwrap();
        assert_eq!(to_secs(t.before), -315_619_200);
        assert_eq!(to_secs(t.after), to_secs(now) + 1);
    }

    #[test]
    fn nofollow_touches_the_link_not_the_target() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real.ini");
        let link = d.path().join("link.ini");
        std::fs::write(&real, "[uwsgi]\n").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let target_before = mtime(&real, false);
        let later = SystemTime::now() + Duration::from_secs(10);
        let t = touch(&target(&link, true), later).unwrap();
        assert_eq!(mtime(&link, true), t.after);
        assert_eq!(mtime(&real, false), target_before);
        assert_eq!(t.path, d.path().canonicalize().unwrap().join("link.ini"));
        // Following the link touches the target, and says so.
        let t = touch(&target(&link, false), later + Duration::from_secs(10)).unwrap();
        assert_eq!(mtime(&real, false), t.after);
        assert_eq!(t.path, real.canonicalize().unwrap());
    }

    #[test]
    fn a_file_the_owner_could_not_write_or_a_fifo_is_not_touched() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let root_file = d.path().join("root.conf");
        std::fs::write(&root_file, "x").unwrap();
        std::fs::set_permissions(&root_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let before = mtime(&root_file, false);
        let t = TouchTarget {
            owner: Some(65534),
            ..target(&root_file, false)
        };
        let e = touch(&t, SystemTime::now() + Duration::from_secs(5)).unwrap_err();
        assert!(e.to_string().contains("uid 65534"), "{e}");
        assert_eq!(mtime(&root_file, false), before);
        let fifo = d.path().join("fifo");
        rustix::fs::mknodat(CWD, &fifo, rustix::fs::FileType::Fifo, 0o644.into(), 0).unwrap();
        let e = touch(&target(&fifo, false), SystemTime::now()).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }
}
