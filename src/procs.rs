//! Readers of `/proc/PID/*` (see proc(5)).
//!
//! This module owns reading `stat` (parsed by the `procfs` crate), `cmdline`, `environ`,
//! the `children` lists and the list of PIDs (small hand-written readers, kept where
//! they measure faster than procfs's: docs/PERFORMANCE.md). It does not decide
//! anything: a process that vanishes between two reads is normal here and surfaces as
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
    let raw = fs::read(proc_path(pid, "cmdline")).ok()?;
    Some(split_nul(&raw))
}

fn split_nul(raw: &[u8]) -> Vec<String> {
    raw.split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// One variable of the process's initial environment.
pub fn environ_var(pid: i32, name: &str) -> Option<String> {
    let raw = fs::read(proc_path(pid, "environ")).ok()?;
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
}
