//! Whether this process could carry out each action on a vassal, and if not, what is
//! missing: a capability (the unit's `CapabilityBoundingSet=`), or a writable mount (the
//! unit's `ProtectSystem=`, `ReadWritePaths=`, or a read-only filesystem).
//!
//! This module owns those questions for `check`. It reads `/proc/self/status` (the
//! effective capabilities), `/proc/PID/status` (whom a process runs as) and
//! `statvfs(3)`; it acts on nothing.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::procs;

/// Capability numbers (linux/capability.h) the warden's actions use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cap {
    /// Set the mtime of a file it does not own (a vassal file or chain-reload file).
    Fowner = 3,
    /// Send SIGHUP to a worker that runs as another user.
    Kill = 5,
    /// Read `/proc/PID/fd` and `/proc/PID/exe` of another user's process.
    SysPtrace = 19,
    /// What `CAP_BPF` and `CAP_PERFMON` were split from (kernels before 5.8).
    SysAdmin = 21,
    /// Attach a capture's uprobes.
    Perfmon = 38,
    /// Load a capture's programs.
    Bpf = 39,
}

impl Cap {
    fn name(self) -> &'static str {
        match self {
            Cap::Fowner => "CAP_FOWNER",
            Cap::Kill => "CAP_KILL",
            Cap::SysPtrace => "CAP_SYS_PTRACE",
            Cap::SysAdmin => "CAP_SYS_ADMIN",
            Cap::Perfmon => "CAP_PERFMON",
            Cap::Bpf => "CAP_BPF",
        }
    }
}

/// The effective capabilities of this process (`CapEff`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caps(u64);

impl Caps {
    #[must_use]
    pub(crate) fn own() -> Caps {
        Caps::of("/proc/self/status")
    }

    fn of(status: &str) -> Caps {
        let mask = std::fs::read_to_string(status)
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("CapEff:"))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            })
            .unwrap_or(0);
        Caps(mask)
    }

    #[must_use]
    pub(crate) fn has(self, cap: Cap) -> bool {
        self.0 & (1 << cap as u32) != 0
    }

    fn need(self, cap: Cap, what: &str) -> Result<(), String> {
        if self.has(cap) {
            Ok(())
        } else {
            Err(format!(
                "{what}: the warden lacks {}; add it to the unit's CapabilityBoundingSet=",
                cap.name()
            ))
        }
    }
}

/// Whose abilities are judged: the running daemon's (its capabilities, and its view of
/// the mounts through `/proc/PID/root`), or, with no daemon running, this command's.
#[derive(Debug, Clone)]
pub(crate) struct Viewpoint {
    pub caps: Caps,
    /// The daemon, when its abilities are the ones judged.
    pub daemon: Option<i32>,
}

impl Viewpoint {
    /// The daemon `pid`'s, when it runs; else this process's.
    #[must_use]
    pub(crate) fn of(daemon: Option<i32>) -> Viewpoint {
        match daemon.filter(|p| procs::proc_path(*p, "status").exists()) {
            Some(pid) => Viewpoint {
                caps: Caps::of(&format!("/proc/{pid}/status")),
                daemon: Some(pid),
            },
            None => Viewpoint {
                caps: Caps::own(),
                daemon: None,
            },
        }
    }

    /// `path` as the judged process sees it (in its own mount namespace).
    fn seen(&self, path: &Path) -> std::path::PathBuf {
        match self.daemon {
            Some(pid) => {
                Path::new(&format!("/proc/{pid}/root")).join(path.strip_prefix("/").unwrap_or(path))
            }
            None => path.to_owned(),
        }
    }
}

/// Whether `caps` may load and attach a capture.
pub(crate) fn capture(caps: Caps) -> Result<(), String> {
    if caps.has(Cap::SysAdmin) || (caps.has(Cap::Bpf) && caps.has(Cap::Perfmon)) {
        Ok(())
    } else {
        Err(format!(
            "captures: the warden lacks {} and {} (or {}); add them to the unit's CapabilityBoundingSet= to name the code that leaks",
            Cap::Bpf.name(),
            Cap::Perfmon.name(),
            Cap::SysAdmin.name()
        ))
    }
}

/// The real and saved user IDs of a process (what `kill(2)` compares).
fn uids(pid: i32) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(procs::proc_path(pid, "status")).ok()?;
    let ids: Vec<u32> = text
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    Some((*ids.first()?, *ids.get(2)?))
}

/// Whether this process could send SIGHUP to `pid`.
pub(crate) fn signal(caps: Caps, pid: i32) -> Result<(), String> {
    let me = rustix::process::geteuid().as_raw();
    let Some((real, saved)) = uids(pid) else {
        return Ok(());
    };
    if real == me || saved == me {
        return Ok(());
    }
    caps.need(
        Cap::Kill,
        &format!("cannot recycle worker {pid}, which runs as uid {real}"),
    )
}

/// Whether the judged process could read what `pid` holds open: its own processes, or
/// another user's with `CAP_SYS_PTRACE`.
pub(crate) fn read_fds(caps: Caps, pid: i32) -> Result<(), String> {
    let me = rustix::process::geteuid().as_raw();
    match uids(pid) {
        Some((real, _)) if real != me => caps.need(
            Cap::SysPtrace,
            &format!("cannot read the open files of PID {pid}, which runs as uid {real}"),
        ),
        _ => Ok(()),
    }
}

/// Whether the judged process could set the mtime of `path` (the file itself with
/// `nofollow`, else what it links to), and would: the file must be one the vassal file's
/// owner, `authority`, could write (`trust`), on a mount writable where it runs.
pub(crate) fn touch(
    view: &Viewpoint,
    path: &Path,
    nofollow: bool,
    authority: Option<u32>,
) -> Result<(), String> {
    let caps = view.caps;
    let meta = if nofollow {
        std::fs::symlink_metadata(path)
    } else {
        std::fs::metadata(path)
    }
    .map_err(|e| format!("cannot touch {}: {e}", path.display()))?;
    let target = if nofollow {
        path.to_owned()
    } else {
        std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
    };
    // statvfs follows links: for the link itself, ask of the directory it is in.
    let on = if meta.is_symlink() {
        target.parent().unwrap_or(Path::new("/")).to_owned()
    } else {
        target.clone()
    };
    if let Some(owner) = authority
        && !meta.is_symlink()
        && !crate::trust::may_write(owner, meta.uid(), meta.gid(), meta.mode())
    {
        return Err(format!(
            "will not touch {}: it belongs to uid {} and uid {owner}, whose vassal file names it, could not write it",
            target.display(),
            meta.uid()
        ));
    }
    if let Ok(fs) = rustix::fs::statvfs(view.seen(&on))
        && fs.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY)
    {
        return Err(format!(
            "cannot touch {}: its filesystem is mounted read-only for the warden; in the unit, \
             leave it writable (ProtectSystem=, ReadWritePaths=) or remount it",
            target.display()
        ));
    }
    if meta.uid() != rustix::process::geteuid().as_raw() {
        caps.need(
            Cap::Fowner,
            &format!(
                "cannot touch {}, which belongs to uid {}",
                target.display(),
                meta.uid()
            ),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_capabilities_are_named_with_the_unit_setting() {
        let none = Caps(0);
        let e = none.need(Cap::Kill, "cannot recycle worker 7").unwrap_err();
        assert_eq!(
            e,
            "cannot recycle worker 7: the warden lacks CAP_KILL; add it to the unit's CapabilityBoundingSet="
        );
        assert!(Caps(1 << 5).has(Cap::Kill));
        assert!(!Caps(1 << 5).has(Cap::Fowner));
    }

    #[test]
    fn own_processes_and_files_need_no_capability() {
        let me = std::process::id().cast_signed();
        assert!(signal(Caps(0), me).is_ok());
        assert!(read_fds(Caps(0), me).is_ok());
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a.ini");
        std::fs::write(&f, "[uwsgi]\n").unwrap();
        let me = Viewpoint {
            caps: Caps(0),
            daemon: None,
        };
        assert!(touch(&me, &f, false, Some(0)).is_ok());
    }

    /// Unmounts what a test mounted, even when the test fails.
    struct Mounted(std::path::PathBuf);

    impl Drop for Mounted {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }

    #[test]
    fn a_read_only_mount_is_named_and_capabilities_do_not_help() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("vassals");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("a.ini"), "[uwsgi]\n").unwrap();
        let mount = |args: &[&str]| {
            std::process::Command::new("mount")
                .args(args)
                .arg(&dir)
                .arg(&dir)
                .status()
                .unwrap()
                .success()
        };
        assert!(mount(&["--bind"]));
        let _guard = Mounted(dir.clone());
        assert!(mount(&["-o", "remount,ro,bind"]));
        let all = Viewpoint {
            caps: Caps(u64::MAX),
            daemon: None,
        };
        let e = touch(&all, &dir.join("a.ini"), false, Some(0)).unwrap_err();
        assert!(e.contains("mounted read-only for the warden"), "{e}");
    }
}
