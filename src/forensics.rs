//! Forensics: what a process holds open, named and grouped the way a person would.
//!
//! This module owns reading `/proc/PID/fd` (readdir + readlinkat, one syscall per fd),
//! classifying each target (file, deleted file, directory, device, socket, pipe, anon
//! inode, memfd), naming sockets from what `sockets` resolved them to (tcp/udp by remote
//! endpoint and state, unix by bound path or peer, netlink by protocol: the labels are
//! made here, at the very end, and nowhere else), grouping by target with counts, and
//! growth against a baseline taken when the warden first saw the process. Its report is
//! its own type; the incident log's wire type is made from it in `audit`. An fd that
//! closes while it is read is skipped, not an error. It decides nothing and writes nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::CString;
use std::fmt;
use std::io;
use std::net::SocketAddr;

use rustix::fs::{Dir, Mode, OFlags};
use serde::{Deserialize, Serialize};

use crate::sockets::{self, PassTables, Socket, SocketTable, TcpState, UnixType};

/// The kind of one open fd. Its names (`as_str`, and serde's) are part of the incident
/// log's format: `file`, `deleted`, `directory`, `device`, `socket`, `pipe`, `anon_inode`,
/// `memfd`, `other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    File,
    Deleted,
    Directory,
    Device,
    Socket,
    Pipe,
    AnonInode,
    Memfd,
    /// Also what a kind unknown to this version reads as (a log written by a newer one).
    #[serde(other)]
    Other,
}

const ALL_KINDS: [Kind; 9] = [
    Kind::File,
    Kind::Deleted,
    Kind::Directory,
    Kind::Device,
    Kind::Socket,
    Kind::Pipe,
    Kind::AnonInode,
    Kind::Memfd,
    Kind::Other,
];

impl Kind {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Deleted => "deleted",
            Kind::Directory => "directory",
            Kind::Device => "device",
            Kind::Socket => "socket",
            Kind::Pipe => "pipe",
            Kind::AnonInode => "anon_inode",
            Kind::Memfd => "memfd",
            Kind::Other => "other",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, so that a width in the format string (`{:<10}`) applies.
        f.pad(self.as_str())
    }
}

/// Kinds sort by name, so that maps keyed by kind (`by_kind`) list them as they always
/// have, in reports and in the incident log.
impl Ord for Kind {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for Kind {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Classifies a link target of `/proc/PID/fd/N` from its text alone (see proc(5)). Files
/// that are really directories or devices are refined by `refine_path_kind`.
pub(crate) fn classify(target: &str) -> Kind {
    if target.starts_with("socket:[") {
        Kind::Socket
    } else if target.starts_with("pipe:[") {
        Kind::Pipe
    } else if target.starts_with("anon_inode:") {
        Kind::AnonInode
    } else if target.starts_with("/memfd:") {
        Kind::Memfd
    } else if target.starts_with('/') {
        if target.ends_with(" (deleted)") {
            Kind::Deleted
        } else if target.starts_with("/dev/") && !target.starts_with("/dev/shm/") {
            Kind::Device
        } else {
            Kind::File
        }
    } else {
        Kind::Other
    }
}

/// A path target is a directory or a device only if `stat` says so. Called for the few
/// targets that make the report, not for every fd.
fn refine_path_kind(kind: Kind, target: &str) -> Kind {
    if kind != Kind::File && kind != Kind::Device {
        return kind;
    }
    match rustix::fs::stat(target) {
        Ok(st) => match rustix::fs::FileType::from_raw_mode(st.st_mode) {
            rustix::fs::FileType::Directory => Kind::Directory,
            rustix::fs::FileType::CharacterDevice | rustix::fs::FileType::BlockDevice => {
                Kind::Device
            }
            rustix::fs::FileType::Fifo => Kind::Pipe,
            _ => Kind::File,
        },
        Err(_) => kind,
    }
}

/// One open fd: its number and link target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenFd {
    pub fd: u32,
    pub target: String,
}

/// Reads every fd of `pid` with one readdir pass and one readlinkat per entry.
pub fn read_fds(pid: i32) -> io::Result<Vec<OpenFd>> {
    let path = CString::new(format!("/proc/{pid}/fd")).unwrap_or_default();
    let dir = rustix::fs::open(
        path.as_c_str(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut out = Vec::new();
    // Link targets are at most PATH_MAX; one stack buffer serves every readlinkat.
    let mut buf = [0u8; 4096];
    for entry in Dir::read_from(&dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(fd) = parse_fd(name.to_bytes()) else {
            continue;
        };
        match rustix::fs::readlinkat_raw(&dir, name, &mut buf[..]) {
            Ok(len) => out.push(OpenFd {
                fd,
                target: bounded_target(&buf[..len]),
            }),
            // Closed since readdir saw it.
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// The longest fd target kept, in bytes: a process can hold a million fds on paths of
/// 4 KiB each, and the report would hold them all. Longer targets keep their first
/// `MAX_TARGET` bytes and end in `…`.
const MAX_TARGET: usize = 512;

pub(crate) fn bounded_target(raw: &[u8]) -> String {
    if raw.len() <= MAX_TARGET {
        return String::from_utf8_lossy(raw).into_owned();
    }
    let mut s = String::from_utf8_lossy(&raw[..MAX_TARGET]).into_owned();
    // A character cut in two shows as U+FFFD; drop it.
    s.truncate(s.trim_end_matches('\u{fffd}').len());
    s.push('…');
    s
}

/// FNV-1a: grouping hashes one short string per fd, where the default hasher's flooding resistance buys
/// nothing (the keys come from the kernel) and costs a measurable share of a report.
#[derive(Default, Clone, Copy)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<Fnv>>;

/// From this many fds on, the socket tables are read (and parsed, whole) on a second
/// thread while the fds are named: the kernel formats every line of the namespace's
/// tables on read, which for thousands of sockets costs as much as a third of naming the
/// fds.
const PARALLEL_FROM: u64 = 2000;

/// An fd number from a `/proc/PID/fd` entry name; `.` and `..` are not.
fn parse_fd(name: &[u8]) -> Option<u32> {
    if name.is_empty() {
        return None;
    }
    let mut n: u32 = 0;
    for b in name {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u32::from(b - b'0'))?;
    }
    Some(n)
}

/// The label of a socket in a report: `tcp → 127.0.0.1:5432 ESTABLISHED`, `tcp listen
/// 0.0.0.0:8000`, `udp6 [::1]:53`, `unix listen /run/app.sock`, `unix → /run/db.sock`,
/// `unix-dgram (unnamed)`, `netlink proto 0`. These strings are what the incident log
/// and `vassal-warden fds` have always shown; nothing else may compare them.
fn socket_label(socket: &Socket) -> String {
    let ip_proto = |local: &SocketAddr, v4: &'static str, v6: &'static str| {
        if local.is_ipv6() { v6 } else { v4 }
    };
    match socket {
        Socket::Tcp {
            local,
            remote,
            state,
        } => {
            let proto = ip_proto(local, "tcp", "tcp6");
            if *state == TcpState::Listen {
                format!("{proto} listen {}", Endpoint(*local))
            } else {
                format!("{proto} → {} {}", Endpoint(*remote), state.kernel_name())
            }
        }
        Socket::Udp { local, remote } => {
            let proto = ip_proto(local, "udp", "udp6");
            if remote.port() == 0 {
                format!("{proto} {}", Endpoint(*local))
            } else {
                format!("{proto} → {}", Endpoint(*remote))
            }
        }
        Socket::Unix {
            ty,
            path,
            listening,
            peer,
        } => {
            let ty = match ty {
                UnixType::Stream => "unix",
                UnixType::Dgram => "unix-dgram",
                UnixType::SeqPacket => "unix-seqpacket",
            };
            match (path, peer) {
                (Some(p), _) if *listening => format!("{ty} listen {p}"),
                (Some(p), _) => format!("{ty} {p}"),
                (None, Some(p)) => format!("{ty} → {p}"),
                (None, None) => format!("{ty} (unnamed)"),
            }
        }
        Socket::Netlink { protocol } => format!("netlink proto {protocol}"),
    }
}

/// An address as a report shows it: a v4-mapped IPv6 address as the IPv4 address it is.
struct Endpoint(SocketAddr);

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            SocketAddr::V4(a) => write!(f, "{a}"),
            SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
                Some(v4) => write!(f, "{v4}:{}", a.port()),
                None => write!(f, "[{}]:{}", a.ip(), a.port()),
            },
        }
    }
}

/// The labels of the sockets a process holds, by inode: made once per socket.
#[derive(Debug, Default)]
pub(crate) struct SocketNames(HashMap<u64, String>);

impl SocketNames {
    pub(crate) fn new(table: &SocketTable) -> SocketNames {
        SocketNames(table.iter().map(|(i, s)| (i, socket_label(s))).collect())
    }

    /// The label of `socket:[INODE]`, if the tables know it.
    fn of(&self, target: &str) -> Option<&str> {
        self.0.get(&sockets::inode_of(target)?).map(String::as_str)
    }
}

/// The names of the sockets among `open`, or `None` when it holds none; from the
/// tables of this pass, when given.
fn read_sockets(pid: i32, open: &[OpenFd], pass: Option<&mut PassTables>) -> Option<SocketNames> {
    let wanted = socket_inodes(open);
    if wanted.is_empty() {
        return None;
    }
    let table = match pass {
        Some(p) => p.read_for(pid, &wanted),
        None => SocketTable::read_for(pid, &wanted),
    };
    Some(SocketNames::new(&table))
}

fn socket_inodes(open: &[OpenFd]) -> HashSet<u64> {
    open.iter()
        .filter_map(|f| sockets::inode_of(&f.target))
        .collect()
}

/// Counts per group label, the cheap summary kept as a baseline.
pub(crate) type Counts = HashMap<String, u64>;

/// The group an fd belongs to: a socket by what it is, anything else by its target.
fn label<'a>(f: &'a OpenFd, kind: Kind, sockets: Option<&'a SocketNames>) -> &'a str {
    match (kind, sockets) {
        (Kind::Socket, Some(names)) => names.of(&f.target).unwrap_or(&f.target),
        _ => f.target.as_str(),
    }
}

/// Groups fds by label: sockets by what they are (remote endpoint and state), everything
/// else by its link target.
pub(crate) fn group<'a>(
    fds: &'a [OpenFd],
    sockets: Option<&'a SocketNames>,
) -> HashMap<&'a str, (Kind, u64)> {
    let mut groups: HashMap<&str, (Kind, u64)> = HashMap::new();
    for f in fds {
        let kind = classify(&f.target);
        groups.entry(label(f, kind, sockets)).or_insert((kind, 0)).1 += 1;
    }
    groups
}

/// The baseline of a process: its fd count, and per-label counts when it is small enough
/// for that to be cheap.
#[derive(Debug, Clone, Default)]
pub struct Baseline {
    pub(crate) fds: u64,
    pub(crate) counts: Option<Counts>,
}

/// Processes with at most this many fds get a per-target baseline.
const BASELINE_MAX_FDS: u64 = 512;

impl Baseline {
    /// Takes a baseline of `pid`, given its current count.
    #[must_use]
    pub fn take(pid: i32, fds: u64) -> Baseline {
        Baseline::take_in(pid, fds, &mut PassTables::default())
    }

    /// `take`, naming sockets from the tables `pass` has read.
    pub(crate) fn take_in(pid: i32, fds: u64, pass: &mut PassTables) -> Baseline {
        if fds > BASELINE_MAX_FDS {
            return Baseline { fds, counts: None };
        }
        let Ok(open) = read_fds(pid) else {
            return Baseline { fds, counts: None };
        };
        let sockets = read_sockets(pid, &open, Some(pass));
        let counts = group(&open, sockets.as_ref())
            .into_iter()
            .map(|(k, (_, n))| (k.to_owned(), n))
            .collect();
        Baseline {
            fds: open.len() as u64,
            counts: Some(counts),
        }
    }
}

/// The fds of `pid` in the group that grew most since `baseline` (with that growth),
/// when it grew; without per-target counts in the baseline, the largest group (its
/// whole count). What a capture looks for is one of these fds.
pub(crate) fn most_grown(
    pid: i32,
    baseline: Option<&Baseline>,
    pass: &mut PassTables,
) -> io::Result<Option<(u64, Vec<u32>)>> {
    let open = read_fds(pid)?;
    let sockets = read_sockets(pid, &open, Some(pass));
    let counts = baseline.and_then(|b| b.counts.as_ref());
    let mut members: HashMap<&str, Vec<u32>> = HashMap::new();
    for f in &open {
        let kind = classify(&f.target);
        members
            .entry(label(f, kind, sockets.as_ref()))
            .or_default()
            .push(f.fd);
    }
    let growth = |label: &str, fds: &[u32]| {
        let before = counts.map_or(0, |c| c.get(label).copied().unwrap_or(0));
        (fds.len() as u64).saturating_sub(before)
    };
    Ok(members
        .iter()
        .map(|(l, fds)| (growth(l, fds), l, fds))
        .filter(|(g, _, _)| *g > 0)
        // Ties by label, for a stable choice.
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(g, _, fds)| (g, fds.clone())))
}

/// One group of open fds that share a target, as a report ranks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    /// The link target, or for a socket what it is (see `socket_label`).
    pub target: String,
    pub kind: Kind,
    pub count: u64,
    /// Change since the warden first saw the process; absent when no per-target baseline
    /// was kept (large processes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub growth: Option<i64>,
    /// For a worker: how many of these fds it shares with its master (same fd number and
    /// target, inherited at fork).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inherited: Option<u64>,
}

/// The grouped report of one process. Serialized as is by `vassal-warden fds --json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub pid: i32,
    pub fds: u64,
    pub top: Vec<Group>,
    pub by_kind: BTreeMap<Kind, u64>,
    /// fds opened since the baseline (negative: closed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub growth: Option<i64>,
}

/// Reads, names and groups every fd of `pid`, keeping the `top` largest groups. For a
/// worker, `master` is its master's PID: fds shared with it are counted as inherited.
pub fn report(
    pid: i32,
    top: usize,
    baseline: Option<&Baseline>,
    master: Option<i32>,
) -> io::Result<Report> {
    report_in(pid, top, baseline, master, None)
}

/// `report`, naming the sockets of a process with fewer than `PARALLEL_FROM` fds from the
/// tables `pass` has read, when given (a pass that names many processes reads each
/// table once).
pub(crate) fn report_in(
    pid: i32,
    top: usize,
    baseline: Option<&Baseline>,
    master: Option<i32>,
    pass: Option<&mut PassTables>,
) -> io::Result<Report> {
    let large = crate::sample::fd_count(pid).is_ok_and(|n| n >= PARALLEL_FROM);
    let (open, sockets) = if large {
        std::thread::scope(|scope| {
            let tables = scope.spawn(|| SocketTable::read(pid));
            let open = read_fds(pid);
            let mut table = tables.join().unwrap_or_default();
            let open = open?;
            let wanted = socket_inodes(&open);
            table.retain(&wanted);
            let sockets = (!wanted.is_empty()).then(|| SocketNames::new(&table));
            Ok::<_, io::Error>((open, sockets))
        })?
    } else {
        let open = read_fds(pid)?;
        let sockets = read_sockets(pid, &open, pass);
        (open, sockets)
    };
    // The master may be re-executing; then nothing is marked inherited.
    let master_fds = master.and_then(|m| read_fds(m).ok());
    Ok(summarize(
        pid,
        &open,
        &Context {
            sockets: sockets.as_ref(),
            baseline,
            master: master_fds.as_deref(),
        },
        top,
    ))
}

/// What a report is compared against.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Context<'a> {
    pub(crate) sockets: Option<&'a SocketNames>,
    pub(crate) baseline: Option<&'a Baseline>,
    /// The master's open fds, when the process is a worker.
    pub(crate) master: Option<&'a [OpenFd]>,
}

/// The pure part of `report`: grouping, ranking, growth.
pub(crate) fn summarize(pid: i32, open: &[OpenFd], ctx: &Context<'_>, top: usize) -> Report {
    let Context {
        sockets,
        baseline,
        master,
    } = *ctx;
    let mut kinds = [0u64; 9];
    let mut groups: FastMap<&str, (Kind, u64)> =
        FastMap::with_capacity_and_hasher(64, std::hash::BuildHasherDefault::default());
    for f in open {
        let kind = classify(&f.target);
        kinds[kind as usize] += 1;
        groups.entry(label(f, kind, sockets)).or_insert((kind, 0)).1 += 1;
    }
    // Inherited fds keep their number and target across fork.
    let inherited_by_label: Option<HashMap<&str, u64>> = master.map(|m| {
        let shared: HashSet<(u32, &str)> = m.iter().map(|f| (f.fd, f.target.as_str())).collect();
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for f in open {
            if shared.contains(&(f.fd, f.target.as_str())) {
                *counts
                    .entry(label(f, classify(&f.target), sockets))
                    .or_default() += 1;
            }
        }
        counts
    });
    let by_kind: BTreeMap<Kind, u64> = ALL_KINDS
        .iter()
        .filter(|k| kinds[**k as usize] > 0)
        .map(|k| (*k, kinds[*k as usize]))
        .collect();
    let base_counts = baseline.and_then(|b| b.counts.as_ref());
    let growth_of = |label: &str, n: u64| -> Option<i64> {
        let before = base_counts?.get(label).copied().unwrap_or(0);
        Some(n.cast_signed() - before.cast_signed())
    };
    let mut ranked: Vec<(&str, Kind, u64)> =
        groups.into_iter().map(|(l, (k, n))| (l, k, n)).collect();
    // Largest first; among equals, the one that grew most, then by name for stable output.
    ranked.sort_by(|a, b| {
        b.2.cmp(&a.2)
            .then_with(|| growth_of(b.0, b.2).cmp(&growth_of(a.0, a.2)))
            .then_with(|| a.0.cmp(b.0))
    });
    let top = ranked
        .into_iter()
        .take(top)
        .map(|(label, kind, count)| Group {
            target: label.to_owned(),
            kind: refine_path_kind(kind, label),
            count,
            growth: growth_of(label, count),
            inherited: inherited_by_label
                .as_ref()
                .map(|m| m.get(label).copied().unwrap_or(0)),
        })
        .collect();
    let growth = baseline.map(|b| (open.len() as u64).cast_signed() - b.fds.cast_signed());
    Report {
        pid,
        fds: open.len() as u64,
        top,
        by_kind,
        growth,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_by_target_text() {
        assert_eq!(classify("/srv/app/static/cat.jpg"), Kind::File);
        assert_eq!(classify("/tmp/x (deleted)"), Kind::Deleted);
        assert_eq!(classify("/dev/null"), Kind::Device);
        assert_eq!(classify("/dev/shm/x"), Kind::File);
        assert_eq!(classify("socket:[123]"), Kind::Socket);
        assert_eq!(classify("pipe:[9]"), Kind::Pipe);
        assert_eq!(classify("anon_inode:[eventfd]"), Kind::AnonInode);
        assert_eq!(classify("anon_inode:inotify"), Kind::AnonInode);
        assert_eq!(classify("/memfd:jit (deleted)"), Kind::Memfd);
        assert_eq!(classify("net:[4026531840]"), Kind::Other);
    }

    fn names(sockets: &[(u64, Socket)]) -> SocketNames {
        SocketNames(sockets.iter().map(|(i, s)| (*i, socket_label(s))).collect())
    }

    fn tcp(local: &str, remote: &str, state: TcpState) -> Socket {
        Socket::Tcp {
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            state,
        }
    }

    #[test]
    fn inet_sockets_are_labelled_by_family_endpoint_and_state() {
        let udp = |local: &str, remote: &str| Socket::Udp {
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
        };
        let cases = [
            (
                tcp("127.0.0.1:40000", "127.0.0.1:5432", TcpState::Established),
                "tcp → 127.0.0.1:5432 ESTABLISHED",
            ),
            (
                tcp("0.0.0.0:8000", "0.0.0.0:0", TcpState::Listen),
                "tcp listen 0.0.0.0:8000",
            ),
            (
                tcp("[::]:8000", "[::]:0", TcpState::Listen),
                "tcp6 listen [::]:8000",
            ),
            // A v4-mapped address in tcp6 shows as the IPv4 address it is.
            (
                tcp(
                    "[::ffff:127.0.0.1]:40000",
                    "[::ffff:127.0.0.1]:80",
                    TcpState::CloseWait,
                ),
                "tcp6 → 127.0.0.1:80 CLOSE_WAIT",
            ),
            (
                tcp("127.0.0.1:1", "127.0.0.1:2", TcpState::Unknown),
                "tcp → 127.0.0.1:2 UNKNOWN",
            ),
            (udp("127.0.0.1:5353", "0.0.0.0:0"), "udp 127.0.0.1:5353"),
            (udp("127.0.0.1:5353", "127.0.0.1:53"), "udp → 127.0.0.1:53"),
            (udp("[::1]:5353", "[::]:0"), "udp6 [::1]:5353"),
            (Socket::Netlink { protocol: 15 }, "netlink proto 15"),
        ];
        for (socket, label) in cases {
            assert_eq!(socket_label(&socket), label);
        }
    }

    #[test]
    fn unix_sockets_are_labelled_by_path_listening_state_and_peer() {
        use UnixType::{Dgram, SeqPacket, Stream};
        let unix = |ty, path: Option<&str>, listening, peer: Option<&str>| Socket::Unix {
            ty,
            path: path.map(str::to_owned),
            listening,
            peer: peer.map(str::to_owned),
        };
        let cases = [
            (
                unix(Stream, Some("/run/db.sock"), true, None),
                "unix listen /run/db.sock",
            ),
            (
                unix(Stream, Some("/run/db.sock"), false, None),
                "unix /run/db.sock",
            ),
            (
                unix(Stream, None, false, Some("/run/db.sock")),
                "unix → /run/db.sock",
            ),
            (unix(Stream, None, false, None), "unix (unnamed)"),
            (
                unix(Dgram, Some("@journal"), false, None),
                "unix-dgram @journal",
            ),
            (
                unix(SeqPacket, Some("/run/sq"), true, None),
                "unix-seqpacket listen /run/sq",
            ),
        ];
        for (socket, label) in cases {
            assert_eq!(socket_label(&socket), label);
        }
    }

    #[test]
    fn tcp_sockets_group_by_remote_endpoint_and_state() {
        let sockets = names(&[
            (
                101,
                tcp("127.0.0.1:40000", "127.0.0.1:5432", TcpState::Established),
            ),
            (
                102,
                tcp("127.0.0.1:40001", "127.0.0.1:5432", TcpState::Established),
            ),
            (103, tcp("127.0.0.1:8080", "0.0.0.0:0", TcpState::Listen)),
        ]);
        let fds: Vec<OpenFd> = [101, 102, 103, 104]
            .iter()
            .enumerate()
            .map(|(i, ino)| OpenFd {
                fd: u32::try_from(i).unwrap(),
                target: format!("socket:[{ino}]"),
            })
            .collect();
        let r = summarize(
            1,
            &fds,
            &Context {
                sockets: Some(&sockets),
                ..Context::default()
            },
            10,
        );
        assert_eq!(r.top[0].target, "tcp → 127.0.0.1:5432 ESTABLISHED");
        assert_eq!(r.top[0].count, 2);
        assert_eq!(r.top[0].kind, Kind::Socket);
        // A socket the tables do not know keeps its link target.
        assert_eq!(r.top[1].target, "socket:[104]");
        assert_eq!(r.top[2].target, "tcp listen 127.0.0.1:8080");
        assert_eq!(r.by_kind[&Kind::Socket], 4);
    }

    #[test]
    fn kinds_keep_their_names_order_and_padding() {
        let names: Vec<&str> = ALL_KINDS.iter().map(|k| k.as_str()).collect();
        for k in ALL_KINDS {
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
            assert_eq!(
                serde_json::from_str::<Kind>(&format!("\"{k}\"")).unwrap(),
                k
            );
        }
        // Maps keyed by kind list them by name, as when the keys were strings.
        let mut sorted = ALL_KINDS;
        sorted.sort();
        let mut by_name = names.clone();
        by_name.sort_unstable();
        assert_eq!(sorted.map(Kind::as_str).to_vec(), by_name);
        assert_eq!(format!("[{:<10}]", Kind::Pipe), "[pipe      ]");
        // A kind written by a newer version reads as `other`.
        assert_eq!(
            serde_json::from_str::<Kind>("\"fanotify\"").unwrap(),
            Kind::Other
        );
    }

    #[test]
    fn fds_shared_with_the_master_are_inherited() {
        let fd = |fd: u32, t: &str| OpenFd {
            fd,
            target: t.to_owned(),
        };
        let master = [
            fd(0, "/dev/null"),
            fd(5, "/srv/config.db"),
            fd(6, "/srv/config.db"),
        ];
        // fd 7 has the same target but a number the master does not hold: opened later.
        let worker = [
            fd(0, "/dev/null"),
            fd(5, "/srv/config.db"),
            fd(6, "/srv/config.db"),
            fd(7, "/srv/config.db"),
            fd(8, "/srv/cat.jpg"),
        ];
        let r = summarize(
            2,
            &worker,
            &Context {
                master: Some(&master),
                ..Context::default()
            },
            10,
        );
        let get = |t: &str| r.top.iter().find(|x| x.target == t).unwrap();
        assert_eq!(get("/srv/config.db").count, 3);
        assert_eq!(get("/srv/config.db").inherited, Some(2));
        assert_eq!(get("/srv/cat.jpg").inherited, Some(0));
        assert_eq!(get("/dev/null").inherited, Some(1));
        // Without a master, nothing is said about inheritance.
        let r = summarize(2, &worker, &Context::default(), 10);
        assert!(r.top.iter().all(|t| t.inherited.is_none()));
    }

    #[test]
    fn growth_is_measured_against_the_baseline() {
        let mk = |targets: &[&str]| -> Vec<OpenFd> {
            targets
                .iter()
                .enumerate()
                .map(|(i, t)| OpenFd {
                    fd: u32::try_from(i).unwrap(),
                    target: (*t).to_owned(),
                })
                .collect()
        };
        let before = mk(&["/dev/null", "/srv/big.db", "/srv/big.db", "/srv/big.db"]);
        let base = Baseline {
            fds: 4,
            counts: Some(
                group(&before, None)
                    .into_iter()
                    .map(|(k, (_, n))| (k.to_owned(), n))
                    .collect(),
            ),
        };
        let now = mk(&[
            "/dev/null",
            "/srv/big.db",
            "/srv/big.db",
            "/srv/big.db",
            "/srv/cat.jpg",
            "/srv/cat.jpg",
            "/srv/cat.jpg",
        ]);
        let r = summarize(
            1,
            &now,
            &Context {
                baseline: Some(&base),
                ..Context::default()
            },
            10,
        );
        // Equal counts: the one that grew ranks first.
        assert_eq!(r.top[0].target, "/srv/cat.jpg");
        assert_eq!(r.top[0].growth, Some(3));
        assert_eq!(r.top[1].target, "/srv/big.db");
        assert_eq!(r.top[1].growth, Some(0));
        assert_eq!(r.growth, Some(3));
    }

    #[test]
    fn long_targets_are_cut_to_a_bound() {
        let long = "/d".repeat(1000);
        let t = bounded_target(long.as_bytes());
        assert_eq!(t.len(), MAX_TARGET + '…'.len_utf8());
        assert!(t.ends_with('…'));
        assert_eq!(bounded_target(b"/srv/a.jpg"), "/srv/a.jpg");
        // Cut inside a character: no replacement character left behind.
        let mut accented = "/".repeat(MAX_TARGET - 1);
        accented.push('é');
        assert!(!bounded_target(accented.as_bytes()).contains('\u{fffd}'));
    }
}
