//! The one-shot commands against a real Emperor: `status`, `fds`, `run --once`,
//! `incidents`, `check`, and how their output meets a closed pipe or a full disk.

use std::process::Command;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::bin;
use crate::harness::{Emperor, VassalSpec, Warden, hold_warden_lock, read_records};

fn run_json(args: &[&str]) -> Value {
    let out = Command::new(bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn run_text(args: &[&str]) -> (i32, String) {
    let out = Command::new(bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

// One story through every read-only command, against the same vassal and leak.
#[allow(clippy::too_many_lines)]
#[test]
fn status_fds_once_and_incidents_tell_the_same_story() {
    let emp = Emperor::start();
    let leaky = emp.add_vassal(
        "leaky.ini",
        &VassalSpec {
            processes: 2,
            ..VassalSpec::default()
        },
    );
    let (master, workers) = emp.wait_running("leaky.ini", 2);
    let audit_log = emp.root().join("incidents.jsonl");
    let cfg = emp.config("interval = 200ms\n[policy]\nreload-at = 40\nfor = 1\naction = touch\n");
    let cfg = cfg.as_str();

    // status: the vassal, its master first, then both workers, with their limits.
    let status = run_json(&["status", "-c", cfg, "--json"]);
    let v = &status["vassals"][0];
    assert_eq!(v["vassal"], "leaky.ini");
    assert_eq!(v["state"], "running");
    assert_eq!(v["method"], "process_tree".replace('_', "-"));
    let procs = v["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 3);
    assert_eq!(procs[0]["pid"], master);
    assert_eq!(procs[0]["role"], "master");
    let mut listed: Vec<i64> = procs[1..]
        .iter()
        .map(|p| p["pid"].as_i64().unwrap())
        .collect();
    listed.sort_unstable();
    assert_eq!(
        listed,
        workers.iter().map(|w| i64::from(*w)).collect::<Vec<_>>()
    );
    assert!(procs.iter().all(|p| p["limit"] == 64 && p["line"] == 40));

    // Leak until one worker holds 40 leaked files.
    let mut leaker = 0;
    for _ in 0..400 {
        let (pid, leaked) = emp.request("leaky.ini", "/leak");
        if leaked == 40 {
            leaker = pid;
            break;
        }
    }
    assert_ne!(leaker, 0, "no worker reached 40 leaked files");

    // fds PID: the leaked file on top, counted exactly.
    let report = run_json(&["fds", &leaker.to_string(), "--json"]);
    let report = &report["processes"][0];
    assert_eq!(report["pid"], leaker);
    assert_eq!(
        report["top"][0]["target"],
        emp.root().join("static/cat.jpg").to_str().unwrap()
    );
    assert_eq!(report["top"][0]["count"], 40);
    assert_eq!(report["limit"], 64);

    // fds VASSAL: one section per process, master first.
    let sections = run_json(&["fds", "leaky", "-c", cfg, "--json"]);
    let sections = sections["processes"].as_array().unwrap();
    assert_eq!(sections.len(), 3);
    assert_eq!(sections[0]["role"], "master");
    assert_eq!(sections[0]["pid"], master);

    // run --once: one pass, the reload, its verification, then exit 0.
    let before = std::fs::metadata(&leaky).unwrap().modified().unwrap();
    let (code, out) = run_text(&["run", "-c", cfg, "--once"]);
    assert_eq!(code, 0, "{out}");
    assert!(std::fs::metadata(&leaky).unwrap().modified().unwrap() > before);
    let records = read_records(&audit_log);
    let events: Vec<&str> = records
        .iter()
        .map(|r| r["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["detected", "action", "outcome"], "{records:#?}");
    assert_eq!(records[0]["pid"], leaker);
    assert_eq!(records[2]["result"], "recovered");

    // incidents: the same records as JSON lines; filters by vassal and time.
    let old = r#"{"schema":1,"ts":"2020-01-01T00:00:00Z","incident":"old","vassal":"other.ini","config":"/x/other.ini","event":"suppressed","reason":"cooldown"}"#;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&audit_log)
        .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{old}\n").as_bytes()))
        .unwrap();
    let (code, out) = run_text(&["incidents", "-c", cfg, "--json"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 4);
    let (_, out) = run_text(&["incidents", "-c", cfg, "--json", "--since", "24h"]);
    assert_eq!(out.lines().count(), 3, "{out}");
    let (_, out) = run_text(&["incidents", "-c", cfg, "--json", "--vassal", "other.ini"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    let (_, table) = run_text(&["incidents", "-c", cfg, "--vassal", "leaky"]);
    // The table's rows, then each incident's capture (here: why none was armed).
    let rows: Vec<&str> = table
        .lines()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(rows.len(), 1, "{table}");
    assert!(
        rows[0].contains("leaky.ini") && rows[0].contains("touch") && rows[0].contains("recovered"),
        "{table}"
    );
    assert!(rows[0].contains(&leaker.to_string()), "{table}");
}

#[test]
fn check_reports_the_emperor_and_exits_1_on_a_broken_vassal() {
    let emp = Emperor::start();
    emp.add_vassal("good.ini", &VassalSpec::default());
    emp.wait_running("good.ini", 1);
    let cfg = emp.config("");
    let cfg = cfg.as_str();
    let _lock = hold_warden_lock(emp.root());

    let (code, out) = run_text(&["check", "-c", cfg]);
    assert_eq!(code, 0, "{out}");
    let doc = run_json(&["check", "-c", cfg, "--json"]);
    // Every Emperor on the host is listed; ours watches our directory.
    let ours = doc["emperors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["pid"] == emp.pid())
        .expect("our Emperor is listed");
    assert_eq!(ours["sources"][0], emp.vassals.to_str().unwrap());
    assert_eq!(doc["vassals"][0]["method"], "process-tree");
    assert_eq!(doc["problems"].as_array().unwrap().len(), 0);

    // A file the Emperor would try to start but that is no vassal config.
    let bad = emp.ini_path("broken.ini");
    std::fs::write(&bad, "this is not\nan ini file\n").unwrap();
    let (code, out) = run_text(&["check", "-c", cfg]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("{}: no [uwsgi] section", bad.display())),
        "{out}"
    );
}

/// A warden config whose incident log holds `n` incidents, one record each.
fn config_with_incidents(dir: &std::path::Path, n: usize) -> String {
    let log = dir.join("incidents.jsonl");
    let records: String = (0..n)
        .map(|i| {
            format!(
                r#"{{"schema":1,"ts":"2026-11-26T22:12:00Z","incident":"i{i}","vassal":"shop.ini","config":"/v/shop.ini","event":"suppressed","reason":"cooldown"}}"#
            ) + "\n"
        })
        .collect();
    std::fs::write(&log, records).unwrap();
    let cfg = dir.join("warden.ini");
    std::fs::write(&cfg, format!("[warden]\naudit-log = {}\n", log.display())).unwrap();
    cfg.display().to_string()
}

#[test]
fn a_reader_that_went_away_ends_the_output_quietly_with_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with_incidents(dir.path(), 5000);
    let no_log = dir.path().join("no-log.ini");
    std::fs::write(
        &no_log,
        "[warden]\naudit-log = /nonexistent/incidents.jsonl\n",
    )
    .unwrap();
    let no_log = no_log.display().to_string();
    for args in [
        ["incidents", "-c", &cfg, ""],
        ["incidents", "-c", &cfg, "--json"],
        // One line saying there is no log yet.
        ["incidents", "-c", &no_log, ""],
    ] {
        let args: Vec<&str> = args.into_iter().filter(|a| !a.is_empty()).collect();
        // Its read end closed before the command writes: every write fails with EPIPE.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(bin())
            .args(&args)
            .stdout(writer)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}

#[test]
fn a_write_error_other_than_a_closed_pipe_exits_1_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with_incidents(dir.path(), 10);
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = Command::new(bin())
        .args(["incidents", "-c", &cfg])
        .stdout(full)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot write to standard output"),
        "{stderr}"
    );
}

/// One record of the incident log, as the warden writes it.
fn line(ts: &str, incident: &str, event: &str) -> String {
    format!(
        r#"{{"schema":1,"ts":"{ts}","incident":"{incident}","vassal":"shop.ini","config":"/v/shop.ini",{event}}}"#
    ) + "\n"
}

const DETECTED: &str = r#""event":"detected","pid":4242,"role":"master","fds":51,"limit":64,"usage":0.8,"rule":"fds >= 40","top":[{"target":"/srv/shop/cat.jpg","kind":"file","count":40}],"by_kind":{"file":45}"#;

#[test]
fn incidents_reads_the_rotated_logs_and_shows_an_episode_as_one_row_with_how_long_it_lasted() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("incidents.jsonl");
    let flapping = r#""reason":"flapping","since":"2026-11-20T10:00:00Z""#;
    // Three weeks as logrotate leaves them (compress, delaycompress): .2.gz, .1, the log.
    let week2 = line("2026-11-20T10:00:00Z", "e1", DETECTED)
        + &line(
            "2026-11-20T10:00:00Z",
            "e1",
            r#""event":"suppressed","reason":"flapping","detail":"next touch allowed in 59m""#,
        )
        + &line(
            "2026-11-20T11:00:00Z",
            "e1",
            &format!(r#""event":"reminder",{flapping},"seconds":3600.0,"fds":52"#),
        );
    let week2_path = dir.path().join("incidents.jsonl.2");
    std::fs::write(&week2_path, week2).unwrap();
    let gz = Command::new("gzip").arg(&week2_path).status().unwrap();
    assert!(gz.success());
    let week1 = line(
        "2026-11-20T12:00:00Z",
        "e1",
        &format!(r#""event":"reminder",{flapping},"seconds":7200.0,"fds":55"#),
    ) + &line(
        "2026-11-20T12:05:00Z",
        "e1",
        &format!(
            r#""event":"ended",{flapping},"seconds":7500.0,"fds":3,"detail":"every process is back under its line""#
        ),
    );
    std::fs::write(dir.path().join("incidents.jsonl.1"), week1).unwrap();
    // The last episode, still on: started two hours ago, reminded an hour ago.
    let ago = |h: u64| {
        humantime::format_rfc3339_seconds(SystemTime::now() - Duration::from_secs(h * 3600))
            .to_string()
    };
    let now = line(&ago(2), "c1", DETECTED)
        + &line(
            &ago(2),
            "c1",
            r#""event":"suppressed","reason":"alert_only","detail":"action = alert""#,
        )
        + &line(
            &ago(1),
            "c1",
            &format!(
                r#""event":"reminder","reason":"alert_only","since":"{}","seconds":3600.0"#,
                ago(2)
            ),
        );
    std::fs::write(&log, now).unwrap();
    let cfg = dir.path().join("warden.ini");
    std::fs::write(&cfg, format!("[warden]\naudit-log = {}\n", log.display())).unwrap();
    let cfg = cfg.display().to_string();

    let (code, table) = run_text(&["incidents", "-c", &cfg]);
    assert_eq!(code, 0, "{table}");
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "one row per episode:\n{table}");
    assert!(table.lines().next().unwrap().ends_with("LASTED"), "{table}");
    assert!(
        rows[0].starts_with("2026-11-20T10:00:00Z"),
        "oldest first:\n{table}"
    );
    assert!(rows[0].contains("suppressed: flapping"), "{table}");
    assert!(rows[0].ends_with("2h 5m"), "ended after 2h 5m:\n{table}");
    assert!(rows[1].contains("suppressed: alert_only"), "{table}");
    assert!(
        rows[1].ends_with("1h+"),
        "still on at its last record:\n{table}"
    );

    let (_, json) = run_text(&["incidents", "-c", &cfg, "--json"]);
    assert_eq!(json.lines().count(), 8, "{json}");
    // The filter spans the rotations: the last day is the three records of `c1`.
    let (_, json) = run_text(&["incidents", "-c", &cfg, "--json", "--since", "1d"]);
    assert_eq!(json.lines().count(), 3, "{json}");
    assert!(json.lines().all(|l| l.contains("\"c1\"")), "{json}");
}

#[test]
fn check_says_when_the_on_event_hook_would_not_be_run() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let hook = dir.path().join("hook.sh");
    std::fs::write(&hook, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o775)).unwrap();
    let cfg = dir.path().join("warden.ini");
    std::fs::write(
        &cfg,
        format!(
            "[warden]\nvassals = {}\naudit-log = {}\non-event = {}\n",
            dir.path().display(),
            dir.path().join("incidents.jsonl").display(),
            hook.display()
        ),
    )
    .unwrap();
    let cfg = cfg.display().to_string();
    let (code, out) = run_text(&["check", "-c", &cfg]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("on-event hook {}:", hook.display()))
            && out.contains("only root may own and write it"),
        "{out}"
    );
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (_, out) = run_text(&["check", "-c", &cfg]);
    assert!(!out.contains("on-event hook"), "{out}");
}

/// However well the vassals look, nothing guards them when no warden runs with the
/// incident log: `health` is CRITICAL and `check` reports it, saying how they know (the
/// warden's lock). A running warden, then the same warden killed, shows both sides.
#[test]
fn health_and_check_say_when_no_warden_runs() {
    let emp = Emperor::start();
    emp.add_vassal("shop.ini", &VassalSpec::default());
    emp.wait_running("shop.ini", 1);
    let mut warden = Warden::start(&bin(), &emp, "reload-at = 40\n", &[]);
    let cfg = warden.config.to_str().unwrap().to_owned();
    let log = warden.audit_log.display().to_string();

    let (code, out) = run_text(&["health", "-c", &cfg]);
    assert_eq!(
        (code, out.trim()),
        (
            0,
            "VASSAL-WARDEN OK - 1 vassal, 2 processes within their limits"
        )
    );
    let check = run_json(&["check", "-c", &cfg, "--json"]);
    assert_eq!(
        check["judged_as"],
        format!("the running warden (PID {})", warden.pid()),
        "{check:#}"
    );
    assert!(
        !check["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().contains("no vassal-warden runs")),
        "{check:#}"
    );

    // Crashed: its lock went with it.
    warden.kill(rustix::process::Signal::KILL);
    let said = format!(
        "no vassal-warden runs with the incident log {log} (nobody holds its lock {log}.lock): nothing guards these vassals; start it (systemctl start vassal-warden)"
    );
    let (code, out) = run_text(&["health", "-c", &cfg]);
    assert_eq!(
        (code, out.trim()),
        (2, format!("VASSAL-WARDEN CRITICAL - {said}").as_str())
    );
    let (code, out) = run_text(&["check", "-c", &cfg]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&said), "{out}");

    // Never started with this log: no lock at all.
    std::fs::remove_file(format!("{log}.lock")).unwrap();
    let (code, out) = run_text(&["health", "-c", &cfg]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(&format!("(its lock {log}.lock does not exist)")),
        "{out}"
    );
}

/// Who may not open the lock cannot tell whether a warden runs: `health` says so, as a
/// warning, neither OK nor CRITICAL.
#[test]
fn health_run_by_a_user_who_cannot_open_the_lock_says_it_cannot_tell() {
    use std::os::unix::fs::PermissionsExt as _;
    let emp = Emperor::start();
    emp.add_vassal("shop.ini", &VassalSpec::default());
    emp.wait_running("shop.ini", 1);
    let cfg = emp.config("");
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let lock = hold_warden_lock(emp.root());
    lock.set_permissions(std::fs::Permissions::from_mode(0o600))
        .unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(bin())
        .args(["health", "-c", &cfg])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{line}");
    assert!(
        line.starts_with(&format!(
            "VASSAL-WARDEN WARNING - cannot tell whether a vassal-warden runs: cannot open its lock {}",
            emp.root().join("incidents.jsonl.lock").display()
        )),
        "{line}"
    );
}

/// The line the service manager shows (`STATUS=`, in `systemctl status`) names a vassal
/// the warden holds back from, and why, and counts in words a person would use.
#[test]
fn the_status_line_names_a_vassal_held_back_and_why() {
    let emp = Emperor::start();
    emp.add_vassal("shop.ini", &VassalSpec::default());
    emp.wait_running("shop.ini", 1);
    let socket = emp.root().join("notify.sock");
    let listener = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let env = format!("NOTIFY_SOCKET={}", socket.display());
    let _warden = Warden::start_under(
        &["env", &env],
        &bin(),
        std::path::Path::new(
            &emp.config("[policy]\nreload-at = 40\nfor = 1\npredict = off\naction = alert\n"),
        ),
        &emp.root().join("incidents.jsonl"),
        &[],
    );
    let mut said = Vec::new();
    let read = |said: &mut Vec<String>| {
        let mut buf = [0u8; 4096];
        while let Ok(n) = listener.recv(&mut buf) {
            said.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    };
    read(&mut said);
    assert!(
        said.iter().any(
            |m| m.contains("STATUS=1 vassal watched, 0 processes over the line, no action yet")
        ),
        "{said:#?}"
    );
    let (worker, _) = emp.leak("shop.ini", 45);
    let held = crate::harness::wait_for(Duration::from_secs(30), "the status of a hold", || {
        read(&mut said);
        said.iter()
            .find(|m| m.contains("held: shop.ini (alert_only)"))
            .cloned()
    });
    assert!(
        held.contains("STATUS=1 vassal watched, 1 process over the line, held: shop.ini (alert_only), no action yet"),
        "worker {worker}: {held}"
    );
}

/// `incidents` streams the log: a history far larger than the memory it may use is read
/// whole (100 MB of records and a 200 MB line, under a 64 MB data limit), as JSON lines
/// and as a table of its newest incidents; `--since` takes any duration or a date.
#[test]
fn incidents_reads_a_history_larger_than_its_memory() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("incidents.jsonl");
    let cfg = dir.path().join("warden.ini");
    std::fs::write(&cfg, format!("[warden]\naudit-log = {}\n", log.display())).unwrap();
    let filler = "x".repeat(160);
    let record = |i: u64| {
        let ts = humantime::format_rfc3339_seconds(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + i),
        );
        format!(
            r#"{{"schema":1,"ts":"{ts}","incident":"i{i}","vassal":"a.ini","config":"/v/a.ini","event":"resume","who":"w","reason":"{filler}"}}"#
        ) + "\n"
    };
    let per = record(0).len() as u64;
    let n = 100_000_000 / per;
    {
        use std::io::Write as _;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&log).unwrap());
        for i in 0..n {
            if i == n / 2 {
                writeln!(f, "{{\"ts\":\"{}\"}}", "y".repeat(200_000_000)).unwrap();
            }
            f.write_all(record(i).as_bytes()).unwrap();
        }
    }
    let limited = |args: &[&str]| {
        let mut child = Command::new("prlimit")
            .arg(format!("--data={}", 64 << 20))
            .arg(bin())
            .args(args)
            .arg("-c")
            .arg(&cfg)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut lines = 0u64;
        let mut last = String::new();
        for l in out.lines() {
            lines += 1;
            last = l.unwrap();
        }
        let done = child.wait_with_output().unwrap();
        (
            done.status.code(),
            lines,
            last,
            String::from_utf8_lossy(&done.stderr).into_owned(),
        )
    };
    let (code, lines, last, err) = limited(&["incidents", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(lines, n);
    assert!(last.contains(&format!("\"i{}\"", n - 1)), "{last}");
    assert!(
        err.contains("unreadable line skipped (longer than 1024 KiB)"),
        "{err}"
    );
    // A table keeps the newest incidents and says how many it left out.
    let (code, _, last, err) = limited(&["incidents"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        last.starts_with(&format!("({} older incidents not shown", n - 10_000)),
        "{last}"
    );
    // From a date, and from far back: what is newer than it.
    let (code, lines, _, err) =
        limited(&["incidents", "--json", "--since", "2023-11-14T22:30:00Z"]);
    assert_eq!((code, lines), (Some(0), n - 1_000), "{err}");
    let (code, lines, _, err) = limited(&["incidents", "--json", "--since", "36500d"]);
    assert_eq!((code, lines), (Some(0), n), "{err}");
    let (code, lines, _, err) = limited(&["incidents", "--json", "--since", "24h"]);
    assert_eq!((code, lines), (Some(0), 0), "{err}");
}
