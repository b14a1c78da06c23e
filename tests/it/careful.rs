//! Remediation like a careful operator: the gentlest action that works, verified, never a
//! storm, never an action a restart or a broken file would make unsafe.

use std::time::Duration;

use rustix::process::Signal;

use crate::bin;
use crate::harness::{Emperor, VassalSpec, Warden, count, events, fd_count, mtime, wait_for};

#[test]
fn one_leaking_worker_is_recycled_and_the_others_keep_their_pids() {
    let emp = Emperor::start();
    let ini = emp.add_vassal(
        "shop.ini",
        &VassalSpec {
            processes: 3,
            extra: vec!["env = LEAK_WORKER=1".into()],
            ..VassalSpec::default()
        },
    );
    let (master, workers) = emp.wait_running("shop.ini", 3);
    let before = mtime(&ini);
    let warden = Warden::start(
        &bin(),
        &emp,
        "reload-at = 40\nfor = 2\ncooldown = 10m\nverify = 30s\n",
        &[],
    );
    // Requests land on any worker; only worker 1 leaks.
    let mut leaker = 0;
    for _ in 0..2000 {
        let (pid, leaked) = emp.request("shop.ini", "/leak");
        if leaked == 40 {
            leaker = pid;
            break;
        }
    }
    assert_ne!(leaker, 0, "worker 1 never reached 40 leaked files");

    let outcome = warden.wait_record("outcome", 0);
    assert_eq!(outcome["result"], "recovered", "{outcome}");
    let records = warden.records();
    assert_eq!(
        events(&records),
        ["detected", "action", "outcome"],
        "{records:#?}"
    );
    assert_eq!(records[0]["pid"], leaker);
    assert_eq!(records[1]["action"], "recycle-worker");
    assert_eq!(records[1]["pids"], serde_json::json!([leaker]));

    let (master_now, workers_now) = emp.wait_replaced_some("shop.ini", &[leaker], 3);
    assert_eq!(master_now, master);
    for w in workers.iter().filter(|w| **w != leaker) {
        assert!(
            workers_now.contains(w),
            "worker {w} was replaced too: {workers_now:?}"
        );
    }
    assert_eq!(mtime(&ini), before, "the ini was touched");
    assert_eq!(emp.reloads("shop.ini"), 0);
}

#[test]
fn leak_in_the_master_is_cleared_by_touching_the_ini() {
    let emp = Emperor::start();
    let ini = emp.add_vassal(
        "master.ini",
        &VassalSpec {
            extra: vec![
                "enable-threads = true".into(),
                "env = MASTER_LEAK_PER_SEC=20".into(),
                // 40 files on top of its own: over the line (40), short of the limit
                // (64), so however long the Emperor takes to start it, the master never
                // runs out of fds.
                "env = MASTER_LEAK_UPTO=40".into(),
                format!(
                    "env = MASTER_LEAK_ONCE={}/run/leaked-once",
                    emp.root().display()
                ),
            ],
            ..VassalSpec::default()
        },
    );
    let (master, _) = emp.wait_running("master.ini", 1);
    let before = mtime(&ini);
    let warden = Warden::start(
        &bin(),
        &emp,
        "reload-at = 40\nfor = 2\ncooldown = 10m\nverify = 30s\n",
        &[],
    );
    let detected = warden.wait_record("detected", 0);
    assert_eq!(detected["pid"], master, "{detected}");
    assert_eq!(detected["role"], "master");
    assert_eq!(
        detected["top"][0]["target"],
        emp.root().join("static/config.db").to_str().unwrap()
    );
    let action = warden.wait_record("action", 0);
    assert_eq!(action["action"], "touch");
    let outcome = warden.wait_record("outcome", 0);
    assert_eq!(outcome["result"], "recovered", "{outcome}");
    assert!(
        outcome["fds_after"].as_u64().unwrap() < detected["fds"].as_u64().unwrap(),
        "fds did not drop: {detected} then {outcome}"
    );
    // After its re-exec the master does not leak again: its count stays low.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        fd_count(master) < 30,
        "master holds {} fds after the reload",
        fd_count(master)
    );
    assert!(mtime(&ini) > before);
    assert_eq!(emp.reloads("master.ini"), 1);
    // The same master, re-executed.
    assert_eq!(emp.master_of("master.ini"), Some(master));
}

#[test]
fn a_leak_that_comes_back_is_acted_on_at_most_max_reloads_times() {
    let emp = Emperor::start();
    emp.add_vassal("flappy.ini", &VassalSpec::default());
    let (_, mut workers) = emp.wait_running("flappy.ini", 1);
    let warden = Warden::start(
        &bin(),
        &emp,
        "reload-at = 40\nfor = 2\ncooldown = 1s\nmax-reloads = 2 per 1h\naction = touch\nverify = 30s\n",
        &[],
    );
    for round in 0..2 {
        emp.leak("flappy.ini", 40);
        assert_eq!(warden.wait_record("outcome", round)["result"], "recovered");
        workers = emp.wait_replaced("flappy.ini", &workers).1;
        std::thread::sleep(Duration::from_millis(1100));
    }
    emp.leak("flappy.ini", 40);
    let flapping = warden.wait_record("suppressed", 0);
    assert_eq!(flapping["reason"], "flapping", "{flapping}");
    std::thread::sleep(Duration::from_secs(2));
    let records = warden.records();
    assert_eq!(count(&records, "action"), 2, "{records:#?}");
    assert_eq!(emp.reloads("flappy.ini"), 2);
    let (_, now) = emp.wait_running("flappy.ini", 1);
    assert_eq!(
        now, workers,
        "the leaking worker was replaced while flapping"
    );
}

#[test]
fn killed_warden_restarted_within_cooldown_does_not_act_again() {
    let emp = Emperor::start();
    let ini = emp.add_vassal("shop.ini", &VassalSpec::default());
    let (_, workers) = emp.wait_running("shop.ini", 1);
    let policy = "reload-at = 40\nfor = 2\ncooldown = 10m\naction = touch\nverify = 30s\n";
    let mut first = Warden::start(&bin(), &emp, policy, &[]);
    emp.leak("shop.ini", 40);
    first.wait_record("action", 0);
    first.kill(Signal::KILL);
    let touched = mtime(&ini);
    emp.wait_replaced("shop.ini", &workers);

    // The leak comes right back, and a new warden starts within the cooldown.
    emp.leak("shop.ini", 40);
    let second = Warden::start_with_config(&bin(), &first.config, &first.audit_log, &[]);
    let held = second.wait_record("suppressed", 0);
    assert_eq!(held["reason"], "cooldown", "{held}");
    std::thread::sleep(Duration::from_secs(2));
    let records = second.records();
    assert_eq!(count(&records, "action"), 1, "{records:#?}");
    assert_eq!(mtime(&ini), touched);
    assert_eq!(emp.reloads("shop.ini"), 1);
}

#[test]
fn an_ini_that_no_longer_reads_as_a_config_is_not_touched() {
    let emp = Emperor::start();
    let ini = emp.add_vassal("shop.ini", &VassalSpec::default());
    let (master, workers) = emp.wait_running("shop.ini", 1);
    let warden = Warden::start(
        &bin(),
        &emp,
        "reload-at = 40\nfor = 2\ncooldown = 10m\naction = touch\n",
        &[],
    );
    // A broken deploy that kept the old mtime: the Emperor does not notice, the warden does.
    let old = mtime(&ini);
    std::fs::write(&ini, "<<<<<<< HEAD\nthis is not an ini file\n").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&ini)
        .unwrap()
        .set_modified(old)
        .unwrap();
    wait_for(
        Duration::from_secs(30),
        "the warden to notice the broken file",
        || warden.log().contains("no [uwsgi] section").then_some(()),
    );
    emp.leak("shop.ini", 40);
    let held = warden.wait_record("suppressed", 0);
    assert_eq!(held["reason"], "ini_invalid", "{held}");
    assert!(
        held["detail"]
            .as_str()
            .unwrap()
            .contains(ini.to_str().unwrap())
    );
    std::thread::sleep(Duration::from_secs(2));
    let records = warden.records();
    assert_eq!(events(&records), ["detected", "suppressed"], "{records:#?}");
    assert_eq!(mtime(&ini), old);
    assert_eq!(emp.reloads("shop.ini"), 0);
    // The vassal keeps running on its old config.
    assert_eq!(emp.wait_running("shop.ini", 1), (master, workers));
}

#[test]
fn a_steady_leak_is_caught_by_prediction_before_reload_at() {
    let emp = Emperor::start();
    emp.add_vassal(
        "steady.ini",
        &VassalSpec {
            max_fd: 400,
            ..VassalSpec::default()
        },
    );
    let (_, workers) = emp.wait_running("steady.ini", 1);
    let warden = Warden::start(
        &bin(),
        &emp,
        "reload-at = 90%\npredict = 60s\npredict-floor = 10%\npredict-window = 8\nfor = 2\naction = touch\nverify = 30s\n",
        &[],
    );
    // About 20 fds a second until the warden acts.
    let start = std::time::Instant::now();
    while count(&warden.records(), "action") == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no action: {:#?}",
            warden.records()
        );
        emp.request("steady.ini", "/leak");
        std::thread::sleep(Duration::from_millis(50));
    }
    let detected = warden.wait_record("detected", 0);
    assert_eq!(detected["rule_name"], "predict", "{detected}");
    assert!(detected["fds"].as_u64().unwrap() < 360, "{detected}");
    assert!(detected["slope"].as_f64().unwrap() > 5.0, "{detected}");
    assert!(
        detected["eta_seconds"].as_f64().unwrap() <= 60.0,
        "{detected}"
    );
    assert_eq!(warden.wait_record("outcome", 0)["result"], "recovered");
    let (_, now) = emp.wait_replaced("steady.ini", &workers);
    assert!(fd_count(now[0]) < 40);
}

#[test]
fn manual_reload_is_checked_recorded_and_verified() {
    let emp = Emperor::start();
    let ini = emp.add_vassal("shop.ini", &VassalSpec::default());
    let (_, workers) = emp.wait_running("shop.ini", 1);
    let cfg = emp.config("");
    let log = emp.root().join("incidents.jsonl");
    let before = mtime(&ini);
    let out = std::process::Command::new(bin())
        .args(["reload", "shop", "--reason", "deploy hotfix", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(mtime(&ini) > before);
    emp.wait_replaced("shop.ini", &workers);
    let records = crate::harness::read_records(&log);
    assert_eq!(events(&records), ["action", "outcome"], "{records:#?}");
    assert_eq!(records[0]["reason"], "manual: deploy hotfix");
    assert_eq!(records[1]["result"], "recovered");

    // A broken file is refused the same way the daemon refuses it.
    std::fs::write(&ini, "garbage\n").unwrap();
    let out = std::process::Command::new(bin())
        .args(["reload", "shop.ini", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no [uwsgi] section"));
    let records = crate::harness::read_records(&log);
    assert_eq!(records.last().unwrap()["reason"], "ini_invalid");
}

#[test]
fn an_unwritable_incident_log_means_no_action_and_an_error_naming_it() {
    let emp = Emperor::start();
    let ini = emp.add_vassal("shop.ini", &VassalSpec::default());
    emp.wait_running("shop.ini", 1);
    // The log's directory is a regular file: nothing can be written there.
    let blocker = emp.root().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let log = blocker.join("incidents.jsonl");
    let cfg = crate::harness::write_config(
        emp.root(),
        "warden.ini",
        &[emp.vassals.display().to_string()],
        &format!(
            "audit-log = {}\ninterval = 200ms\n[policy]\nreload-at = 40\nfor = 2\naction = touch\n",
            log.display()
        ),
    );
    let warden = Warden::start_with_config(&bin(), &cfg, &log, &[]);
    let before = mtime(&ini);
    emp.leak("shop.ini", 40);
    wait_for(
        Duration::from_secs(30),
        "an error naming the incident log",
        || {
            warden
                .log()
                .lines()
                .any(|l| {
                    l.contains("ERROR")
                        && l.contains(log.to_str().unwrap())
                        && l.contains("audit-log")
                })
                .then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(mtime(&ini), before, "acted without its record on disk");
    assert_eq!(emp.reloads("shop.ini"), 0);
}

/// `stuck.ini`'s worker 1 leaks and hangs in its request, so that recycling it does not
/// work and the warden touches the ini: what it recorded (once both outcomes are in),
/// with its ini's `worker-reload-mercy` and the policy's `verify`, in seconds.
fn stuck_worker_recycled_then_touched(mercy: u64, verify: u64) -> Vec<serde_json::Value> {
    let emp = Emperor::start();
    let ini = emp.add_vassal(
        "stuck.ini",
        &VassalSpec {
            processes: 2,
            extra: vec![
                "env = LEAK_WORKER=1".into(),
                format!("worker-reload-mercy = {mercy}"),
            ],
            ..VassalSpec::default()
        },
    );
    let (_, workers) = emp.wait_running("stuck.ini", 2);
    let before = mtime(&ini);
    let warden = Warden::start(
        &bin(),
        &emp,
        &format!("reload-at = 40\nfor = 2\ncooldown = 1s\nverify = {verify}s\n"),
        &[],
    );
    // Worker 1 opens 45 files and then hangs in its request: SIGHUP cannot replace it
    // (uWSGI waits for the request), so recycling it does not work.
    let stuck = std::thread::scope(|scope| {
        // Worker 2 answers /stuck at once: bursts go on until worker 1 has taken one.
        for _ in 0..30 {
            if workers.iter().any(|w| fd_count(*w) >= 45) {
                break;
            }
            for _ in 0..20 {
                scope.spawn(|| {
                    let _ = emp.try_request("stuck.ini", "/stuck");
                });
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let outcome = warden.wait_record("outcome", 0);
        assert_eq!(outcome["result"], "not_recovered", "{outcome}");
        let outcome = warden.wait_record("outcome", 1);
        assert_eq!(outcome["result"], "recovered", "{outcome}");
        warden.records()
    });
    let actions: Vec<&str> = stuck
        .iter()
        .filter(|r| r["event"] == "action")
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["recycle-worker", "touch"], "{stuck:#?}");
    assert_eq!(
        events(&stuck),
        [
            "detected", "action", "outcome", "detected", "action", "outcome"
        ],
        "{stuck:#?}"
    );
    assert!(
        mtime(&ini) > before,
        "the second step did not touch the ini"
    );
    assert_eq!(emp.reloads("stuck.ini"), 1);
    emp.wait_replaced("stuck.ini", &workers);
    stuck
}

#[test]
fn a_recycle_that_does_not_work_is_followed_by_a_touch_one_step_at_a_time() {
    stuck_worker_recycled_then_touched(3, 10);
}

/// The touch's graceful reload waits for the hung worker until uWSGI kills it, at its
/// `worker-reload-mercy` (17 s), past `verify` (15 s): the warden waits for the reload
/// under way (up to twice `verify`), and records it as the success it is.
#[test]
fn a_reload_held_by_a_hung_worker_is_verified_when_its_mercy_ends_it() {
    let stuck = stuck_worker_recycled_then_touched(17, 15);
    let touched = stuck
        .iter()
        .filter(|r| r["event"] == "outcome")
        .nth(1)
        .unwrap();
    let seconds = touched["seconds"].as_f64().unwrap();
    assert!(seconds > 15.0, "verified within verify: {touched}");
}

#[test]
fn a_change_deployed_with_an_old_mtime_is_not_applied_by_a_touch() {
    let emp = Emperor::start();
    let ini = emp.add_vassal("deploy.ini", &VassalSpec::default());
    let (master, workers) = emp.wait_running("deploy.ini", 1);
    let warden = Warden::start(
        &bin(),
        &emp,
        "reload-at = 40\nfor = 2\ncooldown = 10m\n",
        &[],
    );
    // `cp -p`: new content, old mtime. The Emperor does not reload it.
    let old = mtime(&ini);
    let text = emp.ini_text(&VassalSpec::default()) + "processes = 2\n";
    std::fs::write(&ini, text).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&ini)
        .unwrap()
        .set_modified(old)
        .unwrap();
    wait_for(
        Duration::from_secs(30),
        "the warden to see the pending change",
        || {
            warden
                .log()
                .contains("changed without a newer mtime")
                .then_some(())
        },
    );
    emp.leak("deploy.ini", 40);
    let action = warden.wait_record("action", 0);
    assert_eq!(action["action"], "recycle-worker", "{action}");
    assert!(
        action["note"]
            .as_str()
            .unwrap()
            .contains("a touch would apply it"),
        "{action}"
    );
    assert_eq!(warden.wait_record("outcome", 0)["result"], "recovered");
    // The worker was replaced; the master still runs the old config (one worker).
    let (master_now, now) = emp.wait_replaced("deploy.ini", &workers);
    assert_eq!(master_now, master);
    assert_eq!(now.len(), 1);
    assert_eq!(mtime(&ini), old);
    assert_eq!(emp.reloads("deploy.ini"), 0);
}

#[test]
fn a_manual_reload_counts_for_the_running_wardens_cooldown() {
    let emp = Emperor::start();
    let ini = emp.add_vassal("shop.ini", &VassalSpec::default());
    let (_, workers) = emp.wait_running("shop.ini", 1);
    let warden = Warden::start(
        &bin(),
        &emp,
        "reload-at = 40\nfor = 2\ncooldown = 10m\naction = touch\n",
        &[],
    );
    let out = std::process::Command::new(bin())
        .args(["reload", "shop.ini", "--reason", "deploy", "-c"])
        .arg(&warden.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    emp.wait_replaced("shop.ini", &workers);
    let touched = mtime(&ini);

    emp.leak("shop.ini", 40);
    let held = warden.wait_record("suppressed", 0);
    assert_eq!(held["reason"], "cooldown", "{held}");
    std::thread::sleep(Duration::from_secs(2));
    let records = warden.records();
    assert_eq!(count(&records, "action"), 1, "{records:#?}");
    assert_eq!(mtime(&ini), touched);
    assert_eq!(emp.reloads("shop.ini"), 1);
}

/// A vassal file at the filesystem's latest time (a later one is clamped to it) cannot
/// be made newer: a touch moves nothing and reloads nothing. It is not recorded as an
/// action whose outcome then blames the touch; it is `action_failed`, saying what to do,
/// and the ladder climbs to alerting, which the record and `status` name as a touch that
/// could not be made.
#[test]
fn a_touch_that_cannot_move_the_mtime_is_an_action_failed_not_an_action() {
    let emp = Emperor::start();
    // Written aside with its mtime set, then moved in: the Emperor first sees it so.
    let aside = emp.root().join("stuck.ini.new");
    std::fs::write(&aside, emp.ini_text(&VassalSpec::default())).unwrap();
    let out = std::process::Command::new("touch")
        .args(["-d", "9999-01-01"])
        .arg(&aside)
        .status()
        .unwrap();
    assert!(out.success());
    let ini = emp.ini_path("stuck.ini");
    std::fs::rename(&aside, &ini).unwrap();
    emp.wait_running("stuck.ini", 1);
    let before = mtime(&ini);
    let warden = Warden::start(
        &bin(),
        &emp,
        "reload-at = 40\nfor = 1\naction = touch\ncooldown = 10m\nverify = 30s\n",
        &[],
    );
    emp.leak("stuck.ini", 45);
    let failed = warden.wait_record("suppressed", 0);
    assert_eq!(failed["reason"], "action_failed", "{failed}");
    assert_eq!(failed["action"], "touch", "{failed}");
    let detail = failed["detail"].as_str().unwrap();
    assert!(
        detail.contains("stayed at") && detail.contains("vassal-warden reload"),
        "{detail}"
    );
    let given_up = warden.wait_record("suppressed", 1);
    assert_eq!(given_up["reason"], "ladder_exhausted", "{given_up}");
    // Named as what it was everywhere: no touch happened, so none "did not work".
    let said = given_up["detail"].as_str().unwrap_or_default();
    assert!(said.contains("the touch could not be made"), "{given_up}");
    let status = std::process::Command::new(bin())
        .args(["status", "-c"])
        .arg(&warden.config)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("the touch could not be made") && !status.contains("did not bring"),
        "{status}"
    );
    assert_eq!(
        count(&warden.records(), "action"),
        0,
        "{:?}",
        warden.records()
    );
    assert_eq!(mtime(&ini), before);
    assert_eq!(emp.reloads("stuck.ini"), 0);
}

/// A small filesystem of its own for a test's incident log, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: &std::path::Path) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(ok.success(), "cannot mount a tmpfs at {}", at.display());
        SmallDisk(at.to_owned())
    }

    /// Fills it: a file grows until the filesystem refuses more.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.0.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        while f.write_all(&[0u8; 4096]).is_ok() {}
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A full disk: the first record of an incident cannot be written. It is owed (the
/// metric and the hook count it), the incident keeps its id and is said once, `health`
/// is CRITICAL ("cannot record, so cannot act"), and nothing is done; once space is
/// freed, the record is written under that same id and the warden acts.
#[test]
fn on_a_full_disk_the_incident_is_owed_keeps_its_id_and_health_says_it_cannot_record() {
    use std::os::unix::fs::PermissionsExt;
    let emp = Emperor::start();
    let ini = emp.add_vassal("shop.ini", &VassalSpec::default());
    emp.wait_running("shop.ini", 1);
    let root = emp.root().to_owned();
    let disk = SmallDisk::mount(&root.join("disk"));
    let log = disk.0.join("incidents.jsonl");
    let heard = root.join("heard.jsonl");
    let hook = root.join("hook.sh");
    std::fs::write(&hook, format!("#!/bin/sh\ncat >> {}\n", heard.display())).unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = crate::harness::write_config(
        &root,
        "warden.ini",
        &[emp.vassals.display().to_string()],
        &format!(
            "audit-log = {}\ninterval = 200ms\non-event = {}\non-event-for = all\n\
             [policy]\nreload-at = 40\nfor = 1\naction = touch\n",
            log.display(),
            hook.display()
        ),
    );
    let warden = Warden::start_with_config(&bin(), &cfg, &log, &[]);
    let filler = disk.fill();
    let before = mtime(&ini);
    emp.leak("shop.ini", 45);

    let addr = warden.metrics_addr();
    wait_for(Duration::from_secs(30), "a record owed", || {
        let text = crate::harness::scrape(&addr);
        (crate::harness::metric(&text, "vassal_warden_records_owed") >= 1.0).then_some(())
    });
    let health = std::process::Command::new(bin())
        .args(["health", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&health.stdout);
    assert_eq!(health.status.code(), Some(2), "{said}");
    assert!(
        said.contains("CRITICAL") && said.contains("cannot record, so cannot act"),
        "{said}"
    );
    let told = wait_for(Duration::from_secs(30), "the hook told", || {
        std::fs::read_to_string(&heard)
            .ok()?
            .lines()
            .find(|l| l.contains("log_write_failed"))
            .map(str::to_owned)
    });
    let told: serde_json::Value = serde_json::from_str(&told).unwrap();
    assert!(told["owed"].as_u64() >= Some(1), "{told}");
    // Several passes later: said once, under one id, and nothing done.
    std::thread::sleep(Duration::from_secs(2));
    let over: Vec<String> = warden
        .log()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains(" plan="))
        .map(str::to_owned)
        .collect();
    assert_eq!(over.len(), 1, "{over:#?}");
    let id = over[0]
        .split_once("incident=")
        .and_then(|(_, r)| r.split_whitespace().next())
        .unwrap()
        .to_owned();
    assert_eq!(mtime(&ini), before, "acted without its record on disk");

    std::fs::remove_file(&filler).unwrap();
    let detected = warden.wait_record("detected", 0);
    assert_eq!(detected["incident"], id.as_str(), "{detected}");
    let action = warden.wait_record("action", 0);
    assert_eq!(action["incident"], id.as_str(), "{action}");
}

/// A mule that opens a file every 100 ms, in the first life of its master only: an
/// incident names the mule and what it holds, then its vassal is reloaded by a touch
/// (a mule dies of SIGHUP, so it is never signalled), and the new mule is under its line.
/// `status` and the metrics show the mule against its line.
#[test]
fn a_leaking_mule_gets_an_incident_and_is_replaced_by_a_touch() {
    let emp = Emperor::start();
    let root = emp.root().to_owned();
    let target = root.join("static/config.db");
    let mule = root.join("mule.py");
    std::fs::write(
        &mule,
        format!(
            "import os, time\n\
             once = {once:?}\n\
             if not os.path.exists(once):\n    \
                 open(once, 'w').close()\n    \
                 held = []\n    \
                 while len(held) < 45:\n        \
                     held.append(open({target:?}, 'rb'))\n        \
                     time.sleep(0.1)\n\
             while True:\n    \
                 time.sleep(60)\n",
            once = root.join("run/mule-leaked").display().to_string(),
            target = target.display().to_string(),
        ),
    )
    .unwrap();
    let ini = emp.add_vassal(
        "mule.ini",
        &VassalSpec {
            extra: vec![format!("mule = {}", mule.display())],
            ..VassalSpec::default()
        },
    );
    // A worker and the mule.
    let (master, _) = emp.wait_running("mule.ini", 2);
    let before = mtime(&ini);
    let warden = Warden::start(
        &bin(),
        &emp,
        "reload-at = 40\nfor = 2\ncooldown = 10m\nverify = 30s\n",
        &[],
    );
    let cfg = root.join("warden.ini").display().to_string();
    let detected = warden.wait_record("detected", 0);
    assert_eq!(detected["role"], "mule", "{detected}");
    let leaker = detected["pid"].as_i64().unwrap();
    assert_eq!(detected["top"][0]["target"], target.to_str().unwrap());
    let action = warden.wait_record("action", 0);
    assert_eq!(action["action"], "touch", "{action}");
    let outcome = warden.wait_record("outcome", 0);
    assert_eq!(outcome["result"], "recovered", "{outcome}");
    assert!(mtime(&ini) > before);
    assert_eq!(emp.reloads("mule.ini"), 1);
    assert_eq!(emp.master_of("mule.ini"), Some(master));
    // A new mule, under its line, shown against it.
    let status = wait_for(Duration::from_secs(30), "the new mule", || {
        let status = crate::hostile::status_json(&cfg);
        let roles = crate::hostile::roles_in(&status, "mule.ini");
        roles
            .get("mule")
            .is_some_and(|m| m.len() == 1 && m[0] != leaker)
            .then_some(status)
    });
    let row = status["vassals"][0]["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["role"] == "mule")
        .unwrap()
        .clone();
    assert_eq!(row["line"], 40, "{row}");
    assert!(row["fds"].as_u64().unwrap() < 40, "{row}");
    let text = crate::harness::scrape(&warden.metrics_addr());
    assert!(
        text.lines()
            .any(|l| l.starts_with("vassal_warden_line_fds{vassal=\"mule.ini\",role=\"mule\"} 40")),
        "{text}"
    );
    assert_eq!(count(&warden.records(), "detected"), 1);
}

/// An `http` gateway held near its limit by idle clients is over its line like any
/// process: an incident names the sockets it holds, and a touch replaces it.
#[test]
fn a_gateway_held_by_idle_clients_gets_an_incident_and_is_replaced_by_a_touch() {
    let emp = Emperor::start();
    let port = crate::hostile::free_port();
    emp.add_vassal(
        "gw.ini",
        &VassalSpec {
            extra: vec!["plugins = http".into(), format!("http = 127.0.0.1:{port}")],
            ..VassalSpec::default()
        },
    );
    // A worker and the gateway.
    emp.wait_running("gw.ini", 2);
    let cfg = emp.config("");
    let gateway = wait_for(Duration::from_secs(30), "the gateway", || {
        crate::hostile::roles_in(&crate::hostile::status_json(&cfg), "gw.ini")
            .get("gateway")
            .and_then(|g| g.first().copied())
    });
    let warden = Warden::start(
        &bin(),
        &emp,
        "reload-at = 40\nfor = 2\ncooldown = 10m\nverify = 30s\n",
        &[],
    );
    // Idle clients: connected, never a byte sent.
    let idle: Vec<std::net::TcpStream> = (0..45)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let detected = warden.wait_record("detected", 0);
    assert_eq!(detected["role"], "gateway", "{detected}");
    assert_eq!(detected["pid"], gateway, "{detected}");
    assert!(
        detected["by_kind"]["socket"].as_u64().unwrap_or(0) >= 40,
        "{detected}"
    );
    let action = warden.wait_record("action", 0);
    assert_eq!(action["action"], "touch", "{action}");
    let outcome = warden.wait_record("outcome", 0);
    assert_eq!(outcome["result"], "recovered", "{outcome}");
    drop(idle);
    let now = crate::hostile::roles_in(&crate::hostile::status_json(&cfg), "gw.ini");
    assert!(
        now.get("gateway").is_some_and(|g| !g.contains(&gateway)),
        "the gateway was not replaced: {now:?}"
    );
}

/// A sub-Emperor holds an fd or more for each vassal it runs: over its line it gets an
/// incident and an alert (`runs_vassals`), never a touch, which would restart every
/// vassal it runs.
#[test]
fn a_sub_emperor_over_its_line_is_alerted_on_and_its_vassals_keep_running() {
    let emp = Emperor::start();
    let root = emp.root().to_owned();
    let sub = root.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    for i in 0..12 {
        std::fs::write(
            sub.join(format!("inner{i}.ini")),
            format!(
                "[uwsgi]\n{plugin}master = true\nprocesses = 1\n\
                 socket = {r}/run/inner{i}.sock\nwsgi-file = {r}/app.py\n",
                r = root.display(),
                plugin = emp.python_plugin()
            ),
        )
        .unwrap();
    }
    let ini = emp.add_vassal(
        "sub.ini",
        &VassalSpec {
            extra: vec![format!("emperor = {}", sub.display())],
            ..VassalSpec::default()
        },
    );
    // A worker and the sub-Emperor.
    emp.wait_running("sub.ini", 2);
    let cfg = emp.config("");
    let sub_emperor = wait_for(Duration::from_secs(60), "the sub-Emperor's vassals", || {
        let status = crate::hostile::status_json(&cfg);
        let pid = crate::hostile::roles_in(&status, "sub.ini")
            .get("emperor")?
            .first()
            .copied()?;
        let kids = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
        (kids.split_whitespace().count() == 12).then_some(pid)
    });
    let inner_before =
        std::fs::read_to_string(format!("/proc/{sub_emperor}/task/{sub_emperor}/children"))
            .unwrap();
    assert!(
        fd_count(i32::try_from(sub_emperor).unwrap()) > 14,
        "the sub-Emperor holds too few fds for this test"
    );
    let before = mtime(&ini);
    let warden = Warden::start(
        &bin(),
        &emp,
        "reload-at = 14\nfor = 2\ncooldown = 10m\nverify = 30s\n",
        &[],
    );
    let detected = warden.wait_record("detected", 0);
    assert_eq!(detected["role"], "emperor", "{detected}");
    assert_eq!(detected["pid"], sub_emperor, "{detected}");
    let suppressed = warden.wait_record("suppressed", 0);
    assert_eq!(suppressed["reason"], "runs_vassals", "{suppressed}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        count(&warden.records(), "action"),
        0,
        "{:?}",
        warden.records()
    );
    assert_eq!(mtime(&ini), before);
    assert_eq!(emp.reloads("sub.ini"), 0);
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{sub_emperor}/task/{sub_emperor}/children"))
            .unwrap(),
        inner_before,
        "the sub-Emperor's vassals were restarted"
    );
}

/// The incident log's filesystem is read-only (remounted after an error, say): `health`
/// is CRITICAL and says what to do, though the log's directory has room.
#[test]
fn health_is_critical_when_the_log_is_on_a_read_only_filesystem() {
    let emp = Emperor::start();
    emp.add_vassal("shop.ini", &VassalSpec::default());
    emp.wait_running("shop.ini", 1);
    let root = emp.root().to_owned();
    let disk = SmallDisk::mount(&root.join("disk"));
    let log = disk.0.join("incidents.jsonl");
    std::fs::write(&log, "").unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&disk.0)
        .status()
        .unwrap();
    assert!(ok.success());
    let cfg = crate::harness::write_config(
        &root,
        "warden.ini",
        &[emp.vassals.display().to_string()],
        &format!("audit-log = {}\n", log.display()),
    );
    let health = std::process::Command::new(bin())
        .args(["health", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&health.stdout);
    assert_eq!(health.status.code(), Some(2), "{said}");
    assert!(
        said.contains("CRITICAL") && said.contains("read-only filesystem"),
        "{said}"
    );
}
