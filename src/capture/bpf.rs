//! The loader of the kernel side (`capture.bpf.c`, compiled by `build.rs`): its maps in
//! their byte layouts, uprobes attached per process, and the reports read back.
//!
//! The layouts below mirror the C structs field by field; the C side is the reference.

use std::collections::HashMap as StdMap;
use std::num::NonZeroU32;
use std::path::PathBuf;

use aya::maps::{Array, HashMap, MapData, RingBuf};
use aya::programs::UProbe;
use aya::programs::uprobe::{UProbeAttachLocation, UProbeLink, UProbeLinkId, UProbeScope};
use aya::{Ebpf, EbpfLoader, VerifierLogLevel};

use super::python::Layout;

/// Python frames and native frames a report carries at most (the C side's `MAX_PY` and
/// `MAX_NATIVE`).
pub(super) const MAX_PY: usize = 32;
pub(super) const MAX_NATIVE: usize = 24;
/// Captures that can be armed at once (the C side's `MAX_SLOTS`).
pub(super) const MAX_SLOTS: u32 = 64;

/// The size of `struct target` in `capture.bpf.c`.
const TARGET_LEN: usize = 64;

const OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/capture.bpf.o"));

/// The C library's functions that open files (aliases share an address: one each; the
/// last is private to glibc, and may be missing) and the one that connects, with the
/// program each runs.
pub(super) const PROBES: [(&str, &str); 4] = [
    ("open64", "on_open"),
    ("openat64", "on_open"),
    ("__open64_nocancel", "on_open"),
    ("connect", "on_connect"),
];

/// What a capture looks for in its processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Wanted {
    /// A file, by the kernel's device number and inode.
    File { dev: u32, ino: u64 },
    /// Connections to this peer.
    Peer(std::net::SocketAddr),
}

/// One report: an fd of the target opened (or connected) at this place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    pub tgid: u32,
    pub fd: u32,
    /// A connect (else an open).
    pub connect: bool,
    pub dev: u32,
    pub ino: u64,
    /// Innermost first: (code object, last instruction) of each Python frame.
    pub py: Vec<(u64, u64)>,
    /// Innermost first: native return addresses, as far as frame pointers reach. For a
    /// connect (an entry probe) the first is the function's own address, and the
    /// second its caller's return address (read from the stack: no frame yet).
    pub native: Vec<u64>,
}

const EVENT_LEN: usize = 48 + MAX_PY * 16 + MAX_NATIVE * 8;

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_ne_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(a)
}

impl Event {
    /// Parses one report; `None` when it is not one (a short record).
    pub(crate) fn parse(b: &[u8]) -> Option<Event> {
        if b.len() < EVENT_LEN {
            return None;
        }
        let npy = (u32_at(b, 20) as usize).min(MAX_PY);
        let native_bytes = u64_at(b, 32).cast_signed();
        let nnative = usize::try_from(native_bytes).map_or(0, |n| (n / 8).min(MAX_NATIVE));
        Some(Event {
            tgid: u32_at(b, 0),
            fd: u32_at(b, 8),
            connect: u32_at(b, 12) == 2,
            dev: u32_at(b, 16),
            ino: u64_at(b, 24),
            py: (0..npy)
                .map(|i| (u64_at(b, 40 + i * 16), u64_at(b, 48 + i * 16)))
                .collect(),
            native: {
                let mut ips: Vec<u64> = (0..nnative)
                    .map(|i| u64_at(b, 40 + MAX_PY * 16 + i * 8))
                    .take_while(|ip| *ip != 0)
                    .collect();
                let caller = u64_at(b, 40 + MAX_PY * 16 + MAX_NATIVE * 8);
                if u32_at(b, 12) == 2 && !ips.is_empty() && caller != 0 {
                    ips.insert(1, caller);
                    ips.truncate(MAX_NATIVE);
                }
                ips
            },
        })
    }
}

fn target_value(slot: u32, limit: u32, python: Option<&Layout>) -> [u8; TARGET_LEN] {
    let mut v = [0u8; TARGET_LEN];
    v[0..4].copy_from_slice(&slot.to_ne_bytes());
    v[4..8].copy_from_slice(&limit.to_ne_bytes());
    if let Some(l) = python {
        // 1: the thread state points to the frame; 2: to a cframe that does.
        let hops: u32 = if l.cframe_current.is_some() { 2 } else { 1 };
        v[8..12].copy_from_slice(&hops.to_ne_bytes());
        for (i, off) in [
            l.tstate_frame,
            l.cframe_current.unwrap_or(0),
            l.frame_code,
            l.frame_previous,
            l.frame_instr,
            // 0: no owner byte to read.
            l.frame_owner.unwrap_or(0),
        ]
        .into_iter()
        .enumerate()
        {
            v[16 + i * 8..24 + i * 8].copy_from_slice(&off.to_ne_bytes());
        }
    }
    v
}

fn file_key(slot: u32, dev: u32, ino: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[0..4].copy_from_slice(&slot.to_ne_bytes());
    k[4..8].copy_from_slice(&dev.to_ne_bytes());
    k[8..16].copy_from_slice(&ino.to_ne_bytes());
    k
}

/// The key of a peer as the C side builds it from a `sockaddr`: family and port as they
/// lie in memory (the port in network order), then the address bytes.
fn peer_key(slot: u32, peer: std::net::SocketAddr) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[0..4].copy_from_slice(&slot.to_ne_bytes());
    let family: u16 = if peer.is_ipv4() { 2 } else { 10 };
    k[4..6].copy_from_slice(&family.to_ne_bytes());
    k[6..8].copy_from_slice(&peer.port().to_be_bytes());
    match peer.ip() {
        std::net::IpAddr::V4(a) => k[8..12].copy_from_slice(&a.octets()),
        std::net::IpAddr::V6(a) => k[8..24].copy_from_slice(&a.octets()),
    }
    k
}

fn thread_key(tgid: u32, pthread: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[0..4].copy_from_slice(&tgid.to_ne_bytes());
    k[8..16].copy_from_slice(&pthread.to_ne_bytes());
    k
}

/// How to arm one process.
#[derive(Clone, Copy)]
pub(super) struct Arming<'a> {
    pub slot: u32,
    /// Reports for the slot, at most.
    pub limit: u32,
    /// A path that opens the process's C library, and before glibc 2.34 one to its
    /// `libpthread` (whose own `open64` and `connect` a program linked with it calls):
    /// each with the program and file offset of each uprobe in it.
    pub libs: &'a [(PathBuf, Vec<(&'static str, u64)>)],
    /// The interpreter's layout and its threads (`pthread_self`, thread state).
    pub python: Option<(&'a Layout, &'a [(u64, u64)])>,
}

/// The kernel side, loaded: programs, maps and the uprobes attached so far.
pub(super) struct Probe {
    ebpf: Ebpf,
    targets: HashMap<MapData, u32, [u8; TARGET_LEN]>,
    pythreads: HashMap<MapData, [u8; 16], u64>,
    files: HashMap<MapData, [u8; 16], u8>,
    peers: HashMap<MapData, [u8; 24], u8>,
    budget: Array<MapData, u32>,
    events: RingBuf<MapData>,
    /// Per armed process: its links (program name, link).
    links: StdMap<u32, Vec<(&'static str, UProbeLinkId)>>,
    /// Links taken off are dropped (detached) on a thread of their own: the kernel
    /// waits for a grace period per uprobe removed, tens of milliseconds, which the
    /// warden's loop does not.
    reaper: Option<std::sync::mpsc::Sender<Vec<UProbeLink>>>,
    reaper_thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Probe {
    /// Waits for the links taken off to be detached: once the probe is gone, none is
    /// left in any process.
    fn drop(&mut self) {
        self.reaper.take();
        if let Some(t) = self.reaper_thread.take() {
            let _ = t.join();
        }
    }
}

/// Why the kernel side could not be loaded or attached, in a sentence.
fn say(what: &str, e: &dyn std::error::Error) -> String {
    let mut s = format!("{what}: {e}");
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    if s.contains("Operation not permitted") || s.contains("permission denied") {
        s.push_str(" (the warden needs CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN)");
    }
    s
}

impl Probe {
    /// Loads the programs and takes the maps. Nothing is attached yet: until a process
    /// is armed, nothing runs.
    pub(crate) fn load() -> Result<Probe, String> {
        if !std::path::Path::new("/sys/bus/event_source/devices/uprobe/type").exists() {
            return Err(
                "this kernel has no uprobe events (/sys/bus/event_source/devices/uprobe)".into(),
            );
        }
        let mut ebpf = EbpfLoader::new()
            .verifier_log_level(VerifierLogLevel::DEBUG.union(VerifierLogLevel::STATS))
            .load(OBJECT)
            .map_err(|e| say("cannot load the capture programs", &e))?;
        for name in ["on_open", "on_connect"] {
            let prog: &mut UProbe = ebpf
                .program_mut(name)
                .ok_or_else(|| format!("the capture object has no program {name}"))?
                .try_into()
                .map_err(|e| say(name, &e))?;
            prog.load()
                .map_err(|e| say("the kernel refused the capture programs", &e))?;
        }
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| format!("the capture object has no map {name}"))
        };
        let targets = HashMap::try_from(take("targets")?).map_err(|e| say("targets", &e))?;
        let pythreads = HashMap::try_from(take("pythreads")?).map_err(|e| say("pythreads", &e))?;
        let files = HashMap::try_from(take("files")?).map_err(|e| say("files", &e))?;
        let peers = HashMap::try_from(take("peers")?).map_err(|e| say("peers", &e))?;
        let budget = Array::try_from(take("budget")?).map_err(|e| say("budget", &e))?;
        let events = RingBuf::try_from(take("events")?).map_err(|e| say("events", &e))?;
        let (reaper, dead) = std::sync::mpsc::channel::<Vec<UProbeLink>>();
        let reaper_thread = std::thread::Builder::new()
            .name("capture-detach".into())
            .spawn(move || {
                for links in dead {
                    drop(links);
                }
            })
            .map_err(|e| format!("cannot start the capture thread: {e}"))?;
        Ok(Probe {
            reaper: Some(reaper),
            reaper_thread: Some(reaper_thread),
            ebpf,
            targets,
            pythreads,
            files,
            peers,
            budget,
            events,
            links: StdMap::new(),
        })
    }

    /// Starts slot `slot` looking for `wanted`, its count of reports at zero.
    pub(crate) fn want(&mut self, slot: u32, wanted: Wanted) -> Result<(), String> {
        self.budget.set(slot, 0, 0).map_err(|e| say("budget", &e))?;
        match wanted {
            Wanted::File { dev, ino } => self
                .files
                .insert(file_key(slot, dev, ino), 1, 0)
                .map_err(|e| say("files", &e)),
            Wanted::Peer(peer) => self
                .peers
                .insert(peer_key(slot, peer), 1, 0)
                .map_err(|e| say("peers", &e)),
        }
    }

    /// Stops slot `slot` looking for `wanted`.
    pub(super) fn unwant(&mut self, slot: u32, wanted: Wanted) {
        let _ = match wanted {
            Wanted::File { dev, ino } => self.files.remove(&file_key(slot, dev, ino)),
            Wanted::Peer(peer) => self.peers.remove(&peer_key(slot, peer)),
        };
    }

    /// Arms process `pid` as `how` says: its Python threads (`pthread_self` → thread
    /// state) are told to the kernel side, then the uprobes are attached to its C
    /// library at the file offsets the caller read (the loader never opens the file for
    /// symbols). On any failure what was done is undone.
    pub(super) fn arm(&mut self, pid: u32, how: &Arming<'_>) -> Result<(), String> {
        if self.links.contains_key(&pid) {
            return Err(format!("PID {pid} is armed already"));
        }
        self.links.insert(pid, Vec::new());
        let result = self.arm_inner(pid, how);
        if result.is_err() {
            self.disarm(pid, how.python.map(|p| p.1));
        }
        result
    }

    fn arm_inner(&mut self, pid: u32, how: &Arming<'_>) -> Result<(), String> {
        let Arming {
            slot,
            limit,
            libs,
            python,
        } = *how;
        if let Some((_, threads)) = python {
            for (me, tstate) in threads {
                self.pythreads
                    .insert(thread_key(pid, *me), *tstate, 0)
                    .map_err(|e| say("pythreads", &e))?;
            }
        }
        let value = target_value(slot, limit, python.map(|p| p.0));
        self.targets
            .insert(pid, value, 0)
            .map_err(|e| say("targets", &e))?;
        let scope = NonZeroU32::new(pid)
            .map(UProbeScope::OneProcess)
            .ok_or("PID 0")?;
        for (lib, offsets) in libs {
            for (prog, offset) in offsets {
                let p: &mut UProbe = self
                    .ebpf
                    .program_mut(prog)
                    .ok_or_else(|| format!("no program {prog}"))?
                    .try_into()
                    .map_err(|e| say(prog, &e))?;
                let link = p
                    .attach(UProbeAttachLocation::AbsoluteOffset(*offset), lib, scope)
                    .map_err(|e| say(&format!("cannot attach {prog} in PID {pid}"), &e))?;
                self.links.entry(pid).or_default().push((prog, link));
            }
        }
        Ok(())
    }

    /// Tells the kernel side of Python threads of `pid` started since it was armed.
    pub(super) fn add_threads(&mut self, pid: u32, threads: &[(u64, u64)]) {
        for (me, tstate) in threads {
            let _ = self.pythreads.insert(thread_key(pid, *me), *tstate, 0);
        }
    }

    /// Detaches `pid`'s uprobes and forgets it and its threads.
    pub(super) fn disarm(&mut self, pid: u32, threads: Option<&[(u64, u64)]>) {
        let _ = self.targets.remove(&pid);
        for (me, _) in threads.unwrap_or_default() {
            let _ = self.pythreads.remove(&thread_key(pid, *me));
        }
        let mut taken = Vec::new();
        for (prog, link) in self.links.remove(&pid).unwrap_or_default() {
            if let Some(p) = self.ebpf.program_mut(prog) {
                let p: Result<&mut UProbe, _> = p.try_into();
                if let Ok(link) = p.and_then(|p| p.take_link(link)) {
                    taken.push(link);
                }
            }
        }
        // The reaper ends only with the probe; without it, they are dropped here.
        match &self.reaper {
            Some(r) => {
                if let Err(back) = r.send(taken) {
                    drop(back.0);
                }
            }
            None => drop(taken),
        }
    }

    /// The kernel's count of runs of program `name` and their total time.
    pub(crate) fn stats(&self, name: &str) -> super::ProgramStats {
        let info = self.ebpf.program(name).and_then(|p| p.info().ok());
        info.map_or_else(super::ProgramStats::default, |i| super::ProgramStats {
            runs: i.run_count(),
            nanos: u64::try_from(i.run_time().as_nanos()).unwrap_or(u64::MAX),
        })
    }

    /// The reports waiting, at most `max` of them.
    pub(crate) fn drain(&mut self, max: usize) -> Vec<Event> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(item) = self.events.next() else {
                break;
            };
            if let Some(e) = Event::parse(&item) {
                out.push(e);
            }
        }
        out
    }
}
