//! `pause` and `resume` through a running warden: a paused vassal is sampled and its
//! incident recorded, marked paused, but nothing is done to it and nothing reminded; the
//! pause holds across a restart of the warden, and ends by hand or by itself.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rustix::process::Signal;
use serde_json::Value;

use crate::bin;
use crate::harness::{Emperor, VassalSpec, Warden, count, mtime, wait_for, write_config};

/// Acts at 40 fds on the first sample; reminders every second, so that one would show.
const CONFIG: &str = "interval = 200ms\nremind = 1s\n\n[policy]\nreload-at = 40\nfor = 1\npredict = off\ncooldown = 1s\nverify = 30s\n";

fn run(cfg: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin())
        .args(args)
        .arg("-c")
        .arg(cfg)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn of_event<'a>(records: &'a [Value], event: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["event"] == event).collect()
}

fn start(emp: &Emperor, cfg: &Path) -> Warden {
    // Each warden's own log: the next one is waited for by its own first pass.
    let _ = std::fs::remove_file(emp.root().join("warden.log"));
    Warden::start_with_config(&bin(), cfg, &emp.root().join("incidents.jsonl"), &[])
}

#[test]
fn a_paused_vassal_is_recorded_not_touched_and_acted_on_once_resumed() {
    let emp = Emperor::start();
    let ini = emp.add_vassal("shop.ini", &VassalSpec::default());
    let (_, workers) = emp.wait_running("shop.ini", 1);
    let cfg = write_config(
        emp.root(),
        "warden.ini",
        &[emp.vassals.display().to_string()],
        CONFIG,
    );
    let mut warden = start(&emp, &cfg);
    let before = mtime(&ini);

    let (code, said) = run(
        &cfg,
        &["pause", "shop", "--for", "1h", "--reason", "deploy, JIRA-7"],
    );
    assert_eq!(code, 0, "{said}");
    assert!(said.starts_with("shop.ini: paused until "), "{said}");
    let pause = warden.wait_record("pause", 0);
    assert_eq!(pause["vassal"], "shop.ini");
    assert_eq!(pause["reason"], "deploy, JIRA-7");
    assert_eq!(pause["who"], "root", "{pause}");
    let until = humantime::parse_rfc3339(pause["until"].as_str().unwrap()).unwrap();
    let left = until.duration_since(std::time::SystemTime::now()).unwrap();
    assert!(
        left > Duration::from_secs(3500) && left <= Duration::from_secs(3600),
        "{pause}"
    );

    // Over the line while paused: recorded, marked paused, and nothing done.
    emp.leak("shop.ini", 45);
    let suppressed = warden.wait_record("suppressed", 0);
    assert_eq!(suppressed["reason"], "paused", "{suppressed}");
    assert!(
        suppressed["detail"]
            .as_str()
            .unwrap()
            .starts_with("paused by root until "),
        "{suppressed}"
    );
    // Longer than `remind`: no reminder, no action.
    std::thread::sleep(Duration::from_secs(3));
    let records = warden.records();
    assert_eq!(count(&records, "detected"), 1, "{records:#?}");
    assert_eq!(count(&records, "reminder"), 0, "{records:#?}");
    assert_eq!(count(&records, "action"), 0, "{records:#?}");
    assert_eq!(mtime(&ini), before);
    assert_eq!(emp.wait_running("shop.ini", 1).1, workers);

    // What a person or a monitoring check sees.
    let (code, status) = run(&cfg, &["status"]);
    assert_eq!(code, 0, "{status}");
    assert!(status.contains("paused by root until "), "{status}");
    let (code, line) = run(&cfg, &["health"]);
    assert_eq!(code, 1, "{line}");
    assert!(
        line.starts_with("VASSAL-WARDEN WARNING - ")
            && line.contains("shop.ini: paused by root until "),
        "{line}"
    );

    // A restart does not lift it.
    warden.kill(Signal::TERM);
    wait_for(Duration::from_secs(20), "the warden to stop", || {
        warden.try_wait()
    });
    let warden = start(&emp, &cfg);
    std::thread::sleep(Duration::from_secs(2));
    let records = warden.records();
    assert_eq!(count(&records, "action"), 0, "{records:#?}");
    assert_eq!(count(&records, "reminder"), 0, "{records:#?}");

    // Resumed: acted on at the next pass.
    let (code, said) = run(&cfg, &["resume", "shop.ini", "--reason", "deployed"]);
    assert_eq!(code, 0, "{said}");
    let resume = warden.wait_record("resume", 0);
    assert_eq!(
        (&resume["who"], &resume["reason"]),
        (&"root".into(), &"deployed".into())
    );
    let outcome = warden.wait_record("outcome", 0);
    assert_eq!(outcome["result"], "recovered", "{outcome}");
    let records = warden.records();
    let ended = of_event(&records, "ended");
    assert_eq!(ended.len(), 1, "{records:#?}");
    assert_eq!(ended[0]["reason"], "paused", "{records:#?}");
    // Not paused now: a second resume says so.
    let (code, said) = run(&cfg, &["resume", "shop.ini"]);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("shop.ini is not paused"), "{said}");
}

#[test]
fn a_pause_ends_by_itself_and_the_warden_says_so() {
    let emp = Emperor::start();
    emp.add_vassal("shop.ini", &VassalSpec::default());
    emp.wait_running("shop.ini", 1);
    let cfg = write_config(
        emp.root(),
        "warden.ini",
        &[emp.vassals.display().to_string()],
        CONFIG,
    );
    let warden = start(&emp, &cfg);
    let (code, said) = run(
        &cfg,
        &["pause", "shop", "--for", "3s", "--reason", "a short one"],
    );
    assert_eq!(code, 0, "{said}");
    emp.leak("shop.ini", 45);
    assert_eq!(warden.wait_record("suppressed", 0)["reason"], "paused");
    let resume = warden.wait_record("resume", 0);
    assert_eq!(resume["who"], "vassal-warden", "{resume}");
    assert!(
        resume["reason"]
            .as_str()
            .unwrap()
            .starts_with("the pause ended at "),
        "{resume}"
    );
    assert_eq!(warden.wait_record("outcome", 0)["result"], "recovered");
    // The file keeps no pause that has ended.
    let pauses = std::fs::read_to_string(emp.root().join("incidents.jsonl.pauses")).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&pauses).unwrap(),
        Value::Array(vec![])
    );
}

#[test]
fn pausing_what_is_not_a_vassal_or_for_no_time_is_refused() {
    let emp = Emperor::start();
    emp.add_vassal("shop.ini", &VassalSpec::default());
    let cfg = write_config(
        emp.root(),
        "warden.ini",
        &[emp.vassals.display().to_string()],
        CONFIG,
    );
    let (code, said) = run(&cfg, &["pause", "nope", "--for", "1h", "--reason", "x"]);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("no vassal named `nope`"), "{said}");
    let (code, said) = run(&cfg, &["pause", "shop", "--for", "0s", "--reason", "x"]);
    assert_eq!(code, 2, "{said}");
    assert!(said.contains("a pause must last some time"), "{said}");
    assert!(!emp.root().join("incidents.jsonl").exists());
}
