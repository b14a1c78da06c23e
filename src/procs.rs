//! Readers of `/proc/PID/*` (see proc(5)).
//!
//! This module owns reading `stat` (parsed by the `procfs` crate), `cmdline`, `environ`,
//! the `children` lists and the list of PIDs (small hand-written readers, kept where
//! they measure faster than procfs's: docs/PERFORMANCE.md), and telling what a child of
//! a uWSGI master is (`Role`) from its executable and signal handlers. It decides
//! nothing else: a process that vanishes between two reads is normal here and surfaces as
//! `None` or an empty list, never as a panic.

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;

use procfs::FromRead;

/// The part of `/proc/PID/stat` the warden needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stat {
    pub(crate) pid: i32,
    pub(crate) state: char,
    pub(crate) ppid: i32,
    /// Start time in clock ticks since boot (field 22). With the PID it identifies one
    /// process for its whole life: a reused PID has a different start time.
    pub(crate) start_time: u64,
}

impl From<procfs::process::Stat> for Stat {
    fn from(s: procfs::process::Stat) -> Stat {
        Stat {
            pid: s.pid,
            state: s.state,
            ppid: s.ppid,
            start_time: s.starttime,
        }
    }
}

/// A process as the warden identifies it: PID plus start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcId {
    pub pid: i32,
    pub start_time: u64,
}

pub(crate) fn proc_path(pid: i32, file: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{file}"))
}

/// `/proc/PID/stat`, read with one open and parsed by procfs (`Stat::from_file`: as fast
/// as the hand-written parser it replaced, and faster than going through
/// `procfs::process::Process`, which first opens `/proc/PID` itself).
pub(crate) fn stat(pid: i32) -> Option<Stat> {
    procfs::process::Stat::from_file(proc_path(pid, "stat"))
        .ok()
        .map(Stat::from)
}

/// The identity of a live process, or `None` when it is gone (or a zombie, which holds no
/// fds and cannot be acted on).
pub fn proc_id(pid: i32) -> Option<ProcId> {
    let s = stat(pid)?;
    if s.state == 'Z' || s.state == 'X' {
        return None;
    }
    Some(ProcId {
        pid,
        start_time: s.start_time,
    })
}

/// True when `id` still names the same live process.
pub(crate) fn is_same_process(id: ProcId) -> bool {
    proc_id(id.pid) == Some(id)
}

/// The NUL-separated argument vector. A rewritten process title (uWSGI `procname`) shows
/// up as one argument with spaces; callers must not assume it names a file.
pub fn cmdline(pid: i32) -> Option<Vec<String>> {
    Some(split_nul(&read_bounded(pid, "cmdline")?))
}

/// The most read of another process's `cmdline` or `environ`: its owner chooses their
/// size (up to several MiB), and no uWSGI command line or environment needs more.
const MAX_ARGS: u64 = 64 * 1024;

fn read_bounded(pid: i32, file: &str) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut raw = Vec::new();
    fs::File::open(proc_path(pid, file))
        .ok()?
        .take(MAX_ARGS)
        .read_to_end(&mut raw)
        .ok()?;
    Some(raw)
}

fn split_nul(raw: &[u8]) -> Vec<String> {
    raw.split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// One variable of the process's initial environment.
pub fn environ_var(pid: i32, name: &str) -> Option<String> {
    let raw = read_bounded(pid, "environ")?;
    split_nul(&raw).into_iter().find_map(|kv| {
        kv.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('='))
            .map(str::to_owned)
    })
}

/// Every PID currently in /proc.
pub fn all_pids() -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The children of `pid` forked by its main thread, from `/proc/PID/task/PID/children`
/// (one small read; uWSGI's Emperor and masters fork from their main thread), or, on
/// kernels built without `CONFIG_PROC_CHILDREN`, by scanning every process's ppid.
pub fn children(pid: i32) -> Vec<i32> {
    let mut out: Vec<i32> = match fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        Ok(text) => text
            .split_ascii_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
        // Gone.
        Err(_) if !std::path::Path::new(&format!("/proc/{pid}")).exists() => Vec::new(),
        // A kernel without CONFIG_PROC_CHILDREN.
        Err(_) => all_pids()
            .into_iter()
            .filter(|&p| stat(p).is_some_and(|s| s.ppid == pid))
            .collect(),
    };
    out.sort_unstable();
    out.dedup();
    out
}

/// What a process under a uWSGI master is. uWSGI forks workers, mules, spoolers,
/// gateways (`http`, `fastrouter`, ...) and a sub-Emperor (a vassal with `emperor =`) from
/// the master without changing their title, and runs attached daemons, cron commands and
/// hooks as other programs; only a worker may be recycled with SIGHUP (a mule dies of
/// it, a sub-Emperor reloads all of its vassals, an attached daemon is killed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Role {
    Master,
    Worker,
    Mule,
    Spooler,
    /// A router forked by the master: `http`, `https`, `fastrouter`, `rawrouter`, ...
    Gateway,
    /// A uWSGI Emperor run by the vassal (`emperor =` in its config).
    Emperor,
    /// Another program: `attach-daemon`, `smart-attach-daemon`, a cron command, a hook.
    Attached,
    /// Not recognised (yet): a child still setting itself up, or one whose signal
    /// handlers were changed. Never signalled.
    Unknown,
}

impl Role {
    /// Every role, masters first, in the order `status` and the metrics list them.
    pub(crate) const ALL: [Role; 8] = [
        Role::Master,
        Role::Worker,
        Role::Mule,
        Role::Spooler,
        Role::Gateway,
        Role::Emperor,
        Role::Attached,
        Role::Unknown,
    ];

    /// Its place in `ALL`.
    #[must_use]
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Role {
    /// Its name, as records, `status` and the metrics give it.
    #[must_use]
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Worker => "worker",
            Role::Mule => "mule",
            Role::Spooler => "spooler",
            Role::Gateway => "gateway",
            Role::Emperor => "emperor",
            Role::Attached => "attached",
            Role::Unknown => "unknown",
        }
    }
}

/// Which signals a process catches and ignores (`SigCgt`, `SigIgn` of
/// `/proc/PID/status`): bit n-1 stands for signal n.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Dispositions {
    pub caught: u64,
    pub ignored: u64,
}

impl Dispositions {
    fn catches(self, sig: i32) -> bool {
        self.caught & (1 << (sig - 1)) != 0
    }

    fn ignores(self, sig: i32) -> bool {
        self.ignored & (1 << (sig - 1)) != 0
    }
}

/// A process's signal dispositions, now.
pub(crate) fn dispositions(pid: i32) -> Option<Dispositions> {
    let text = fs::read_to_string(proc_path(pid, "status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    };
    Some(Dispositions {
        caught: field("SigCgt:")?,
        ignored: field("SigIgn:")?,
    })
}

/// The real user ID a process runs as.
pub(crate) fn uid(pid: i32) -> Option<u32> {
    let text = fs::read_to_string(proc_path(pid, "status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The real user ID a process had when it ran its program (`AT_UID` of its auxiliary
/// vector, which the kernel writes at `execve` and nothing changes after): 0 for a
/// program root started that dropped to another uid since. A process that re-executes
/// itself after dropping (a uWSGI reload) shows the uid it had then.
pub(crate) fn exec_uid(pid: i32) -> Option<u32> {
    const AT_NULL: u64 = 0;
    const AT_UID: u64 = 11;
    let raw = read_bounded(pid, "auxv")?;
    let word = |c: &[u8]| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]));
    for pair in raw.chunks_exact(16) {
        let (key, value) = (word(&pair[..8]), word(&pair[8..]));
        match key {
            AT_NULL => return None,
            AT_UID => return u32::try_from(value).ok(),
            _ => {}
        }
    }
    None
}

/// The executable a process runs, as (device, inode): the same file for a child that
/// uWSGI forked, another one for a program it ran.
fn exe_id(pid: i32) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(proc_path(pid, "exe")).ok()?;
    Some((m.dev(), m.ino()))
}

/// Tells a child of a uWSGI master by what it runs and the signal handlers uWSGI
/// installs in each kind of process (uWSGI 2.0: `uwsgi_worker_run` and
/// `uwsgi_respawn_worker`, `uwsgi_mule`, `spooler_start`, `gateway_respawn`,
/// `emperor_loop`): a worker catches SIGHUP (graceful reload), SIGUSR2 and SIGWINCH; an
/// Emperor catches SIGURG; a mule catches SIGHUP and ignores SIGUSR1; a spooler ignores
/// SIGHUP and catches SIGUSR1; a gateway ignores both.
#[must_use]
pub(crate) fn classify(same_exe: bool, d: Dispositions) -> Role {
    const HUP: i32 = 1;
    const USR1: i32 = 10;
    const USR2: i32 = 12;
    const URG: i32 = 23;
    const WINCH: i32 = 28;
    if !same_exe {
        return Role::Attached;
    }
    if d.catches(URG) {
        Role::Emperor
    } else if d.catches(HUP) && d.catches(USR2) && d.catches(WINCH) && !d.ignores(USR1) {
        Role::Worker
    } else if d.catches(HUP) && d.ignores(USR1) {
        Role::Mule
    } else if d.ignores(HUP) && d.catches(USR1) {
        Role::Spooler
    } else if d.ignores(HUP) && d.ignores(USR1) {
        Role::Gateway
    } else {
        Role::Unknown
    }
}

/// What `child` of `master` is, read now. A child of another parent, or one that is
/// gone, is `Unknown`.
pub(crate) fn role_of(master: ProcId, child: ProcId) -> Role {
    let is_child = is_same_process(master)
        && stat(child.pid)
            .is_some_and(|s| s.start_time == child.start_time && s.ppid == master.pid);
    if !is_child {
        return Role::Unknown;
    }
    let (Some(exe), Some(d)) = (exe_id(master.pid), dispositions(child.pid)) else {
        return Role::Unknown;
    };
    classify(exe_id(child.pid) == Some(exe), d)
}

/// Identities of processes seen on the previous look, so that a child listed again by its
/// parent is not read again. A PID reused within one tick by a new child of the same
/// parent would be missed here; every action checks the start time again before it acts.
#[derive(Debug, Default)]
pub struct IdCache {
    now: HashMap<i32, ProcId>,
    prev: HashMap<i32, ProcId>,
}

impl IdCache {
    /// The identity of `pid`, from the last look or from `/proc/PID/stat`.
    pub fn id(&mut self, pid: i32) -> Option<ProcId> {
        let id = match self.prev.get(&pid).or_else(|| self.now.get(&pid)) {
            Some(id) => *id,
            None => proc_id(pid)?,
        };
        self.now.insert(pid, id);
        Some(id)
    }

    /// Starts a new look: what was not seen in the last one is forgotten.
    pub fn rotate(&mut self) {
        self.prev = std::mem::take(&mut self.now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parens_in_comm() {
        let text = "1234 (a (b) c) S 1 1234 1234 0 -1 4194560 2727 214954 0 468 1 1 757 188 20 0 1 0 5119 5124096 902 18446744073709551615 1 1 0 0 0 0 0 4096 65536 0 0 0 17 1 0 0 0 0 0";
        let s = Stat::from(procfs::process::Stat::from_read(text.as_bytes()).unwrap());
        assert_eq!(s.pid, 1234);
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.start_time, 5119);
    }

    /// The uid a program was started with stays when it drops to another one, and a
    /// program started after the drop has the new one.
    #[test]
    fn the_uid_a_program_was_started_with_is_kept_across_a_drop() {
        let me = std::process::id().cast_signed();
        assert_eq!(exec_uid(me), uid(me));
        let spawn = |cmd: &mut std::process::Command| {
            let child = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
            let mut child = Reaped(child);
            let mut line = String::new();
            std::io::BufRead::read_line(
                &mut std::io::BufReader::new(child.0.stdout.as_mut().unwrap()),
                &mut line,
            )
            .unwrap();
            let pid = child.0.id().cast_signed();
            let got = (uid(pid), exec_uid(pid));
            drop(child);
            got
        };
        if uid(me) != Some(0) {
            return;
        }
        // Dropped after it started: nobody now, root then.
        let dropped = spawn(std::process::Command::new("python3").args([
            "-c",
            "import os, sys, time; os.setuid(65534); print(1); sys.stdout.flush(); time.sleep(30)",
        ]));
        assert_eq!(dropped, (Some(65534), Some(0)));
        // Started after the drop: nobody both times.
        let started = spawn(std::process::Command::new("setpriv").args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            "import sys, time; print(1); sys.stdout.flush(); time.sleep(30)",
        ]));
        assert_eq!(started, (Some(65534), Some(65534)));
    }

    /// Kills and reaps a child when dropped.
    struct Reaped(std::process::Child);

    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn own_process_is_found_and_children_are_listed() {
        let me = std::process::id().cast_signed();
        let id = proc_id(me).unwrap();
        assert!(is_same_process(id));
        assert!(!is_same_process(ProcId {
            pid: me,
            start_time: id.start_time + 1
        }));
        // A shell whose main thread forks a child, as uWSGI's masters do.
        let mut sh = std::process::Command::new("sh")
            .args(["-c", "sleep 5 & echo $!; wait"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(sh.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let sleeper: i32 = line.trim().parse().unwrap();
        let kids = children(sh.id().cast_signed());
        let _ = std::process::Command::new("kill")
            .arg(sleeper.to_string())
            .status();
        sh.wait().unwrap();
        assert_eq!(kids, vec![sleeper]);
        assert!(
            children(sh.id().cast_signed()).is_empty(),
            "a reaped process has no children"
        );
    }

    /// Each kind of child, with the masks uWSGI 2.0.21 gave it on this kernel (a vassal
    /// with 2 workers, a mule, a spooler, `http =`, `attach-daemon` and `emperor =`).
    #[test]
    fn children_of_a_master_are_told_apart_by_their_signal_handlers() {
        // As /proc/PID/status prints them: SigCgt, SigIgn.
        let d = |caught: &str, ignored: &str| Dispositions {
            caught: u64::from_str_radix(caught, 16).unwrap(),
            ignored: u64::from_str_radix(ignored, 16).unwrap(),
        };
        let cases = [
            (
                true,
                d("0000000008085e83", "0000000001000000"),
                Role::Worker,
            ),
            (true, d("0000000000004487", "0000000001083a00"), Role::Mule),
            (
                true,
                d("0000000000004682", "0000000001083801"),
                Role::Spooler,
            ),
            (
                true,
                d("0000000008404687", "0000000000001000"),
                Role::Emperor,
            ),
            (
                true,
                d("0000000000004486", "0000000001083a01"),
                Role::Gateway,
            ),
            // A child just forked, with the master's handlers still: not yet a worker.
            (
                true,
                d("0000000000084687", "0000000001001000"),
                Role::Unknown,
            ),
            // An attached daemon (`sh -c ...`): another program, whatever it catches.
            (
                false,
                d("0000000000010002", "0000000001001000"),
                Role::Attached,
            ),
            (
                false,
                d("0000000008085e83", "0000000001000000"),
                Role::Attached,
            ),
        ];
        for (same_exe, masks, role) in cases {
            assert_eq!(classify(same_exe, masks), role, "{masks:x?}");
        }
    }

    #[test]
    fn own_signal_dispositions_are_read() {
        let d = dispositions(std::process::id().cast_signed()).unwrap();
        // The test harness ignores SIGPIPE, as Rust programs do.
        assert!(d.ignores(13), "{d:x?}");
        assert!(exe_id(std::process::id().cast_signed()).is_some());
    }
}
