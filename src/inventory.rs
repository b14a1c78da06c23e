//! The inventory: which Emperors run, which vassal files they watch, and which processes
//! belong to each vassal, refreshed on demand.
//!
//! This module owns turning the configuration and the discovered Emperors into the list
//! of vassals the warden watches, re-reading a vassal file only when its mtime, size or
//! inode changed, and mapping each vassal to its processes on every look. It is shared by
//! the daemon and the one-shot commands (`status`, `fds`, `check`). It does not decide or
//! act.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::{Config, Policy};
use crate::emperor::{self, Emperor, Source, VassalFile};
use crate::error::FileError;
use crate::mapping::{self, EmperorView, Mapping, Method, NameCache};
use crate::uwsgi_ini::VassalIni;

/// Identity of a file's content for change detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    mtime: SystemTime,
    len: u64,
    ino: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        mtime: m.modified().ok()?,
        len: m.len(),
        ino: m.ino(),
    })
}

/// One watched vassal.
#[derive(Debug, Clone)]
pub(crate) struct Vassal {
    pub file: VassalFile,
    /// Where it was found.
    pub source: Source,
    /// The PID of the Emperor that watches `source`, if one runs.
    pub emperor: Option<i32>,
    /// The vassal's working directory while uWSGI reads its file: relative includes are
    /// taken from there (`workdir`).
    pub cwd: PathBuf,
    pub ini: Result<VassalIni, FileError>,
    stamp: Option<Stamp>,
    pub policy: Policy,
    /// Problems in the vassal's own `[vassal-warden]` section.
    pub policy_problems: Vec<String>,
    pub mapping: Mapping,
    /// The mtime (whole seconds) and content digest of the file as the Emperor last
    /// loaded it, as far as the warden saw.
    loaded: Option<(i64, u64)>,
    /// The file's content changed without its mtime moving forward (`cp -p`, `rsync -t`):
    /// the running vassal does not run what is on disk, and a touch would apply it.
    pub pending_change: bool,
}

impl Vassal {
    /// The mtime (whole seconds) the Emperor last loaded the file at, as far as the warden
    /// saw.
    #[must_use]
    pub(crate) fn loaded_mtime(&self) -> Option<i64> {
        self.loaded.map(|(mtime, _)| mtime)
    }

    /// Reads the file again after it changed, and tells whether the Emperor will run
    /// what is now on disk (a newer mtime) or not (`pending_change`).
    fn reread(&mut self, cfg: &Config, st: Option<Stamp>) {
        let path = &self.file.path;
        match (self.loaded, digest(path)) {
            // Newer mtime: the Emperor reloads it, so it will run this content.
            (Some((old_mtime, _)), Some((mtime, d))) if mtime > old_mtime => {
                self.loaded = Some((mtime, d));
                self.pending_change = false;
            }
            (Some((_, old)), Some((_, d))) => self.pending_change = d != old,
            (None, now) => self.loaded = now,
            (Some(_), None) => {}
        }
        self.ini = emperor::read_vassal(path, &self.cwd);
        self.stamp = st;
        (self.policy, self.policy_problems) = policy_of(cfg, &self.file.name, &self.ini);
    }
}

/// Where uWSGI reads a vassal's file from: an Emperor watching a directory chdir()s into
/// it before starting vassals (core/emperor.c `uwsgi_imperial_monitor_directory_init`);
/// one watching a glob stays where it was started, so its own working directory.
fn workdir(source: &Source, path: &Path, emperor: Option<i32>) -> PathBuf {
    match source {
        Source::Dir(d) => d.clone(),
        Source::Glob(_) => emperor
            .and_then(|pid| std::fs::read_link(crate::procs::proc_path(pid, "cwd")).ok())
            .or_else(|| path.parent().map(Path::to_owned))
            .unwrap_or_else(|| PathBuf::from("/")),
    }
}

fn digest(path: &Path) -> Option<(i64, u64)> {
    use std::hash::{Hash, Hasher};
    let bytes = crate::bounded::read_config(path, crate::bounded::MAX_CONFIG).ok()?;
    let mtime = std::fs::metadata(path).ok()?.mtime();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    Some((mtime, h.finish()))
}

/// Everything the warden currently knows about the host.
#[derive(Debug, Default)]
pub(crate) struct Inventory {
    pub emperors: Vec<Emperor>,
    /// Keyed by the vassal file's path.
    pub vassals: BTreeMap<PathBuf, Vassal>,
    /// Sources in use, and whether they came from the config or the Emperors.
    pub sources: Vec<Source>,
    pub sources_from: &'static str,
    pub views: HashMap<i32, EmperorView>,
    names: NameCache,
    discovery: emperor::Discovery,
    looks: mapping::Looks,
    stats_backoff: mapping::StatsBackoff,
}

/// What changed in one refresh.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    pub added: Vec<PathBuf>,
    pub removed: Vec<Vassal>,
    pub reread: Vec<PathBuf>,
}

impl Inventory {
    /// Re-discovers the Emperors and re-lists vassal files.
    pub(crate) fn refresh(&mut self, cfg: &Config) -> Changes {
        self.emperors = self.discovery.discover();
        (self.sources, self.sources_from) = self.sources_of(cfg);
        let mut seen: BTreeMap<PathBuf, (VassalFile, Source)> = BTreeMap::new();
        for src in &self.sources {
            for f in emperor::list_vassals(src) {
                seen.entry(f.path.clone()).or_insert((f, src.clone()));
            }
        }
        let mut changes = Changes::default();
        let gone: Vec<PathBuf> = self
            .vassals
            .keys()
            .filter(|k| !seen.contains_key(*k))
            .cloned()
            .collect();
        for k in gone {
            if let Some(v) = self.vassals.remove(&k) {
                changes.removed.push(v);
            }
        }
        for (path, (file, source)) in seen {
            let emperor = watcher(&self.emperors, &source);
            let st = stamp(&path);
            let cwd = workdir(&source, &path, emperor);
            match self.vassals.get_mut(&path) {
                Some(v) if v.stamp == st => (v.emperor, v.cwd) = (emperor, cwd),
                Some(v) => {
                    (v.emperor, v.cwd) = (emperor, cwd);
                    v.reread(cfg, st);
                    changes.reread.push(path);
                }
                None => {
                    let ini = emperor::read_vassal(&path, &cwd);
                    let (policy, policy_problems) = policy_of(cfg, &file.name, &ini);
                    self.vassals.insert(
                        path.clone(),
                        Vassal {
                            file,
                            source,
                            emperor,
                            cwd,
                            ini,
                            stamp: st,
                            policy,
                            policy_problems,
                            mapping: Mapping::NoEmperor,
                            loaded: digest(&path),
                            pending_change: false,
                        },
                    );
                    changes.added.push(path);
                }
            }
        }
        changes
    }

    /// Applies a re-read configuration's policy to every vassal.
    pub(crate) fn repolicy(&mut self, cfg: &Config) {
        for v in self.vassals.values_mut() {
            (v.policy, v.policy_problems) = policy_of(cfg, &v.file.name, &v.ini);
        }
    }

    /// The sources to list, and where they came from: the config's, else the running
    /// Emperors', else Debian's default directory.
    fn sources_of(&self, cfg: &Config) -> (Vec<Source>, &'static str) {
        if !cfg.vassals.is_empty() {
            return (cfg.vassals.iter().map(Source::resolved).collect(), "config");
        }
        let mut s: Vec<Source> = Vec::new();
        for src in self.emperors.iter().flat_map(|e| &e.sources) {
            if !s.contains(src) {
                s.push(src.clone());
            }
        }
        if s.is_empty() {
            (
                vec![emperor::default_source()],
                "default (no running Emperor found)",
            )
        } else {
            (s, "running Emperors")
        }
    }

    /// Looks at every Emperor and maps every vassal to its processes, now.
    pub(crate) fn map_all(&mut self) {
        self.looks.ids.rotate();
        self.looks.roles.rotate();
        let mut views = HashMap::new();
        for e in &self.emperors {
            views.insert(
                e.pid,
                mapping::observe(
                    e,
                    &mut self.names,
                    &mut self.looks.ids,
                    &mut self.stats_backoff,
                ),
            );
        }
        for v in self.vassals.values_mut() {
            v.mapping = match v.emperor.and_then(|pid| views.get(&pid)) {
                Some(view) => {
                    mapping::map_vassal(&v.file, v.ini.as_ref().ok(), &v.cwd, view, &mut self.looks)
                }
                None => Mapping::NoEmperor,
            };
        }
        settle_disputes(&mut self.vassals);
        // A master found by its sockets keeps that name, once no other vassal claims it.
        for v in self.vassals.values() {
            if let Mapping::Running(p) = &v.mapping
                && p.method == Method::Sockets
            {
                self.names.assign(p.master, &v.file.name, Method::Sockets);
            }
        }
        let alive: Vec<_> = views
            .values()
            .flat_map(|v| v.children.iter().map(|(id, _)| *id))
            .collect();
        self.names.retain(|id| alive.contains(id));
        self.views = views;
    }

    #[must_use]
    pub(crate) fn emperor(&self, pid: i32) -> Option<&Emperor> {
        self.emperors.iter().find(|e| e.pid == pid)
    }

    /// Finds a vassal by the Emperor's name for it, its file name, or its path.
    #[must_use]
    pub(crate) fn find(&self, name: &str) -> Option<&Vassal> {
        self.vassals.values().find(|v| {
            v.file.name == name
                || v.file.path == Path::new(name)
                || v.file.path.file_name().and_then(|f| f.to_str()) == Some(name)
                || v.file.path.file_stem().and_then(|f| f.to_str()) == Some(name)
        })
    }
}

/// The one Emperor that runs the vassals of `source`. Of several that watch it, root's
/// wins over users' (a user may point uWSGI at any directory it can read). Of several of
/// root's, the one root itself started (`exec_uid` 0) wins, then the oldest: a process
/// that one of its vassals left behind (daemonized, under the same service) is younger
/// than the Emperor that started that vassal. Two that cannot be told apart that way,
/// or two of users', are not trusted with it.
pub(crate) fn watcher(emperors: &[Emperor], source: &Source) -> Option<i32> {
    let all: Vec<&Emperor> = emperors.iter().filter(|e| e.watches(source)).collect();
    let mut system: Vec<&Emperor> = all.iter().copied().filter(|e| e.system).collect();
    if let [one] = all.as_slice() {
        return Some(one.pid);
    }
    let rank = |e: &Emperor| (e.exec_uid != Some(0), e.since);
    system.sort_by_key(|e| rank(e));
    match system.as_slice() {
        [one] => Some(one.pid),
        [first, second, ..] if rank(first) < rank(second) => Some(first.pid),
        _ => None,
    }
}

/// Two vassals never claim one process: when two map to the same master, neither is
/// trusted with it (a vassal file can name another's pidfile or sockets).
fn settle_disputes(vassals: &mut BTreeMap<PathBuf, Vassal>) {
    let mut claims: HashMap<i32, Vec<PathBuf>> = HashMap::new();
    for (path, v) in vassals.iter() {
        if let Mapping::Running(p) = &v.mapping {
            claims.entry(p.master.pid).or_default().push(path.clone());
        }
    }
    for (master, paths) in claims.into_iter().filter(|(_, p)| p.len() > 1) {
        let names: Vec<String> = paths.iter().map(|p| vassals[p].file.name.clone()).collect();
        for (i, path) in paths.iter().enumerate() {
            let with = names
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, n)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            if let Some(v) = vassals.get_mut(path) {
                v.mapping = Mapping::Disputed { master, with };
            }
        }
    }
}

fn policy_of(
    cfg: &Config,
    name: &str,
    ini: &Result<VassalIni, FileError>,
) -> (Policy, Vec<String>) {
    let own = ini.as_ref().map_or(&[][..], |i| i.warden.as_slice());
    cfg.policy_for(name, own)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emperor(pid: i32, system: bool, exec_uid: u32, since: u64) -> Emperor {
        Emperor {
            pid,
            system,
            exec_uid: Some(exec_uid),
            start_time: since,
            since,
            master_pid: None,
            cmdline: Vec::new(),
            config_file: None,
            sources: vec![Source::Dir("/etc/uwsgi-emperor/vassals".into())],
            unwatched: Vec::new(),
            nofollow: false,
            stats: None,
            freq: None,
            tyrant: false,
            on_demand: false,
        }
    }

    #[test]
    fn of_several_emperors_on_one_directory_the_one_root_started_then_the_oldest_runs_it() {
        let src = Source::Dir("/etc/uwsgi-emperor/vassals".into());
        let roots = emperor(10, true, 0, 500);
        let reloaded = emperor(11, true, 33, 100);
        let daemon = emperor(12, true, 1000, 900);
        let user = emperor(13, false, 1000, 50);
        // Alone, whoever it is.
        assert_eq!(watcher(std::slice::from_ref(&user), &src), Some(13));
        // Root's over a user's, however old.
        assert_eq!(watcher(&[user.clone(), daemon.clone()], &src), Some(12));
        // The one root started over one a user started, whatever their age...
        assert_eq!(watcher(&[daemon.clone(), roots.clone()], &src), Some(10));
        // ...and over one that re-executed itself as www-data.
        assert_eq!(watcher(&[reloaded.clone(), roots], &src), Some(10));
        // Neither started by root: the older, which started the other's vassal.
        assert_eq!(watcher(&[daemon.clone(), reloaded], &src), Some(11));
        // Two that cannot be told apart, or two of users': none.
        let twin = emperor(14, true, 1000, 900);
        assert_eq!(watcher(&[daemon, twin], &src), None);
        let other_user = emperor(15, false, 1001, 60);
        assert_eq!(watcher(&[user, other_user], &src), None);
    }
}
