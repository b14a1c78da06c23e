//! The test harness: a real uWSGI Emperor with real vassals in a temporary directory, and
//! the real `vassal-warden` binary watching it. Every process is started in its own
//! process group, and the group is killed on drop, so a failing test leaves nothing
//! behind.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use rustix::process::{Pid, Signal};
use serde_json::Value;

/// The leaking WSGI app, written into each test's directory.
pub const LEAKY_APP: &str = include_str!("../apps/leaky.py");

/// Waits until `f` returns Some, or panics after `timeout` with `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(x) = f() {
            return x;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Kills a whole process group (and reaps the leader) when dropped.
pub struct Group {
    child: Child,
}

impl Group {
    pub fn spawn(cmd: &mut Command) -> Group {
        let child = cmd
            .process_group(0)
            .spawn()
            .expect("cannot start the process");
        Group { child }
    }

    pub fn pid(&self) -> i32 {
        self.child.id().cast_signed()
    }

    /// The leader's stdin and stdout, when they were piped.
    pub fn pipes(&mut self) -> (std::process::ChildStdin, std::process::ChildStdout) {
        let stdin = self.child.stdin.take().expect("stdin piped");
        let stdout = self.child.stdout.take().expect("stdout piped");
        (stdin, stdout)
    }

    /// The exit status, if the leader has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn kill(&mut self, signal: Signal) {
        if let Some(pgid) = Pid::from_raw(self.pid()) {
            let _ = rustix::process::kill_process_group(pgid, signal);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill(Signal::KILL);
        let _ = self.child.wait();
    }
}

/// Kills, when dropped, the process groups whose leaders' PIDs a hook wrote, one per
/// line, to the file it names (a hook runs in a process group of its own, outside the
/// warden's, so killing the warden's group does not end it).
pub struct HookGroups(pub PathBuf);

impl Drop for HookGroups {
    fn drop(&mut self) {
        for pid in fs::read_to_string(&self.0).unwrap_or_default().lines() {
            if let Some(g) = pid.trim().parse().ok().and_then(Pid::from_raw) {
                let _ = rustix::process::kill_process_group(g, Signal::KILL);
            }
        }
    }
}

/// How a vassal is set up.
#[derive(Debug, Clone)]
pub struct VassalSpec {
    pub processes: u32,
    pub max_fd: u32,
    /// Files the app opens at import time (in the master).
    pub open_at_import: u32,
    /// Extra `[uwsgi]` lines.
    pub extra: Vec<String>,
}

impl Default for VassalSpec {
    fn default() -> Self {
        VassalSpec {
            processes: 1,
            max_fd: 64,
            open_at_import: 0,
            extra: Vec::new(),
        }
    }
}

/// A running Emperor in a temporary directory.
pub struct Emperor {
    pub dir: tempfile::TempDir,
    builtin_python: bool,
    pub vassals: PathBuf,
    pub log: PathBuf,
    pub stats: Option<PathBuf>,
    group: Group,
}

// Each bool is one switch of the Emperor's command line, as uWSGI spells them.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Default, Clone)]
pub struct EmperorOptions {
    pub stats: bool,
    pub nofollow: bool,
    /// `--emperor DIR/*.ini` instead of the directory.
    pub glob: bool,
    /// Debian's way: `uwsgi --ini emperor.ini` with `master = true` (two processes).
    pub debian: bool,
    /// `--emperor-tyrant`: vassals run as the owners of their files (the tree is opened
    /// up so that `nobody` can read the app and bind its socket).
    pub tyrant: bool,
    /// `uid` and `gid`: the Emperor drops to this user once started (Debian's
    /// `emperor.ini` drops to `www-data`); the tree is opened up for it.
    pub drop_to: Option<String>,
    /// Run through this command (e.g. into another Debian's root: tests/it/stacks.rs),
    /// with this `uwsgi`: `None` for the one on `PATH`.
    pub within: Vec<String>,
    pub uwsgi: Option<String>,
    /// uWSGI has Python built in (a `pip install uwsgi`): vassals load no plugin.
    pub builtin_python: bool,
}

impl Emperor {
    pub fn start() -> Emperor {
        Emperor::start_with(&EmperorOptions::default())
    }

    pub fn start_with(opts: &EmperorOptions) -> Emperor {
        let dir = tempfile::Builder::new()
            .prefix("vw-test-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path();
        let vassals = root.join("vassals");
        fs::create_dir_all(&vassals).unwrap();
        fs::create_dir_all(root.join("run")).unwrap();
        fs::create_dir_all(root.join("static")).unwrap();
        fs::write(root.join("static/cat.jpg"), b"\xff\xd8 not really a cat").unwrap();
        fs::write(root.join("static/config.db"), b"settings").unwrap();
        fs::write(root.join("app.py"), LEAKY_APP).unwrap();
        let log = root.join("emperor.log");
        let logf = fs::File::create(&log).unwrap();
        let stats = opts.stats.then(|| root.join("run/emperor-stats.sock"));
        let watch = if opts.glob {
            format!("{}/*.ini", vassals.display())
        } else {
            vassals.display().to_string()
        };
        let mut settings = vec![("emperor", watch), ("emperor-freq", "1".to_owned())];
        if let Some(s) = &stats {
            settings.push(("emperor-stats", s.display().to_string()));
        }
        if opts.nofollow {
            settings.push(("emperor-nofollow", "true".to_owned()));
        }
        if let Some(user) = &opts.drop_to {
            settings.push(("uid", user.clone()));
            settings.push(("gid", user.clone()));
        }
        if opts.tyrant || opts.drop_to.is_some() {
            if opts.tyrant {
                settings.push(("emperor-tyrant", "true".to_owned()));
            }
            for (d, mode) in [
                (root.to_owned(), 0o755),
                (vassals.clone(), 0o755),
                (root.join("static"), 0o755),
                (root.join("run"), 0o777),
            ] {
                fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
            }
        }
        let uwsgi = opts.uwsgi.clone().unwrap_or_else(|| "uwsgi".into());
        let mut cmd = match opts.within.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(uwsgi);
                c
            }
            None => Command::new(uwsgi),
        };
        if opts.debian {
            let mut ini = String::from("[uwsgi]\nmaster = true\n");
            for (k, v) in &settings {
                writeln!(ini, "{k} = {v}").unwrap();
            }
            let path = root.join("emperor.ini");
            fs::write(&path, ini).unwrap();
            cmd.arg("--ini").arg(path);
        } else {
            for (k, v) in &settings {
                cmd.arg(format!("--{k}"));
                // A flag takes no value on the command line.
                if v != "true" {
                    cmd.arg(v);
                }
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf);
        let group = Group::spawn(&mut cmd);
        Emperor {
            dir,
            builtin_python: opts.builtin_python,
            vassals,
            log,
            stats,
            group,
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The process the Emperor started us with (in Debian's layout, the Emperor's master).
    pub fn pid(&self) -> i32 {
        self.group.pid()
    }

    /// The Emperor proper: the process whose children are the vassal masters. In Debian's
    /// layout it is the child of `pid()` with the same command line.
    pub fn emperor_pid(&self) -> i32 {
        let leader = self.pid();
        let cmd = |p: i32| fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
        children(leader)
            .into_iter()
            .find(|c| cmd(*c) == cmd(leader))
            .unwrap_or(leader)
    }

    pub fn ini_path(&self, name: &str) -> PathBuf {
        self.vassals.join(name)
    }

    /// The line that loads uWSGI's Python plugin, unless Python is built in.
    pub fn python_plugin(&self) -> &'static str {
        if self.builtin_python {
            ""
        } else {
            "plugins = python3\n"
        }
    }

    /// The text of a vassal ini for `spec`.
    pub fn ini_text(&self, spec: &VassalSpec) -> String {
        let root = self.root().display();
        let mut s = format!(
            "[uwsgi]\n{}master = true\nprocesses = {}\nhttp-socket = {root}/run/%n.sock\n\
             wsgi-file = {root}/app.py\nmax-fd = {}\nenv = OPEN_AT_IMPORT={}\nvacuum = true\n",
            self.python_plugin(),
            spec.processes,
            spec.max_fd,
            spec.open_at_import
        );
        for l in &spec.extra {
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    /// Writes `name` into the vassal directory; the Emperor starts it at its next scan.
    pub fn add_vassal(&self, name: &str, spec: &VassalSpec) -> PathBuf {
        let p = self.ini_path(name);
        fs::write(&p, self.ini_text(spec)).unwrap();
        p
    }

    pub fn socket(&self, name: &str) -> PathBuf {
        let stem = Path::new(name)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        self.root().join(format!("run/{stem}.sock"))
    }

    /// The vassal's master and workers, when it runs with `workers` workers and answers.
    pub fn wait_running(&self, name: &str, workers: usize) -> (i32, Vec<i32>) {
        wait_for(
            Duration::from_secs(60),
            &format!("vassal {name} to run"),
            || {
                let master = self.master_of(name)?;
                let kids = children(master);
                if kids.len() != workers {
                    return None;
                }
                self.try_request(name, "/").ok()?;
                Some((master, kids))
            },
        )
    }

    /// Waits until none of `old` is a worker of the vassal any more (a reload finished).
    pub fn wait_replaced(&self, name: &str, old: &[i32]) -> (i32, Vec<i32>) {
        wait_for(
            Duration::from_secs(60),
            &format!("the workers of {name} to be replaced"),
            || {
                let (master, workers) = self.wait_running(name, old.len());
                workers
                    .iter()
                    .all(|w| !old.contains(w))
                    .then_some((master, workers))
            },
        )
    }

    /// Waits until the workers in `gone` are no longer workers of the vassal, and it has
    /// `n` workers again.
    pub fn wait_replaced_some(&self, name: &str, gone: &[i32], n: usize) -> (i32, Vec<i32>) {
        wait_for(
            Duration::from_secs(60),
            &format!("workers {gone:?} of {name} to be replaced"),
            || {
                let (master, workers) = self.wait_running(name, n);
                workers
                    .iter()
                    .all(|w| !gone.contains(w))
                    .then_some((master, workers))
            },
        )
    }

    /// A vassal master: a child of the Emperor whose command line says `--ini NAME`.
    pub fn master_of(&self, name: &str) -> Option<i32> {
        children(self.emperor_pid()).into_iter().find(|&p| {
            fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                args.windows(2)
                    .any(|w| w[0] == b"--ini" && w[1] == name.as_bytes())
            })
        })
    }

    pub fn try_request(&self, name: &str, path: &str) -> std::io::Result<String> {
        let mut s = UnixStream::connect(self.socket(name))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n")?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.trim().to_owned());
        body.ok_or_else(|| std::io::Error::other(format!("no HTTP body in {buf:?}")))
    }

    /// One request; returns (worker pid, leaked so far in that worker).
    pub fn request(&self, name: &str, path: &str) -> (i32, u64) {
        let body = self.try_request(name, path).expect("request failed");
        let mut it = body.split_whitespace();
        let pid = it.next().unwrap().parse().unwrap();
        let leaked = it.next().unwrap().parse().unwrap();
        (pid, leaked)
    }

    /// Makes the vassal leak `n` files (one per request).
    pub fn leak(&self, name: &str, n: u64) -> (i32, u64) {
        let mut last = (0, 0);
        for _ in 0..n {
            last = self.request(name, "/leak");
        }
        last
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many times the Emperor logged a reload of `name`.
    pub fn reloads(&self, name: &str) -> usize {
        self.log_text()
            .matches(&format!("[emperor] reload the uwsgi instance {name}"))
            .count()
    }
}

/// Children of `pid` (all threads).
pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|x| x.parse::<i32>().ok()));
            }
        }
    }
    out.sort_unstable();
    out
}

pub fn fd_count(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

pub fn mtime(p: &Path) -> SystemTime {
    fs::metadata(p).unwrap().modified().unwrap()
}

/// The warden binary, running `run` against a config in `dir`.
pub struct Warden {
    pub config: PathBuf,
    pub audit_log: PathBuf,
    pub stderr: PathBuf,
    group: Group,
}

impl Warden {
    /// Writes a config (`[warden] vassals, interval, audit-log` plus `extra` lines) and
    /// starts `vassal-warden run -c CONFIG ARGS...`.
    pub fn start(bin: &Path, emperor: &Emperor, policy: &str, args: &[&str]) -> Warden {
        let vassals = [emperor.vassals.display().to_string()];
        Warden::start_watching(bin, emperor.root(), &vassals, policy, args)
    }

    /// Like `start`, watching the given `vassals` (directories or globs), with its files
    /// in `root`.
    pub fn start_watching(
        bin: &Path,
        root: &Path,
        vassals: &[String],
        policy: &str,
        args: &[&str],
    ) -> Warden {
        let extra = format!("interval = 200ms\n\n[policy]\n{policy}\n");
        let config = write_config(root, "warden.ini", vassals, &extra);
        Warden::start_with_config(bin, &config, &root.join("incidents.jsonl"), args)
    }

    pub fn start_with_config(bin: &Path, config: &Path, audit_log: &Path, args: &[&str]) -> Warden {
        Warden::start_under(&[], bin, config, audit_log, args)
    }

    /// Like `start_with_config`, run through `prefix` (e.g. `setpriv` dropping a
    /// capability).
    pub fn start_under(
        prefix: &[&str],
        bin: &Path,
        config: &Path,
        audit_log: &Path,
        args: &[&str],
    ) -> Warden {
        let stderr = config.with_file_name("warden.log");
        let errf = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr)
            .unwrap();
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let group = Group::spawn(
            cmd.arg("run")
                .arg("-c")
                .arg(config)
                .args(args)
                .env(
                    "VASSAL_WARDEN_LOG",
                    std::env::var("VASSAL_WARDEN_LOG").unwrap_or_else(|_| "debug".into()),
                )
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(errf),
        );
        let w = Warden {
            config: config.to_owned(),
            audit_log: audit_log.to_owned(),
            stderr,
            group,
        };
        wait_for(
            Duration::from_secs(30),
            // Once its first pass is done, the warden has a baseline of every process.
            "the warden's first pass",
            || w.log().contains("first pass done").then_some(()),
        );
        w
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The address its metrics endpoint said it serves on.
    pub fn metrics_addr(&self) -> String {
        wait_for(Duration::from_secs(10), "the metrics endpoint", || {
            self.log().lines().find_map(|l| {
                let rest = l.split_once("serving metrics at http://")?.1;
                Some(rest.split_once("/metrics")?.0.to_owned())
            })
        })
    }

    /// How many passes its debug log shows.
    pub fn passes(&self) -> usize {
        self.log().matches("pass done").count()
    }

    /// Requests `path` of `vassal` once a pass, until `done`, a request fails (the app
    /// at its limit: what the caller asserts then says why), or 80 requests: each pass
    /// sees the vassal at most two requests further on than the last, however slow a
    /// busy machine makes the passes, so that a leak is seen on its way to the line.
    pub fn leak_paced(&self, emp: &Emperor, vassal: &str, path: &str, done: impl Fn() -> bool) {
        for _ in 0..80 {
            if emp.try_request(vassal, path).is_err() {
                return;
            }
            let n = self.passes();
            wait_for(Duration::from_secs(30), "a pass of the warden", || {
                (self.passes() > n).then_some(())
            });
            if done() {
                return;
            }
        }
    }

    /// The warden's PID.
    pub fn pid(&self) -> i32 {
        self.group.pid()
    }

    /// Sends `signal` to the warden; after SIGKILL, waits until it is gone (and its lock
    /// on the incident log with it).
    pub fn kill(&mut self, signal: Signal) {
        self.group.kill(signal);
        if signal == Signal::KILL {
            let _ = self.group.child.wait();
        }
    }

    /// The exit status, if the warden has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.group.try_wait()
    }

    pub fn records(&self) -> Vec<Value> {
        read_records(&self.audit_log)
    }

    /// Waits for a record with `event` (and, for outcomes and suppressions, any result).
    pub fn wait_record(&self, event: &str, nth: usize) -> Value {
        wait_for(
            Duration::from_secs(60),
            &format!("record #{nth} with event {event}"),
            || {
                self.records()
                    .into_iter()
                    .filter(|r| r["event"] == event)
                    .nth(nth)
            },
        )
    }
}

impl Drop for Warden {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- warden log ({}) ---\n{}",
                self.stderr.display(),
                self.log()
            );
            // As it is on disk: a torn line must not panic again while panicking.
            eprintln!(
                "--- incident log ---\n{}",
                String::from_utf8_lossy(&fs::read(&self.audit_log).unwrap_or_default())
            );
        }
    }
}

impl Drop for Emperor {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = self.log_text();
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            eprintln!("--- emperor log (last lines) ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// `GET /metrics` from a warden's endpoint over HTTP/1.0: the body of a 200 answer.
pub fn scrape(addr: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    body.to_owned()
}

/// The value of the unlabelled sample `name` in an exposition.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .parse()
        .unwrap()
}

pub fn read_records(path: &Path) -> Vec<Value> {
    let Ok(f) = fs::File::open(path) else {
        return Vec::new();
    };
    BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(&l).expect("incident log line is JSON"))
        .collect()
}

/// A helper process (tests/helpers/holder.py) that holds a known set of fds.
pub struct Holder {
    group: Group,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Holder {
    pub fn start(args: &[String]) -> Holder {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/helpers/holder.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut group = Group::spawn(&mut cmd);
        let stdin = group.child.stdin.take().unwrap();
        let stdout = BufReader::new(group.child.stdout.take().unwrap());
        let mut h = Holder {
            group,
            stdin,
            stdout,
        };
        assert_eq!(h.read_line(), "ready");
        h
    }

    pub fn pid(&self) -> i32 {
        self.group.pid()
    }

    fn read_line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_owned()
    }

    /// Opens `n` more files of `path`.
    pub fn open_more(&mut self, n: usize, path: &Path) {
        writeln!(self.stdin, "files {n} {}", path.display()).unwrap();
        assert_eq!(self.read_line(), "ok");
    }
}

/// Writes `root/NAME`: a warden config watching `vassals`, with its incident log at
/// `root/incidents.jsonl`, its metrics on a loopback port the kernel picks (tests run
/// side by side, and the host's own port stays free), then `extra` lines (a `metrics`
/// line there wins).
pub fn write_config(root: &Path, name: &str, vassals: &[String], extra: &str) -> PathBuf {
    let mut text = String::from("[warden]\n");
    for v in vassals {
        writeln!(text, "vassals = {v}").unwrap();
    }
    write!(
        text,
        "metrics = 127.0.0.1:0\naudit-log = {}\n{extra}",
        root.join("incidents.jsonl").display()
    )
    .unwrap();
    let path = root.join(name);
    fs::write(&path, text).unwrap();
    path
}

/// Holds the lock a running warden holds on the incident log in `root` (the one
/// `write_config` names), naming this process, for as long as the file is kept: for tests
/// of what `check` and `health` say of the vassals rather than of whether a warden runs.
pub fn hold_warden_lock(root: &Path) -> fs::File {
    use rustix::fs::{FlockOperation, flock};
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(root.join("incidents.jsonl.lock"))
        .unwrap();
    flock(&f, FlockOperation::NonBlockingLockExclusive).unwrap();
    writeln!(f, "{}", std::process::id()).unwrap();
    f
}

impl Emperor {
    /// A warden config for this Emperor's vassal directory, with `extra` lines.
    pub fn config(&self, extra: &str) -> String {
        let vassals = [self.vassals.display().to_string()];
        write_config(self.root(), "warden.ini", &vassals, extra)
            .display()
            .to_string()
    }
}

/// The `event` of each record, in order: what happened to the vassal. A `capture`
/// record (the code that leaks, found after its incident began, whenever the app opens
/// the target again) is left out; tests of captures look for it by name.
pub fn events(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["event"].as_str().unwrap().to_owned())
        .filter(|e| e != "capture")
        .collect()
}

/// How many records have this `event`.
pub fn count(records: &[Value], event: &str) -> usize {
    records.iter().filter(|r| r["event"] == event).count()
}

/// Enters the root named by `$1` and runs the rest of the arguments there; with
/// `bind_root`, the root is bound onto itself first (a mount point, as container
/// runtimes make it), else it is a plain directory (a bare `chroot`).
fn enter(bind_root: bool) -> String {
    let bind = if bind_root {
        "mount --bind \"$R\" \"$R\"\n"
    } else {
        ""
    };
    format!(
        "R=$1; shift\n{bind}mount --rbind /proc \"$R/proc\"\nmount --rbind /dev \"$R/dev\"\n\
         mount --rbind /sys \"$R/sys\"\nmount --rbind /tmp \"$R/tmp\"\nexec chroot \"$R\" \"$@\""
    )
}

/// Another Debian's root, extracted into a temporary directory (removed on drop). What
/// runs in it is entered with chroot, in a mount namespace of its own whose root is a
/// mount point (the root bound onto itself, as container runtimes do), with the host's
/// `/proc`, `/dev`, `/sys` and `/tmp` bound in: an Emperor's directory of `/tmp` has the
/// same path inside and out.
pub struct Root {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl Root {
    /// Extracts `tar` into a new directory under `tmp`.
    pub fn extract(tar: &Path, tmp: &Path) -> Root {
        let dir = tempfile::Builder::new()
            .prefix("vw-stack-")
            .tempdir_in(tmp)
            .unwrap();
        let path = dir.path().join("root");
        fs::create_dir(&path).unwrap();
        run_ok(
            Command::new("tar")
                .args(["--numeric-owner", "-xf"])
                .arg(tar)
                .arg("-C")
                .arg(&path),
        );
        Root { _dir: dir, path }
    }

    /// The command that runs what follows it inside the root.
    pub fn within(&self) -> Vec<String> {
        self.entered(true)
    }

    /// The same, with the root left a plain directory (not a mount point).
    pub fn within_bare_chroot(&self) -> Vec<String> {
        self.entered(false)
    }

    fn entered(&self, bind_root: bool) -> Vec<String> {
        let mut v: Vec<String> = ["unshare", "--mount", "--propagation", "private", "--"]
            .map(str::to_owned)
            .to_vec();
        v.extend(["sh".into(), "-euc".into(), enter(bind_root), "sh".into()]);
        v.push(self.path.display().to_string());
        v
    }
}

/// The cached tarball of a minimal Debian `suite` root with `packages`
/// (`scripts/debian-root`), kept under the cargo target directory `target`.
pub fn debian_root(suite: &str, packages: &str, target: &Path) -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = run_ok(
        Command::new(manifest.join("scripts/debian-root"))
            .args([suite, packages])
            .env("CARGO_TARGET_DIR", target),
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Runs `cmd`, which must succeed; its output.
pub fn run_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
