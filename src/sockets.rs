//! Sockets: what each socket of a network namespace is, as typed values keyed by inode.
//!
//! This module owns reading `/proc/PID/net/{unix,tcp,tcp6,udp,udp6,netlink}` (see proc(5);
//! the tcp and udp tables through the `procfs` crate's parsers, the others by hand) and
//! asking the kernel for unix socket peers (`unix_diag`, in the submodule), and turns
//! both into [`Socket`] values. It answers typed questions: what is the socket with this
//! inode, which sockets listen on this address. It does not name sockets for people (that
//! is `forensics`, at the very end of a report), does not read `/proc/PID/fd`, and writes
//! nothing.

mod unix_diag;

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::net::{IpAddr, SocketAddr};

use procfs::FromReadSI;
use procfs::net::{TcpNetEntries, UdpNetEntries};

/// One socket, as the kernel's tables describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Socket {
    /// From `tcp` (IPv4 addresses) or `tcp6` (IPv6 addresses, v4-mapped ones as the kernel
    /// gives them): the table is the family of `local`.
    Tcp {
        local: SocketAddr,
        remote: SocketAddr,
        state: TcpState,
    },
    /// From `udp` or `udp6`; `remote` has port 0 when the socket is not connected.
    Udp {
        local: SocketAddr,
        remote: SocketAddr,
    },
    Unix {
        ty: UnixType,
        /// The bound name: a filesystem path, or `@name` in the abstract namespace.
        path: Option<String>,
        /// Bound and listening (`__SO_ACCEPTCON`).
        listening: bool,
        /// For an unnamed socket, the name its peer is bound to (a client of a server's
        /// socket), when the kernel told (`unix_diag`); not looked up for named sockets.
        peer: Option<String>,
    },
    Netlink {
        protocol: u32,
    },
}

impl Socket {
    /// The peer of a TCP connection (not a listener): what a leak of connections is
    /// grouped by.
    pub(crate) fn peer(&self) -> Option<SocketAddr> {
        match self {
            Socket::Tcp { remote, state, .. } if *state != TcpState::Listen => Some(*remote),
            _ => None,
        }
    }
}

/// TCP states, numbered as in the kernel's `include/net/tcp_states.h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum TcpState {
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
    /// A code this reader does not know (`TCP_NEW_SYN_RECV`, a newer kernel's state).
    Unknown,
}

impl TcpState {
    fn from_code(code: u8) -> TcpState {
        match code {
            0x01 => TcpState::Established,
            0x02 => TcpState::SynSent,
            0x03 => TcpState::SynRecv,
            0x04 => TcpState::FinWait1,
            0x05 => TcpState::FinWait2,
            0x06 => TcpState::TimeWait,
            0x07 => TcpState::Close,
            0x08 => TcpState::CloseWait,
            0x09 => TcpState::LastAck,
            0x0A => TcpState::Listen,
            0x0B => TcpState::Closing,
            _ => TcpState::Unknown,
        }
    }

    /// The kernel's name of the state, without its `TCP_` prefix.
    pub(crate) fn kernel_name(self) -> &'static str {
        match self {
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::FinWait1 => "FIN_WAIT1",
            TcpState::FinWait2 => "FIN_WAIT2",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::Closing => "CLOSING",
            TcpState::Unknown => "UNKNOWN",
        }
    }
}

/// The type of a unix socket (the `Type` column of `/proc/net/unix`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum UnixType {
    Stream,
    Dgram,
    SeqPacket,
}

impl UnixType {
    /// `SOCK_DGRAM` is 2, `SOCK_SEQPACKET` 5; unix sockets have no other type than these and
    /// `SOCK_STREAM`, which is what anything else is read as.
    fn from_code(code: u16) -> UnixType {
        match code {
            2 => UnixType::Dgram,
            5 => UnixType::SeqPacket,
            _ => UnixType::Stream,
        }
    }
}

/// An address a listening socket is bound to, as a vassal declares one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Listen {
    /// TCP on `port`; `ip: None` is every address (`0.0.0.0` or `::`).
    Tcp { ip: Option<IpAddr>, port: u16 },
    /// A unix stream socket bound to this name (a path, or `@name`).
    Unix(String),
}

impl Listen {
    /// Whether `socket` is listening on this address.
    pub(crate) fn matches(&self, socket: &Socket) -> bool {
        match (self, socket) {
            (
                Listen::Tcp { ip, port },
                Socket::Tcp {
                    local,
                    state: TcpState::Listen,
                    ..
                },
            ) => {
                local.port() == *port
                    && ip.map_or(local.ip().is_unspecified(), |ip| local.ip() == ip)
            }
            (
                Listen::Unix(name),
                Socket::Unix {
                    ty: UnixType::Stream,
                    path: Some(path),
                    listening: true,
                    ..
                },
            ) => path == name,
            _ => false,
        }
    }
}

/// The inode of a `socket:[INODE]` link target of `/proc/PID/fd`.
pub(crate) fn inode_of(target: &str) -> Option<u64> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The most of one socket table read (about 400,000 sockets). Of a table cut there, the
/// unix and netlink sockets before the cut are named; a cut tcp or udp table (which
/// procfs refuses whole) names none. Sockets not named are shown by inode.
const MAX_TABLE: u64 = 64 << 20;

/// The socket tables of `/proc/PID/net/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Unix,
    Tcp,
    Tcp6,
    Udp,
    Udp6,
    Netlink,
}

/// Every table, most common first.
const TABLES: [Table; 6] = [
    Table::Unix,
    Table::Tcp,
    Table::Tcp6,
    Table::Udp,
    Table::Udp6,
    Table::Netlink,
];

impl Table {
    /// The file name under `/proc/PID/net/`.
    #[must_use]
    pub fn file(self) -> &'static str {
        match self {
            Table::Unix => "unix",
            Table::Tcp => "tcp",
            Table::Tcp6 => "tcp6",
            Table::Udp => "udp",
            Table::Udp6 => "udp6",
            Table::Netlink => "netlink",
        }
    }
}

/// Unix socket peers, when `pid` lives in the warden's network namespace (the netlink
/// socket answers for the namespace it was opened in). `None` when the kernel does not
/// tell (no `unix_diag`, or another namespace): unnamed sockets then have no peer.
fn unix_peers_of(pid: i32) -> Option<HashMap<u64, u64>> {
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/net")).ok();
    let theirs = ns(&pid.to_string())?;
    if ns("self")? != theirs {
        return None;
    }
    unix_diag::unix_peers().ok()
}

/// The socket tables one pass has read, whole, by network namespace. The tables list
/// every socket of the namespace, so naming the sockets of many processes one table
/// read each (the baselines of a first pass over a host of a thousand vassals, or of
/// every worker of a reload) costs the square of the vassals; read once a pass, it costs
/// their number. A pass starts with none.
#[derive(Debug, Default)]
pub(crate) struct PassTables {
    by_ns: HashMap<std::path::PathBuf, NsRead>,
}

/// What a pass has read of one namespace's tables.
#[derive(Debug, Default)]
struct NsRead {
    table: SocketTable,
    /// How many of `TABLES` are in `table`, in their order.
    tables: usize,
    /// Read again whole, for sockets made since the first read.
    again: bool,
}

impl PassTables {
    /// `SocketTable::read_for`, from the tables this pass has read of `pid`'s network
    /// namespace: the next table is read only when a socket is in none read so far, and
    /// all of them once more when one is in none (a socket made since). A socket still
    /// in none is looked for afresh, for `pid` alone, as `SocketTable::read_for` would.
    pub(crate) fn read_for(&mut self, pid: i32, wanted: &HashSet<u64>) -> SocketTable {
        let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/net")) else {
            return SocketTable::read_for(pid, wanted);
        };
        let read = self.by_ns.entry(ns).or_default();
        while !read.table.has_all(wanted) && read.tables < TABLES.len() {
            read.table
                .add_file(pid, TABLES[read.tables], None, || unix_peers_of(pid));
            read.tables += 1;
        }
        if !read.table.has_all(wanted) && !read.again {
            read.table = SocketTable::read(pid);
            read.again = true;
        }
        if read.table.has_all(wanted) {
            read.table.subset(wanted)
        } else {
            SocketTable::read_for(pid, wanted)
        }
    }
}

/// What sockets of one network namespace are, by inode.
#[derive(Debug, Default)]
pub struct SocketTable {
    by_inode: HashMap<u64, Socket>,
}

impl SocketTable {
    /// Reads every socket of `pid`'s network namespace. Missing tables are skipped.
    #[must_use]
    pub fn read(pid: i32) -> SocketTable {
        let mut t = SocketTable::default();
        for table in TABLES {
            t.add_file(pid, table, None, || unix_peers_of(pid));
        }
        t
    }

    /// Reads only the sockets in `wanted`, and stops reading tables once all of them are
    /// found: the tables list the whole network namespace, and the kernel formats each
    /// line on read, so this is most of the cost of naming sockets.
    pub(crate) fn read_for(pid: i32, wanted: &HashSet<u64>) -> SocketTable {
        let mut t = SocketTable::default();
        for table in TABLES {
            if t.by_inode.len() >= wanted.len() {
                break;
            }
            t.add_file(pid, table, Some(wanted), || unix_peers_of(pid));
        }
        t
    }

    /// The sockets of this table in `wanted`.
    fn subset(&self, wanted: &HashSet<u64>) -> SocketTable {
        SocketTable {
            by_inode: wanted
                .iter()
                .filter_map(|i| Some((*i, self.by_inode.get(i)?.clone())))
                .collect(),
        }
    }

    fn has_all(&self, wanted: &HashSet<u64>) -> bool {
        wanted.iter().all(|i| self.by_inode.contains_key(i))
    }

    /// Reads `tables` whole, without asking for unix peers: for the benchmarks, which
    /// compare each reader with the `procfs` crate's.
    #[must_use]
    pub fn read_tables(pid: i32, tables: &[Table]) -> SocketTable {
        let mut t = SocketTable::default();
        for table in tables {
            t.add_file(pid, *table, None, || None);
        }
        t
    }

    /// Keeps only the sockets in `wanted`.
    pub(crate) fn retain(&mut self, wanted: &HashSet<u64>) {
        self.by_inode.retain(|inode, _| wanted.contains(inode));
    }

    /// Adds the sockets of one table of `pid`'s namespace. The tcp and udp tables are read
    /// and parsed by procfs, which streams them through a small buffer and is faster than
    /// a hand-written reader here; the unix table is not (procfs drops the flags column,
    /// and with it the listening state), nor is netlink (procfs has no reader for it).
    fn add_file(
        &mut self,
        pid: i32,
        table: Table,
        wanted: Option<&HashSet<u64>>,
        peers: impl FnOnce() -> Option<HashMap<u64, u64>>,
    ) {
        let path = format!("/proc/{pid}/net/{}", table.file());
        // A namespace's table holds every socket of every process in it: bounded, so that
        // sockets others open cannot make a pass read without end.
        let Ok(file) = std::fs::File::open(&path).map(|f| f.take(MAX_TABLE)) else {
            return;
        };
        match table {
            Table::Unix | Table::Netlink => {
                let mut text = String::new();
                let mut file = file;
                if file.read_to_string(&mut text).is_ok() {
                    self.add_text(table, &text, wanted, peers);
                }
            }
            Table::Tcp | Table::Tcp6 | Table::Udp | Table::Udp6 => {
                self.add_inet(table, file, wanted);
            }
        }
    }

    /// Adds the sockets of one table from its text.
    fn add_text(
        &mut self,
        table: Table,
        text: &str,
        wanted: Option<&HashSet<u64>>,
        peers: impl FnOnce() -> Option<HashMap<u64, u64>>,
    ) {
        let wants = |inode: u64| wanted.is_none_or(|w| w.contains(&inode));
        match table {
            Table::Unix => parse_unix(text, wants, peers, &mut self.by_inode),
            Table::Netlink => parse_netlink(text, wants, &mut self.by_inode),
            Table::Tcp | Table::Tcp6 | Table::Udp | Table::Udp6 => {
                self.add_inet(table, text.as_bytes(), wanted);
            }
        }
    }

    /// `/proc/net/{tcp,tcp6,udp,udp6}`, parsed by procfs. A table procfs cannot parse (a
    /// line it does not understand fails the whole table) names no socket, as a missing
    /// one does. Inode 0 is a socket no process holds (`TIME_WAIT` and the like).
    fn add_inet(&mut self, table: Table, r: impl Read, wanted: Option<&HashSet<u64>>) {
        let wants = |inode: u64| inode != 0 && wanted.is_none_or(|w| w.contains(&inode));
        let si = procfs::current_system_info();
        if matches!(table, Table::Tcp | Table::Tcp6) {
            let Ok(TcpNetEntries(entries)) = TcpNetEntries::from_read(r, si) else {
                return;
            };
            for e in entries.into_iter().filter(|e| wants(e.inode)) {
                let socket = Socket::Tcp {
                    local: e.local_address,
                    remote: e.remote_address,
                    state: TcpState::from_code(e.state.to_u8()),
                };
                self.by_inode.insert(e.inode, socket);
            }
        } else {
            let Ok(UdpNetEntries(entries)) = UdpNetEntries::from_read(r, si) else {
                return;
            };
            for e in entries.into_iter().filter(|e| wants(e.inode)) {
                let socket = Socket::Udp {
                    local: e.local_address,
                    remote: e.remote_address,
                };
                self.by_inode.insert(e.inode, socket);
            }
        }
    }

    #[cfg(test)]
    fn get(&self, inode: u64) -> Option<&Socket> {
        self.by_inode.get(&inode)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &Socket)> {
        self.by_inode.iter().map(|(i, s)| (*i, s))
    }

    /// The inodes of the sockets listening on `addr`.
    pub(crate) fn listening_on<'a>(&'a self, addr: &'a Listen) -> impl Iterator<Item = u64> + 'a {
        self.iter().filter(|(_, s)| addr.matches(s)).map(|(i, _)| i)
    }
}

/// `/proc/net/unix`. Columns: `Num RefCount Protocol Flags Type St Inode [Path]`. Peers
/// (see `unix_diag`) are asked for only when a wanted socket is unnamed, and named by the
/// path their own line gives.
fn parse_unix(
    text: &str,
    wants: impl Fn(u64) -> bool,
    peers: impl FnOnce() -> Option<HashMap<u64, u64>>,
    out: &mut HashMap<u64, Socket>,
) {
    let mut names: HashMap<u64, &str> = HashMap::new();
    let mut unnamed: Vec<u64> = Vec::new();
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
        if !wants(inode) {
            continue;
        }
        // __SO_ACCEPTCON: the socket listens.
        let listening = u32::from_str_radix(flags, 16).is_ok_and(|x| x & 0x0001_0000 != 0);
        let ty = UnixType::from_code(u16::from_str_radix(ty, 16).unwrap_or(1));
        if path.is_none() {
            unnamed.push(inode);
        }
        out.insert(
            inode,
            Socket::Unix {
                ty,
                path: path.map(str::to_owned),
                listening,
                peer: None,
            },
        );
    }
    if unnamed.is_empty() {
        return;
    }
    let peers = peers().unwrap_or_default();
    for inode in unnamed {
        let name = peers.get(&inode).and_then(|peer| names.get(peer));
        if let (Some(name), Some(Socket::Unix { peer, .. })) = (name, out.get_mut(&inode)) {
            *peer = Some((*name).to_owned());
        }
    }
}

/// `/proc/net/netlink`. Columns: `sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode`;
/// `Eth` is the protocol. Only bound netlink sockets are listed.
fn parse_netlink(text: &str, wants: impl Fn(u64) -> bool, out: &mut HashMap<u64, Socket>) {
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        if let (Some(Ok(inode)), Some(Ok(protocol))) = (
            f.get(9).map(|s| s.parse::<u64>()),
            f.get(1).map(|s| s.parse::<u32>()),
        ) && wants(inode)
        {
            out.insert(inode, Socket::Netlink { protocol });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(t: Table, text: &str, peers: &[(u64, u64)]) -> SocketTable {
        let mut s = SocketTable::default();
        s.add_text(t, text, None, || Some(peers.iter().copied().collect()));
        s
    }

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
        0: 0100007F:9C40 0100007F:1538 01 00000000:00000000 00:00000000 00000000  0 0 101 1\n\
        1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0 0 103 1\n\
        2: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0 0 0 1\n\
        3: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0 0 104 1\n";

    #[test]
    fn tcp_lines_become_typed_sockets() {
        let t = table(Table::Tcp, TCP, &[]);
        assert_eq!(
            t.get(101),
            Some(&Socket::Tcp {
                local: "127.0.0.1:40000".parse().unwrap(),
                remote: "127.0.0.1:5432".parse().unwrap(),
                state: TcpState::Established,
            })
        );
        assert!(matches!(
            t.get(103),
            Some(Socket::Tcp {
                state: TcpState::Listen,
                ..
            })
        ));
        // Inode 0 is a socket no process holds (TIME_WAIT and the like).
        assert_eq!(t.iter().count(), 3);
        assert_eq!(TcpState::from_code(0x0C), TcpState::Unknown);
    }

    #[test]
    fn listening_addresses_match_by_value() {
        let t = table(Table::Tcp, TCP, &[]);
        let on = |l: Listen| t.listening_on(&l).collect::<Vec<_>>();
        let tcp = |ip: Option<&str>, port| Listen::Tcp {
            ip: ip.map(|i| i.parse().unwrap()),
            port,
        };
        assert_eq!(on(tcp(Some("127.0.0.1"), 8080)), [103]);
        // Port 8000 is bound to 0.0.0.0: "any address" matches it, 127.0.0.1 does not.
        assert_eq!(on(tcp(None, 8000)), [104]);
        assert!(on(tcp(Some("127.0.0.1"), 8000)).is_empty());
        // A connected socket is not listening.
        assert!(on(tcp(Some("127.0.0.1"), 40000)).is_empty());
        let t6 = table(
            Table::Tcp6,
            "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: 00000000000000000000000000000000:1F40 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  0 0 201 1\n",
            &[],
        );
        assert_eq!(t6.listening_on(&tcp(None, 8000)).collect::<Vec<_>>(), [201]);
        assert!(
            t6.listening_on(&tcp(Some("0.0.0.0"), 8000))
                .next()
                .is_none()
        );
    }

    #[test]
    fn ipv6_and_udp_lines_decode() {
        let t = table(
            Table::Tcp6,
            "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: 0000000000000000FFFF00000100007F:9C40 0000000000000000FFFF00000100007F:0050 08 00000000:00000000 00:00000000 00000000  0 0 301 1\n\
             1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  0 0 302 1\n",
            &[],
        );
        assert_eq!(
            t.get(301),
            Some(&Socket::Tcp {
                local: "[::ffff:127.0.0.1]:40000".parse().unwrap(),
                remote: "[::ffff:127.0.0.1]:80".parse().unwrap(),
                state: TcpState::CloseWait,
            })
        );
        assert!(
            matches!(t.get(302), Some(Socket::Tcp { local, .. }) if *local == "[::1]:8080".parse().unwrap())
        );
        let u = table(
            Table::Udp,
            "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
             1: 0100007F:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 401 2 0000000000000000 0\n\
             2: 0100007F:14EA 0100007F:0035 01 00000000:00000000 00:00000000 00000000     0        0 402 2 0000000000000000 0\n",
            &[],
        );
        assert_eq!(
            u.get(401),
            Some(&Socket::Udp {
                local: "127.0.0.1:5353".parse().unwrap(),
                remote: "0.0.0.0:0".parse().unwrap(),
            })
        );
        assert!(matches!(u.get(402), Some(Socket::Udp { remote, .. }) if remote.port() == 53));
    }

    const UNIX: &str = "Num       RefCount Protocol Flags    Type St Inode Path\n\
        0000: 00000002 00000000 00010000 0001 01 20 /run/db.sock\n\
        0000: 00000003 00000000 00000000 0001 03 21 /run/db.sock\n\
        0000: 00000003 00000000 00000000 0001 03 30\n\
        0000: 00000003 00000000 00000000 0001 03 31\n\
        0000: 00000003 00000000 00000000 0001 03 32\n\
        0000: 00000002 00000000 00000000 0002 01 40 @journal\n\
        0000: 00000002 00000000 00010000 0005 01 41 /run/sq.sock\n";

    #[test]
    fn unix_lines_carry_path_listening_state_and_peer() {
        use UnixType::{Dgram, SeqPacket, Stream};
        let t = table(Table::Unix, UNIX, &[(30, 21), (31, 32)]);
        let unix = |ty, path: Option<&str>, listening, peer: Option<&str>| Socket::Unix {
            ty,
            path: path.map(str::to_owned),
            listening,
            peer: peer.map(str::to_owned),
        };
        assert_eq!(
            t.get(20),
            Some(&unix(Stream, Some("/run/db.sock"), true, None))
        );
        assert_eq!(
            t.get(21),
            Some(&unix(Stream, Some("/run/db.sock"), false, None))
        );
        assert_eq!(
            t.get(30),
            Some(&unix(Stream, None, false, Some("/run/db.sock")))
        );
        assert_eq!(t.get(31), Some(&unix(Stream, None, false, None)));
        assert_eq!(t.get(40), Some(&unix(Dgram, Some("@journal"), false, None)));
        assert_eq!(
            t.get(41),
            Some(&unix(SeqPacket, Some("/run/sq.sock"), true, None))
        );
        let on = |name: &str| {
            t.listening_on(&Listen::Unix(name.into()))
                .collect::<Vec<_>>()
        };
        assert_eq!(on("/run/db.sock"), [20]);
        // Only a stream socket is what a vassal's `socket = PATH` binds.
        assert!(on("/run/sq.sock").is_empty());
    }

    #[test]
    fn peers_are_asked_for_only_when_a_wanted_socket_is_unnamed() {
        let mut t = SocketTable::default();
        let wanted: HashSet<u64> = [20, 21].into_iter().collect();
        t.add_text(Table::Unix, UNIX, Some(&wanted), || {
            panic!("no unnamed socket is wanted")
        });
        assert_eq!(t.iter().count(), 2);
    }

    #[test]
    fn netlink_lines() {
        let t = table(
            Table::Netlink,
            "sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode\n\
             00000000bd27951a 0   0          00000000 0        0        0     2        0        4\n\
             000000004a9cc33a 15  811        00000001 0        0        0     2        0        1450\n",
            &[],
        );
        assert_eq!(t.get(1450), Some(&Socket::Netlink { protocol: 15 }));
        assert_eq!(t.get(4), Some(&Socket::Netlink { protocol: 0 }));
    }

    #[test]
    fn socket_inodes_from_link_targets() {
        assert_eq!(inode_of("socket:[123]"), Some(123));
        assert_eq!(inode_of("pipe:[123]"), None);
        assert_eq!(inode_of("socket:[x]"), None);
    }

    /// The inode of a socket this process holds.
    fn inode(fd: &impl std::os::fd::AsRawFd) -> u64 {
        let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        inode_of(link.to_str().unwrap()).unwrap()
    }

    fn bound(table: &SocketTable, inode: u64) -> Option<&str> {
        match table.by_inode.get(&inode)? {
            Socket::Unix { path, .. } => path.as_deref(),
            _ => None,
        }
    }

    /// A pass reads the tables once for many lookups, and still names a socket made after
    /// that read: by reading them again once, then by a lookup of its own.
    #[test]
    fn a_pass_names_sockets_from_its_tables_and_those_made_since() {
        use std::os::unix::net::UnixListener;
        let dir = tempfile::tempdir().unwrap();
        let path = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
        let pid = i32::try_from(std::process::id()).unwrap();
        let mut pass = PassTables::default();
        let mut check = |name: &str, listener: &UnixListener| {
            let i = inode(listener);
            let t = pass.read_for(pid, &HashSet::from([i]));
            assert_eq!(bound(&t, i), Some(path(name).as_str()), "{t:?}");
            // Only the wanted socket, as `SocketTable::read_for` gives it.
            assert_eq!(t.by_inode.len(), 1);
            assert_eq!(
                t.by_inode,
                SocketTable::read_for(pid, &HashSet::from([i])).by_inode
            );
        };
        let first = UnixListener::bind(path("first.sock")).unwrap();
        check("first.sock", &first);
        let second = UnixListener::bind(path("second.sock")).unwrap();
        check("second.sock", &second);
        let third = UnixListener::bind(path("third.sock")).unwrap();
        check("third.sock", &third);
        check("first.sock", &first);
        let ns = pass.by_ns.values().next().unwrap();
        assert!(ns.again, "the tables were read again for the second socket");
        assert!(
            bound(&ns.table, inode(&third)).is_none(),
            "the third was looked up on its own, not by a third read of the tables"
        );
    }
}
