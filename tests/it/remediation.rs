//! The whole loop against a real Emperor: detect, record, touch, verify — and the cases
//! where the warden must hold back.

use std::time::Duration;

use crate::bin;
use crate::harness::{Emperor, VassalSpec, Warden, events, fd_count, mtime, wait_for};

/// reload-at 40 fds, two consecutive samples, a long cooldown.
const POLICY: &str = "reload-at = 40\nfor = 2\ncooldown = 10m\nverify = 30s\n";

#[test]
fn leaking_worker_is_reloaded_and_healthy_vassal_is_left_alone() {
    let emp = Emperor::start();
    let leaky = emp.add_vassal("leaky.ini", &VassalSpec::default());
    let healthy = emp.add_vassal("healthy.ini", &VassalSpec::default());
    let (master, workers) = emp.wait_running("leaky.ini", 1);
    emp.wait_running("healthy.ini", 1);
    let baseline_fds = fd_count(workers[0]);
    let leaky_mtime = mtime(&leaky);
    let healthy_mtime = mtime(&healthy);

    let warden = Warden::start(&bin(), &emp, POLICY, &[]);
    let (pid, leaked) = emp.leak("leaky.ini", 40);
    assert_eq!(pid, workers[0]);
    assert_eq!(leaked, 40);

    let outcome = warden.wait_record("outcome", 0);
    assert_eq!(outcome["result"], "recovered", "{outcome}");
    let records = warden.records();
    assert_eq!(
        events(&records),
        ["detected", "action", "outcome"],
        "{records:#?}"
    );
    let incident = &records[0]["incident"];
    assert!(
        records
            .iter()
            .all(|r| &r["incident"] == incident && r["vassal"] == "leaky.ini")
    );

    let detected = &records[0];
    assert_eq!(detected["pid"], workers[0]);
    assert_eq!(detected["role"], "worker");
    assert_eq!(detected["limit"], 64);
    assert_eq!(detected["config"], leaky.to_str().unwrap());
    let top = &detected["top"][0];
    let cat = emp.root().join("static/cat.jpg");
    assert_eq!(top["target"], cat.to_str().unwrap());
    assert_eq!(top["kind"], "file");
    assert_eq!(top["count"], 40);
    assert_eq!(top["growth"], 40);
    assert!(detected["by_kind"]["file"].as_u64().unwrap() >= 40);

    let action = &records[1];
    assert_eq!(action["action"], "touch");
    assert_eq!(action["dry_run"], false);
    assert!(mtime(&leaky) > leaky_mtime, "the ini mtime did not advance");
    wait_for(
        Duration::from_secs(10),
        "the Emperor to log the reload",
        || (emp.reloads("leaky.ini") == 1).then_some(()),
    );

    // Same master (re-exec'd), new worker, back near its baseline.
    let (master_after, workers_after) = emp.wait_replaced("leaky.ini", &workers);
    assert_eq!(master_after, master);
    let fds_after = fd_count(workers_after[0]);
    assert!(
        fds_after <= baseline_fds + 3,
        "worker has {fds_after} fds after reload, baseline {baseline_fds}"
    );

    // The healthy vassal was never touched nor reloaded.
    assert_eq!(mtime(&healthy), healthy_mtime);
    assert_eq!(emp.reloads("healthy.ini"), 0);

    // Each line of the warden's own log names what it is about, in its message: the
    // vassal, the process, its count and what leaks, then what was done and how it ended.
    let log = warden.log();
    for said in [
        format!(
            "WARN vassal_warden::warden: leaky.ini: worker {pid} at {}/64 fds ({} ×40): touching its file (graceful reload) ",
            detected["fds"],
            cat.display()
        ),
        format!(
            "INFO vassal_warden::warden: leaky.ini: touched {} (graceful reload) ",
            leaky.display()
        ),
        "INFO vassal_warden::warden: leaky.ini: recovered: ".to_owned(),
    ] {
        assert!(log.contains(&said), "no line {said:?} in:\n{log}");
    }
}

#[test]
fn dry_run_records_but_does_not_touch() {
    let emp = Emperor::start();
    let leaky = emp.add_vassal("leaky.ini", &VassalSpec::default());
    let (_, workers) = emp.wait_running("leaky.ini", 1);
    let before = mtime(&leaky);
    let warden = Warden::start(&bin(), &emp, POLICY, &["--dry-run"]);
    emp.leak("leaky.ini", 40);

    let suppressed = warden.wait_record("suppressed", 0);
    assert_eq!(suppressed["reason"], "dry_run");
    // Give a reload every chance to show up: the Emperor scans every second.
    std::thread::sleep(Duration::from_secs(3));
    let records = warden.records();
    assert_eq!(events(&records), ["detected", "suppressed"], "{records:#?}");
    assert_eq!(records[0]["top"][0]["count"], 40);
    assert_eq!(mtime(&leaky), before);
    assert_eq!(emp.reloads("leaky.ini"), 0);
    let (_, workers_now) = emp.wait_running("leaky.ini", 1);
    assert_eq!(workers_now, workers, "the worker was replaced in a dry run");
}

#[test]
fn leak_that_continues_after_reload_is_not_touched_again_within_cooldown() {
    let emp = Emperor::start();
    let leaky = emp.add_vassal("leaky.ini", &VassalSpec::default());
    let (_, first) = emp.wait_running("leaky.ini", 1);
    let warden = Warden::start(&bin(), &emp, POLICY, &[]);
    emp.leak("leaky.ini", 40);
    let outcome = warden.wait_record("outcome", 0);
    assert_eq!(outcome["result"], "recovered");
    let touched = mtime(&leaky);

    // The new worker leaks just the same.
    let (_, new_workers) = emp.wait_replaced("leaky.ini", &first);
    let (pid, leaked) = emp.leak("leaky.ini", 40);
    assert_eq!(pid, new_workers[0]);
    assert_eq!(leaked, 40);
    let suppressed = warden.wait_record("suppressed", 0);
    assert_eq!(suppressed["reason"], "cooldown");
    std::thread::sleep(Duration::from_secs(2));

    let records = warden.records();
    assert_eq!(
        events(&records),
        ["detected", "action", "outcome", "detected", "suppressed"],
        "{records:#?}"
    );
    let second = records.iter().filter(|r| r["event"] == "detected").nth(1);
    assert_eq!(second.unwrap()["pid"], new_workers[0]);
    assert_eq!(mtime(&leaky), touched, "touched again within the cooldown");
    assert_eq!(emp.reloads("leaky.ini"), 1);
}

#[test]
fn touch_reloads_even_when_the_ini_was_modified_this_second() {
    let emp = Emperor::start();
    let leaky = emp.add_vassal("leaky.ini", &VassalSpec::default());
    let (_, first) = emp.wait_running("leaky.ini", 1);
    // A deploy just wrote the file: its mtime is this second. To make "the warden acts
    // within the same second" certain on a loaded machine, the mtime is set ahead of the
    // clock instead (a clock skew between hosts does the same): a touch that sets "now"
    // would not be newer than what the Emperor saw, so only "old mtime + 1 s" reloads.
    let ahead = std::time::SystemTime::now() + Duration::from_secs(30);
    std::fs::File::options()
        .write(true)
        .open(&leaky)
        .unwrap()
        .set_modified(ahead)
        .unwrap();
    wait_for(
        Duration::from_secs(15),
        "the Emperor to reload the deployed file",
        || (emp.reloads("leaky.ini") == 1).then_some(()),
    );
    emp.wait_replaced("leaky.ini", &first);

    let warden = Warden::start(&bin(), &emp, POLICY, &[]);
    emp.leak("leaky.ini", 40);
    let action = warden.wait_record("action", 0);
    let before = humantime::parse_rfc3339(action["mtime_before"].as_str().unwrap()).unwrap();
    let after = humantime::parse_rfc3339(action["mtime_after"].as_str().unwrap()).unwrap();
    let secs =
        |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(secs(after), secs(before) + 1, "{action}");
    let outcome = warden.wait_record("outcome", 0);
    assert_eq!(outcome["result"], "recovered", "{outcome}");
    assert_eq!(emp.reloads("leaky.ini"), 2);
}
