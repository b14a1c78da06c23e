//! The incident log as a ledger: whole records or none on a full disk, a record that
//! failed retried on the next pass before any action, one daemon per log, history across
//! logrotate, modes of what the warden creates, and names shown escaped on a terminal.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rustix::process::Signal;

use crate::bin;
use crate::harness::{
    Emperor, Group, Holder, VassalSpec, Warden, count, events, mtime, read_records, wait_for,
    write_config,
};

/// reload-at 40 fds, two consecutive samples, a long cooldown, a touch.
const POLICY: &str = "reload-at = 40\nfor = 2\ncooldown = 10m\naction = touch\nverify = 30s\n";

/// A tmpfs mounted on a directory of the test's own, unmounted when dropped (declare it
/// after the Emperor and before the warden, so that the warden is gone first).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "cannot mount a tmpfs on {}", dir.display());
        Tmpfs {
            dir: dir.to_owned(),
        }
    }

    /// Fills every free page with a file of its own; removing it gives the space back.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.dir.join("filler");
        let mut f = fs::File::create(&path).unwrap();
        let chunk = vec![b'.'; 4096];
        while f.write_all(&chunk).is_ok() {}
        while f.write_all(b".").is_ok() {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Writes a valid record of another vassal so that the log is `page - room` bytes long:
/// once the filesystem is full, only `room` more bytes fit in the log's last page. The
/// record (the end of an episode never started) leaves no state behind at start.
fn pad(log: &Path, room: usize) {
    let head = r#"{"schema":1,"ts":"2020-01-01T00:00:00Z","incident":"pad","vassal":"pad.ini","config":"/nonexistent/pad.ini","event":"ended","reason":"cooldown","since":"2020-01-01T00:00:00Z","seconds":0,"detail":""#;
    let tail = "\"}\n";
    let fill = 4096 - room - head.len() - tail.len();
    fs::write(log, format!("{head}{}{tail}", "x".repeat(fill))).unwrap();
    assert_eq!(fs::metadata(log).unwrap().len(), 4096 - room as u64);
}

/// A warden config for `emp` with its incident log at `log`.
fn config(emp: &Emperor, log: &Path, policy: &str) -> PathBuf {
    write_config(
        emp.root(),
        "warden.ini",
        &[emp.vassals.display().to_string()],
        &format!(
            "audit-log = {}\ninterval = 200ms\n[policy]\n{policy}",
            log.display()
        ),
    )
}

/// Runs the binary with a umask of 022; returns (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg("umask 022; exec \"$0\" \"$@\"")
        .arg(bin())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The records about `vassal`, each line of the log read as JSON (a torn line fails).
fn records_of(log: &Path, vassal: &str) -> Vec<serde_json::Value> {
    read_records(log)
        .into_iter()
        .filter(|r| r["vassal"] == vassal)
        .collect()
}

#[test]
fn a_full_disk_tears_no_record_and_the_warden_acts_once_space_returns() {
    let emp = Emperor::start();
    let ini = emp.add_vassal("leaky.ini", &VassalSpec::default());
    emp.wait_running("leaky.ini", 1);
    let fs = Tmpfs::mount(&emp.root().join("logfs"), "256k");
    let log = fs.dir.join("incidents.jsonl");
    pad(&log, 64);
    let cfg = config(&emp, &log, POLICY);
    let warden = Warden::start_with_config(&bin(), &cfg, &log, &[]);
    let filler = fs.fill();
    let bytes = fs::read(&log).unwrap();
    let before = mtime(&ini);

    emp.leak("leaky.ini", 40);
    // Every pass tries again (the first failure used to silence the warden for a whole
    // cooldown while the vassal ran out of fds).
    wait_for(
        Duration::from_secs(30),
        "the warden to try several passes in a row",
        || (warden.log().matches("No space left on device").count() >= 3).then_some(()),
    );
    assert!(
        warden.log().contains(log.to_str().unwrap()),
        "{}",
        warden.log()
    );
    assert_eq!(
        fs::read(&log).unwrap(),
        bytes,
        "a part of a record stayed in the log"
    );
    assert_eq!(mtime(&ini), before, "acted without its records on disk");
    assert_eq!(emp.reloads("leaky.ini"), 0);

    // Space comes back: the next pass records, then acts.
    fs::remove_file(filler).unwrap();
    warden.wait_record("action", 0);
    let outcome = warden.wait_record("outcome", 0);
    assert_eq!(outcome["result"], "recovered", "{outcome}");
    let mine = records_of(&log, "leaky.ini");
    assert_eq!(
        events(&mine),
        ["detected", "action", "outcome"],
        "{mine:#?}"
    );
    assert!(mtime(&ini) > before);
    assert_eq!(emp.reloads("leaky.ini"), 1);
    drop(warden);
}

#[test]
fn a_reload_on_a_full_disk_touches_nothing_and_a_failed_record_is_cut_back() {
    let emp = Emperor::start();
    let ini = emp.add_vassal("leaky.ini", &VassalSpec::default());
    emp.wait_running("leaky.ini", 1);
    let fs = Tmpfs::mount(&emp.root().join("logfs"), "128k");
    let log = fs.dir.join("incidents.jsonl");
    pad(&log, 64);
    let cfg = config(&emp, &log, POLICY);
    let cfg = cfg.to_str().unwrap();
    let filler = fs.fill();
    let bytes = fs::read(&log).unwrap();
    let before = mtime(&ini);

    // The action's record would not fit: no touch.
    let (code, _, err) = run(&["reload", "leaky.ini", "-c", cfg]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(log.to_str().unwrap()), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(mtime(&ini), before, "touched without its record on disk");
    assert_eq!(fs::read(&log).unwrap(), bytes);

    // A record whose write fails part-way (nothing reserved for a dry run) is cut back.
    let (code, _, err) = run(&["reload", "leaky.ini", "--dry-run", "-c", cfg]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("audit-log"), "{err}");
    assert_eq!(fs::read(&log).unwrap(), bytes, "a torn record was left");

    fs::remove_file(filler).unwrap();
    let (code, _, err) = run(&["reload", "leaky.ini", "-c", cfg]);
    assert_eq!(code, 0, "{err}");
    assert!(mtime(&ini) > before);
    let mine = records_of(&log, "leaky.ini");
    assert_eq!(events(&mine), ["action", "outcome"], "{mine:#?}");
}

/// Starts `vassal-warden ARGS` and waits for it to exit; (exit code, stderr).
fn run_until_exit(root: &Path, args: &[&str]) -> (Option<i32>, String) {
    let err = root.join("second.log");
    let mut g = Group::spawn(
        Command::new(bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&err).unwrap()),
    );
    let status = wait_for(Duration::from_secs(30), "the second warden to exit", || {
        g.try_wait()
    });
    (status.code(), fs::read_to_string(&err).unwrap())
}

#[test]
fn a_second_warden_on_the_same_log_exits_2_naming_the_log_and_the_holder() {
    let emp = Emperor::start();
    emp.add_vassal("leaky.ini", &VassalSpec::default());
    emp.wait_running("leaky.ini", 1);
    let first = Warden::start(&bin(), &emp, POLICY, &[]);
    let cfg = first.config.to_str().unwrap();
    let (code, err) = run_until_exit(emp.root(), &["run", "-c", cfg]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(first.audit_log.to_str().unwrap()), "{err}");
    assert!(err.contains(&format!("PID {}", first.pid())), "{err}");
    assert!(err.contains("stop it first"), "{err}");

    // logrotate renames the log: the lock beside it still keeps a second one off.
    fs::write(&first.audit_log, "").unwrap();
    let mut rotated = first.audit_log.clone().into_os_string();
    rotated.push(".1");
    fs::rename(&first.audit_log, &rotated).unwrap();
    let (code, err) = run_until_exit(emp.root(), &["run", "-c", cfg, "--once"]);
    assert_eq!(code, Some(2), "{err}");

    // The one-shot reload still records beside the daemon.
    let (code, _, err) = run(&["reload", "leaky.ini", "--dry-run", "-c", cfg]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(count(&first.records(), "action"), 1);
}

#[test]
fn after_two_logrotates_and_a_restart_the_cooldown_still_holds() {
    let emp = Emperor::start();
    let ini = emp.add_vassal("shop.ini", &VassalSpec::default());
    let (_, workers) = emp.wait_running("shop.ini", 1);
    let mut first = Warden::start(&bin(), &emp, POLICY, &[]);
    emp.leak("shop.ini", 40);
    first.wait_record("outcome", 0);
    first.kill(Signal::KILL);
    let touched = mtime(&ini);
    emp.wait_replaced("shop.ini", &workers);

    // logrotate twice (`create 0640`, `compress`, `delaycompress`, `notifempty` aside),
    // as a size-based rotation may: the action is now only in `.2.gz`.
    let log = first.audit_log.clone();
    let with = |suffix: &str| {
        let mut p = log.clone().into_os_string();
        p.push(suffix);
        std::path::PathBuf::from(p)
    };
    for _ in 0..2 {
        if with(".1").exists() {
            fs::rename(with(".1"), with(".2")).unwrap();
            let gz = std::process::Command::new("gzip")
                .arg(with(".2"))
                .status()
                .unwrap();
            assert!(gz.success());
        }
        fs::rename(&log, with(".1")).unwrap();
        fs::write(&log, "").unwrap();
        fs::set_permissions(&log, fs::Permissions::from_mode(0o640)).unwrap();
    }
    assert!(with(".2.gz").exists() && fs::read(with(".1")).unwrap().is_empty());

    // The leak comes back, and the warden restarts within the cooldown.
    emp.leak("shop.ini", 40);
    let second = Warden::start_with_config(&bin(), &first.config, &log, &[]);
    let held = second.wait_record("suppressed", 0);
    assert_eq!(held["reason"], "cooldown", "{held}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        count(&second.records(), "action"),
        0,
        "{:#?}",
        second.records()
    );
    assert_eq!(mtime(&ini), touched, "touched again within the cooldown");
    assert_eq!(emp.reloads("shop.ini"), 1);
}

#[test]
fn a_torn_tail_is_ended_before_the_next_record_and_reported_by_readers() {
    let emp = Emperor::start();
    emp.add_vassal("leaky.ini", &VassalSpec::default());
    emp.wait_running("leaky.ini", 1);
    let log = emp.root().join("incidents.jsonl");
    let whole = r#"{"schema":1,"ts":"2026-01-01T00:00:00Z","incident":"old","vassal":"other.ini","config":"/x/other.ini","event":"suppressed","reason":"cooldown"}"#;
    let torn = r#"{"schema":1,"ts":"2026-01-01T00:00:01Z","incident":"cra"#;
    fs::write(&log, format!("{whole}\n{torn}")).unwrap();
    let cfg = config(&emp, &log, POLICY);
    let cfg = cfg.to_str().unwrap();

    let (code, _, err) = run(&["reload", "leaky.ini", "--dry-run", "-c", cfg]);
    assert_eq!(code, 0, "{err}");
    let text = fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0], whole);
    assert_eq!(lines[1], torn, "the new record was glued to the torn line");
    let new: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
    assert_eq!(new["event"], "action");
    assert_eq!(new["dry_run"], true);

    // Readers skip the torn line and say where it is.
    let (code, out, err) = run(&["incidents", "-c", cfg, "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        err.contains(&format!("{}:2: unreadable line skipped", log.display())),
        "{err}"
    );
}

#[test]
fn the_log_its_lock_and_their_directory_are_created_0640_and_0750() {
    let emp = Emperor::start();
    emp.add_vassal("leaky.ini", &VassalSpec::default());
    emp.wait_running("leaky.ini", 1);
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;

    let var = emp.root().join("var");
    let log = var.join("log/vw/incidents.jsonl");
    let cfg = config(&emp, &log, POLICY);
    let cfg = cfg.to_str().unwrap();
    let (code, _, err) = run(&["reload", "leaky.ini", "--dry-run", "-c", cfg]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(mode(&log), 0o640);
    for d in [var.join("log/vw"), var.join("log"), var.clone()] {
        assert_eq!(mode(&d), 0o750, "{}", d.display());
    }

    // The daemon's lock beside a log in a directory it creates.
    let other = emp.root().join("other/incidents.jsonl");
    let cfg2 = config(&emp, &other, POLICY);
    let (code, _, err) = run(&["run", "--once", "-c", cfg2.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(mode(&emp.root().join("other")), 0o750);
    assert_eq!(mode(&emp.root().join("other/incidents.jsonl.lock")), 0o640);

    // What the admin set stays.
    fs::set_permissions(&log, fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(var.join("log/vw"), fs::Permissions::from_mode(0o755)).unwrap();
    let (code, _, err) = run(&["reload", "leaky.ini", "--dry-run", "-c", cfg]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(mode(&log), 0o644);
    assert_eq!(mode(&var.join("log/vw")), 0o755);
}

#[test]
fn names_with_terminal_escapes_are_printed_escaped() {
    let emp = Emperor::start();
    let name = "evil\x1b[2J\u{202e}.ini";
    emp.add_vassal(name, &VassalSpec::default());
    emp.wait_running(name, 1);
    let shown = r"evil\x1b[2J\u{202e}.ini";
    let log = emp.root().join("incidents.jsonl");
    let cfg = config(&emp, &log, POLICY);
    let cfg = cfg.to_str().unwrap();
    let file = emp.root().join("static/cat\x1b]0;pwned\x07.jpg");
    fs::write(&file, "").unwrap();
    let holder = Holder::start(&["--files".into(), "3".into(), file.display().to_string()]);
    let (code, _, err) = run(&["reload", name, "--dry-run", "-c", cfg]);
    assert_eq!(code, 0, "{err}");

    let pid = holder.pid().to_string();
    for args in [
        vec!["status", "-c", cfg],
        vec!["fds", name, "-c", cfg],
        vec!["fds", &pid],
        vec!["check", "-c", cfg],
        vec!["incidents", "-c", cfg],
    ] {
        let (_, out, err) = run(&args);
        for c in ['\x1b', '\u{202e}', '\x07'] {
            assert!(
                !out.contains(c) && !err.contains(c),
                "{args:?} printed {c:?}: {out}{err}"
            );
        }
        let expected = if args[0] == "fds" && args[1] == pid {
            r"cat\x1b]0;pwned\x07.jpg"
        } else {
            shown
        };
        assert!(out.contains(expected), "{args:?}: {out}{err}");
    }
    // JSON keeps the name, escaped by JSON's own rules.
    let (_, out, _) = run(&["status", "-c", cfg, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["vassals"][0]["vassal"], name);
    // A line break in a name cannot forge a line of a report.
    let forged = "x\nno problems found\n.ini";
    fs::write(emp.ini_path(forged), "[other]\n").unwrap();
    let (_, out, _) = run(&["check", "-c", cfg]);
    assert!(
        !out.lines().any(|l| l == "no problems found"),
        "a name forged a line: {out}"
    );
    assert!(out.contains(r"x\nno problems found\n.ini"), "{out}");
}
