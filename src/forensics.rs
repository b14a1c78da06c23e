//! Forensics: what a process holds open, named and grouped the way a person would.
//!
//! This module owns reading `/proc/PID/fd` (readdir + readlinkat, one syscall per fd),
//! classifying each target (file, deleted file, directory, device, socket, pipe, anon
//! inode, memfd), resolving sockets through `/proc/PID/net/*` (tcp/udp by remote endpoint
//! and state, unix by bound path, netlink), grouping by target with counts, and growth
//! against a baseline taken when the warden first saw the process. An fd that closes while
//! it is read is skipped, not an error. It decides nothing and writes nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::CString;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};

use rustix::fs::{Dir, Mode, OFlags};

use crate::audit::Target;

/// The kind of one open fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    File,
    Deleted,
    Directory,
    Device,
    Socket,
    Pipe,
    AnonInode,
    Memfd,
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

/// Classifies a link target of `/proc/PID/fd/N` from its text alone (see proc(5)). Files
/// that are really directories or devices are refined by `refine_path_kind`.
#[must_use]
pub fn classify(target: &str) -> Kind {
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
                target: String::from_utf8_lossy(&buf[..len]).into_owned(),
            }),
            // Closed since readdir saw it.
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// FNV-1a: grouping hashes one short string per fd, where the default hasher's flooding resistance buys
/// nothing (the keys come from the kernel) and costs a measurable share of a report.
#[derive(Default, Clone, Copy)]
pub struct Fnv(u64);

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

/// The socket tables of `/proc/PID/net/`, most common first.
const TABLES: [&str; 6] = ["unix", "tcp", "tcp6", "udp", "udp6", "netlink"];

fn read_table(pid: i32, proto: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/net/{proto}")).ok()
}

/// Reads the text of every socket table of `pid`'s network namespace.
fn read_tables(pid: i32) -> Vec<(&'static str, String)> {
    TABLES
        .iter()
        .filter_map(|p| read_table(pid, p).map(|t| (*p, t)))
        .collect()
}

/// Unix socket peers, when `pid` lives in the warden's network namespace (the netlink
/// socket answers for the namespace it was opened in). `None` when the kernel does not
/// tell (no `unix_diag`, or another namespace): unnamed sockets then stay `(unnamed)`.
fn unix_peers_of(pid: i32) -> Option<HashMap<u64, u64>> {
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/net")).ok();
    let theirs = ns(&pid.to_string())?;
    if ns("self")? != theirs {
        return None;
    }
    unix_peers().ok()
}

/// Every unix socket's peer in this network namespace, from `NETLINK_SOCK_DIAG`
/// (`unix_diag` with `UDIAG_SHOW_PEER`; see `sock_diag(7)`). Messages are built and read
/// by hand in native byte order.
fn unix_peers() -> io::Result<HashMap<u64, u64>> {
    use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, netlink};
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLM_F_REQUEST: u16 = 0x1;
    const NLM_F_DUMP: u16 = 0x300;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const UDIAG_SHOW_PEER: u32 = 0x4;
    const UNIX_DIAG_PEER: u16 = 2;
    const AF_UNIX: u8 = 1;

    let fd = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        Some(netlink::SOCK_DIAG),
    )?;
    let mut req = Vec::with_capacity(40);
    req.extend_from_slice(&40u32.to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    req.extend_from_slice(&[AF_UNIX, 0, 0, 0]); // family, protocol, pad
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    req.extend_from_slice(&0u32.to_ne_bytes()); // any inode
    req.extend_from_slice(&UDIAG_SHOW_PEER.to_ne_bytes());
    req.extend_from_slice(&[0u8; 8]); // cookie
    rustix::net::sendto(
        &fd,
        &req,
        SendFlags::empty(),
        &netlink::SocketAddrNetlink::new(0, 0),
    )?;

    let u16_at = |b: &[u8], i: usize| b.get(i..i + 2).map(|x| u16::from_ne_bytes([x[0], x[1]]));
    let u32_at = |b: &[u8], i: usize| {
        b.get(i..i + 4)
            .map(|x| u32::from_ne_bytes([x[0], x[1], x[2], x[3]]))
    };
    let mut peers = HashMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let (n, _) = rustix::net::recv(&fd, &mut buf[..], RecvFlags::empty())?;
        if n == 0 {
            return Ok(peers);
        }
        let mut off = 0;
        while off + 16 <= n {
            let msg = &buf[off..n];
            let (Some(len), Some(ty)) = (u32_at(msg, 0), u16_at(msg, 4)) else {
                break;
            };
            let len = len as usize;
            if len < 16 || len > msg.len() {
                break;
            }
            match ty {
                NLMSG_DONE => return Ok(peers),
                NLMSG_ERROR => {
                    return Err(io::Error::other("sock_diag refused the unix_diag request"));
                }
                _ => {}
            }
            // unix_diag_msg: family, type, state, pad (4 bytes), ino (4), cookie (8).
            let body = &msg[16..len];
            if let Some(ino) = u32_at(body, 4) {
                let mut a = 16;
                while a + 4 <= body.len() {
                    let (Some(alen), Some(aty)) = (u16_at(body, a), u16_at(body, a + 2)) else {
                        break;
                    };
                    let alen = usize::from(alen);
                    if alen < 4 {
                        break;
                    }
                    if aty == UNIX_DIAG_PEER
                        && let Some(peer) = u32_at(body, a + 4)
                    {
                        peers.insert(u64::from(ino), u64::from(peer));
                    }
                    a += (alen + 3) & !3;
                }
            }
            off += (len + 3) & !3;
        }
    }
}

/// From this many fds on, the socket tables are read on a second thread while the fds
/// are named: the kernel formats every line of the namespace's tables on read, which for
/// thousands of sockets costs as much as a third of naming the fds.
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

/// The inode of a `socket:[INODE]` target.
pub fn socket_inode(target: &str) -> Option<u64> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// What sockets of one network namespace are, by inode.
#[derive(Debug, Default)]
pub struct SocketTable {
    by_inode: HashMap<u64, String>,
    wanted: Option<HashSet<u64>>,
    /// Unix socket inode → its peer's inode, when the kernel told (see `unix_peers`).
    peers: Option<HashMap<u64, u64>>,
}

const TCP_STATES: [&str; 12] = [
    "UNKNOWN",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
];

impl SocketTable {
    /// Reads `/proc/PID/net/{tcp,tcp6,udp,udp6,unix,netlink}`. Missing tables are skipped.
    #[must_use]
    pub fn read(pid: i32) -> SocketTable {
        Self::read_for(pid, None)
    }

    /// Like `read`, but keeps only the sockets in `wanted` and stops reading tables once
    /// all of them are found (the tables list the whole network namespace, and the kernel
    /// formats each line on read, so this is most of the cost of naming sockets).
    #[must_use]
    pub fn read_for(pid: i32, wanted: Option<&HashSet<u64>>) -> SocketTable {
        let mut t = SocketTable {
            wanted: wanted.cloned(),
            peers: unix_peers_of(pid),
            ..SocketTable::default()
        };
        for proto in TABLES {
            if t.wanted
                .as_ref()
                .is_some_and(|w| t.by_inode.len() >= w.len())
            {
                break;
            }
            if let Some(text) = read_table(pid, proto) {
                t.add(proto, &text);
            }
        }
        t
    }

    /// Builds the table from texts read earlier (see `read_tables`).
    #[must_use]
    pub fn from_texts(
        texts: &[(&'static str, String)],
        wanted: Option<&HashSet<u64>>,
        peers: Option<HashMap<u64, u64>>,
    ) -> SocketTable {
        let mut t = SocketTable {
            wanted: wanted.cloned(),
            peers,
            ..SocketTable::default()
        };
        for (proto, text) in texts {
            t.add(proto, text);
        }
        t
    }

    fn add(&mut self, proto: &str, text: &str) {
        match proto {
            "unix" => self.add_unix(text),
            "netlink" => self.add_netlink(text),
            _ => self.add_inet(text, proto),
        }
    }

    fn wants(&self, inode: u64) -> bool {
        self.wanted.as_ref().is_none_or(|w| w.contains(&inode))
    }

    fn add_inet(&mut self, text: &str, proto: &str) {
        let udp = proto.starts_with("udp");
        for line in text.lines().skip(1) {
            let mut f = line.split_ascii_whitespace();
            let (Some(local), Some(remote), Some(st)) = (f.nth(1), f.next(), f.next()) else {
                continue;
            };
            // inode is the 10th field: 5 more after `st`.
            let Some(Ok(inode)) = f.nth(5).map(str::parse::<u64>) else {
                continue;
            };
            if inode == 0 || !self.wants(inode) {
                continue;
            }
            let (Some(local), Some(remote), Ok(st)) = (
                parse_endpoint(local),
                parse_endpoint(remote),
                u8::from_str_radix(st, 16),
            ) else {
                continue;
            };
            let remote_unset = remote.ends_with(":0");
            let label = if udp {
                if remote_unset {
                    format!("{proto} {local}")
                } else {
                    format!("{proto} → {remote}")
                }
            } else if st == 0x0A {
                format!("{proto} listen {local}")
            } else {
                let state = TCP_STATES
                    .get(usize::from(st))
                    .copied()
                    .unwrap_or("UNKNOWN");
                format!("{proto} → {remote} {state}")
            };
            self.by_inode.insert(inode, label);
        }
    }

    /// `/proc/net/unix`: a listening socket is `unix listen PATH`, a connection accepted
    /// on it `unix PATH`, an unnamed socket whose peer has a name (a client of a server's
    /// socket, resolved with `peers`) `unix → PATH`, any other `unix (unnamed)`.
    fn add_unix(&mut self, text: &str) {
        // Columns: Num RefCount Protocol Flags Type St Inode [Path].
        let mut names: HashMap<u64, &str> = HashMap::new();
        let mut wanted: Vec<(u64, &str, bool, Option<&str>)> = Vec::new();
        for line in text.lines().skip(1) {
            let mut f = line.split_ascii_whitespace();
            let (Some(flags), Some(ty), Some(inode)) = (f.nth(3), f.next(), f.nth(1)) else {
                continue;
            };
            let Ok(inode) = inode.parse::<u64>() else {
                continue;
            };
            let path = f.next();
            if let Some(p) = path {
                names.insert(inode, p);
            }
            if !self.wants(inode) {
                continue;
            }
            // __SO_ACCEPTCON: the socket listens.
            let listening = u32::from_str_radix(flags, 16).is_ok_and(|x| x & 0x0001_0000 != 0);
            let ty = match ty {
                "0002" => "unix-dgram",
                "0005" => "unix-seqpacket",
                _ => "unix",
            };
            wanted.push((inode, ty, listening, path));
        }
        let need_peers = wanted.iter().any(|(_, _, _, p)| p.is_none());
        let peers = if need_peers {
            self.peers.take().unwrap_or_default()
        } else {
            HashMap::new()
        };
        for (inode, ty, listening, path) in wanted {
            let label = match path {
                Some(p) if listening => format!("{ty} listen {p}"),
                Some(p) => format!("{ty} {p}"),
                None => match peers.get(&inode).and_then(|peer| names.get(peer)) {
                    Some(p) => format!("{ty} → {p}"),
                    None => format!("{ty} (unnamed)"),
                },
            };
            self.by_inode.insert(inode, label);
        }
    }

    fn add_netlink(&mut self, text: &str) {
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_ascii_whitespace().collect();
            if let Some(Ok(inode)) = f.get(9).map(|s| s.parse::<u64>())
                && self.wants(inode)
            {
                let proto = f.get(1).copied().unwrap_or("?");
                self.by_inode
                    .insert(inode, format!("netlink proto {proto}"));
            }
        }
    }

    /// The inodes of the sockets whose label is one of `labels`.
    #[must_use]
    pub fn inodes_labelled(&self, labels: &[String]) -> HashSet<u64> {
        self.by_inode
            .iter()
            .filter(|(_, l)| labels.iter().any(|x| x == *l))
            .map(|(i, _)| *i)
            .collect()
    }

    /// The label of `socket:[INODE]`, if the tables know it.
    #[must_use]
    pub fn label(&self, target: &str) -> Option<&str> {
        self.by_inode
            .get(&socket_inode(target)?)
            .map(String::as_str)
    }
}

/// `0100007F:1F90` → `127.0.0.1:8080`; 32 hex digits for IPv6.
fn parse_endpoint(s: &str) -> Option<String> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    match addr.len() {
        8 => {
            let n = u32::from_str_radix(addr, 16).ok()?;
            Some(format!("{}:{port}", Ipv4Addr::from(n.swap_bytes())))
        }
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16).ok()?;
                chunk.copy_from_slice(&word.swap_bytes().to_be_bytes());
            }
            let ip = Ipv6Addr::from(bytes);
            match ip.to_ipv4_mapped() {
                Some(v4) => Some(format!("{v4}:{port}")),
                None => Some(format!("[{ip}]:{port}")),
            }
        }
        _ => None,
    }
}

/// The socket table for the sockets among `open`, or `None` when it holds none.
fn read_sockets(pid: i32, open: &[OpenFd]) -> Option<SocketTable> {
    let wanted = socket_inodes(open);
    (!wanted.is_empty()).then(|| SocketTable::read_for(pid, Some(&wanted)))
}

fn socket_inodes(open: &[OpenFd]) -> HashSet<u64> {
    open.iter()
        .filter_map(|f| socket_inode(&f.target))
        .collect()
}

/// Counts per group label, the cheap summary kept as a baseline.
pub type Counts = HashMap<String, u64>;

/// The group an fd belongs to: a socket by what it is, anything else by its target.
fn label<'a>(f: &'a OpenFd, kind: Kind, sockets: Option<&'a SocketTable>) -> &'a str {
    match (kind, sockets) {
        (Kind::Socket, Some(t)) => t.label(&f.target).unwrap_or(&f.target),
        _ => f.target.as_str(),
    }
}

/// Groups fds by label: sockets by what they are (remote endpoint and state), everything
/// else by its link target.
pub fn group<'a>(
    fds: &'a [OpenFd],
    sockets: Option<&'a SocketTable>,
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
    pub fds: u64,
    pub counts: Option<Counts>,
}

/// Processes with at most this many fds get a per-target baseline.
pub const BASELINE_MAX_FDS: u64 = 512;

impl Baseline {
    /// Takes a baseline of `pid`, given its current count.
    #[must_use]
    pub fn take(pid: i32, fds: u64) -> Baseline {
        if fds > BASELINE_MAX_FDS {
            return Baseline { fds, counts: None };
        }
        let Ok(open) = read_fds(pid) else {
            return Baseline { fds, counts: None };
        };
        let sockets = read_sockets(pid, &open);
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

/// The grouped report of one process.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Report {
    pub pid: i32,
    pub fds: u64,
    pub top: Vec<Target>,
    pub by_kind: BTreeMap<String, u64>,
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
    let large = crate::sample::fd_count(pid).is_ok_and(|n| n >= PARALLEL_FROM);
    let (open, sockets) = if large {
        std::thread::scope(|scope| {
            let tables = scope.spawn(|| (read_tables(pid), unix_peers_of(pid)));
            let open = read_fds(pid);
            let (texts, peers) = tables.join().unwrap_or_default();
            let open = open?;
            let wanted = socket_inodes(&open);
            let sockets =
                (!wanted.is_empty()).then(|| SocketTable::from_texts(&texts, Some(&wanted), peers));
            Ok::<_, io::Error>((open, sockets))
        })?
    } else {
        let open = read_fds(pid)?;
        let sockets = read_sockets(pid, &open);
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
pub struct Context<'a> {
    pub sockets: Option<&'a SocketTable>,
    pub baseline: Option<&'a Baseline>,
    /// The master's open fds, when the process is a worker.
    pub master: Option<&'a [OpenFd]>,
}

/// The pure part of `report`: grouping, ranking, growth.
#[must_use]
pub fn summarize(pid: i32, open: &[OpenFd], ctx: &Context<'_>, top: usize) -> Report {
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
        let shared: std::collections::HashSet<(u32, &str)> =
            m.iter().map(|f| (f.fd, f.target.as_str())).collect();
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
    let by_kind: BTreeMap<String, u64> = ALL_KINDS
        .iter()
        .filter(|k| kinds[**k as usize] > 0)
        .map(|k| (k.as_str().to_owned(), kinds[*k as usize]))
        .collect();
    let base_counts = baseline.and_then(|b| b.counts.as_ref());
    let growth_of = |label: &str, n: u64| -> Option<i64> {
        let before = base_counts?.get(label).copied().unwrap_or(0);
        #[allow(clippy::cast_possible_wrap)]
        Some(n as i64 - before as i64)
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
        .map(|(label, kind, count)| Target {
            target: label.to_owned(),
            kind: refine_path_kind(kind, label).as_str().to_owned(),
            count,
            growth: growth_of(label, count),
            inherited: inherited_by_label
                .as_ref()
                .map(|m| m.get(label).copied().unwrap_or(0)),
        })
        .collect();
    #[allow(clippy::cast_possible_wrap)]
    let growth = baseline.map(|b| open.len() as i64 - b.fds as i64);
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

    #[test]
    fn endpoints_decode() {
        assert_eq!(parse_endpoint("0100007F:1538").unwrap(), "127.0.0.1:5432");
        assert_eq!(
            parse_endpoint("0000000000000000FFFF00000100007F:0050").unwrap(),
            "127.0.0.1:80"
        );
        assert_eq!(
            parse_endpoint("00000000000000000000000001000000:1F90").unwrap(),
            "[::1]:8080"
        );
    }

    #[test]
    fn tcp_sockets_group_by_remote_endpoint_and_state() {
        let mut t = SocketTable::default();
        t.add_inet(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: 0100007F:9C40 0100007F:1538 01 00000000:00000000 00:00000000 00000000  0 0 101 1\n\
             1: 0100007F:9C41 0100007F:1538 01 00000000:00000000 00:00000000 00000000  0 0 102 1\n\
             2: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0 0 103 1\n",
            "tcp",
        );
        let fds: Vec<OpenFd> = [101, 102, 103]
            .iter()
            .enumerate()
            .map(|(i, ino)| OpenFd {
                fd: i as u32,
                target: format!("socket:[{ino}]"),
            })
            .collect();
        let r = summarize(
            1,
            &fds,
            &Context {
                sockets: Some(&t),
                ..Context::default()
            },
            10,
        );
        assert_eq!(r.top[0].target, "tcp → 127.0.0.1:5432 ESTABLISHED");
        assert_eq!(r.top[0].count, 2);
        assert_eq!(r.top[1].target, "tcp listen 127.0.0.1:8080");
        assert_eq!(r.by_kind["socket"], 3);
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
    fn unix_sockets_are_named_by_path_listening_state_and_peer() {
        let mut t = SocketTable {
            peers: Some([(30, 21), (31, 32)].into_iter().collect()),
            ..SocketTable::default()
        };
        t.add_unix(
            "Num       RefCount Protocol Flags    Type St Inode Path\n\
             0000: 00000002 00000000 00010000 0001 01 20 /run/db.sock\n\
             0000: 00000003 00000000 00000000 0001 03 21 /run/db.sock\n\
             0000: 00000003 00000000 00000000 0001 03 30\n\
             0000: 00000003 00000000 00000000 0001 03 31\n\
             0000: 00000003 00000000 00000000 0001 03 32\n\
             0000: 00000002 00000000 00000000 0002 01 40 @journal\n",
        );
        assert_eq!(t.label("socket:[20]"), Some("unix listen /run/db.sock"));
        assert_eq!(t.label("socket:[21]"), Some("unix /run/db.sock"));
        assert_eq!(t.label("socket:[30]"), Some("unix → /run/db.sock"));
        assert_eq!(t.label("socket:[31]"), Some("unix (unnamed)"));
        assert_eq!(t.label("socket:[40]"), Some("unix-dgram @journal"));
    }

    #[test]
    fn growth_is_measured_against_the_baseline() {
        let mk = |targets: &[&str]| -> Vec<OpenFd> {
            targets
                .iter()
                .enumerate()
                .map(|(i, t)| OpenFd {
                    fd: i as u32,
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
}
