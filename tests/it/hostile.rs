//! A shared host, tried as an attacker and as an unlucky host would: what the warden
//! trusts, whom it signals, and what it touches.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::bin;
use crate::harness::{Emperor, VassalSpec, Warden, wait_for};

pub(crate) fn status_json(cfg: &str) -> Value {
    let out = Command::new(bin())
        .args(["status", "-c", cfg, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Role → PIDs of the vassal named `name`, as `status --json` shows them.
fn roles(cfg: &str, name: &str) -> BTreeMap<String, Vec<i64>> {
    roles_in(&status_json(cfg), name)
}

/// Role → PIDs of the vassal named `name` in a report of `status --json`.
pub(crate) fn roles_in(status: &Value, name: &str) -> BTreeMap<String, Vec<i64>> {
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let vassal = status["vassals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["vassal"] == name)
        .cloned()
        .unwrap_or(Value::Null);
    for p in vassal["processes"].as_array().into_iter().flatten() {
        out.entry(p["role"].as_str().unwrap().to_owned())
            .or_default()
            .push(p["pid"].as_i64().unwrap());
    }
    out
}

pub(crate) fn start_time(pid: i64) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19).map(str::to_owned)
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every kind of process uWSGI runs under a master, next to two workers that leak: the
/// warden shows each role and signals workers only. An attached daemon that holds files
/// (under its line) is not taken for a worker (SIGHUP would kill it), and a sub-Emperor
/// is not sent SIGHUP (that reloads all of its vassals).
#[test]
fn only_workers_are_recycled_never_the_other_children_of_a_master() {
    let emp = Emperor::start();
    add_busy_vassal(&emp);
    let root = emp.root().to_owned();
    let audit = root.join("incidents.jsonl");
    let cfg = emp.config("[policy]\nreload-at = 40\nfor = 1\ncooldown = 10m\nverify = 30s\n");
    let cfg = cfg.as_str();
    let before = wait_for(Duration::from_secs(60), "every role of busy.ini", || {
        let r = roles(cfg, "busy.ini");
        BUSY_ROLES
            .iter()
            .all(|(role, n)| r.get(*role).map(Vec::len) == Some(*n))
            .then_some(r)
    });
    let attached = before["attached"][0];
    wait_for(Duration::from_secs(30), "the daemon's 20 files", || {
        (fs::read_dir(format!("/proc/{attached}/fd")).ok()?.count() > 20).then_some(())
    });
    let others: Vec<(i64, String)> = ["mule", "spooler", "gateway", "emperor", "attached"]
        .iter()
        .map(|r| before[*r][0])
        .map(|pid| (pid, start_time(pid).unwrap()))
        .collect();
    let inner_master = wait_for(Duration::from_secs(60), "the inner vassal", || {
        emp_inner_master(before["emperor"][0])
    });

    let warden = Warden::start_with_config(&bin(), std::path::Path::new(cfg), &audit, &[]);
    for _ in 0..2000 {
        if emp.request("busy.ini", "/leak").1 >= 45 {
            break;
        }
    }
    let action = warden.wait_record("action", 0);
    assert_eq!(action["action"], "recycle-worker", "{action}");
    for pid in action["pids"].as_array().unwrap() {
        assert!(
            before["worker"].contains(&pid.as_i64().unwrap()),
            "{action}"
        );
    }
    assert_eq!(warden.wait_record("outcome", 0)["result"], "recovered");
    std::thread::sleep(Duration::from_secs(1));
    for (pid, st) in &others {
        assert_eq!(
            start_time(*pid).as_ref(),
            Some(st),
            "PID {pid} (not a worker) was replaced: {:?}",
            warden.records()
        );
    }
    assert_eq!(emp_inner_master(before["emperor"][0]), Some(inner_master));
    assert!(
        !warden.records().iter().any(|r| r["pid"] == attached),
        "the attached daemon was taken for a process of the vassal: {:?}",
        warden.records()
    );
}

/// Each role `busy.ini` runs beside its master, and how many of it.
pub(crate) const BUSY_ROLES: [(&str, usize); 6] = [
    ("worker", 2),
    ("mule", 1),
    ("spooler", 1),
    ("gateway", 1),
    ("emperor", 1),
    ("attached", 1),
];

/// `busy.ini`: two workers (worker 1 leaks on `/leak`), a mule, a spooler, an `http`
/// gateway, an attached daemon holding 20 files (under the tests' line of 40), and a
/// sub-Emperor with one vassal.
pub(crate) fn add_busy_vassal(emp: &Emperor) {
    let root = emp.root().to_owned();
    fs::create_dir_all(root.join("spool")).unwrap();
    fs::create_dir_all(root.join("sub")).unwrap();
    fs::write(
        root.join("sub/inner.ini"),
        format!(
            "[uwsgi]\n{plugin}master = true\nprocesses = 1\n\
             socket = {r}/run/inner.sock\nwsgi-file = {r}/app.py\n",
            r = root.display(),
            plugin = emp.python_plugin()
        ),
    )
    .unwrap();
    let daemon = "exec python3 -c \"import time; f = [open('/dev/null') for _ in range(20)]; time.sleep(600)\"";
    emp.add_vassal(
        "busy.ini",
        &VassalSpec {
            processes: 2,
            extra: vec![
                "plugins = http".into(),
                "mules = 1".into(),
                format!("spooler = {}/spool", root.display()),
                format!("http = 127.0.0.1:{}", free_port()),
                format!("attach-daemon = {daemon}"),
                format!("emperor = {}/sub", root.display()),
                "env = LEAK_WORKER=1".into(),
            ],
            ..VassalSpec::default()
        },
    );
}

/// The master of the sub-Emperor's one vassal, with its start time.
fn emp_inner_master(sub_emperor: i64) -> Option<(i64, String)> {
    let kids =
        fs::read_to_string(format!("/proc/{sub_emperor}/task/{sub_emperor}/children")).ok()?;
    let pid: i64 = kids.split_whitespace().next()?.parse().ok()?;
    Some((pid, start_time(pid)?))
}

/// A process of `nobody` that calls itself `uwsgi-x` and names an `--emperor` directory
/// and an `--ini` FIFO: not an Emperor (its executable is not uWSGI), so nothing it
/// names is opened, and `status` neither hangs on the FIFO nor lists it.
/// The Emperors `status --json` finds, with no vassals in its config (the sources come
/// from the running Emperors): its whole report, and their PIDs.
fn emperors_found(root: &Path) -> (Value, Vec<i64>) {
    let cfg = crate::harness::write_config(root, "warden.ini", &[], "");
    let out = Command::new("timeout")
        .arg("30")
        .arg(bin())
        .args(["status", "--json", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "status did not finish: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let emperors = status["emperors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_i64().unwrap())
        .collect();
    (status, emperors)
}

#[test]
fn a_process_named_uwsgi_is_not_taken_for_an_emperor() {
    let emp = Emperor::start();
    emp.add_vassal("shop.ini", &VassalSpec::default());
    emp.wait_running("shop.ini", 1);
    let root = emp.root().to_owned();
    let fifo = root.join("fifo.ini");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    fs::create_dir_all(root.join("fake")).unwrap();
    let script = format!(
        "exec -a uwsgi-x python3 -c 'import time; time.sleep(300)' --emperor {} --ini {}",
        root.join("fake").display(),
        fifo.display()
    );
    let fake = crate::harness::Group::spawn(Command::new("setpriv").args([
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        "bash",
        "-c",
        &script,
    ]));
    wait_for(Duration::from_secs(10), "the fake's title", || {
        fs::read(format!("/proc/{}/cmdline", fake.pid()))
            .ok()
            .filter(|c| c.starts_with(b"uwsgi-x"))
    });
    let (status, emperors) = emperors_found(&root);
    assert!(emperors.contains(&i64::from(emp.emperor_pid())), "{status}");
    assert!(!emperors.contains(&i64::from(fake.pid())), "{status}");
}

/// An ini whose mtime is before 1970: the touch is recorded (the mtime as `@SECONDS`)
/// and verified, instead of a panic between the touch and its record, which left no
/// record to hold the cooldown after a restart.
#[test]
fn an_mtime_before_1970_is_recorded_not_a_panic() {
    let emp = Emperor::start();
    let ini = emp.add_vassal("old.ini", &VassalSpec::default());
    emp.wait_running("old.ini", 1);
    // The Emperor compares whole seconds: a touch within the second it loaded the file in
    // would go unseen, however far back the file's mtime was set.
    std::thread::sleep(Duration::from_millis(1100));
    assert!(
        Command::new("touch")
            .args(["-d", "1960-01-01T00:00:00Z"])
            .arg(&ini)
            .status()
            .unwrap()
            .success()
    );
    let warden = Warden::start(
        &bin(),
        &emp,
        "reload-at = 40\nfor = 1\naction = touch\ncooldown = 10m\nverify = 30s\n",
        &[],
    );
    emp.leak("old.ini", 45);
    let action = warden.wait_record("action", 0);
    assert_eq!(action["action"], "touch", "{action}");
    assert_eq!(action["mtime_before"], "@-315619200", "{action}");
    assert_eq!(warden.wait_record("outcome", 0)["result"], "recovered");
    assert!(!warden.log().contains("panicked"), "{}", warden.log());
}

fn chown_nobody(path: &std::path::Path) {
    std::os::unix::fs::lchown(path, Some(65534), Some(65534)).unwrap();
}

fn mtime_of(path: &std::path::Path) -> std::time::SystemTime {
    fs::metadata(path).unwrap().modified().unwrap()
}

/// A tenant who owns a vassal file names a root-owned file and another tenant's ini as
/// its `touch-chain-reload` file: the warden heals the tenant's vassal without touching
/// either (uWSGI would reload the other tenant on that touch).
#[test]
fn a_tenants_chain_reload_file_cannot_make_root_touch_others_files() {
    let emp = Emperor::start();
    let root = emp.root().to_owned();
    let other = emp.add_vassal("other.ini", &VassalSpec::default());
    let system = root.join("system.conf");
    fs::write(&system, "root's\n").unwrap();
    for (name, chain) in [("tenant.ini", &system), ("tenant2.ini", &other)] {
        let ini = emp.ini_path(name);
        let text = emp.ini_text(&VassalSpec {
            extra: vec![
                format!("touch-chain-reload = {}", chain.display()),
                "[vassal-warden]".into(),
                "action = chain-reload".into(),
            ],
            ..VassalSpec::default()
        });
        fs::write(&ini, text).unwrap();
        chown_nobody(&ini);
    }
    emp.wait_running("other.ini", 1);
    emp.wait_running("tenant.ini", 1);
    emp.wait_running("tenant2.ini", 1);
    std::thread::sleep(Duration::from_millis(1100));
    let (system_before, other_before) = (mtime_of(&system), mtime_of(&other));
    let warden = Warden::start(
        &bin(),
        &emp,
        "reload-at = 40\nfor = 1\ncooldown = 10m\nverify = 30s\n",
        &[],
    );
    emp.leak("tenant.ini", 45);
    emp.leak("tenant2.ini", 45);
    wait_for(Duration::from_secs(60), "both tenants' outcomes", || {
        let outcomes: Vec<Value> = warden
            .records()
            .into_iter()
            .filter(|r| r["event"] == "outcome")
            .collect();
        (outcomes.len() >= 2).then_some(outcomes)
    });
    let records = warden.records();
    for r in records.iter().filter(|r| r["event"] == "action") {
        assert!(
            r["path"] == emp.ini_path("tenant.ini").to_str().unwrap()
                || r["path"] == emp.ini_path("tenant2.ini").to_str().unwrap(),
            "touched for a tenant: {r}"
        );
    }
    assert_eq!(mtime_of(&system), system_before, "{records:#?}");
    assert_eq!(mtime_of(&other), other_before, "{records:#?}");
    assert_eq!(emp.reloads("other.ini"), 0);
    // Said once for each tenant, not on every pass it is read.
    let said = warden.log().matches("touch-chain-reload not used").count();
    assert_eq!(said, 2, "{}", warden.log());
}

/// A tenant's vassal declares another tenant's pidfile (its master, running as root,
/// even writes its own PID there): each vassal is still mapped to its own master, and
/// no two vassals share one.
#[test]
fn a_pidfile_cannot_map_a_vassal_to_another_tenants_master() {
    let emp = Emperor::start();
    let root = emp.root().to_owned();
    let pidfile = root.join("run/owner.pid");
    emp.add_vassal(
        "owner.ini",
        &VassalSpec {
            extra: vec![format!("pidfile = {}", pidfile.display())],
            ..VassalSpec::default()
        },
    );
    emp.wait_running("owner.ini", 1);
    let ini = emp.ini_path("tenant.ini");
    let text = emp.ini_text(&VassalSpec {
        extra: vec![format!("pidfile = {}", pidfile.display())],
        ..VassalSpec::default()
    });
    fs::write(&ini, text).unwrap();
    chown_nobody(&ini);
    emp.wait_running("tenant.ini", 1);
    let cfg = emp.config("");
    let masters = |name: &str| roles(&cfg, name).get("master").cloned();
    let (owner, tenant) = (emp.master_of("owner.ini"), emp.master_of("tenant.ini"));
    assert_ne!(owner, tenant);
    wait_for(Duration::from_secs(20), "the pidfile rewritten", || {
        fs::read_to_string(&pidfile)
            .ok()
            .filter(|p| p.trim().parse().ok() == tenant)
    });
    assert_eq!(masters("owner.ini"), Some(vec![i64::from(owner.unwrap())]));
    assert_eq!(
        masters("tenant.ini"),
        Some(vec![i64::from(tenant.unwrap())])
    );
}

/// A vassal whose own section asks for a verification of a hundred years (and fires at
/// one fd) cannot hold the host's action slot: its `verify` is refused and warden.ini's
/// is used, so a leaking neighbour is still healed.
#[test]
fn a_vassal_cannot_hold_the_action_slot_with_its_own_verify() {
    let emp = Emperor::start();
    emp.add_vassal(
        "greedy.ini",
        &VassalSpec {
            extra: vec![
                "[vassal-warden]".into(),
                "reload-at = 1".into(),
                "verify = 36500d".into(),
                "cooldown = 1s".into(),
            ],
            ..VassalSpec::default()
        },
    );
    emp.add_vassal("leaky.ini", &VassalSpec::default());
    emp.wait_running("greedy.ini", 1);
    emp.wait_running("leaky.ini", 1);
    let warden = Warden::start(
        &bin(),
        &emp,
        "reload-at = 40\nfor = 1\naction = touch\ncooldown = 10m\nverify = 3s\n",
        &[],
    );
    emp.leak("leaky.ini", 45);
    let healed = wait_for(Duration::from_secs(60), "leaky.ini healed", || {
        warden
            .records()
            .into_iter()
            .find(|r| r["vassal"] == "leaky.ini" && r["event"] == "action")
    });
    assert_eq!(healed["action"], "touch", "{healed}");
}

/// A tenant writes the PID of another vassal's master, whose title is rewritten (so no
/// command line says whose it is), into its own pidfile: that master does not run as the
/// tenant, so the claim is ignored and each vassal keeps its own master.
#[test]
fn two_vassals_never_claim_one_master() {
    let emp = Emperor::start();
    let root = emp.root().to_owned();
    emp.add_vassal(
        "shop.ini",
        &VassalSpec {
            extra: vec!["procname-master = shop master".into()],
            ..VassalSpec::default()
        },
    );
    let pidfile = root.join("run/tenant.pid");
    let ini = emp.ini_path("tenant.ini");
    fs::write(
        &ini,
        emp.ini_text(&VassalSpec {
            extra: vec![format!("pidfile = {}", pidfile.display())],
            ..VassalSpec::default()
        }),
    )
    .unwrap();
    chown_nobody(&ini);
    emp.wait_running("tenant.ini", 1);
    let cfg = emp.config("");
    let shop = wait_for(Duration::from_secs(30), "shop.ini mapped", || {
        roles(&cfg, "shop.ini").get("master").cloned()
    })[0];
    // The tenant's own pidfile now names the shop's master.
    fs::write(&pidfile, format!("{shop}\n")).unwrap();
    chown_nobody(&pidfile);
    for _ in 0..3 {
        let status = status_json(&cfg);
        let master_of = |name: &str| {
            status["vassals"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["vassal"] == name)
                .and_then(|v| v["processes"][0]["pid"].as_i64())
        };
        let state = |name: &str| {
            status["vassals"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["vassal"] == name)
                .map(|v| v["state"].clone())
        };
        let (s, t) = (master_of("shop.ini"), master_of("tenant.ini"));
        // The tenant's pidfile names a master that does not run as the tenant: ignored.
        assert_eq!(s, Some(shop), "{status}");
        assert!(t.is_some() && t != s, "{status}");
        assert_eq!(
            state("tenant.ini"),
            Some(Value::from("running")),
            "{status}"
        );
    }
}

/// A user runs uWSGI's own binary as an Emperor of a directory root owns (here after
/// root's Emperor; after a restart of root's it would be the older one): it speaks for
/// no source it does not own, so the vassals stay with root's Emperor.
#[test]
fn a_users_emperor_does_not_take_over_roots_vassal_directory() {
    use std::os::unix::fs::PermissionsExt;
    let emp = Emperor::start();
    emp.add_vassal("shop.ini", &VassalSpec::default());
    emp.wait_running("shop.ini", 1);
    // The user can read the directory, as on a real host.
    for d in [emp.root(), emp.vassals.as_path()] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    // From the user's own shell, as a user starts it (not exec'd: the shell stays above
    // it, a process of the user's).
    let theirs = crate::harness::Group::spawn(
        Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .args([
                "sh",
                "-c",
                "/usr/bin/uwsgi-core --emperor \"$0\" --emperor-freq 1000; :",
            ])
            .arg(&emp.vassals)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let theirs_pid = wait_for(Duration::from_secs(10), "the user's Emperor", || {
        crate::harness::children(theirs.pid()).first().copied()
    });
    let cfg = crate::harness::write_config(emp.root(), "warden.ini", &[], "");
    let check = wait_for(Duration::from_secs(60), "both Emperors seen", || {
        let out = Command::new(bin())
            .args(["check", "--json", "-c"])
            .arg(&cfg)
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        // Other tests' Emperors may run too: look for these two.
        let pids: Vec<i64> = v["emperors"]
            .as_array()?
            .iter()
            .filter_map(|e| e["pid"].as_i64())
            .collect();
        (pids.contains(&i64::from(theirs_pid)) && pids.contains(&i64::from(emp.emperor_pid())))
            .then_some(v)
    });
    let users = check["emperors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["pid"] == theirs_pid)
        .cloned()
        .unwrap();
    assert_eq!(users["sources"], Value::Array(vec![]), "{check:#}");
    // `check` says why its directory is not watched, and how root vouches for one.
    let why = users["unwatched"][0].as_str().unwrap_or_default();
    assert!(
        why.contains("runs as uid 65534") && why.contains("`vassals = "),
        "{check:#}"
    );
    let status = status_json(cfg.to_str().unwrap());
    let shop = status["vassals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["config"] == emp.ini_path("shop.ini").to_str().unwrap())
        .cloned()
        .unwrap();
    assert_eq!(shop["state"], "running", "{status:#}");
    assert_eq!(shop["emperor"], emp.emperor_pid(), "{status:#}");
}

/// A user's uWSGI Emperor left behind as a daemon (its shell gone, so it hangs from PID 1
/// with no login of the user's behind it, as a process a vassal daemonized does), naming
/// root's vassal directory: the kernel still knows that the user, not root, started it
/// (`AT_UID`), so root's own Emperor keeps running those vassals, and `check` says that
/// the other one is ignored. It does not leave root's directory without an Emperor.
#[test]
fn a_users_daemonized_emperor_does_not_take_roots_directory() {
    let emp = Emperor::start();
    emp.add_vassal("shop.ini", &VassalSpec::default());
    emp.wait_running("shop.ini", 1);
    // Its directory is not the user's to read: the user's Emperor spawns nothing.
    let script = "/usr/bin/uwsgi-core --emperor \"$0\" --emperor-freq 1000 </dev/null >/dev/null 2>&1 & echo $!";
    let mut theirs = crate::harness::Group::spawn(
        Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .args(["sh", "-c", script])
            .arg(&emp.vassals)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null()),
    );
    let (_, out) = theirs.pipes();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line).unwrap();
    let theirs_pid: i64 = line.trim().parse().unwrap();
    let parent = wait_for(Duration::from_secs(10), "the daemon's new parent", || {
        let stat = fs::read_to_string(format!("/proc/{theirs_pid}/stat")).ok()?;
        let ppid: i64 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        (ppid != i64::from(theirs.pid())).then_some(ppid)
    });
    assert_eq!(parent, 1, "not reparented to PID 1");
    let cfg = crate::harness::write_config(emp.root(), "warden.ini", &[], "");
    let check = wait_for(Duration::from_secs(60), "both Emperors seen", || {
        let out = Command::new(bin())
            .args(["check", "--json", "-c"])
            .arg(&cfg)
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let pids: Vec<i64> = v["emperors"]
            .as_array()?
            .iter()
            .filter_map(|e| e["pid"].as_i64())
            .collect();
        (pids.contains(&theirs_pid) && pids.contains(&i64::from(emp.emperor_pid()))).then_some(v)
    });
    let status = status_json(cfg.to_str().unwrap());
    let shop = status["vassals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["config"] == emp.ini_path("shop.ini").to_str().unwrap())
        .cloned()
        .unwrap();
    assert_eq!(shop["state"], "running", "{status:#}");
    assert_eq!(shop["emperor"], emp.emperor_pid(), "{status:#}");
    let problems = check["problems"].to_string();
    assert!(
        problems.contains(&format!(
            "{} is taken to run its vassals",
            emp.emperor_pid()
        )),
        "{check:#}"
    );
    // The daemon is in the group it was started in: ended with it.
    drop(theirs);
}

/// A tenant's vassal whose app (imported in the master, running as `nobody`) writes the
/// master's command line to name root's vassal file and an `--emperor` directory: it is
/// not taken for a sub-Emperor of root's, since below an Emperor only the vassal file
/// says what a process is (unless it runs as root), and that file says no `emperor`.
#[test]
fn a_tenants_forged_command_line_does_not_make_it_roots_sub_emperor() {
    use std::os::unix::fs::PermissionsExt;
    let emp = Emperor::start();
    emp.add_vassal("shop.ini", &VassalSpec::default());
    let root = emp.root().to_owned();
    // `nobody` may pass through the test's directory to the tenant's app.
    fs::set_permissions(&root, fs::Permissions::from_mode(0o711)).unwrap();
    let claimed = root.join("claimed");
    fs::create_dir_all(&claimed).unwrap();
    // The tenant's directory: its app and its socket.
    let app_dir = root.join("tenant");
    fs::create_dir_all(&app_dir).unwrap();
    std::os::unix::fs::chown(&app_dir, Some(65534), Some(65534)).unwrap();
    fs::write(
        app_dir.join("app.py"),
        format!(
            "def forge():\n    \
                 import ctypes\n    \
                 ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: its own /proc/self/mem\n    \
                 f = open('/proc/self/stat', 'rb').read().rsplit(b')', 1)[1].split()\n    \
                 start, end = int(f[45]), int(f[46])\n    \
                 new = b'uwsgi\\0--ini=shop.ini\\0--emperor\\0' + {claimed:?}.encode() + b'\\0'\n    \
                 assert len(new) <= end - start\n    \
                 with open('/proc/self/mem', 'r+b', buffering=0) as m:\n        \
                     m.seek(start)\n        \
                     m.write(new + b'\\0' * (end - start - len(new)))\n\
             forge()\n\
             def application(env, start_response):\n    \
                 start_response('200 OK', [])\n    \
                 return [b'ok']\n",
            claimed = claimed.display().to_string()
        ),
    )
    .unwrap();
    // A long name leaves room in the master's command line for the forged one.
    let name = format!("tenant{}.ini", "x".repeat(120));
    fs::write(
        emp.vassals.join(&name),
        format!(
            "[uwsgi]\n{plugin}master = true\nprocesses = 1\nuid = nobody\ngid = nogroup\n\
             socket = {a}/t.sock\nwsgi-file = {a}/app.py\n",
            plugin = emp.python_plugin(),
            a = app_dir.display()
        ),
    )
    .unwrap();
    emp.wait_running("shop.ini", 1);
    let forger = wait_for(Duration::from_secs(60), "the forged command line", || {
        crate::harness::children(emp.emperor_pid())
            .into_iter()
            .find(|pid| {
                fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("\0--emperor\0"))
            })
    });
    let cfg = crate::harness::write_config(
        &root,
        "warden.ini",
        &[emp.vassals.display().to_string()],
        "",
    );
    let out = Command::new(bin())
        .args(["check", "--json", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    let check: Value = serde_json::from_slice(&out.stdout).unwrap();
    let emperors = check["emperors"].as_array().unwrap();
    assert!(
        emperors.iter().any(|e| e["pid"] == emp.emperor_pid()),
        "{check:#}"
    );
    assert!(
        !emperors
            .iter()
            .any(|e| e["pid"] == forger || e["master_pid"] == forger),
        "the forger is taken for an Emperor: {check:#}"
    );
    assert!(
        !check["emperors"]
            .to_string()
            .contains(claimed.to_str().unwrap()),
        "the forger's directory is spoken for: {check:#}"
    );
}

/// An Emperor in a container (its own root directory): the directories it names are not
/// this host's, so the warden does not take it for one of the host's Emperors.
#[test]
fn an_emperor_under_another_root_is_not_the_hosts() {
    let emp = Emperor::start();
    emp.add_vassal("shop.ini", &VassalSpec::default());
    emp.wait_running("shop.ini", 1);
    let root = emp.root().to_owned();
    let container = root.join("container");
    fs::create_dir_all(&container).unwrap();
    // A root of its own (a tmpfs with the host's /usr, /etc and /dev bound in), in a
    // mount namespace of its own, as a container has.
    let script = r#"set -e
R="$1"
mount -t tmpfs none "$R"
mkdir -p "$R/usr" "$R/etc" "$R/dev" "$R/proc" "$R/tmp" "$R/vassals"
mount --rbind /usr "$R/usr"
mount --bind /etc "$R/etc"
mount --rbind /dev "$R/dev"
mount -t proc proc "$R/proc"
for d in bin lib lib64 sbin; do ln -s "usr/$d" "$R/$d"; done
exec chroot "$R" uwsgi --master --emperor /vassals"#;
    let contained = crate::harness::Group::spawn(
        Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .arg(&container)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let pids = wait_for(Duration::from_secs(10), "the contained Emperor", || {
        let kids = crate::harness::children(contained.pid());
        let title = fs::read(format!("/proc/{}/cmdline", contained.pid())).ok()?;
        (title.starts_with(b"uwsgi") && !kids.is_empty()).then(|| {
            std::iter::once(contained.pid())
                .chain(kids)
                .collect::<Vec<i32>>()
        })
    });
    let (status, emperors) = emperors_found(&root);
    assert!(emperors.contains(&i64::from(emp.emperor_pid())), "{status}");
    for pid in pids {
        assert!(!emperors.contains(&i64::from(pid)), "{pid}: {status}");
    }
}

/// A tenant's own file cannot loosen root's storm control: its `cooldown = 1s` and
/// `max-reloads = 1000 per 1h` are refused (and the warden says so, naming the file's
/// line and what to do), so a master that leaks again right after its reload waits out
/// warden.ini's cooldown instead of being reloaded every few seconds.
#[test]
fn a_vassals_own_file_cannot_loosen_roots_cooldown_or_max_reloads() {
    let emp = Emperor::start();
    emp.add_vassal(
        "loose.ini",
        &VassalSpec {
            processes: 2,
            extra: vec![
                "enable-threads = true".into(),
                // 4 s to the line again after a reload: time for the recovery to be seen
                // on a loaded machine before the leak is back.
                "env = MASTER_LEAK_PER_SEC=10".into(),
                "env = MASTER_LEAK_UPTO=40".into(),
                "[vassal-warden]".into(),
                "cooldown = 1s".into(),
                "max-reloads = 1000 per 1h".into(),
            ],
            ..VassalSpec::default()
        },
    );
    let warden = Warden::start(
        &bin(),
        &emp,
        "reload-at = 40\nfor = 1\ncooldown = 10m\nverify = 30s\n",
        &[],
    );
    assert_eq!(warden.wait_record("action", 0)["action"], "touch");
    assert_eq!(warden.wait_record("outcome", 0)["result"], "recovered");
    // Its new master leaks the same 40 files again.
    let held = warden.wait_record("suppressed", 0);
    assert_eq!(held["reason"], "cooldown", "{held}");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(emp.reloads("loose.ini"), 1, "{:?}", warden.records());
    let log = warden.log();
    assert!(
        log.contains("`cooldown = 1s` is shorter than warden.ini's cooldown (10m)")
            && log.contains("`[vassal loose.ini]`"),
        "{log}"
    );
}

/// A file in a vassal's working directory does not make the vassal an Emperor: `cd.ini`
/// changes into a tenant's directory, where the tenant wrote its own `cd.ini` naming
/// root's vassal directory. One Emperor is found (root's), no warning is printed about a
/// vassal's own `--ini`, and a leaking vassal in root's directory is still healed.
#[test]
fn a_file_in_a_vassals_working_directory_does_not_make_it_an_emperor() {
    let emp = Emperor::start();
    let root = emp.root().to_owned();
    let tenant = root.join("tenant");
    fs::create_dir_all(&tenant).unwrap();
    chown_nobody(&tenant);
    let decoy = tenant.join("cd.ini");
    fs::write(
        &decoy,
        format!("[uwsgi]\nemperor = {}\n", emp.vassals.display()),
    )
    .unwrap();
    chown_nobody(&decoy);
    emp.add_vassal(
        "cd.ini",
        &VassalSpec {
            extra: vec![format!("chdir = {}", tenant.display())],
            ..VassalSpec::default()
        },
    );
    emp.add_vassal("leaky.ini", &VassalSpec::default());
    let (cd_master, cd_workers) = emp.wait_running("cd.ini", 1);
    emp.wait_running("leaky.ini", 1);

    let cfg = crate::harness::write_config(&root, "found.ini", &[], "");
    let out = Command::new(bin())
        .args(["status", "--json", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let emperors: Vec<i64> = status["emperors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    // Other tests' Emperors may run too: this one is found, and no process of cd.ini.
    assert!(
        emperors.contains(&i64::from(emp.emperor_pid())),
        "{status:#}"
    );
    for pid in std::iter::once(cd_master).chain(cd_workers) {
        assert!(!emperors.contains(&i64::from(pid)), "PID {pid}: {status:#}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("does not exist"), "{stderr}");

    let warden = Warden::start(
        &bin(),
        &emp,
        "reload-at = 40\nfor = 1\ncooldown = 10m\nverify = 30s\n",
        &[],
    );
    emp.leak("leaky.ini", 45);
    let action = warden.wait_record("action", 0);
    assert_eq!(action["vassal"], "leaky.ini", "{action}");
}

/// A tenant's vassal file is read only as far as the tenant could read it: the tenant's
/// link to a root-only (0600) file is not read, so nothing of it reaches `check`; and a
/// link to a kernel file (procfs: `/proc/kmsg` would consume the kernel's log) is not
/// read as configuration. `check` names each, and says why.
#[test]
fn a_tenants_link_to_a_file_it_could_not_read_or_to_procfs_is_not_read() {
    use std::os::unix::fs::PermissionsExt;
    let emp = Emperor::start();
    let root = emp.root().to_owned();
    let secret = root.join("secret.conf");
    // Root's Emperor reads it (as root, it may) and runs it: its files stay in the test's
    // directory.
    fs::write(
        &secret,
        format!(
            "[uwsgi]\nsocket = {r}/run/SECRET-MARKER.sock\npidfile = {r}/run/SECRET-MARKER.pid\n",
            r = root.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let peek = emp.ini_path("peek.ini");
    std::os::unix::fs::symlink(&secret, &peek).unwrap();
    chown_nobody(&peek);
    let kernel = emp.ini_path("kernel.ini");
    std::os::unix::fs::symlink("/proc/version", &kernel).unwrap();
    chown_nobody(&kernel);
    emp.add_vassal("shop.ini", &VassalSpec::default());
    emp.wait_running("shop.ini", 1);
    let cfg = emp.config("");
    let out = Command::new(bin())
        .args(["check", "-c", &cfg])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("SECRET-MARKER"), "{text}");
    assert!(
        text.contains("peek.ini") && text.contains("could not read"),
        "{text}"
    );
    assert!(
        text.contains("kernel.ini") && text.contains("not configuration"),
        "{text}"
    );
}
