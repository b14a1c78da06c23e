//! Bounded everything: a FIFO, a device, a reference bomb or a stats server that
//! trickles cannot stall a pass or fill memory; the bad item is reported and the healthy
//! vassals beside it are still seen and healed. And a touch is only made when uWSGI can
//! load the result: a vassal whose include is gone is not touched.
//!
//! A hang is caught by a generous timeout (`DEADLINE`), never by asserting a speed.

use std::fmt::Write as _;
use std::fs;
use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bin;
use crate::harness::{
    Emperor, EmperorOptions, Group, VassalSpec, Warden, count, events, mtime, read_records,
    wait_for, write_config,
};

/// Far longer than any of these commands takes: reaching it means a stall.
const DEADLINE: Duration = Duration::from_secs(30);

/// Runs the warden with `args` in its own process group; panics if it has not finished
/// within `limit`. Returns (exit code, stdout, stderr).
fn run_within(limit: Duration, args: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap());
    let mut g = Group::spawn(&mut cmd);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = g.try_wait() {
            break s;
        }
        assert!(
            start.elapsed() < limit,
            "`vassal-warden {}` did not finish within {limit:?} (a stall); stderr so far:\n{}",
            args.join(" "),
            fs::read_to_string(&err).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    (
        status.code().unwrap_or(-1),
        fs::read_to_string(&out).unwrap(),
        fs::read_to_string(&err).unwrap(),
    )
}

fn json_within(limit: Duration, args: &[&str]) -> Value {
    let (_, out, err) = run_within(limit, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"))
}

fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(ok.success());
}

fn vassal<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["vassals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["vassal"] == name)
        .unwrap_or_else(|| panic!("no {name} in {status:#}"))
}

fn problem(status: &Value, name: &str) -> String {
    vassal(status, name)["problem"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_fifo_and_a_link_to_dev_zero_among_the_vassals_stall_nothing() {
    let emp = Emperor::start();
    let shop = emp.add_vassal("shop.ini", &VassalSpec::default());
    emp.wait_running("shop.ini", 1);
    let fifo = emp.ini_path("fifo.ini");
    mkfifo(&fifo);
    std::os::unix::fs::symlink("/dev/zero", emp.ini_path("zero.ini")).unwrap();
    let cfg = emp.config("interval = 200ms\n[policy]\nreload-at = 40\nfor = 1\naction = touch\n");

    let status = json_within(DEADLINE, &["status", "-c", &cfg, "--json"]);
    let fifo_problem = problem(&status, "fifo.ini");
    assert!(
        fifo_problem.contains(fifo.to_str().unwrap()) && fifo_problem.contains("FIFO"),
        "{fifo_problem}"
    );
    assert!(
        problem(&status, "zero.ini").contains("a character device"),
        "{status:#}"
    );
    assert_eq!(vassal(&status, "shop.ini")["state"], "running");

    let check = json_within(DEADLINE, &["check", "-c", &cfg, "--json"]);
    let problems = check["problems"].to_string();
    assert!(
        problems.contains("fifo.ini") && problems.contains("zero.ini"),
        "{problems}"
    );

    // The healthy vassal next to them is still healed.
    emp.leak("shop.ini", 40);
    let before = mtime(&shop);
    let (code, _, err) = run_within(Duration::from_secs(90), &["run", "-c", &cfg, "--once"]);
    assert_eq!(code, 0, "{err}");
    assert!(mtime(&shop) > before);
    let records = read_records(&emp.root().join("incidents.jsonl"));
    assert_eq!(
        events(&records),
        ["detected", "action", "outcome"],
        "{records:#?}"
    );
    assert!(records.iter().all(|r| r["vassal"] == "shop.ini"));
}

#[test]
fn an_emperor_whose_ini_is_a_fifo_stalls_nothing() {
    let root = tempfile::Builder::new()
        .prefix("vw-test-")
        .tempdir()
        .unwrap();
    let vassals = root.path().join("vassals");
    fs::create_dir(&vassals).unwrap();
    let fifo = root.path().join("emperor.ini");
    mkfifo(&fifo);
    // uWSGI reads its config from the FIFO once (it reads FIFOs to EOF); then the FIFO
    // stays on its command line with nobody writing to it.
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut f = fs::OpenOptions::new().write(true).open(fifo).unwrap();
            f.write_all(b"[uwsgi]\nemperor-freq = 1\n").unwrap();
        })
    };
    let log = fs::File::create(root.path().join("emperor.log")).unwrap();
    let emperor = Group::spawn(
        Command::new("uwsgi")
            .arg("--emperor")
            .arg(&vassals)
            .arg("--ini")
            .arg(&fifo)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    );
    writer.join().unwrap();
    let cfg = write_config(
        root.path(),
        "warden.ini",
        &[vassals.display().to_string()],
        "",
    );
    let cfg = cfg.to_str().unwrap();
    let check = json_within(DEADLINE, &["check", "-c", cfg, "--json"]);
    let ours = check["emperors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["pid"] == emperor.pid())
        .unwrap_or_else(|| panic!("the Emperor {} is not found: {check:#}", emperor.pid()));
    assert_eq!(
        ours["sources"][0],
        vassals.canonicalize().unwrap().to_str().unwrap()
    );
    let (_, _, err) = run_within(DEADLINE, &["status", "-c", cfg]);
    assert!(
        err.contains(fifo.to_str().unwrap()) && err.contains("FIFO"),
        "{err}"
    );
}

/// A server at `path` that answers every connection with one byte every half second,
/// forever; stops when dropped.
struct Trickle {
    stop: Arc<AtomicBool>,
}

impl Trickle {
    fn serve(path: &Path) -> Trickle {
        let _ = fs::remove_file(path);
        let listener = UnixListener::bind(path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let flag = flag.clone();
                std::thread::spawn(move || {
                    while !flag.load(Ordering::Relaxed) && conn.write_all(b" ").is_ok() {
                        std::thread::sleep(Duration::from_millis(500));
                    }
                });
            }
        });
        Trickle { stop }
    }
}

impl Drop for Trickle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn a_trickling_stats_server_stalls_no_pass() {
    let emp = Emperor::start_with(&EmperorOptions {
        stats: true,
        ..EmperorOptions::default()
    });
    let ini = emp.add_vassal("shop.ini", &VassalSpec::default());
    let (_, workers) = emp.wait_running("shop.ini", 1);
    let stats: PathBuf = emp.stats.clone().unwrap();
    wait_for(DEADLINE, "the Emperor's stats socket", || {
        stats.exists().then_some(())
    });
    let _trickle = Trickle::serve(&stats);
    let cfg = emp.config("");

    let status = json_within(DEADLINE, &["status", "-c", &cfg, "--json"]);
    let shop = vassal(&status, "shop.ini");
    assert_eq!(shop["state"], "running", "{status:#}");
    assert_eq!(shop["method"], "process-tree", "{status:#}");
    let check = json_within(DEADLINE, &["check", "-c", &cfg, "--json"]);
    let problems = check["problems"].to_string();
    assert!(
        problems.contains("no complete reply within 1 s"),
        "{problems}"
    );

    // The daemon's passes go on: it finishes its first pass and heals a leak.
    let warden = Warden::start(
        &bin(),
        &emp,
        "reload-at = 40\nfor = 2\naction = touch\nverify = 30s\n",
        &[],
    );
    let before = mtime(&ini);
    emp.leak("shop.ini", 40);
    assert_eq!(warden.wait_record("outcome", 0)["result"], "recovered");
    assert!(mtime(&ini) > before);
    emp.wait_replaced("shop.ini", &workers);
    // The bad source is one warning in the log, not one per pass.
    let log = warden.log();
    let warnings = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("cannot read the Emperor stats"))
        .count();
    assert_eq!(warnings, 1, "{log}");
}

#[test]
fn a_reference_bomb_is_an_error_for_that_file_only() {
    let emp = Emperor::start();
    emp.add_vassal("shop.ini", &VassalSpec::default());
    emp.wait_running("shop.ini", 1);
    // Watched by the warden only: uWSGI itself would try to expand it.
    let other = emp.root().join("unstarted");
    fs::create_dir(&other).unwrap();
    let mut bomb = String::from("[uwsgi]\na0 = x\n");
    for i in 1..=36 {
        writeln!(bomb, "a{i} = %(a{})%(a{})", i - 1, i - 1).unwrap();
    }
    fs::write(other.join("bomb.ini"), bomb).unwrap();
    let cfg = write_config(
        emp.root(),
        "warden.ini",
        &[
            emp.vassals.display().to_string(),
            other.display().to_string(),
        ],
        "",
    );
    let cfg = cfg.to_str().unwrap();
    let status = json_within(DEADLINE, &["status", "-c", cfg, "--json"]);
    let p = problem(&status, "bomb.ini");
    assert!(
        p.contains("bomb.ini:19: `a17` expands to more than 64 KiB"),
        "{status:#}"
    );
    assert_eq!(vassal(&status, "shop.ini")["state"], "running");
}

#[test]
fn a_vassal_whose_include_is_gone_is_not_touched_and_one_whose_include_is_there_is_healed() {
    let emp = Emperor::start();
    let common = emp.vassals.join("common");
    fs::create_dir(&common).unwrap();
    for name in ["kept", "gone"] {
        fs::write(
            common.join(format!("{name}-base.ini")),
            "[uwsgi]\nvacuum = true\n",
        )
        .unwrap();
        let spec = VassalSpec {
            // Relative to the vassal directory, where the Emperor runs its vassals.
            extra: vec![format!("ini = common/{name}-base.ini")],
            ..VassalSpec::default()
        };
        emp.add_vassal(&format!("{name}.ini"), &spec);
    }
    emp.wait_running("kept.ini", 1);
    emp.wait_running("gone.ini", 1);
    let warden = Warden::start(
        &bin(),
        &emp,
        "reload-at = 40\nfor = 2\ncooldown = 10m\naction = touch\nverify = 30s\n",
        &[],
    );
    // A deploy deletes the include; the vassal file itself is untouched, so only a fresh
    // read right before acting can tell.
    let gone = emp.ini_path("gone.ini");
    let include = common.join("gone-base.ini");
    fs::remove_file(&include).unwrap();
    let old = mtime(&gone);
    emp.leak("gone.ini", 40);
    let held = warden.wait_record("suppressed", 0);
    assert_eq!(held["vassal"], "gone.ini", "{held}");
    assert_eq!(held["reason"], "ini_invalid", "{held}");
    let detail = held["detail"].as_str().unwrap();
    assert!(
        detail.contains(gone.to_str().unwrap()) && detail.contains(include.to_str().unwrap()),
        "{detail}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(mtime(&gone), old);
    assert_eq!(emp.reloads("gone.ini"), 0);

    // The same leak in the vassal whose include is there is healed.
    let kept = emp.ini_path("kept.ini");
    let before = mtime(&kept);
    emp.leak("kept.ini", 40);
    let outcome = wait_for(DEADLINE * 2, "kept.ini's outcome", || {
        warden
            .records()
            .into_iter()
            .find(|r| r["event"] == "outcome" && r["vassal"] == "kept.ini")
    });
    assert_eq!(outcome["result"], "recovered", "{outcome}");
    assert!(mtime(&kept) > before);
    let records = warden.records();
    let gone_records: Vec<&Value> = records
        .iter()
        .filter(|r| r["vassal"] == "gone.ini")
        .collect();
    assert!(
        gone_records.iter().all(|r| r["event"] != "action"),
        "{gone_records:#?}"
    );
    assert_eq!(count(&records, "action"), 1, "{records:#?}");
}
