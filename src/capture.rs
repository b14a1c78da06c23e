//! Captures: the code that opens what leaks.
//!
//! When a process's growth is dominated by one target (a file, or connections to one
//! peer) before it reaches its line, the warden arms a capture for the vassal's
//! processes: uprobes on their C library (`bpf`), scoped to those PIDs, report each open
//! or connect of that target with the calling thread's Python frames (read by the kernel
//! side from the interpreter's frame list) and native return addresses. Reports are
//! capped per capture. At the end of the window, or when the incident comes first, the
//! capture is finished: of each fd reported, only the last opener of an fd still open
//! on the same inode counts, and the sites (stacks) are ranked by those fds. Python
//! frames are read from `/proc/PID/mem` (`python`), native ones from the mapped files'
//! symbol tables (`native`).
//!
//! Nothing here changes what an app does: uprobes trap into the kernel and return; the
//! reads are of memory, never writes. A host that cannot (no uprobes, no `CAP_BPF`)
//! says why once, and every incident says it in one line.

mod bpf;
mod native;
pub mod python;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::forensics::Baseline;
use crate::procs::ProcId;
use crate::sockets::PassTables;
use crate::text::one_line;
use bpf::{Event, Probe, Wanted};
use python::Mounts;
pub use python::{Frame, Origin};

/// The warden.ini side of captures (`[warden]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Settings {
    /// `capture`: off stops all captures on this host.
    pub enabled: bool,
    /// `capture-window`: how long a capture records.
    pub window: Duration,
    /// `capture-samples`: reports per capture, at most.
    pub samples: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            enabled: true,
            window: Duration::from_secs(60),
            samples: 512,
        }
    }
}

/// Sites shown per capture, at most.
const MAX_SITES: usize = 8;
/// Growth (fds since the warden first saw the process) below which nothing is armed.
const MIN_GROWTH: u64 = 16;
/// After a look that armed nothing, the next look at that vassal waits this long.
const RETRY: Duration = Duration::from_secs(30);
/// A finished capture no incident took is dropped after this long.
const KEEP: Duration = Duration::from_secs(3600);
/// Reports read per pass, at most (the ring buffer holds the rest).
const DRAIN: usize = 4096;
/// Captures running at once on the host: each holds four perf events per process.
const MAX_RUNNING: u32 = 4;
/// Processes one capture is armed in, at most (the one that grew first).
const MAX_PROCS: usize = 16;
/// Notes one capture keeps.
const MAX_NOTES: usize = 16;
/// Reports a capture that went on past its incident waits for before it finishes (its
/// window ends it sooner when the leak is slower).
const FOLLOW_REPORTS: u64 = 8;
/// Incidents one capture is owed to, at most (a leak that comes back while it waits).
const MAX_OWED: usize = 8;

/// A process of the vassal as this pass sampled it: what a capture needs of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sampled {
    pub id: ProcId,
    pub fds: u64,
    /// The count at or above which it is over its line.
    pub line: u64,
}

/// One place where the target was opened, with its fds still open at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// fds opened here and still open on the same file or connection at the end.
    pub open: u64,
    /// Opens seen here in the window.
    pub opened: u64,
    /// Innermost first.
    pub frames: Vec<Frame>,
}

/// What an incident says of the code that leaks: sites, or why there are none.
#[derive(Debug, Clone, PartialEq)]
pub struct Capture {
    /// What was looked for: a path, or `connections to ADDRESS`.
    pub target: String,
    pub seconds: f64,
    /// Opens of the target seen (a report each, up to `capture-samples`).
    pub reports: u64,
    pub sites: Vec<Site>,
    /// Why this incident has no sites, in one line.
    pub unavailable: Option<String>,
    /// What could not be read in some processes (one line each).
    pub notes: Vec<String>,
    /// Still armed: its sites will come with the incident's `capture` record.
    pub pending: bool,
}

impl Capture {
    fn unavailable(why: String) -> Capture {
        Capture {
            target: String::new(),
            seconds: 0.0,
            reports: 0,
            sites: Vec::new(),
            unavailable: Some(why),
            notes: Vec::new(),
            pending: false,
        }
    }
}

/// The kernel side, loaded when first needed.
enum Kernel {
    Untried,
    Ready(Box<Probe>),
    Unavailable(String),
}

/// A process a capture is armed in, and how its frames are read.
struct Armed {
    /// PID and start time: a PID reused within the window is not the process armed.
    id: ProcId,
    threads: Option<Vec<(u64, u64)>>,
    interp: Option<python::Interpreter>,
    /// Code objects read so far, by address (`None`: not a code object), at most
    /// `MAX_CODES`.
    codes: HashMap<u64, Option<python::Code>>,
    symbols: native::Symbolizer,
}

impl Armed {
    /// The process's PID as the kernel side reports it.
    fn tgid(&self) -> u32 {
        self.id.pid.cast_unsigned()
    }
}

/// Code objects remembered per process: past this, each is read again when reported
/// (reports are capped, so the reads are too).
const MAX_CODES: usize = 4096;

/// A capture that is recording.
struct Running {
    slot: u32,
    wanted: Wanted,
    target: String,
    started: Instant,
    procs: Vec<Armed>,
    /// Every process an arming was tried in, armed or not: each is tried once.
    tried: HashSet<ProcId>,
    /// The last report of each (PID, fd): its stack, resolved, and what it opened.
    last: HashMap<(u32, u32), (usize, Identity)>,
    /// Resolved stacks, by index; `opened` counts per stack.
    stacks: Vec<Vec<Frame>>,
    opened: Vec<u64>,
    index: HashMap<Vec<Frame>, usize>,
    reports: u64,
    notes: Vec<String>,
    /// The incidents that came before it saw an open, oldest first: it goes on past them
    /// (on the processes that replace those recycled or reloaded), and its result is a
    /// `capture` record of each.
    owed: Vec<String>,
}

/// A capture that went on past its incidents, finished: what their `capture` records
/// say.
pub(crate) struct Followed {
    pub vassal: PathBuf,
    pub incidents: Vec<String>,
    pub capture: Capture,
}

/// Every vassal's capture: armed, finished, or not yet.
pub(crate) struct Captures {
    settings: Settings,
    kernel: Kernel,
    running: HashMap<PathBuf, Running>,
    finished: HashMap<PathBuf, (Instant, Capture)>,
    not_before: HashMap<PathBuf, Instant>,
    /// Why the last look at a vassal armed nothing, and when, for its incident to say
    /// (kept as long as a finished capture).
    why_not: HashMap<PathBuf, (Instant, String)>,
    /// Captures finished for incidents that came before them, not yet recorded.
    followed: Vec<Followed>,
    free: Vec<u32>,
}

impl Captures {
    pub(crate) fn new(settings: Settings) -> Captures {
        Captures {
            settings,
            kernel: Kernel::Untried,
            running: HashMap::new(),
            finished: HashMap::new(),
            not_before: HashMap::new(),
            why_not: HashMap::new(),
            followed: Vec::new(),
            free: (0..MAX_RUNNING.min(bpf::MAX_SLOTS)).rev().collect(),
        }
    }

    /// New settings (SIGHUP). Running captures finish under the old ones.
    pub(crate) fn configure(&mut self, settings: Settings) {
        self.settings = settings;
    }

    /// Whether captures can run on this host, and why not: loads the kernel side once.
    pub(crate) fn availability(&mut self) -> Result<(), String> {
        if !self.settings.enabled {
            return Err("off in warden.ini (capture = off)".into());
        }
        if let Kernel::Untried = self.kernel {
            self.kernel = match Probe::load() {
                Ok(p) => Kernel::Ready(Box::new(p)),
                Err(why) => {
                    warn!("captures of the code that leaks are not available: {why}");
                    Kernel::Unavailable(why)
                }
            };
        }
        match &self.kernel {
            Kernel::Ready(_) => Ok(()),
            Kernel::Unavailable(why) => Err(why.clone()),
            Kernel::Untried => Err("not tried".into()),
        }
    }

    /// Looks at one vassal's pass: arms a capture when a process has grown, by one target
    /// mostly, past `at` of the way from where it started to its line.
    pub(crate) fn consider(
        &mut self,
        vassal: &Path,
        name: &str,
        procs: &[Sampled],
        baselines: &HashMap<ProcId, Baseline>,
        tables: &mut PassTables,
        at: Option<f64>,
    ) {
        let Some(at) = at else { return };
        if let (Some(run), Kernel::Ready(probe)) = (self.running.get_mut(vassal), &mut self.kernel)
        {
            // A worker respawned since the capture was armed is armed too, and one gone
            // is disarmed.
            run.drop_gone(probe);
            run.refresh_threads(probe);
            for q in procs {
                if run.tried.insert(q.id) {
                    run.arm(probe, q.id, self.settings.samples);
                }
            }
            return;
        }
        if self.running.contains_key(vassal)
            || self.finished.contains_key(vassal)
            || self
                .not_before
                .get(vassal)
                .is_some_and(|t| Instant::now() < *t)
        {
            return;
        }
        let grown = procs.iter().find(|p| {
            let base = baselines.get(&p.id).map_or(p.fds, |b| b.fds);
            let growth = p.fds.saturating_sub(base);
            let arm_at = base as f64 + (p.line.saturating_sub(base)) as f64 * at;
            growth >= MIN_GROWTH && p.fds as f64 >= arm_at && p.fds < p.line
        });
        let Some(p) = grown else { return };
        if self.availability().is_err() {
            return;
        }
        self.not_before
            .insert(vassal.to_owned(), Instant::now() + RETRY);
        match target_of(p.id, p.fds, baselines, tables) {
            Ok((wanted, target)) => {
                self.why_not.remove(vassal);
                self.start(vassal, name, procs, wanted, target);
            }
            Err(why) => {
                info!(vassal = %name, "{}: capture: {why}", one_line(name));
                self.why_not
                    .insert(vassal.to_owned(), (Instant::now(), why));
            }
        }
    }

    /// Arms a capture of `wanted` in the processes of `vassal`.
    fn start(
        &mut self,
        vassal: &Path,
        name: &str,
        procs: &[Sampled],
        wanted: Wanted,
        target: String,
    ) {
        let Kernel::Ready(probe) = &mut self.kernel else {
            return;
        };
        let Some(slot) = self.free.pop() else {
            let why = format!("not armed: {MAX_RUNNING} captures were already running");
            warn!(vassal = %name, "{}: capture {why}", one_line(name));
            self.why_not
                .insert(vassal.to_owned(), (Instant::now(), why));
            return;
        };
        let mut run = Running::new(slot, wanted, target);
        if let Err(e) = probe.want(slot, wanted) {
            warn!(vassal = %name, "{}: capture not armed: {e}", one_line(name));
            self.why_not.insert(
                vassal.to_owned(),
                (Instant::now(), format!("not armed: {e}")),
            );
            self.free.push(slot);
            return;
        }
        for q in procs {
            run.tried.insert(q.id);
            run.arm(probe, q.id, self.settings.samples);
        }
        if run.procs.is_empty() {
            probe.unwant(slot, wanted);
            self.free.push(slot);
            let why = run.notes.join("; ");
            warn!(vassal = %name, "{}: capture not armed: {why}", one_line(name));
            self.finished.insert(
                vassal.to_owned(),
                (Instant::now(), Capture::unavailable(why)),
            );
            return;
        }
        info!(vassal = %name, target = %run.target, processes = run.procs.len(),
              window = %humantime::format_duration(self.settings.window),
              "{}: capture armed on {} process(es), for what opens {}", one_line(name), run.procs.len(), one_line(&run.target));
        self.running.insert(vassal.to_owned(), run);
    }

    /// Reads the reports waiting and finishes the captures whose window is over, and
    /// those that went on past their incident once they have their reports.
    pub(crate) fn poll(&mut self) {
        let Kernel::Ready(probe) = &mut self.kernel else {
            return;
        };
        if self.running.is_empty() {
            return;
        }
        route(probe, &mut self.running);
        let window = self.settings.window;
        let over: Vec<PathBuf> = self
            .running
            .iter()
            .filter(|(_, r)| {
                r.started.elapsed() >= window || (!r.owed.is_empty() && r.reports >= FOLLOW_REPORTS)
            })
            .map(|(p, _)| p.clone())
            .collect();
        for path in over {
            if let Some(c) = self.finish(&path) {
                self.finished.insert(path, (Instant::now(), c));
            }
        }
        self.finished.retain(|_, (t, _)| t.elapsed() < KEEP);
    }

    /// Ends the capture of `vassal` and gives its result; a capture owed to earlier
    /// incidents gives it to them (`followed`) instead.
    fn finish(&mut self, vassal: &Path) -> Option<Capture> {
        if let Kernel::Ready(probe) = &mut self.kernel {
            // What is still waiting belongs to the captures as much as what was read.
            route(probe, &mut self.running);
        }
        let run = self.running.remove(vassal)?;
        if let Kernel::Ready(probe) = &mut self.kernel {
            for a in &run.procs {
                probe.disarm(a.tgid(), a.threads.as_deref());
            }
            probe.unwant(run.slot, run.wanted);
        }
        self.free.push(run.slot);
        let capture = run.result();
        info!(vassal = %vassal.display(), sites = capture.sites.len(), reports = capture.reports,
              "{}: capture finished: {} site(s) of {}", one_line(&vassal.display().to_string()), capture.sites.len(), one_line(&run.target));
        if run.owed.is_empty() {
            return Some(capture);
        }
        self.followed.push(Followed {
            vassal: vassal.to_owned(),
            incidents: run.owed,
            capture,
        });
        None
    }

    /// The captures that went on past their incidents and are finished, to be recorded.
    pub(crate) fn followed(&mut self) -> Vec<Followed> {
        std::mem::take(&mut self.followed)
    }

    /// What `incident` of `vassal` says of the code that leaks: the capture running
    /// (finished now, when it saw the target opened) or finished. A capture that has
    /// seen no open yet (the leak outran it), or none at all, goes on, on the processes
    /// that replace `offender` and its kin, and the incident says its sites will follow
    /// (`pending`); otherwise it says why there is none.
    pub(crate) fn take(
        &mut self,
        vassal: &Path,
        wanted: bool,
        incident: &str,
        offender: (ProcId, u64),
        baselines: &HashMap<ProcId, Baseline>,
        tables: &mut PassTables,
    ) -> Option<Capture> {
        if !wanted {
            return None;
        }
        if let Kernel::Ready(probe) = &mut self.kernel {
            route(probe, &mut self.running);
        }
        if let Some(run) = self.running.get_mut(vassal) {
            if run.reports == 0 && run.owed.len() < MAX_OWED {
                return Some(run.go_on(incident, None));
            }
            // It has the sites: this incident has them now (and earlier ones it was
            // owed to, in their own records).
            if !run.owed.is_empty() {
                let owed = std::mem::take(&mut run.owed);
                let capture = self.finish(vassal)?;
                self.followed.push(Followed {
                    vassal: vassal.to_owned(),
                    incidents: owed,
                    capture: capture.clone(),
                });
                return Some(capture);
            }
            return self.finish(vassal);
        }
        if let Some((_, c)) = self.finished.remove(vassal) {
            return Some(c);
        }
        if !self.settings.enabled {
            return None;
        }
        let why = match self.availability() {
            Err(why) => return Some(Capture::unavailable(why)),
            Ok(()) => self
                .why_not
                .remove(vassal)
                .filter(|(t, _)| t.elapsed() < KEEP)
                .map_or_else(
                    || {
                        "not armed before the incident: the process reached its line \
                         before a pass saw it grow halfway there (a leak faster than the \
                         passes)"
                            .into()
                    },
                    |(_, why)| why,
                ),
        };
        // Armed now, for what the offender grew: the processes that replace it open
        // the same target, and the next passes arm them.
        let (id, fds) = offender;
        match target_of(id, fds, baselines, tables) {
            Ok((w, target)) => {
                let name = vassal.display().to_string();
                let procs = [Sampled { id, fds, line: fds }];
                self.start(vassal, &name, &procs, w, target);
            }
            Err(not) => return Some(Capture::unavailable(format!("{why}; {not}"))),
        }
        if let Some(run) = self.running.get_mut(vassal) {
            return Some(run.go_on(incident, Some(why)));
        }
        // Not armed after all: what arming said, else why nothing was before.
        let not = self.why_not.remove(vassal).map_or(why, |(_, not)| not);
        Some(
            self.finished
                .remove(vassal)
                .map_or_else(|| Capture::unavailable(not), |(_, c)| c),
        )
    }

    /// Forgets a vassal no longer watched.
    pub(crate) fn retain(&mut self, keep: impl Fn(&Path) -> bool) {
        let gone: Vec<PathBuf> = self.running.keys().filter(|p| !keep(p)).cloned().collect();
        for p in gone {
            // A vassal no longer watched has nowhere to record it.
            if let Some(run) = self.running.get_mut(&p) {
                run.owed.clear();
            }
            self.finish(&p);
        }
        self.finished.retain(|p, _| keep(p));
        self.not_before.retain(|p, _| keep(p));
        self.why_not.retain(|p, _| keep(p));
    }
}

/// Reads the reports waiting and gives each to the capture armed in its process (a
/// process is armed for one capture at most).
fn route(probe: &mut Probe, running: &mut HashMap<PathBuf, Running>) {
    for e in probe.drain(DRAIN) {
        if let Some(run) = running
            .values_mut()
            .find(|r| r.procs.iter().any(|a| a.tgid() == e.tgid))
        {
            run.add(&e);
        }
    }
}

/// Arms one process: its C library, its interpreter if it is a CPython this version
/// reads. A process that cannot be armed is a note, in one line.
fn arm_one(
    probe: &mut Probe,
    id: ProcId,
    slot: u32,
    samples: u32,
) -> Result<(Armed, Option<String>), String> {
    let pid = id.pid;
    let maps = python::mappings(pid).map_err(|e| format!("PID {pid}: {e}"))?;
    let libc =
        python::libc(&maps).ok_or_else(|| format!("PID {pid}: no glibc (libc.so.6) mapped"))?;
    let name = &libc.path;
    let mounts = python::Mounts::of(pid);
    let libc = libc.file(pid, &mounts).ok_or_else(|| {
        format!("PID {pid}: {name} is on a network or FUSE filesystem, or was replaced since it was mapped")
    })?;
    python::readable(&libc, true).map_err(|why| format!("PID {pid}: {name}: {why}"))?;
    let mut libs = vec![(
        libc.clone(),
        probe_offsets(&libc).map_err(|e| format!("PID {pid}: {name}: {e}"))?,
    )];
    let (open, connect) = counts(&libs[0].1);
    if open < 2 || connect == 0 {
        return Err(format!("PID {pid}: {name}: no open64, openat64 or connect"));
    }
    // Before glibc 2.34, a program linked with libpthread calls its `open64` and
    // `connect` (cancellation points), not the C library's.
    if let Some(pthread) = python::libpthread(&maps)
        && let Some(file) = pthread.file(pid, &mounts)
        && python::readable(&file, true).is_ok()
        && let Ok(offsets) = probe_offsets(&file)
        && !offsets.is_empty()
    {
        libs.push((file, offsets));
    }
    let (interp, threads, note) = match python::find(pid, &maps, &mounts) {
        python::Found::Python(interp) => match python::Memory::open(pid) {
            Ok(mem) => {
                let threads = python::threads(&mem, &interp);
                (Some(interp), Some(threads), None)
            }
            Err(e) => (None, None, Some(format!("PID {pid}: /proc/{pid}/mem: {e}"))),
        },
        python::Found::Unreadable(why) => (None, None, Some(format!("PID {pid}: {why}"))),
        python::Found::NotPython => (None, None, None),
    };
    let python = interp
        .as_ref()
        .zip(threads.as_deref())
        .map(|(i, t)| (&i.layout, t));
    probe
        .arm(
            pid.cast_unsigned(),
            &bpf::Arming {
                slot,
                limit: samples,
                libs: &libs,
                python,
            },
        )
        .map_err(|e| format!("PID {pid}: {e}"))?;
    // The PID could have been reused between the sample and the attach: then the probes
    // are on another process, and come off at once.
    if !crate::procs::is_same_process(id) {
        probe.disarm(pid.cast_unsigned(), threads.as_deref());
        return Err(format!("PID {pid}: exited before it was armed"));
    }
    let armed = Armed {
        id,
        threads,
        interp,
        codes: HashMap::new(),
        symbols: native::Symbolizer::new(pid, maps, mounts),
    };
    Ok((armed, note))
}

/// The offsets in the library at `path` of the functions probed there (one per
/// address: two names of one function would report each open twice).
fn probe_offsets(path: &Path) -> Result<Vec<(&'static str, u64)>, String> {
    let names: Vec<&str> = bpf::PROBES.iter().map(|p| p.0).collect();
    let found = python::symbols(path, &names)?;
    let mut offsets: Vec<(&'static str, u64)> = bpf::PROBES
        .iter()
        .zip(&found.addrs)
        .filter_map(|((_, prog), at)| at.map(|(_, offset)| (*prog, offset)))
        .collect();
    offsets.sort_by_key(|o| o.1);
    offsets.dedup_by_key(|o| o.1);
    Ok(offsets)
}

/// How many of `offsets` are opens, and how many connects.
fn counts(offsets: &[(&'static str, u64)]) -> (usize, usize) {
    let open = offsets.iter().filter(|(p, _)| *p == "on_open").count();
    (open, offsets.len() - open)
}

impl Running {
    fn new(slot: u32, wanted: Wanted, target: String) -> Running {
        Running {
            slot,
            wanted,
            target,
            started: Instant::now(),
            procs: Vec::new(),
            tried: HashSet::new(),
            last: HashMap::new(),
            stacks: Vec::new(),
            opened: Vec::new(),
            index: HashMap::new(),
            reports: 0,
            notes: Vec::new(),
            owed: Vec::new(),
        }
    }

    /// Goes on past `incident` (its window starts again), and what the incident says
    /// of it now: armed, its sites to follow; `why` it saw nothing before, as a note.
    fn go_on(&mut self, incident: &str, why: Option<String>) -> Capture {
        self.owed.push(incident.to_owned());
        self.started = Instant::now();
        let mut notes = self.notes.clone();
        notes.extend(why);
        Capture {
            target: self.target.clone(),
            seconds: 0.0,
            reports: 0,
            sites: Vec::new(),
            unavailable: None,
            notes,
            pending: true,
        }
    }

    /// Arms process `id`; what it cannot read or attach to is a note of the capture.
    fn arm(&mut self, probe: &mut Probe, id: ProcId, samples: u32) {
        if self.procs.len() >= MAX_PROCS {
            self.note(format!(
                "armed in {MAX_PROCS} processes, the most one capture is: PID {} and others not",
                id.pid
            ));
            return;
        }
        match arm_one(probe, id, self.slot, samples) {
            Ok((a, note)) => {
                self.procs.push(a);
                if let Some(n) = note {
                    self.note(n);
                }
            }
            Err(note) => self.note(note),
        }
    }

    /// Keeps `note`, unless it was said already or `MAX_NOTES` are kept.
    fn note(&mut self, note: String) {
        if self.notes.len() < MAX_NOTES && !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }

    /// Reads the Python threads of each armed process again: a thread started since it
    /// was armed is told to the kernel side (up to the same bound per process).
    fn refresh_threads(&mut self, probe: &mut Probe) {
        for a in &mut self.procs {
            let tgid = a.tgid();
            let (Some(interp), Some(known)) = (&a.interp, &mut a.threads) else {
                continue;
            };
            let Ok(mem) = python::Memory::open(a.id.pid) else {
                continue;
            };
            let new: Vec<(u64, u64)> = python::threads(&mem, interp)
                .into_iter()
                .filter(|t| !known.contains(t))
                .take(python::MAX_THREADS.saturating_sub(known.len()))
                .collect();
            if !new.is_empty() {
                probe.add_threads(tgid, &new);
                known.extend(new);
            }
        }
    }

    /// Disarms the processes that are gone (or whose PID was reused).
    fn drop_gone(&mut self, probe: &mut Probe) {
        self.procs.retain(|a| {
            let alive = crate::procs::is_same_process(a.id);
            if !alive {
                probe.disarm(a.tgid(), a.threads.as_deref());
            }
            alive
        });
    }

    fn add(&mut self, e: &Event) {
        self.reports += 1;
        let Some(a) = self.procs.iter_mut().find(|a| a.tgid() == e.tgid) else {
            return;
        };
        let mut frames = Vec::new();
        // The frames are read now: a process that exited, or whose PID was reused, has
        // only its native addresses left.
        let mem = (a.interp.is_some() && crate::procs::is_same_process(a.id))
            .then(|| python::Memory::open(a.id.pid).ok())
            .flatten();
        if let (Some(mem), Some(interp)) = (&mem, &a.interp) {
            for (addr, instr) in &e.py {
                if !a.codes.contains_key(addr) && a.codes.len() < MAX_CODES {
                    a.codes.insert(*addr, python::code(mem, interp, *addr));
                }
                let frame = match a.codes.get(addr) {
                    Some(known) => known
                        .as_ref()
                        .map(|c| c.frame(&interp.layout, *addr, *instr)),
                    None => python::code(mem, interp, *addr)
                        .map(|c| c.frame(&interp.layout, *addr, *instr)),
                };
                frames.extend(frame);
            }
        }
        if frames.is_empty() {
            frames = e
                .native
                .iter()
                .enumerate()
                .map(|(i, ip)| a.symbols.frame(*ip, e.connect && i == 0))
                .collect();
        }
        let n = self.stacks.len();
        let i = *self.index.entry(frames.clone()).or_insert(n);
        if i == n {
            self.stacks.push(frames);
            self.opened.push(0);
        }
        self.opened[i] += 1;
        let what = if e.connect {
            Identity::Socket(e.ino)
        } else {
            Identity::File {
                dev: e.dev,
                ino: e.ino,
            }
        };
        self.last.insert((e.tgid, e.fd), (i, what));
    }

    /// The sites, by fds still open on the inode they opened.
    fn result(&self) -> Capture {
        let alive: HashSet<u32> = self
            .procs
            .iter()
            .filter(|a| crate::procs::is_same_process(a.id))
            .map(Armed::tgid)
            .collect();
        let mut open: BTreeMap<usize, u64> = BTreeMap::new();
        let mut mounts: HashMap<u32, Mounts> = HashMap::new();
        for ((pid, fd), (i, what)) in &self.last {
            if !alive.contains(pid) {
                continue;
            }
            let m = mounts
                .entry(*pid)
                .or_insert_with(|| Mounts::of(pid.cast_signed()));
            if fd_identity(*pid, *fd, m) == Some(*what) {
                *open.entry(*i).or_default() += 1;
            }
        }
        let mut sites: Vec<Site> = open
            .into_iter()
            .map(|(i, n)| Site {
                open: n,
                opened: self.opened[i],
                frames: self.stacks[i].clone(),
            })
            .collect();
        sites.sort_by(|a, b| b.open.cmp(&a.open).then(b.opened.cmp(&a.opened)));
        sites.truncate(MAX_SITES);
        let mut notes = self.notes.clone();
        if self.reports == 0 {
            notes.push("no open of the target was seen in the window".into());
        }
        Capture {
            target: self.target.clone(),
            seconds: self.started.elapsed().as_secs_f64(),
            reports: self.reports,
            sites,
            unavailable: None,
            notes,
            pending: false,
        }
    }
}

/// What an fd is, as the kernel side reports it: a file by its superblock's device and
/// its inode number, a socket by its inode number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Identity {
    File { dev: u32, ino: u64 },
    Socket(u64),
}

/// What fd `fd` of `pid` is, without touching the file itself (a FUSE or network file
/// could hang a `stat`): the link says whether it is a socket, `fdinfo` gives the inode
/// and the mount.
fn fd_identity(pid: u32, fd: u32, mounts: &Mounts) -> Option<Identity> {
    let link = rustix::fs::readlink(format!("/proc/{pid}/fd/{fd}").as_str(), Vec::new()).ok()?;
    if let Some(ino) = crate::sockets::inode_of(&link.to_string_lossy()) {
        return Some(Identity::Socket(ino));
    }
    let path = format!("/proc/{pid}/fdinfo/{fd}");
    let raw = crate::bounded::read(Path::new(&path), 64 << 10).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let dev = mounts.dev(field("mnt_id:")?)?;
    Some(Identity::File {
        dev,
        ino: field("ino:")?,
    })
}

/// What a capture of process `id` (at `fds` now) would look for: the one target most of
/// its growth is; why none, in one line.
fn target_of(
    id: ProcId,
    fds: u64,
    baselines: &HashMap<ProcId, Baseline>,
    tables: &mut PassTables,
) -> Result<(Wanted, String), String> {
    let base = baselines.get(&id);
    let Some((wanted, target, count)) = dominant(id.pid, base, tables) else {
        return Err(format!(
            "not armed: what PID {} opened is not identified (a file on a filesystem its \
             mountinfo does not show, or a socket with no peer)",
            id.pid
        ));
    };
    if count < fds.saturating_sub(base.map_or(0, |b| b.fds)) / 2 {
        return Err(format!(
            "not armed: the growth of PID {} is spread over many targets",
            id.pid
        ));
    }
    Ok((wanted, target))
}

/// The target whose fds grew most in `pid` since `baseline`: a file (by inode) or
/// connections to one peer; with what to call it and how many fds it grew by.
fn dominant(
    pid: i32,
    baseline: Option<&Baseline>,
    tables: &mut PassTables,
) -> Option<(Wanted, String, u64)> {
    let (growth, fds) = crate::forensics::most_grown(pid, baseline, tables).ok()??;
    let &fd = fds.first()?;
    let me = pid.cast_unsigned();
    match fd_identity(me, fd, &Mounts::of(pid))? {
        Identity::File { dev, ino } => {
            let link =
                rustix::fs::readlink(format!("/proc/{pid}/fd/{fd}").as_str(), Vec::new()).ok()?;
            let name = crate::forensics::bounded_target(link.as_bytes());
            Some((Wanted::File { dev, ino }, name, growth))
        }
        Identity::Socket(ino) => {
            let table = crate::sockets::SocketTable::read_for(pid, &HashSet::from([ino]));
            let peer = table.iter().find(|(i, _)| *i == ino)?.1.peer()?;
            Some((Wanted::Peer(peer), format!("connections to {peer}"), growth))
        }
    }
}

/// The Python frames of every thread of `pid` now, innermost first, read as a capture
/// reads them (the interpreter's own frame list, through `/proc/PID/mem`): to see what
/// a process runs, and to check a version's layout against a live interpreter. Frames
/// of a thread that runs while they are read may be torn; one that waits is exact.
pub fn python_stacks(pid: i32) -> Result<Vec<Vec<Frame>>, String> {
    let maps = python::mappings(pid).map_err(|e| format!("PID {pid}: {e}"))?;
    let mounts = Mounts::of(pid);
    let interp = match python::find(pid, &maps, &mounts) {
        python::Found::Python(i) => i,
        python::Found::NotPython => return Err(format!("PID {pid}: no CPython mapped")),
        python::Found::Unreadable(why) => return Err(format!("PID {pid}: {why}")),
    };
    let mem = python::Memory::open(pid).map_err(|e| format!("/proc/{pid}/mem: {e}"))?;
    Ok(python::threads(&mem, &interp)
        .into_iter()
        .map(|(_, tstate)| {
            python::raw_frames(&mem, &interp.layout, tstate, bpf::MAX_PY)
                .into_iter()
                .filter_map(|(code, instr)| {
                    python::code(&mem, &interp, code).map(|c| c.frame(&interp.layout, code, instr))
                })
                .collect()
        })
        .collect())
}

/// A capture started by hand, for the benchmarks: armed on `pids` for the file at
/// `target`, recording until `finish`.
pub struct Session {
    probe: Box<Probe>,
    run: Running,
}

/// How often the kernel side ran and for how long in all (the kernel's own count, with
/// `kernel.bpf_stats_enabled = 1`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgramStats {
    pub runs: u64,
    pub nanos: u64,
}

impl Session {
    pub fn start(pids: &[i32], target: &Path, samples: u32) -> Result<Session, String> {
        let file = std::fs::File::open(target).map_err(|e| format!("{}: {e}", target.display()))?;
        let me = std::process::id();
        let fd =
            u32::try_from(std::os::fd::AsRawFd::as_raw_fd(&file)).map_err(|e| e.to_string())?;
        let Some(Identity::File { dev, ino }) = fd_identity(me, fd, &Mounts::of(me.cast_signed()))
        else {
            return Err(format!("{}: not a file", target.display()));
        };
        let wanted = Wanted::File { dev, ino };
        let mut probe = Box::new(Probe::load()?);
        probe.want(0, wanted)?;
        let mut run = Running::new(0, wanted, target.display().to_string());
        for pid in pids {
            let id =
                crate::procs::proc_id(*pid).ok_or_else(|| format!("PID {pid}: not running"))?;
            let (armed, note) = arm_one(&mut probe, id, 0, samples)?;
            run.procs.push(armed);
            run.notes.extend(note);
        }
        Ok(Session { probe, run })
    }

    /// Reads the reports waiting.
    pub fn poll(&mut self) {
        for e in self.probe.drain(DRAIN) {
            self.run.add(&e);
        }
    }

    /// The kernel side's runs so far: (opens, connects).
    pub fn stats(&self) -> (ProgramStats, ProgramStats) {
        (self.probe.stats("on_open"), self.probe.stats("on_connect"))
    }

    pub fn finish(mut self) -> Capture {
        self.poll();
        for a in &self.run.procs {
            self.probe.disarm(a.tgid(), a.threads.as_deref());
        }
        self.run.result()
    }
}
