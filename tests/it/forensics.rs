//! Naming what a process holds open: exact classification, growth, inheritance.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::Command;

use serde_json::{Value, json};
use vassal_warden::forensics::{self, Baseline};
use vassal_warden::sample;

use crate::bin;
use crate::harness::{Emperor, Holder, VassalSpec};

/// The `processes` of `vassal-warden fds ARGS --json`: one entry for a PID, master first
/// for a vassal.
fn fds_json(args: &[&str]) -> Vec<Value> {
    let out = Command::new(bin())
        .arg("fds")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    serde_json::from_value(doc["processes"].take()).unwrap()
}

fn target<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["top"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == name)
        .unwrap_or_else(|| panic!("no target {name} in {report:#}"))
}

#[test]
fn every_kind_of_fd_is_classified_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.bin");
    let gone = dir.path().join("gone.tmp");
    std::fs::write(&data, b"x").unwrap();
    std::fs::write(&gone, b"x").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server_path = dir.path().join("db.sock");
    let server = std::os::unix::net::UnixListener::bind(&server_path).unwrap();
    let args: Vec<String> = [
        "--files",
        "3",
        data.to_str().unwrap(),
        "--deleted",
        gone.to_str().unwrap(),
        "--tcp",
        "2",
        &addr,
        "--unix",
        "3",
        server_path.to_str().unwrap(),
        "--unixpair",
        "1",
        "--pipe",
        "1",
        "--eventfd",
        "1",
        "--epoll",
        "1",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let holder = Holder::start(&args);

    let processes = fds_json(&[&holder.pid().to_string(), "--top", "50"]);
    let r = &processes[0];
    assert_eq!(r["pid"], holder.pid());
    let expect = |name: &str, kind: &str, count: u64| {
        let t = target(r, name);
        assert_eq!(
            (t["kind"].as_str().unwrap(), t["count"].as_u64().unwrap()),
            (kind, count),
            "{name}"
        );
    };
    expect(data.to_str().unwrap(), "file", 3);
    expect(&format!("{} (deleted)", gone.display()), "deleted", 1);
    expect(&format!("tcp → {addr} ESTABLISHED"), "socket", 2);
    // A client of a server's socket is named by the server's path (its peer's name).
    expect(&format!("unix → {}", server_path.display()), "socket", 3);
    expect("unix (unnamed)", "socket", 2);
    expect("anon_inode:[eventfd]", "anon_inode", 1);
    expect("anon_inode:[eventpoll]", "anon_inode", 1);
    expect("/dev/null", "device", 1);
    // Both ends of the one pipe share an inode; stdin and stdout are two more pipes.
    let pipes: Vec<u64> = r["top"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"] == "pipe")
        .map(|t| t["count"].as_u64().unwrap())
        .collect();
    assert_eq!(pipes.iter().sum::<u64>(), 4);
    assert!(pipes.contains(&2));

    let by_kind: BTreeMap<String, u64> = serde_json::from_value(r["by_kind"].clone()).unwrap();
    let want: BTreeMap<String, u64> = serde_json::from_value(json!({
        "file": 3, "deleted": 1, "socket": 7, "pipe": 4, "anon_inode": 2, "device": 1
    }))
    .unwrap();
    assert_eq!(by_kind, want);
    assert_eq!(r["fds"], 18);
    drop((listener, server));
}

#[test]
fn growth_counts_what_the_process_opened_since_the_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.db");
    let new = dir.path().join("new.log");
    std::fs::write(&old, b"x").unwrap();
    std::fs::write(&new, b"x").unwrap();
    let mut holder = Holder::start(&["--files".into(), "4".into(), old.display().to_string()]);
    let pid = holder.pid();
    let baseline = Baseline::take(pid, sample::fd_count(pid).unwrap());
    holder.open_more(6, &new);
    holder.open_more(1, &old);

    let r = forensics::report(pid, 10, Some(&baseline), None).unwrap();
    let get = |p: &std::path::Path| {
        r.top
            .iter()
            .find(|t| t.target == p.to_str().unwrap())
            .unwrap()
    };
    assert_eq!((get(&new).count, get(&new).growth), (6, Some(6)));
    assert_eq!((get(&old).count, get(&old).growth), (5, Some(1)));
    assert_eq!(r.growth, Some(7));
    // The target that grew most ranks first.
    assert_eq!(r.top[0].target, new.to_str().unwrap());
}

#[test]
fn fast_count_equals_directory_count_on_a_large_process() {
    let holder = Holder::start(&["--files".into(), "3000".into(), "/etc/hostname".into()]);
    let fast = sample::fd_count(holder.pid()).unwrap();
    let slow = sample::fd_count_readdir(holder.pid()).unwrap();
    assert_eq!(fast, slow);
    assert!(fast >= 3000);
}

#[test]
fn files_opened_at_import_in_the_master_are_marked_inherited_in_workers() {
    let emp = Emperor::start();
    emp.add_vassal(
        "inherit.ini",
        &VassalSpec {
            open_at_import: 5,
            ..VassalSpec::default()
        },
    );
    let (master, workers) = emp.wait_running("inherit.ini", 1);
    emp.leak("inherit.ini", 3);
    let cfg = emp.config("");
    let sections = fds_json(&["inherit.ini", "-c", &cfg]);
    assert_eq!(sections[0]["pid"], master);
    let worker = &sections[1];
    assert_eq!(worker["pid"], workers[0]);
    let config_db = emp.root().join("static/config.db");
    let cat = emp.root().join("static/cat.jpg");
    let imported = target(worker, config_db.to_str().unwrap());
    assert_eq!(imported["count"], 5);
    assert_eq!(imported["inherited"], 5, "{worker:#}");
    let leaked = target(worker, cat.to_str().unwrap());
    assert_eq!(leaked["count"], 3);
    assert_eq!(leaked["inherited"], 0, "{worker:#}");
    // The master holds the imported files itself; nothing is marked on it.
    assert_eq!(
        target(&sections[0], config_db.to_str().unwrap())["count"],
        5
    );
    assert!(sections[0]["top"][0].get("inherited").is_none());
}
