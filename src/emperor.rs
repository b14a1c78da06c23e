//! Finding the running uWSGI Emperors and the vassal files they watch.
//!
//! This module owns reading an Emperor's settings from its command line and the config
//! file it names (`--emperor`, `emperor =` in `--ini FILE`, `emperor-nofollow`,
//! `emperor-stats`, `emperor-freq`, `emperor-tyrant`), recognising Debian's two-process
//! layout (an Emperor started with `master = true` shows the same command line twice; the
//! vassal masters are children of the second), and listing the vassal files of a
//! directory or glob under the names the Emperor gives them. A process is taken for an
//! Emperor only when its executable is a root-owned uWSGI binary (`runs_uwsgi`): any user
//! can name a process `uwsgi`. It never signals anything.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::procs;
use crate::uwsgi_ini::VassalIni;

/// Where an Emperor (or the warden's config) takes vassal files from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// A directory: vassals are named by file name.
    Dir(PathBuf),
    /// A glob: vassals are named by the path the glob produced.
    Glob(String),
}

impl Source {
    /// Parses an `emperor =` value or a warden `vassals =` value, resolved as it is now
    /// (see `resolved`). Relative paths are taken from `base`. Monitors that are not
    /// files (`zmq://`, `pg://`, ...) are not sources.
    #[must_use]
    pub(crate) fn parse(value: &str, base: &Path) -> Option<Source> {
        Source::literal(value, base).map(|s| s.resolved())
    }

    /// Like `parse`, without resolving: a directory that does not exist yet, or whose
    /// symlinks will change, is resolved again at each use.
    #[must_use]
    pub(crate) fn literal(value: &str, base: &Path) -> Option<Source> {
        if value.contains("://") {
            return None;
        }
        let abs = if Path::new(value).is_absolute() {
            value.to_owned()
        } else {
            base.join(value).to_string_lossy().into_owned()
        };
        Some(if value.contains(['*', '?', '[']) {
            Source::Glob(abs)
        } else {
            Source::Dir(PathBuf::from(abs))
        })
    }

    /// A directory with its symlinks followed, as it is now, so that it compares equal
    /// to an Emperor's view of the same directory; a glob as it is.
    #[must_use]
    pub(crate) fn resolved(&self) -> Source {
        match self {
            Source::Dir(d) => Source::Dir(std::fs::canonicalize(d).unwrap_or_else(|_| d.clone())),
            Source::Glob(_) => self.clone(),
        }
    }
}

impl Source {
    /// The directory whose entries are the vassal files: the directory itself, or a
    /// glob's fixed leading part.
    #[must_use]
    pub(crate) fn dir(&self) -> PathBuf {
        match self {
            Source::Dir(d) => d.clone(),
            Source::Glob(g) => PathBuf::from(g.split(['*', '?', '[']).next().unwrap_or("/")),
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Dir(d) => write!(f, "{}", d.display()),
            Source::Glob(g) => f.write_str(g),
        }
    }
}

/// The file extensions the Emperor's directory monitor starts vassals from.
const VASSAL_EXTENSIONS: [&str; 6] = ["ini", "xml", "yml", "yaml", "js", "json"];

/// One vassal file as the Emperor names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct VassalFile {
    /// The Emperor's name for it (file name, or the glob's path).
    pub name: String,
    /// Its absolute path (not resolved: it may be a symlink).
    pub path: PathBuf,
}

/// Lists the vassal files of `source`, sorted by name.
#[must_use]
pub(crate) fn list_vassals(source: &Source) -> Vec<VassalFile> {
    let mut out = Vec::new();
    match source {
        Source::Dir(dir) => {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return out;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let is_vassal = Path::new(&name)
                    .extension()
                    .and_then(|x| x.to_str())
                    .is_some_and(|x| VASSAL_EXTENSIONS.contains(&x));
                // Editors' temporary files (`.x.ini.swp`, `x.ini~`) do not end in an
                // extension the Emperor takes, and hidden files are skipped by it too.
                if is_vassal && !name.starts_with('.') {
                    out.push(VassalFile {
                        name,
                        path: dir.join(e.file_name()),
                    });
                }
            }
        }
        Source::Glob(pattern) => {
            // uWSGI's glob(3) has no `**`: it is two `*`, one path component, never a walk
            // down a tree (which symlinks could make endless).
            let mut pattern = pattern.clone();
            while pattern.contains("**") {
                pattern = pattern.replace("**", "*");
            }
            if let Ok(paths) = glob::glob(&pattern) {
                for p in paths.flatten() {
                    out.push(VassalFile {
                        name: p.to_string_lossy().into_owned(),
                        path: p,
                    });
                }
            }
        }
    }
    out.sort();
    out
}

/// A running Emperor.
// Each flag is a separate uWSGI setting or fact, not a state machine in disguise.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Emperor {
    /// The process whose children are the vassal masters.
    pub pid: i32,
    /// Root's: it runs as root, or systemd started it as a system service (whatever uid
    /// it dropped to). Only such an Emperor speaks for directories it does not own.
    pub system: bool,
    /// The real uid it had when its program started (`procs::exec_uid`): 0 when root
    /// started it, whatever it dropped to since.
    pub exec_uid: Option<u32>,
    pub start_time: u64,
    /// When its oldest process started: its own master's start in Debian's layout.
    pub since: u64,
    /// Debian's layout: the Emperor's own master, with the same command line, above it.
    pub master_pid: Option<i32>,
    pub cmdline: Vec<String>,
    /// The config file its command line names, if any.
    pub config_file: Option<PathBuf>,
    pub sources: Vec<Source>,
    /// Directories it watches that it does not speak for here, each with why and what
    /// to do (`check` says them).
    pub unwatched: Vec<(Source, String)>,
    pub nofollow: bool,
    pub stats: Option<String>,
    pub freq: Option<u32>,
    pub tyrant: bool,
    /// On-demand vassals (`emperor-on-demand-*`): a vassal with no master is idle.
    pub on_demand: bool,
}

impl Emperor {
    #[must_use]
    pub(crate) fn is_running(&self) -> bool {
        procs::is_same_process(procs::ProcId {
            pid: self.pid,
            start_time: self.start_time,
        })
    }

    #[must_use]
    pub(crate) fn watches(&self, source: &Source) -> bool {
        self.sources.contains(source)
    }
}

/// Options of a uWSGI command line, `--key value` or `--key=value`; a flag has no value.
fn cmdline_options(args: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut i = 1;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        let Some(opt) = a.strip_prefix("--") else {
            continue;
        };
        if let Some((k, v)) = opt.split_once('=') {
            out.push((k.to_owned(), v.to_owned()));
        } else if i < args.len() && !args[i].starts_with('-') {
            out.push((opt.to_owned(), args[i].clone()));
            i += 1;
        } else {
            out.push((opt.to_owned(), String::new()));
        }
    }
    out
}

/// Resolves a path from a process's command line: relative paths are relative to where it
/// was started, which is `$PWD` of its environment when a shell started it, else its cwd.
fn resolve_for(pid: i32, p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_absolute() {
        return path.to_owned();
    }
    let mut bases = Vec::new();
    if let Some(pwd) = procs::environ_var(pid, "PWD") {
        bases.push(PathBuf::from(pwd));
    }
    if let Ok(cwd) = std::fs::read_link(procs::proc_path(pid, "cwd")) {
        bases.push(cwd);
    }
    bases
        .iter()
        .map(|b| b.join(path))
        .find(|c| c.exists())
        .unwrap_or_else(|| path.to_owned())
}

fn base_dir(pid: i32) -> PathBuf {
    procs::environ_var(pid, "PWD")
        .map(PathBuf::from)
        .or_else(|| std::fs::read_link(procs::proc_path(pid, "cwd")).ok())
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// True when `pid` runs a uWSGI binary that no user but root could have made: its
/// executable (`/proc/PID/exe`, not the name it gives itself, which any process can
/// choose) is a regular file named `uwsgi*`, owned by root and writable by root only.
fn runs_uwsgi(pid: i32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let exe = procs::proc_path(pid, "exe");
    let named_uwsgi = std::fs::read_link(&exe).is_ok_and(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("uwsgi"))
    });
    named_uwsgi
        && std::fs::metadata(&exe)
            .is_ok_and(|m| m.is_file() && m.uid() == 0 && m.mode() & 0o022 == 0)
}

/// True when `pid` has the warden's root directory, so that the paths in its command
/// line and settings name the files the warden would read and touch. An Emperor in a
/// container (or a chroot) has another root: its `/etc/uwsgi/vassals` is not the
/// host's. The root is compared, not the mount namespace: systemd's sandboxing gives a
/// service (the warden's, the Emperor's) a namespace of its own over the same files.
/// Unreadable counts as the same: a user's `status` cannot read other users' roots (and
/// could not act), and the daemon, with `CAP_SYS_PTRACE`, can.
fn same_root(pid: i32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &Path| std::fs::metadata(p).map(|m| (m.dev(), m.ino()));
    match (id(Path::new("/")), id(&procs::proc_path(pid, "root/"))) {
        (Ok(mine), Ok(its)) => mine == its,
        _ => true,
    }
}

/// The most ancestors followed up to PID 1.
const MAX_ANCESTORS: usize = 64;

/// True when root started `pid`, whatever uid it runs as now: no user's login session is
/// behind it (its `loginuid`, which the kernel sets once, at login, and which every
/// process of that session inherits, is unset or root's), and every process above it up
/// to PID 1 runs as root. A user's process has either that user's login behind it, or a
/// process of that user above it (a shell, a user's service manager).
fn started_by_root(pid: i32) -> bool {
    let loginuid = std::fs::read_to_string(procs::proc_path(pid, "loginuid"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    if !matches!(loginuid, Some(0 | u32::MAX)) {
        return false;
    }
    let mut p = pid;
    for _ in 0..MAX_ANCESTORS {
        let Some(ppid) = procs::stat(p).map(|s| s.ppid) else {
            return false;
        };
        if ppid <= 1 {
            return ppid == 1;
        }
        if procs::uid(ppid) != Some(0) {
            return false;
        }
        p = ppid;
    }
    false
}

/// True when root owns the file and, if it is a symlink, the link too.
fn owned_by_root(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.uid() == 0)
        && std::fs::metadata(path).is_ok_and(|m| m.uid() == 0)
}

/// True when systemd runs `pid` in a system service's cgroup (`/system.slice/….service`),
/// where no user can move a process of theirs.
fn system_service(pid: i32) -> bool {
    use std::io::Read;
    let mut text = String::new();
    let read = std::fs::File::open(procs::proc_path(pid, "cgroup"))
        .and_then(|f| f.take(64 * 1024).read_to_string(&mut text));
    read.is_ok()
        && text.lines().any(|l| {
            l.rsplit(':')
                .next()
                .is_some_and(|path| path.starts_with("/system.slice/") && path.contains(".service"))
        })
}

/// The vassal file `name` (from a vassal's `--ini`) as Emperor `e` reads it: in one of
/// its directories, never from wherever the vassal has since changed to.
fn as_vassal_file(e: &Emperor, name: &str) -> Option<PathBuf> {
    let name = Path::new(name);
    // `..` would climb out of the Emperor's directories.
    if name
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return None;
    }
    if name.is_absolute() {
        return e
            .sources
            .iter()
            .any(|s| name.starts_with(s.dir()))
            .then(|| name.to_owned());
    }
    e.sources
        .iter()
        .map(|s| s.dir().join(name))
        .find(|p| p.exists())
}

/// The directories an Emperor running as `uid` (root's when `system`) speaks for, and
/// those it does not, each with why. An Emperor run by a user speaks only for
/// directories that user owns: a user who starts uWSGI's own binary with `--emperor
/// /etc/uwsgi-emperor/vassals` does not take over the vassals of root's Emperor. Root's
/// Emperor may have dropped to another uid (Debian's runs as www-data): it is root's when
/// systemd started it as a system service, or when root started it however else
/// (`started_by_root`).
fn spoken_for(
    opts: &[(String, String)],
    base: &Path,
    uid: u32,
    system: bool,
) -> (Vec<Source>, Vec<(Source, String)>) {
    let mut sources = Vec::new();
    let mut unwatched = Vec::new();
    // uWSGI opens a relative `emperor` directory from its working directory, not from
    // the config file's.
    for s in opts
        .iter()
        .filter(|(k, _)| k == "emperor")
        .filter_map(|(_, v)| Source::parse(v, base))
    {
        use std::os::unix::fs::MetadataExt;
        let owner = std::fs::metadata(s.dir()).map(|m| m.uid()).ok();
        if system || owner == Some(uid) {
            sources.push(s);
        } else {
            let why = format!(
                "it runs as uid {uid}, which does not own {}, and neither root nor systemd \
                 started it (a process of a user's login or of a user's process): it speaks \
                 only for that user's directories; if root runs it, vouch for the directory \
                 with `vassals = {}` in warden.ini",
                s.dir().display(),
                s
            );
            unwatched.push((s, why));
        }
    }
    (sources, unwatched)
}

/// Reads an Emperor's settings from a process's command line (and the ini it names):
/// for a process an Emperor started (`vassal_of`), the ini is its vassal file as that
/// Emperor reads it, and unless the process runs as root nothing else of its command
/// line is read. `None` when the process is not an Emperor.
fn emperor_settings(pid: i32, args: &[String], vassal_of: Option<&Emperor>) -> Option<Emperor> {
    let mut opts: Vec<(String, String)> = Vec::new();
    let mut config_file = None;
    let uid = procs::uid(pid)?;
    // Below an Emperor, a process that is not root's can write its own command line (a
    // tenant's app can): there only its vassal file, which the Emperor read, says what
    // it is. Root's command line is root's word.
    let own_word = vassal_of.is_none() || uid == 0;
    for (k, v) in cmdline_options(args) {
        if k == "ini" {
            // `file.ini:section` names a section.
            let (file, section) = match v.rsplit_once(':') {
                Some((f, s)) if !f.is_empty() && !s.contains('/') => (f, s),
                _ => (v.as_str(), "uwsgi"),
            };
            let (path, base) = match vassal_of {
                None => (resolve_for(pid, file), base_dir(pid)),
                Some(e) => match as_vassal_file(e, file) {
                    Some(p) => {
                        let dir = p
                            .parent()
                            .map_or_else(|| PathBuf::from("/"), Path::to_owned);
                        (p, dir)
                    }
                    // Not one of its Emperor's files: nothing of it is read.
                    None => continue,
                },
            };
            // Bounded and without blocking (a FIFO or a device is an error, not a stall);
            // its includes are taken from where the Emperor runs, as uWSGI takes them.
            match VassalIni::read_in(&path, &base, section) {
                Ok(ini) => {
                    opts.extend(ini.options);
                    config_file = Some(path);
                }
                Err(e) => tracing::warn!(
                    pid,
                    "{e}; the Emperor's settings are taken from its command line only"
                ),
            }
        } else if own_word {
            opts.push((k, v));
        }
    }
    let get = |key: &str| {
        opts.iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let flag = |key: &str| {
        opts.iter()
            .rev()
            .find(|(k, _)| k == key)
            .is_some_and(|(_, v)| !matches!(v.as_str(), "0" | "false" | "no" | "off"))
    };
    let base = base_dir(pid);
    let system = uid == 0
        || match vassal_of {
            // A sub-Emperor is root's when root's file made it one: the cgroup and the
            // ancestors it shares with its vassal's other processes say nothing of who
            // wrote the file.
            Some(_) => config_file.as_deref().is_some_and(owned_by_root),
            None => system_service(pid) || started_by_root(pid),
        };
    let (sources, unwatched) = spoken_for(&opts, &base, uid, system);
    if !opts.iter().any(|(k, _)| k == "emperor") {
        return None;
    }
    let start_time = procs::stat(pid)?.start_time;
    Some(Emperor {
        system,
        exec_uid: procs::exec_uid(pid),
        pid,
        start_time,
        since: start_time,
        master_pid: None,
        cmdline: args.to_vec(),
        config_file,
        sources,
        unwatched,
        nofollow: flag("emperor-nofollow"),
        stats: get("emperor-stats").or_else(|| get("emperor-stats-server")),
        freq: get("emperor-freq").and_then(|v| v.parse().ok()),
        tyrant: flag("emperor-tyrant"),
        on_demand: opts
            .iter()
            .any(|(k, v)| k.starts_with("emperor-on-demand") && !v.is_empty()),
    })
}

/// Finds every running Emperor on the host, remembering each process's verdict by its
/// identity, so that a rescan reads one `stat` per process and the command line and
/// config file only of processes it has not seen before.
#[derive(Debug, Default)]
pub(crate) struct Discovery {
    verdicts: HashMap<procs::ProcId, Option<Emperor>>,
}

/// uWSGI ancestors followed up from a process, at most: a vassal's sub-Emperor's vassal
/// is three levels below the Emperor; this is far beyond any real tree.
const MAX_DEPTH: u32 = 16;

impl Discovery {
    pub(crate) fn discover(&mut self) -> Vec<Emperor> {
        let mut stats: HashMap<i32, (procs::ProcId, i32)> = HashMap::new();
        for pid in procs::all_pids() {
            if let Some(st) = procs::stat(pid) {
                let id = procs::ProcId {
                    pid,
                    start_time: st.start_time,
                };
                stats.insert(pid, (id, st.ppid));
            }
        }
        let seen: std::collections::HashSet<procs::ProcId> =
            stats.values().map(|(id, _)| *id).collect();
        self.verdicts.retain(|id, _| seen.contains(id));
        let mut pids: Vec<i32> = stats.keys().copied().collect();
        pids.sort_unstable();
        let mut found: HashMap<i32, Emperor> = HashMap::new();
        let mut parents: HashMap<i32, i32> = HashMap::new();
        for pid in pids {
            if let Some(e) = self.verdict(pid, &stats, 0) {
                parents.insert(pid, stats[&pid].1);
                found.insert(pid, e);
            }
        }
        pair_debian_layout(found, &parents)
    }

    /// Whether `pid` is an Emperor, and its settings; its uWSGI ancestors are judged
    /// first. Each process is judged once, by its identity.
    fn verdict(
        &mut self,
        pid: i32,
        stats: &HashMap<i32, (procs::ProcId, i32)>,
        depth: u32,
    ) -> Option<Emperor> {
        let &(id, ppid) = stats.get(&pid)?;
        if let Some(v) = self.verdicts.get(&id) {
            return v.clone();
        }
        let v = self.judge(id, ppid, stats, depth);
        self.verdicts.insert(id, v.clone());
        v
    }

    /// What `id` is. Before any file it names is read: only a uWSGI binary that sees
    /// this host's files is an Emperor. A process an Emperor started (a vassal, its
    /// workers and other children) is one only when its vassal file, as that Emperor
    /// reads it, makes it a sub-Emperor: what its working directory holds is not asked.
    fn judge(
        &mut self,
        id: procs::ProcId,
        ppid: i32,
        stats: &HashMap<i32, (procs::ProcId, i32)>,
        depth: u32,
    ) -> Option<Emperor> {
        let pid = id.pid;
        if !runs_uwsgi(pid) {
            return None;
        }
        if !same_root(pid) {
            tracing::debug!(
                pid,
                "a uWSGI process with another root directory (a container): its paths are not this host's, so it is not watched"
            );
            return None;
        }
        let args = procs::cmdline(pid)?;
        // The nearest uWSGI process above it.
        let mut above = ppid;
        let mut steps = 0;
        let ancestor = loop {
            if above <= 1 {
                break None;
            }
            // Deeper than any real tree: not judged as a top-level Emperor, whose
            // relative names would be taken from its working directory.
            if steps >= MAX_DEPTH {
                return None;
            }
            if runs_uwsgi(above) {
                break Some(above);
            }
            above = stats.get(&above)?.1;
            steps += 1;
        };
        let Some(ancestor) = ancestor else {
            return emperor_settings(pid, &args, None);
        };
        if depth >= MAX_DEPTH {
            return None;
        }
        let parent = self.verdict(ancestor, stats, depth + 1);
        // A fork of its parent, with its command line: the same program, the same
        // verdict (Debian's Emperor proper under its master, a vassal's workers).
        if ancestor == ppid && procs::cmdline(ancestor).as_deref() == Some(&args[..]) {
            return parent.map(|e| Emperor {
                pid,
                start_time: id.start_time,
                ..e
            });
        }
        // Started by an Emperor: its config is its vassal file, as the Emperor reads it.
        emperor_settings(pid, &args, Some(&parent?))
    }
}

/// Debian's layout: a child with its parent's command line is the Emperor proper; its
/// parent is the Emperor's master and is not counted.
fn pair_debian_layout(
    mut found: HashMap<i32, Emperor>,
    parents: &HashMap<i32, i32>,
) -> Vec<Emperor> {
    let pids: Vec<i32> = found.keys().copied().collect();
    for pid in pids {
        let Some(&ppid) = parents.get(&pid) else {
            continue;
        };
        let same = found
            .get(&ppid)
            .zip(found.get(&pid))
            .is_some_and(|(p, c)| p.cmdline == c.cmdline);
        if same {
            let master = found.remove(&ppid);
            if let (Some(e), Some(m)) = (found.get_mut(&pid), master) {
                e.master_pid = Some(ppid);
                e.since = e.since.min(m.since);
                // Its master is the program that was started; the Emperor proper is
                // its fork.
                e.exec_uid = m.exec_uid;
            }
        }
    }
    let mut out: Vec<Emperor> = found.into_values().collect();
    out.sort_by_key(|e| e.pid);
    out
}

/// Debian's directory of vassal files (`uwsgi-emperor`'s package).
pub(crate) const DEFAULT_VASSALS: &str = "/etc/uwsgi-emperor/vassals";

/// The default when nothing is configured and no Emperor runs: Debian's directory.
#[must_use]
pub(crate) fn default_source() -> Source {
    // Resolved like every directory source, so that it compares equal to an Emperor's.
    let dir = PathBuf::from(DEFAULT_VASSALS);
    Source::Dir(std::fs::canonicalize(&dir).unwrap_or(dir))
}

/// Reads a vassal file the way uWSGI would, for the `--ini` case, with its includes
/// taken from `cwd` (the vassal's working directory); other formats are only checked to
/// be readable and non-empty (the warden does not parse them). Bounded and without
/// blocking either way (`bounded`).
pub(crate) fn read_vassal(path: &Path, cwd: &Path) -> Result<VassalIni, crate::error::FileError> {
    let is_ini = path.extension().and_then(|x| x.to_str()) == Some("ini");
    if is_ini {
        return VassalIni::read_in(path, cwd, "uwsgi");
    }
    match crate::bounded::read_config(path, crate::bounded::MAX_CONFIG) {
        Ok(bytes) if !bytes.is_empty() => Ok(VassalIni::default()),
        Ok(_) => Err(crate::error::FileError {
            path: path.to_owned(),
            line: None,
            message: "empty vassal file: uWSGI would start nothing from it".into(),
        }),
        Err(e) => Err(crate::error::FileError::new(path, None, e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn command_line_options_with_and_without_equals() {
        let o = cmdline_options(&args(
            "uwsgi --emperor /v --emperor-nofollow --emperor-stats=/s.sock --master",
        ));
        assert_eq!(
            o,
            vec![
                ("emperor".into(), "/v".into()),
                ("emperor-nofollow".into(), String::new()),
                ("emperor-stats".into(), "/s.sock".into()),
                ("master".into(), String::new()),
            ]
        );
    }

    #[test]
    fn sources_dir_glob_and_monitor() {
        assert_eq!(
            Source::parse("/x/*.ini", Path::new("/")),
            Some(Source::Glob("/x/*.ini".into()))
        );
        assert_eq!(
            Source::parse("vassals", Path::new("/nonexistent")),
            Some(Source::Dir("/nonexistent/vassals".into()))
        );
        assert_eq!(
            Source::parse("zmq://tcp://127.0.0.1:5250", Path::new("/")),
            None
        );
    }

    #[test]
    fn listing_a_directory_keeps_vassal_extensions_only() {
        let d = tempfile::tempdir().unwrap();
        for f in ["a.ini", "b.xml", "c.ini.swp", ".d.ini", "e.txt", "f.yaml"] {
            std::fs::write(d.path().join(f), "[uwsgi]\n").unwrap();
        }
        let names: Vec<String> = list_vassals(&Source::Dir(d.path().to_owned()))
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(names, ["a.ini", "b.xml", "f.yaml"]);
    }
}
