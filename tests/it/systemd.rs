//! The Debian package under a real systemd, on Debian 12 bookworm and on Debian 13
//! trixie (the current stable release): the `.deb` is installed into a minimal Debian
//! root with Debian's own `uwsgi-emperor`, the root is booted with
//! `systemd-nspawn` (its own PID 1, journald and unmodified `uwsgi-emperor.service`), and
//! one walk checks, against a `www-data` vassal symlinked from the vassal directory, that
//! the unit becomes active after the first pass, that a leaking worker is recycled and a
//! leaking master is cured by touching the symlink's target, that the incident is in the
//! log and the journal, that a reload with a broken config keeps the old one, that a
//! stopped loop is restarted by the watchdog, and that `check` run under the unit's
//! capabilities finds no problem (and names `CAP_KILL` when it is taken away).
//!
//! The root is built once (`mmdebstrap`, about 30 s) and cached as a tarball under the
//! cargo target directory; each run extracts its own copy and removes it at the end. See
//! docs/operations.md, "The service unit". `scripts/ensure-nspawn` installs the tools.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
use serde_json::Value;

use crate::harness::{LEAKY_APP, read_records, run_ok, wait_for};

/// What `mmdebstrap` puts into the root, besides `minbase`.
const PACKAGES: &str = "systemd,systemd-sysv,dbus,uwsgi-emperor,uwsgi-plugin-python3,python3";
/// The `www-data` user of Debian's base-passwd (a fixed id).
const WWW_DATA: u32 = 33;
const LOG: &str = "var/log/vassal-warden/incidents.jsonl";
/// The alert hook installed in the container, and where it keeps what it hears.
const HOOK: &str = "/usr/local/sbin/warden-hook";
const HEARD: &str = "var/lib/warden-hook/heard.jsonl";
/// One HTTP request after another over a unix socket: `SOCKET PATH COUNT`. Failures (a
/// worker out of fds, a worker being recycled) are counted, not fatal.
const REQUESTS: &str = r#"
import socket, sys
ok = 0
for _ in range(int(sys.argv[3])):
    try:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(sys.argv[1])
        s.sendall(b"GET " + sys.argv[2].encode() + b" HTTP/1.0\r\nHost: shop\r\n\r\n")
        while s.recv(4096):
            pass
        s.close()
        ok += 1
    except OSError:
        pass
print(ok)
"#;

#[test]
fn the_debian_package_works_under_a_real_systemd_on_bookworm() {
    walk("bookworm");
}

/// Debian 13, the current stable release: its systemd, its `uwsgi-emperor` (2.0.28).
#[test]
fn the_debian_package_works_under_a_real_systemd_on_trixie() {
    walk("trixie");
}

/// Where `node_exporter`'s textfile collector reads on Debian.
const TEXTFILE_DIR: &str = "/var/lib/prometheus/node-exporter";

fn walk(suite: &str) {
    let started = Instant::now();
    let deb = deb_package();
    let base = base_root(suite);
    let mut c = Container::prepare(&base, &deb);
    c.boot();
    becomes_active_after_the_first_pass(&c);
    let recycle = recycles_a_leaking_worker(&c);
    touches_the_symlink_target_for_a_leaking_master(&c);
    records_the_incident_in_the_log_and_the_journal(&c, &recycle);
    the_alert_hook_hears_every_record_under_the_unit(&c);
    a_broken_config_on_reload_keeps_the_old_one(&c);
    the_watchdog_restarts_a_stopped_loop(&c);
    check_passes_under_the_units_capabilities(&c);
    a_stopped_warden_is_critical_and_serves_no_metrics(&c);
    purge_leaves_no_textfile(&c);
    eprintln!("walked through {suite} in {:?}", started.elapsed());
}

/// Step 1: `Type=notify`: active once the first pass is done, with the warden's summary
/// as the unit's status.
fn becomes_active_after_the_first_pass(c: &Container) {
    let show = c.show("ActiveState,StatusText,NRestarts");
    assert_eq!(show["ActiveState"], "active", "{show:?}\n{}", c.journal());
    assert!(
        show["StatusText"].starts_with("2 vassals watched, "),
        "{show:?}"
    );
    let lines = c.ok(&[
        "journalctl",
        "-b",
        "-u",
        "vassal-warden",
        "-o",
        "cat",
        "--no-pager",
    ]);
    let at = |needle: &str| {
        lines
            .lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in the journal:\n{lines}"))
    };
    assert!(
        at("first pass done") < at("Started vassal-warden.service"),
        "systemd said Started before the first pass was done:\n{lines}"
    );
    eprintln!("step 1: {show:?}");
}

/// Step 2a: requests that leak in a worker of `shop.ini` get that worker recycled (the
/// SIGHUP works under the unit's capabilities). Returns the `detected` record.
fn recycles_a_leaking_worker(c: &Container) -> Value {
    // Leak until the warden sees it (one worker gets most requests), then no more.
    wait_for(
        Duration::from_secs(90),
        "a leak in shop.ini detected",
        || {
            c.requests("/srv/shop/run/shop.sock", "/leak", 3);
            c.records("shop.ini", "detected").into_iter().next()
        },
    );
    // The host's one action slot (max-concurrent = 1) may be held meanwhile by cart.ini's
    // touch until its verification ends, up to `verify` (60 s): wait beyond that, so that
    // a slow verification of cart.ini fails in its own step, not here.
    let action = wait_for(Duration::from_secs(120), "a recycle of shop.ini", || {
        c.records("shop.ini", "action").into_iter().next()
    });
    assert_eq!(action["action"], "recycle-worker", "{action}");
    let outcome = c.record_of(&action, "outcome");
    assert_eq!(outcome["result"], "recovered", "{outcome}");
    let detected = c.record_of(&action, "detected");
    assert_eq!(detected["role"], "worker", "{detected}");
    assert_eq!(action["pids"][0], detected["pid"], "{action}\n{detected}");
    assert_eq!(detected["top"][0]["target"], "/srv/shop/static/cat.jpg");
    eprintln!("step 2, the worker: {action}\n{outcome}");
    // A worker at its limit refuses connections and the other takes the requests: it may
    // have leaked too. Either way every process ends up back under its line.
    let health = wait_for(Duration::from_secs(60), "shop.ini healthy again", || {
        let out = c.run(&["vassal-warden", "health"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    eprintln!("step 2, afterwards: {health}");
    detected
}

/// Step 2b: `cart.ini`'s master leaks once after its start: the warden touches the file
/// the vassal's symlink points to, and the Emperor's reload cures it.
fn touches_the_symlink_target_for_a_leaking_master(c: &Container) {
    let action = wait_for(Duration::from_secs(60), "a touch of cart.ini", || {
        c.records("cart.ini", "action").into_iter().next()
    });
    assert_eq!(action["action"], "touch", "{action}");
    assert_eq!(action["path"], "/etc/shop/cart.ini", "{action}");
    assert_eq!(action["config"], "/etc/uwsgi-emperor/vassals/cart.ini");
    assert_eq!(c.record_of(&action, "detected")["role"], "master");
    let outcome = c.record_of(&action, "outcome");
    assert_eq!(outcome["result"], "recovered", "{outcome}");
    eprintln!("step 2, the master: {action}\n{outcome}");
}

/// Step 3: the incident log is 0640 in a 0750 directory, both root:adm, and the journal
/// has the incident as a warning with its fields.
fn records_the_incident_in_the_log_and_the_journal(c: &Container, detected: &Value) {
    let modes = c.ok(&[
        "stat",
        "-c",
        "%a %U:%G %n",
        "/var/log/vassal-warden",
        &format!("/{LOG}"),
    ]);
    assert_eq!(
        modes.trim(),
        format!("750 root:adm /var/log/vassal-warden\n640 root:adm /{LOG}")
    );
    let warnings = c.ok(&[
        "journalctl",
        "-u",
        "vassal-warden",
        "-p",
        "warning",
        "-o",
        "json",
    ]);
    let line = warnings
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|j| j["INCIDENT"] == detected["incident"] && j["PLAN"].is_string())
        .unwrap_or_else(|| panic!("no warning of {detected} in the journal:\n{warnings}"));
    // The line itself names what it is about, for whoever reads only the message
    // (`journalctl -p warning`, a forwarded syslog line, logcheck).
    let message = line["MESSAGE"].as_str().unwrap();
    let what = format!(
        "shop.ini: {} {} at {}/{} fds (",
        detected["role"].as_str().unwrap(),
        detected["pid"],
        detected["fds"],
        detected["limit"]
    );
    assert!(
        message.starts_with(&what)
            && ["recycling worker", "touching its file"]
                .iter()
                .any(|a| message.contains(a)),
        "{line}"
    );
    assert_eq!(line["PRIORITY"], "4", "{line}");
    assert_eq!(line["VASSAL"], "shop.ini", "{line}");
    assert_eq!(line["PID"], detected["pid"].to_string(), "{line}");
    eprintln!("step 3: {}\n{line}", modes.trim());
}

/// Step 3b: the `on-event` hook (every record, `on-event-for = all`) runs inside the
/// unit's sandbox and is given each record as the log has it; the package installs the
/// alert rules and the dashboard.
fn the_alert_hook_hears_every_record_under_the_unit(c: &Container) {
    let heard_file = c.root.join(HEARD);
    let (heard, log) = wait_for(Duration::from_secs(60), "the hook's runs", || {
        let log = read_records(&c.root.join(LOG));
        let heard = read_records(&heard_file);
        (!log.is_empty() && heard.len() >= log.len()).then_some((heard, log))
    });
    assert_eq!(
        heard[..log.len()],
        log[..],
        "the hook heard other records than the log's"
    );
    let failures = c.journal();
    assert!(!failures.contains("on-event hook /"), "{failures}");
    for file in [
        "usr/share/vassal-warden/prometheus/vassal-warden.rules.yml",
        "usr/share/vassal-warden/grafana/vassal-warden.json",
        "usr/share/doc/vassal-warden/alerting.md",
    ] {
        assert!(c.root.join(file).is_file(), "the package lacks /{file}");
    }
    eprintln!("step 3b: the hook heard {} records", heard.len());
}

/// Step 4: `systemctl reload` with a broken warden.ini fails (the unit tests the file
/// first, `check -t`) and says which line; the warden keeps running on the configuration
/// in force, never told to re-read it. Put back, the file reloads.
fn a_broken_config_on_reload_keeps_the_old_one(c: &Container) {
    let ini = c.root.join("etc/vassal-warden/warden.ini");
    let shipped = fs::read(&ini).unwrap();
    fs::write(&ini, "[warden]\ninterval = soon\n").unwrap();
    let pid = c.show("MainPID")["MainPID"].clone();
    let out = c.run(&["systemctl", "reload", "vassal-warden"]);
    assert!(!out.status.success(), "the reload of a bad file succeeded");
    let said = wait_for(Duration::from_secs(30), "the reload's complaint", || {
        c.journal()
            .lines()
            .find(|l| l.contains("warden.ini:2: "))
            .map(str::to_owned)
    });
    eprintln!("step 4: {said}");
    let journal = c.journal();
    assert!(
        !journal.contains("SIGHUP: re-reading"),
        "the daemon was told to re-read a bad file:\n{journal}"
    );
    let show = c.show("ActiveState,MainPID");
    assert_eq!(
        (show["ActiveState"].as_str(), &show["MainPID"]),
        ("active", &pid)
    );
    // A restart (the next step) would refuse this file: exit 2, not restarted.
    fs::write(&ini, shipped).unwrap();
    c.ok(&["systemctl", "reload", "vassal-warden"]);
    wait_for(
        Duration::from_secs(30),
        "the reload of the good file",
        || c.journal().contains("configuration re-read").then_some(()),
    );
}

/// Step 5: a loop that stops feeding the watchdog (SIGSTOP) is killed and restarted. The
/// drop-in's 3 s watchdog has been running all along without a restart.
fn the_watchdog_restarts_a_stopped_loop(c: &Container) {
    let before = c.show("MainPID,NRestarts");
    assert_eq!(before["NRestarts"], "0", "{}", c.journal());
    // The shell's kill: there is no /bin/kill in a minimal root.
    c.ok(&["sh", "-c", &format!("kill -STOP {}", before["MainPID"])]);
    wait_for(Duration::from_secs(60), "the watchdog's restart", || {
        let now = c.show("ActiveState,MainPID,NRestarts");
        // At least one restart: trixie's systemd sometimes fails its first spawn after a
        // watchdog kill ("Failed to spawn executor") and counts a second.
        let restarts: u32 = now["NRestarts"].parse().unwrap_or(0);
        (now["ActiveState"] == "active"
            && restarts >= 1
            && now["MainPID"] != before["MainPID"]
            && now["MainPID"] != "0")
            .then_some(())
    });
    let journal = c.journal();
    assert!(journal.contains("Watchdog timeout"), "{journal}");
    let after = c.show("MainPID,NRestarts");
    eprintln!("step 5: {before:?} then {after:?}");
}

/// Step 6: `vassal-warden check` run with the unit's own sandbox finds no problem; the same
/// without `CAP_KILL` says it cannot recycle.
fn check_passes_under_the_units_capabilities(c: &Container) {
    let unit = fs::read_to_string(c.root.join("lib/systemd/system/vassal-warden.service")).unwrap();
    let props = sandbox(&unit);
    let out = c.check(&props);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}\n{text}");
    assert!(text.contains("no problems found"), "{text}");
    assert!(text.contains("links to /etc/shop/shop.ini"), "{text}");
    let without_kill: Vec<String> = props
        .iter()
        .map(|p| match p.strip_prefix("CapabilityBoundingSet=") {
            Some(caps) => format!(
                "CapabilityBoundingSet={}",
                caps.split_whitespace()
                    .filter(|c| *c != "CAP_KILL")
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            None => p.clone(),
        })
        .collect();
    assert_ne!(props, without_kill, "the unit has no CAP_KILL to take away");
    // With the warden running, `check` judges the warden's own abilities; stopped, it
    // judges the unit it runs in.
    c.ok(&["systemctl", "stop", "vassal-warden"]);
    let out = c.check(&without_kill);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{out:?}\n{text}");
    assert!(text.contains("lacks CAP_KILL"), "{text}");
    assert!(text.contains("judged for this command"), "{text}");
    eprintln!("step 6, without CAP_KILL: {text}");
}

/// Step 7: stopped on purpose (step 6 stopped it), the warden is CRITICAL to a monitoring
/// check, and its textfile is gone: `node_exporter` serves none of its series.
fn a_stopped_warden_is_critical_and_serves_no_metrics(c: &Container) {
    let out = c.run(&["vassal-warden", "health"]);
    let line = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{line}");
    assert!(
        line.starts_with("VASSAL-WARDEN CRITICAL - no vassal-warden runs with the incident log /var/log/vassal-warden/incidents.jsonl"),
        "{line}"
    );
    let textfile = c
        .root
        .join(TEXTFILE_DIR.trim_start_matches('/'))
        .join("vassal-warden.prom");
    assert!(!textfile.exists(), "{} is still there", textfile.display());
    eprintln!("step 7: {}", line.trim());
}

/// Step 8: a textfile a warden that died left behind goes with the package on purge, and
/// so does the configuration.
fn purge_leaves_no_textfile(c: &Container) {
    let textfile = c
        .root
        .join(TEXTFILE_DIR.trim_start_matches('/'))
        .join("vassal-warden.prom");
    fs::write(&textfile, "vassal_warden_up 1\n").unwrap();
    c.ok(&["dpkg", "--purge", "vassal-warden"]);
    assert!(
        !textfile.exists(),
        "{} survived the purge",
        textfile.display()
    );
    assert!(!c.root.join("etc/vassal-warden").exists());
    eprintln!("step 8: purged, no textfile");
}

/// The unit's `[Service]` settings that shape what the process may do, as
/// `systemd-run -p` arguments: all but how it is started, reloaded and restarted.
fn sandbox(unit: &str) -> Vec<String> {
    const NOT_SANDBOX: [&str; 8] = [
        "Type",
        "NotifyAccess",
        "ExecStart",
        "ExecReload",
        "WatchdogSec",
        "Restart",
        "RestartSec",
        "RestartPreventExitStatus",
    ];
    let mut section = "";
    let mut props = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section == "[Service]" && !line.is_empty() && !line.starts_with('#') {
            let key = line.split_once('=').map_or(line, |(k, _)| k);
            if !NOT_SANDBOX.contains(&key) {
                props.push(line.to_owned());
            }
        }
    }
    props
}

/// The `.deb` under test: `$VASSAL_WARDEN_DEB`, else what `scripts/build-deb` builds
/// (it prints the path), else a stand-in built here from the binary under test.
fn deb_package() -> PathBuf {
    if let Some(p) = std::env::var_os("VASSAL_WARDEN_DEB") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "VASSAL_WARDEN_DEB={} is not a file",
            p.display()
        );
        return p;
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(manifest.join("scripts/build-deb"))
        .current_dir(manifest)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "scripts/build-deb failed: {out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let path = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    assert!(
        path.is_file(),
        "scripts/build-deb printed {stdout:?}, not a .deb"
    );
    path
}

/// The cached tarball of the base root, built by `mmdebstrap` under a lock when missing.
fn base_root(suite: &str) -> PathBuf {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test boots a Debian root with systemd-nspawn, which needs root: run \
         scripts/test as root"
    );
    for tool in ["mmdebstrap", "systemd-nspawn", "nsenter"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .unwrap()
                .success(),
            "{tool} is missing: this test boots a Debian root with systemd-nspawn; \
             run scripts/ensure-nspawn (as root) to install mmdebstrap and systemd-container"
        );
    }
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("systemd");
    fs::create_dir_all(&cache).unwrap();
    let tar = cache.join(format!("{suite}-{:016x}.tar", fnv1a(PACKAGES)));
    let lock = fs::File::create(cache.join("root.lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    if !tar.exists() {
        let partial = tar.with_extension("partial");
        let t = Instant::now();
        run_ok(
            Command::new("mmdebstrap")
                .args(["--quiet", "--variant=minbase", "--format=tar"])
                .arg(format!("--include={PACKAGES}"))
                .arg(suite)
                .arg(&partial),
        );
        fs::rename(&partial, &tar).unwrap();
        eprintln!("built {} in {:?}", tar.display(), t.elapsed());
    }
    tar
}

/// A stable name for the package list (the cache key).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A booted copy of the base root, in its own temporary directory. Dropping it powers the
/// container off (SIGTERM to `systemd-nspawn`, SIGKILL if it hangs) and removes the tree.
struct Container {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    name: String,
    boot: Option<Child>,
    boot_log: PathBuf,
    /// The container's PID 1, as the host sees it.
    leader: i32,
}

impl Container {
    /// Extracts the base root, installs the .deb and the shop into it, unbooted.
    fn prepare(base: &Path, deb: &Path) -> Container {
        let dir = tempfile::Builder::new()
            .prefix("vw-nspawn-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        let c = Container {
            root,
            boot_log: dir.path().join("boot.log"),
            dir: Some(dir),
            name: format!("vw-test-{}", std::process::id()),
            boot: None,
            leader: 0,
        };
        run_ok(
            Command::new("tar")
                .args(["--numeric-owner", "-xf"])
                .arg(base)
                .arg("-C")
                .arg(&c.root),
        );
        c.add_shop();
        let mut install = c.nspawn();
        install
            .arg("--pipe")
            .arg(format!(
                "--bind-ro={}:/mnt/vassal-warden.deb",
                deb.display()
            ))
            .args(["--", "sh", "-c"])
            .arg(format!(
                "dpkg -i /mnt/vassal-warden.deb && systemctl enable vassal-warden && \
                 mkdir -p {TEXTFILE_DIR} && \
                 sed -i 's|^\\[warden\\]$|[warden]\\non-event = {HOOK}\\non-event-for = all\\nmetrics-textfile = {TEXTFILE_DIR}/vassal-warden.prom|' \
                 /etc/vassal-warden/warden.ini && grep -q '^on-event = ' /etc/vassal-warden/warden.ini"
            ));
        let out = install.output().unwrap();
        assert!(
            out.status.success(),
            "cannot install the package in the container (is systemd-nspawn able to run \
             here? it needs root and the right to make namespaces and mounts): {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        c
    }

    /// `systemd-nspawn` on this root, as every call here needs it (there is no host
    /// systemd to register with).
    fn nspawn(&self) -> Command {
        let mut cmd = Command::new("systemd-nspawn");
        cmd.arg("-q")
            .arg("-D")
            .arg(&self.root)
            .args(["--register=no", "--keep-unit", "--private-network"])
            .arg(format!("--machine={}", self.name))
            .stdin(Stdio::null());
        cmd
    }

    /// Two `www-data` vassals of the leaky app, each a symlink from the Emperor's vassal
    /// directory to a file in /etc/shop: `shop.ini` leaks a file per request, `cart.ini`
    /// leaks 40 files in its master once, after its first start. And a 3 s watchdog.
    fn add_shop(&self) {
        let at = |p: &str| self.root.join(p);
        for d in ["etc/shop", "srv/shop/static", "srv/shop/run"] {
            fs::create_dir_all(at(d)).unwrap();
        }
        fs::write(at("srv/shop/app.py"), LEAKY_APP).unwrap();
        fs::write(at("srv/shop/static/cat.jpg"), b"\xff\xd8 not really a cat").unwrap();
        fs::write(at("srv/shop/static/config.db"), b"settings").unwrap();
        std::os::unix::fs::chown(at("srv/shop/run"), Some(WWW_DATA), Some(WWW_DATA)).unwrap();
        let ini = |name: &str, extra: &str| {
            format!(
                "[uwsgi]\nplugins = python3\nmaster = true\nprocesses = 2\nuid = www-data\n\
                 gid = www-data\nhttp-socket = /srv/shop/run/{name}.sock\n\
                 wsgi-file = /srv/shop/app.py\nmax-fd = 64\n{extra}"
            )
        };
        fs::write(at("etc/shop/shop.ini"), ini("shop", "")).unwrap();
        let cart = "enable-threads = true\nenv = MASTER_LEAK_PER_SEC=20\n\
                    env = MASTER_LEAK_UPTO=40\nenv = MASTER_LEAK_ONCE=/srv/shop/run/cart-leaked\n";
        fs::write(at("etc/shop/cart.ini"), ini("cart", cart)).unwrap();
        for name in ["shop.ini", "cart.ini"] {
            let link = at("etc/uwsgi-emperor/vassals").join(name);
            std::os::unix::fs::symlink(format!("/etc/shop/{name}"), link).unwrap();
        }
        // The alert hook: root's, as the warden requires; it keeps what it is given.
        fs::create_dir_all(at("usr/local/sbin")).unwrap();
        fs::create_dir_all(at(HEARD).parent().unwrap()).unwrap();
        let hook = at(HOOK.trim_start_matches('/'));
        fs::write(&hook, format!("#!/bin/sh\ncat >> /{HEARD}\n")).unwrap();
        fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
        let dropin = at("etc/systemd/system/vassal-warden.service.d");
        fs::create_dir_all(&dropin).unwrap();
        fs::write(dropin.join("watchdog.conf"), "[Service]\nWatchdogSec=3s\n").unwrap();
    }
}

impl Container {
    /// Boots the root, and waits until systemd says the system is up.
    fn boot(&mut self) {
        let log = fs::File::create(&self.boot_log).unwrap();
        let mut cmd = self.nspawn();
        cmd.args(["--boot"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0);
        // `timeout` powers it off should this process die without dropping it.
        let mut wrapped = Command::new("timeout");
        wrapped
            .args([
                "--kill-after=20",
                "900",
                cmd.get_program().to_str().unwrap(),
            ])
            .args(cmd.get_args())
            .stdin(Stdio::null())
            .stdout(
                fs::File::options()
                    .append(true)
                    .open(&self.boot_log)
                    .unwrap(),
            )
            .stderr(
                fs::File::options()
                    .append(true)
                    .open(&self.boot_log)
                    .unwrap(),
            )
            .process_group(0);
        let child = wrapped.spawn().expect("cannot start systemd-nspawn");
        let timeout_pid = child.id().cast_signed();
        self.boot = Some(child);
        self.leader = wait_for(Duration::from_secs(30), "the container's PID 1", || {
            let nspawn = *crate::harness::children(timeout_pid).first()?;
            crate::harness::children(nspawn)
                .into_iter()
                .find(|&p| is_namespace_init(p))
        });
        // Until PID 1 listens, systemctl cannot connect and says nothing on stdout.
        let state = wait_for(Duration::from_secs(120), "systemd in the container", || {
            let out = self.run(&["timeout", "60", "systemctl", "is-system-running", "--wait"]);
            let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            (!state.is_empty()).then_some(state)
        });
        assert_eq!(
            state,
            "running",
            "the container did not come up cleanly:\n{}\n{}",
            String::from_utf8_lossy(&self.run(&["systemctl", "--failed", "--no-pager"]).stdout),
            fs::read_to_string(&self.boot_log).unwrap_or_default()
        );
    }

    /// `ARGV` inside the container, with a clean environment.
    fn run(&self, argv: &[&str]) -> Output {
        assert!(self.leader > 0, "the container is not booted");
        Command::new("nsenter")
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C.UTF-8")
            .args(["-t", &self.leader.to_string(), "-a", "--"])
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `ARGV` inside the container, which must succeed; its stdout.
    fn ok(&self, argv: &[&str]) -> String {
        let out = self.run(argv);
        assert!(
            out.status.success(),
            "{argv:?} failed in the container ({}): {}\n{}\njournal:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.journal()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `systemctl show -p PROPS vassal-warden`, as a map.
    fn show(&self, props: &str) -> std::collections::HashMap<String, String> {
        self.ok(&["systemctl", "show", "-p", props, "vassal-warden"])
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// The unit's journal of this boot (the warden's lines and systemd's about it).
    fn journal(&self) -> String {
        let out = self.run(&["journalctl", "-b", "-u", "vassal-warden", "--no-pager"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The incident log's records of `vassal` with `event`.
    fn records(&self, vassal: &str, event: &str) -> Vec<Value> {
        read_records(&self.root.join(LOG))
            .into_iter()
            .filter(|r| r["vassal"] == vassal && r["event"] == event)
            .collect()
    }

    /// The record with `event` of the same incident as `of`, waited for.
    fn record_of(&self, of: &Value, event: &str) -> Value {
        let vassal = of["vassal"].as_str().unwrap();
        wait_for(
            Duration::from_secs(90),
            &format!("{vassal}'s {event}"),
            || {
                self.records(vassal, event)
                    .into_iter()
                    .find(|r| r["incident"] == of["incident"])
            },
        )
    }

    /// `n` requests for `path` to the vassal listening on `socket`, from inside.
    fn requests(&self, socket: &str, path: &str, n: u32) {
        self.ok(&["python3", "-c", REQUESTS, socket, path, &n.to_string()]);
    }

    /// `vassal-warden check` in a transient unit with `props`.
    fn check(&self, props: &[String]) -> Output {
        let mut argv = vec!["systemd-run", "--wait", "--pipe", "--quiet"];
        for p in props {
            argv.extend(["-p", p.as_str()]);
        }
        argv.extend(["/usr/bin/vassal-warden", "check"]);
        self.run(&argv)
    }
}

/// Whether host PID `pid` is PID 1 of its own PID namespace.
fn is_namespace_init(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .is_some_and(|ids| ids.split_whitespace().last() == Some("1"))
    })
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() && self.leader > 0 {
            eprintln!("--- journal of vassal-warden ---\n{}", self.journal());
            eprintln!(
                "--- incident log ---\n{}",
                fs::read_to_string(self.root.join(LOG)).unwrap_or_default()
            );
        }
        if let Some(mut child) = self.boot.take() {
            let pid = Pid::from_raw(child.id().cast_signed()).unwrap();
            // `timeout` passes SIGTERM on to systemd-nspawn: a clean poweroff.
            let _ = rustix::process::kill_process(pid, Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            if child.try_wait().ok().flatten().is_none() {
                // Killing a PID namespace's init kills everything in it.
                if let Some(init) = Pid::from_raw(self.leader) {
                    let _ = rustix::process::kill_process(init, Signal::KILL);
                }
                let _ = rustix::process::kill_process_group(pid, Signal::KILL);
            }
            let _ = child.wait();
        }
        // What nspawn leaves on the host (an empty directory), then the tree.
        let _ = fs::remove_dir(format!("/run/systemd/nspawn/propagate/{}", self.name));
        if let Some(dir) = self.dir.take()
            && let Err(e) = dir.close()
        {
            eprintln!("cannot remove the container's tree: {e}");
        }
    }
}
