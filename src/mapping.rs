//! Mapping a vassal file to its master and worker processes.
//!
//! This module owns the methods, tried in this order: the Emperor's stats server (ini name
//! → master PID; survives rewritten process titles), the vassal's declared `pidfile` or
//! `safe-pidfile` (checked to be a child of the Emperor), the process tree (a child of
//! the Emperor whose command line says `--ini NAME`), and the vassal's declared listening
//! sockets held by a child of the Emperor (for rewritten titles: declared values are
//! parsed into typed addresses and asked of `sockets`, never compared as text). Workers
//! are the master's children that `procs::classify` tells are workers; its other
//! children keep their role. It reads /proc and the stats socket; it never signals or
//! writes.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::emperor::{Emperor, VassalFile};
use crate::forensics;
use crate::procs::{self, ProcId, Role};
use crate::sockets::{self, Listen, SocketTable};
use crate::uwsgi_ini::VassalIni;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Method {
    EmperorStats,
    Pidfile,
    ProcessTree,
    /// The vassal's declared listening sockets, found among the fds of a child of the
    /// Emperor (the master binds them): for rewritten process titles without stats.
    Sockets,
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::EmperorStats => "emperor-stats",
            Method::Pidfile => "pidfile",
            Method::ProcessTree => "process-tree",
            Method::Sockets => "sockets",
        })
    }
}

/// The processes of one vassal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Procs {
    pub master: ProcId,
    /// The master's children that are workers: the only processes ever signalled.
    pub workers: Vec<ProcId>,
    /// Its other children (mules, spoolers, gateways, a sub-Emperor, attached programs):
    /// watched against their limits like the rest, never signalled (a reload replaces
    /// them).
    pub others: Vec<(ProcId, Role)>,
    pub method: Method,
}

impl Procs {
    /// Every process with its role: master, workers, then the other children.
    pub(crate) fn with_roles(&self) -> impl Iterator<Item = (ProcId, Role)> + '_ {
        std::iter::once((self.master, Role::Master))
            .chain(self.workers.iter().map(|w| (*w, Role::Worker)))
            .chain(self.others.iter().copied())
    }
}

/// What the mapping found for one vassal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mapping {
    Running(Procs),
    /// An on-demand vassal waiting for its first connection (stats PID -1).
    Idle,
    /// The Emperor runs but no master of this vassal was found (starting, throttled, or
    /// broken).
    NotRunning,
    /// No running Emperor watches the vassal's directory or glob.
    NoEmperor,
    /// Another vassal maps to the same master: which one it runs cannot be told, so
    /// neither is acted on. Names the other vassal.
    Disputed {
        master: i32,
        with: String,
    },
}

impl Mapping {
    /// What the mapping says of the vassal, as `status` and the metrics show it.
    #[must_use]
    pub(crate) fn state(&self) -> State {
        match self {
            Mapping::Running(_) => State::Running,
            Mapping::Idle => State::Idle,
            Mapping::NotRunning => State::NotRunning,
            Mapping::NoEmperor => State::NoEmperor,
            Mapping::Disputed { .. } => State::Disputed,
        }
    }
}

/// A vassal's state: the kind of its `Mapping`, without what it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Running,
    Idle,
    NotRunning,
    NoEmperor,
    Disputed,
}

impl State {
    /// Every state, in the order of `Mapping`.
    pub const ALL: [State; 5] = [
        State::Running,
        State::Idle,
        State::NotRunning,
        State::NoEmperor,
        State::Disputed,
    ];

    /// Its name, as `status` and the metrics show it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Idle => "idle",
            State::NotRunning => "not_running",
            State::NoEmperor => "no_emperor",
            State::Disputed => "disputed",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One look at an Emperor: its children and, when it has one, its stats.
#[derive(Debug, Default)]
pub(crate) struct EmperorView {
    pub pid: i32,
    /// Children of the Emperor with the vassal name they are known by (from their command
    /// line, or from an earlier match of their sockets) and how it was learned.
    pub children: Vec<(ProcId, Option<(String, Method)>)>,
    pub stats: Option<HashMap<String, i32>>,
    pub stats_error: Option<String>,
    /// The Emperor starts vassals on demand: no master means idle, not broken.
    pub on_demand: bool,
}

/// Caches the vassal name of each child by identity, so a command line is read once per
/// process, not once per tick.
#[derive(Debug, Default)]
pub(crate) struct NameCache {
    names: HashMap<ProcId, Option<(String, Method)>>,
}

impl NameCache {
    fn name(&mut self, id: ProcId) -> Option<(String, Method)> {
        self.names
            .entry(id)
            .or_insert_with(|| {
                procs::cmdline(id.pid)
                    .and_then(|a| vassal_name_from_cmdline(&a))
                    .map(|n| (n, Method::ProcessTree))
            })
            .clone()
    }

    /// Remembers a master found by its sockets, so the match is made once per process.
    pub(crate) fn assign(&mut self, id: ProcId, name: &str, method: Method) {
        self.names.insert(id, Some((name.to_owned(), method)));
    }

    pub(crate) fn retain(&mut self, alive: impl Fn(&ProcId) -> bool) {
        self.names.retain(|k, _| alive(k));
    }
}

/// The config a vassal master was started with: `--ini NAME` (or `--xml`, `--yaml`,
/// `--json`, as the Emperor passes them).
#[must_use]
fn vassal_name_from_cmdline(args: &[String]) -> Option<String> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        for opt in ["--ini", "--xml", "--yaml", "--yml", "--json", "--js"] {
            if a == opt {
                return it.next().cloned();
            }
            if let Some(v) = a.strip_prefix(opt).and_then(|r| r.strip_prefix('=')) {
                return Some(v.to_owned());
            }
        }
    }
    None
}

/// Looks at an Emperor now.
pub(crate) fn observe(
    emperor: &Emperor,
    names: &mut NameCache,
    ids: &mut procs::IdCache,
    backoff: &mut StatsBackoff,
) -> EmperorView {
    let mut view = EmperorView {
        pid: emperor.pid,
        on_demand: emperor.on_demand,
        ..EmperorView::default()
    };
    for pid in procs::children(emperor.pid) {
        if let Some(id) = ids.id(pid) {
            view.children.push((id, names.name(id)));
        }
    }
    if let Some(addr) = &emperor.stats {
        if let Some(e) = backoff.waiting(emperor.pid) {
            view.stats_error = Some(e);
            return view;
        }
        match query_stats(addr) {
            Ok(json) => {
                view.stats = Some(parse_emperor_stats(&json));
                backoff.failed.remove(&emperor.pid);
            }
            Err(e) => {
                let text = format!(
                    "cannot read the Emperor stats at {addr}: {e}; mapping falls back to the process tree (asked again in {}s)",
                    STATS_RETRY.as_secs()
                );
                backoff
                    .failed
                    .insert(emperor.pid, (std::time::Instant::now(), text.clone()));
                view.stats_error = Some(text);
            }
        }
    }
    view
}

/// How long a stats server that failed is left alone: a server that trickles costs one
/// deadline in this time, not one per pass.
const STATS_RETRY: Duration = Duration::from_secs(30);

/// The Emperors whose stats server failed, when and how.
#[derive(Debug, Default)]
pub(crate) struct StatsBackoff {
    failed: HashMap<i32, (std::time::Instant, String)>,
}

impl StatsBackoff {
    /// The last failure of `emperor`'s stats server, while it is still left alone.
    fn waiting(&self, emperor: i32) -> Option<String> {
        self.failed
            .get(&emperor)
            .filter(|(at, _)| at.elapsed() < STATS_RETRY)
            .map(|(_, e)| e.clone())
    }
}

/// Ini name → master PID (-1 for an idle on-demand vassal) from `emperor-stats` JSON.
#[must_use]
fn parse_emperor_stats(json: &serde_json::Value) -> HashMap<String, i32> {
    let mut out = HashMap::new();
    if let Some(vassals) = json.get("vassals").and_then(|v| v.as_array()) {
        for v in vassals {
            let id = v.get("id").and_then(|x| x.as_str());
            let pid = v.get("pid").and_then(serde_json::Value::as_i64);
            if let (Some(id), Some(pid)) = (id, pid) {
                out.insert(id.to_owned(), i32::try_from(pid).unwrap_or(-1));
            }
        }
    }
    out
}

/// How long a whole stats query may take, connect and reply together.
const STATS_DEADLINE: Duration = Duration::from_secs(1);
/// The largest stats reply read: an Emperor with thousands of vassals says far less.
const MAX_STATS_REPLY: usize = 4 * 1024 * 1024;

/// Reads a uWSGI stats server (`/path.sock`, `HOST:PORT` or `:PORT`): connect, read JSON
/// until EOF. The whole query has one deadline (`STATS_DEADLINE`) and the reply a size
/// bound (`MAX_STATS_REPLY`), so a server that is stuck, trickles, or never stops cannot
/// stall a pass or fill memory. A unix path must be a socket itself, not a symlink
/// (checked on the descriptor the connect goes through; the connect does not block).
fn query_stats(addr: &str) -> std::io::Result<serde_json::Value> {
    let deadline = Instant::now() + STATS_DEADLINE;
    let buf = if addr.starts_with('/') || addr.starts_with('.') {
        read_reply(connect_unix(Path::new(addr), deadline)?, deadline)?
    } else {
        let host = if addr.starts_with(':') {
            format!("127.0.0.1{addr}")
        } else {
            addr.replacen("localhost:", "127.0.0.1:", 1)
        };
        // A numeric address only: a host name would need a resolver, which no deadline
        // here can bound.
        let sa: std::net::SocketAddr = host.parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a numeric address (IP:PORT, :PORT or a unix socket path); host names are not resolved",
            )
        })?;
        let s = std::net::TcpStream::connect_timeout(&sa, remaining(deadline)?)?;
        read_reply(s, deadline)?
    };
    serde_json::from_slice(&buf)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// The time left before `deadline`; none left is a timeout.
fn remaining(deadline: Instant) -> std::io::Result<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no complete reply within {} s",
                    STATS_DEADLINE.as_secs_f64()
                ),
            )
        })
}

/// A stream whose reads can be given a timeout.
trait TimedRead: Read {
    fn timeout(&self, t: Duration) -> std::io::Result<()>;
}

impl TimedRead for UnixStream {
    fn timeout(&self, t: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(t))
    }
}

impl TimedRead for std::net::TcpStream {
    fn timeout(&self, t: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(t))
    }
}

/// Reads until EOF, each read bounded by what is left of `deadline`.
fn read_reply(mut s: impl TimedRead, deadline: Instant) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        s.timeout(remaining(deadline)?)?;
        match s.read(&mut chunk) {
            Ok(0) => return Ok(buf),
            Ok(n) if buf.len() + n > MAX_STATS_REPLY => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("the reply is larger than {} MiB", MAX_STATS_REPLY >> 20),
                ));
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                remaining(Instant::now())?;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Connects to a unix stats socket without blocking: the path is opened `O_PATH` without
/// following a final symlink, `fstat` says it is a socket, and the connect goes through
/// that descriptor (`/proc/self/fd/N`), so the path cannot be swapped for another socket
/// in between. A full backlog is retried until `deadline` instead of waited on.
fn connect_unix(path: &Path, deadline: Instant) -> std::io::Result<UnixStream> {
    use std::os::fd::AsRawFd;

    use rustix::fs::{FileType, Mode, OFlags};
    use rustix::io::Errno;
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let held = rustix::fs::open(
        path,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if FileType::from_raw_mode(rustix::fs::fstat(&held)?.st_mode) != FileType::Socket {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "it is not a socket (a symlink is not followed); point emperor-stats at the Emperor's socket",
        ));
    }
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    let addr = SocketAddrUnix::new(format!("/proc/self/fd/{}", held.as_raw_fd()))?;
    loop {
        match rustix::net::connect(&fd, &addr) {
            Ok(()) | Err(Errno::ISCONN) => break,
            Err(Errno::AGAIN | Errno::INTR | Errno::INPROGRESS | Errno::ALREADY) => {
                remaining(deadline)?;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let s = UnixStream::from(fd);
    s.set_nonblocking(false)?;
    Ok(s)
}

/// A pidfile's PID: a regular file of at most `bounded::MAX_PIDFILE` bytes, read
/// without blocking; anything else is no PID.
fn read_pidfile(path: &Path) -> Option<i32> {
    crate::bounded::read_config_text(path, crate::bounded::MAX_PIDFILE)
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// True when `master`, found on the word of `vassal`'s file alone (its pidfile or its
/// sockets, not its command line or the Emperor's stats), runs as the user whose word
/// that file is; any master does for a file of root's. A tenant cannot claim another
/// tenant's master by naming its PID or its socket.
fn runs_as_owner(vassal: &VassalFile, master: ProcId) -> bool {
    match crate::trust::authority(&vassal.path) {
        Some(0) => true,
        Some(owner) => procs::uid(master.pid) == Some(owner),
        None => false,
    }
}

/// The master a vassal's declared pidfile names, trusted only as far as the vassal
/// file's owner is: the pidfile must be one that owner could have written, and the PID
/// a child of the Emperor that no other vassal's command line claims. A pidfile that
/// names another tenant's master is ignored (with a warning), never followed.
fn by_pidfile(
    vassal: &VassalFile,
    ini: &VassalIni,
    cwd: &Path,
    view: &EmperorView,
) -> Option<ProcId> {
    let owner = crate::trust::authority(&vassal.path)?;
    for key in ["safe-pidfile", "pidfile", "safe-pidfile2", "pidfile2"] {
        let Some(value) = ini.get(key) else { continue };
        // uWSGI writes a relative pidfile from the vassal's working directory.
        let path = cwd.join(value);
        if let Err(why) = crate::trust::named_file(owner, &path) {
            tracing::debug!(vassal = %vassal.name, "{key} not used: {why}");
            continue;
        }
        let Some(pid) = read_pidfile(&path) else {
            continue;
        };
        match view.children.iter().find(|(id, _)| id.pid == pid) {
            Some((id, None)) if runs_as_owner(vassal, *id) => return Some(*id),
            Some((id, Some((name, _)))) if *name == vassal.name => return Some(*id),
            Some((_, None)) => tracing::debug!(
                vassal = %vassal.name,
                "{key} {} names PID {pid}, which does not run as the file's owner: ignored",
                path.display()
            ),
            Some((_, Some((name, _)))) => tracing::debug!(
                vassal = %vassal.name,
                "{key} {} names PID {pid}, the master of {name}: ignored",
                path.display()
            ),
            None => {}
        }
    }
    None
}

/// Remembers what each child of a master is, by identity, once it is known for sure: a
/// worker stays a worker for its life. `Unknown` (a child still setting itself up) is
/// read again at the next look. Every signal checks the role again first.
#[derive(Debug, Default)]
pub(crate) struct RoleCache {
    roles: HashMap<ProcId, Role>,
    seen: HashSet<ProcId>,
}

impl RoleCache {
    fn role(&mut self, master: ProcId, child: ProcId) -> Role {
        self.seen.insert(child);
        if let Some(r) = self.roles.get(&child) {
            return *r;
        }
        let r = procs::role_of(master, child);
        if r != Role::Unknown {
            self.roles.insert(child, r);
        }
        r
    }

    /// Forgets the children not seen since the last call.
    pub(crate) fn rotate(&mut self) {
        let seen = std::mem::take(&mut self.seen);
        self.roles.retain(|id, _| seen.contains(id));
    }
}

/// The caches one look at the host reads through.
#[derive(Debug, Default)]
pub(crate) struct Looks {
    pub ids: procs::IdCache,
    pub roles: RoleCache,
}

/// Maps one vassal, given a fresh look at its Emperor.
#[must_use]
pub(crate) fn map_vassal(
    vassal: &VassalFile,
    ini: Option<&VassalIni>,
    cwd: &Path,
    view: &EmperorView,
    looks: &mut Looks,
) -> Mapping {
    let is_child = |pid: i32| {
        view.children
            .iter()
            .find(|(id, _)| id.pid == pid)
            .map(|(id, _)| *id)
    };
    let mut found = |master: ProcId, method| {
        let (mut workers, mut others) = (Vec::new(), Vec::new());
        for id in procs::children(master.pid)
            .into_iter()
            .filter_map(|p| looks.ids.id(p))
        {
            match looks.roles.role(master, id) {
                Role::Worker => workers.push(id),
                role => others.push((id, role)),
            }
        }
        Mapping::Running(Procs {
            master,
            workers,
            others,
            method,
        })
    };
    if let Some(stats) = &view.stats
        && let Some(&pid) = stats.get(&vassal.name)
    {
        if pid < 0 {
            return Mapping::Idle;
        }
        if let Some(id) = is_child(pid) {
            return found(id, Method::EmperorStats);
        }
    }
    if let Some(ini) = ini
        && let Some(id) = by_pidfile(vassal, ini, cwd, view)
    {
        return found(id, Method::Pidfile);
    }
    if let Some((id, Some((_, method)))) = view
        .children
        .iter()
        .find(|(_, name)| name.as_ref().is_some_and(|(n, _)| *n == vassal.name))
    {
        return found(*id, *method);
    }
    if let Some(ini) = ini
        && let Some(id) = match_sockets(ini, view)
        && runs_as_owner(vassal, id)
    {
        return found(id, Method::Sockets);
    }
    if view.on_demand {
        return Mapping::Idle;
    }
    Mapping::NotRunning
}

/// The options that make uWSGI bind a listening socket in the master.
const SOCKET_OPTIONS: [&str; 12] = [
    "socket",
    "uwsgi-socket",
    "http-socket",
    "https-socket",
    "http11-socket",
    "fastcgi-socket",
    "scgi-socket",
    "suwsgi-socket",
    "raw-socket",
    "shared-socket",
    "http",
    "https",
];

/// The address a declared socket option listens on: `/path` or `@name` (unix), `:PORT`,
/// `0.0.0.0:PORT` or `*:PORT` (every address), `HOST:PORT` with an IPv4 address or
/// `localhost`, `[IPv6]:PORT`. `https = ADDR,cert,key` keeps the first field. A host name
/// is not resolved: such a socket is not matched.
fn declared_listen(value: &str) -> Option<Listen> {
    let addr = value.split(',').next().unwrap_or(value).trim();
    if addr.starts_with('/') || addr.starts_with('@') {
        return Some(Listen::Unix(addr.to_owned()));
    }
    let (host, port) = addr.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let ip = match host {
        "" | "0.0.0.0" | "*" => None,
        "localhost" => Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        _ => Some(match host.strip_prefix('[') {
            Some(v6) => IpAddr::V6(v6.strip_suffix(']')?.parse().ok()?),
            None => IpAddr::V4(host.parse().ok()?),
        }),
    };
    Some(Listen::Tcp { ip, port })
}

/// Finds the child of the Emperor that holds one of the vassal's declared listening
/// sockets. Only children not already known by another name are read.
fn match_sockets(ini: &VassalIni, view: &EmperorView) -> Option<ProcId> {
    let declared: Vec<Listen> = SOCKET_OPTIONS
        .iter()
        .flat_map(|k| ini.values(k))
        .filter_map(declared_listen)
        .collect();
    // With every child known by a name, no table need be read (a vassal that is not
    // running would otherwise read the namespace's tables on every pass).
    if declared.is_empty() || view.children.iter().all(|(_, name)| name.is_some()) {
        return None;
    }
    let table = SocketTable::read(view.pid);
    let inodes: HashSet<u64> = declared
        .iter()
        .flat_map(|addr| table.listening_on(addr))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    view.children
        .iter()
        .filter(|(_, name)| name.is_none())
        .map(|(id, _)| *id)
        .find(|id| {
            forensics::read_fds(id.pid).is_ok_and(|fds| {
                fds.iter()
                    .any(|f| sockets::inode_of(&f.target).is_some_and(|i| inodes.contains(&i)))
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stats_socket_is_connected_through_the_descriptor_checked_and_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("stats.sock");
        let server = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let deadline = Instant::now() + STATS_DEADLINE;
        connect_unix(&sock, deadline).unwrap();
        assert!(server.accept().is_ok());
        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink(&sock, &link).unwrap();
        let e = connect_unix(&link, deadline).unwrap_err();
        assert!(e.to_string().contains("not a socket"), "{e}");
        let file = dir.path().join("plain");
        std::fs::write(&file, "").unwrap();
        assert!(connect_unix(&file, deadline).is_err());
    }

    fn args(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn names_from_vassal_command_lines() {
        assert_eq!(
            vassal_name_from_cmdline(&args("/usr/bin/uwsgi-core --ini shop.ini")).as_deref(),
            Some("shop.ini")
        );
        assert_eq!(
            vassal_name_from_cmdline(&args("/usr/bin/uwsgi-core --yaml=api.yml")).as_deref(),
            Some("api.yml")
        );
        assert_eq!(vassal_name_from_cmdline(&args("shop uWSGI worker 1")), None);
    }

    #[test]
    fn declared_addresses_become_typed_listen_addresses() {
        let tcp = |ip: Option<&str>, port| {
            Some(Listen::Tcp {
                ip: ip.map(|i| i.parse().unwrap()),
                port,
            })
        };
        assert_eq!(
            declared_listen("/run/shop.sock"),
            Some(Listen::Unix("/run/shop.sock".into()))
        );
        assert_eq!(declared_listen("@shop"), Some(Listen::Unix("@shop".into())));
        assert_eq!(
            declared_listen("127.0.0.1:8000"),
            tcp(Some("127.0.0.1"), 8000)
        );
        assert_eq!(
            declared_listen("localhost:8000"),
            tcp(Some("127.0.0.1"), 8000)
        );
        assert_eq!(declared_listen(":8000"), tcp(None, 8000));
        assert_eq!(declared_listen("*:8000"), tcp(None, 8000));
        assert_eq!(declared_listen("[::1]:8000"), tcp(Some("::1"), 8000));
        assert_eq!(
            declared_listen("0.0.0.0:443,foo.crt,foo.key"),
            tcp(None, 443)
        );
        // Host names are not resolved; what is not an address is not matched.
        assert_eq!(declared_listen("shop.example:8000"), None);
        assert_eq!(declared_listen("127.0.0.1:http"), None);
        assert_eq!(declared_listen("8000"), None);
    }

    #[test]
    fn on_demand_vassals_without_a_master_are_idle() {
        let vassal = VassalFile {
            name: "od.ini".into(),
            path: "/v/od.ini".into(),
        };
        let mut looks = Looks::default();
        let by_stats = EmperorView {
            stats: Some([("od.ini".to_owned(), -1)].into_iter().collect()),
            ..EmperorView::default()
        };
        assert_eq!(
            map_vassal(&vassal, None, Path::new("/"), &by_stats, &mut looks),
            Mapping::Idle
        );
        let by_option = EmperorView {
            on_demand: true,
            ..EmperorView::default()
        };
        assert_eq!(
            map_vassal(&vassal, None, Path::new("/"), &by_option, &mut looks),
            Mapping::Idle
        );
        // Without on-demand, a vassal with no master is not running.
        assert_eq!(
            map_vassal(
                &vassal,
                None,
                Path::new("/"),
                &EmperorView::default(),
                &mut looks
            ),
            Mapping::NotRunning
        );
    }

    #[test]
    fn emperor_stats_json() {
        let j: serde_json::Value = serde_json::from_str(
            r#"{"pid": 10, "vassals": [{"id": "a.ini", "pid": 42}, {"id": "od.ini", "pid": -1}]}"#,
        )
        .unwrap();
        let m = parse_emperor_stats(&j);
        assert_eq!(m["a.ini"], 42);
        assert_eq!(m["od.ini"], -1);
    }
}
