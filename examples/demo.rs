//! A self-contained demo: a throwaway uWSGI Emperor with a leaking vassal and a healthy
//! one, the warden watching them, requests until the leak crosses the line, then the
//! incident, the reload, and the code that leaks (found in the new worker, which leaks
//! too). Everything it starts is stopped when it ends.
//!
//! Run it with `scripts/demo` (which installs uWSGI when missing), or `cargo run --example demo`.
#![allow(clippy::unwrap_used)]
// An example binary: its `pub` items (and the shared harness's) are for its own modules.
#![allow(unreachable_pub)]

#[path = "../tests/it/harness.rs"]
mod harness;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use harness::{Emperor, VassalSpec, Warden, fd_count};

fn warden_binary() -> PathBuf {
    // target/<profile>/examples/demo → target/<profile>/vassal-warden
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|p| p.parent())
        .unwrap()
        .join("vassal-warden");
    if let Ok(cargo) = std::env::var("CARGO") {
        let profile_release = exe.to_string_lossy().contains("/release/");
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "--bin", "vassal-warden"]);
        if profile_release {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().unwrap().success(),
            "cannot build vassal-warden"
        );
    }
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build` first",
        bin.display()
    );
    bin
}

fn show(bin: &PathBuf, args: &[&str]) {
    println!("\n$ vassal-warden {}", args.join(" "));
    let out = Command::new(bin).args(args).output().unwrap();
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
}

fn main() {
    let bin = warden_binary();
    if Command::new("uwsgi").arg("--version").output().is_err() {
        eprintln!(
            "uWSGI is not installed: apt-get install -y uwsgi-core uwsgi-plugin-python3 (or run scripts/demo)"
        );
        std::process::exit(1);
    }

    println!("== starting a uWSGI Emperor with two vassals (max-fd = 64 each)");
    let emp = Emperor::start();
    emp.add_vassal("shop.ini", &VassalSpec::default());
    emp.add_vassal("blog.ini", &VassalSpec::default());
    let (master, workers) = emp.wait_running("shop.ini", 1);
    emp.wait_running("blog.ini", 1);
    println!("   vassal dir: {}", emp.vassals.display());
    println!(
        "   shop.ini: master {master}, worker {} with {} fds",
        workers[0],
        fd_count(workers[0])
    );

    println!("\n== starting the warden: reload at 75% of the soft limit, 2 samples in a row");
    let warden = Warden::start(
        &bin,
        &emp,
        "reload-at = 75%\nfor = 2\ncooldown = 10m\nverify = 30s",
        &[],
    );
    let cfg = warden.config.to_string_lossy().into_owned();
    show(&bin, &["status", "-c", &cfg]);

    println!("\n== shop.ini leaks one open file per request; sending requests");
    let start = Instant::now();
    let mut sent = 0;
    while warden.records().iter().all(|r| r["event"] != "action") {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no action after 60 s; see {}",
            warden.stderr.display()
        );
        if let Ok(body) = emp.try_request("shop.ini", "/leak") {
            sent += 1;
            if sent % 10 == 0 {
                let pid: i32 = body.split_whitespace().next().unwrap().parse().unwrap();
                println!(
                    "   {sent} requests: worker {pid} holds {} fds",
                    fd_count(pid)
                );
            }
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    println!("   the warden acted after {sent} requests; waiting for the reload to be verified");
    warden.wait_record("outcome", 0);
    let (_, new_workers) = emp.wait_running("shop.ini", 1);
    println!(
        "   shop.ini: master {master}, new worker {} with {} fds",
        new_workers[0],
        fd_count(new_workers[0])
    );
    for line in emp
        .log_text()
        .lines()
        .filter(|l| l.contains("[emperor] reload"))
    {
        println!("   emperor log: {line}");
    }

    the_code_that_leaks(&emp, &warden);

    show(&bin, &["incidents", "-c", &cfg]);
    show(&bin, &["incidents", "-c", &cfg, "--json"]);
    show(&bin, &["status", "-c", &cfg]);
    println!("\n== done; stopping the Emperor and the warden");
}

/// A leak this fast reaches the line before the capture sees the file opened: the
/// capture goes on in the new worker, and the code comes under the same incident.
fn the_code_that_leaks(emp: &Emperor, warden: &Warden) {
    println!("\n== the bug is still there: 20 more requests to the new worker");
    for _ in 0..20 {
        let _ = emp.try_request("shop.ini", "/leak");
        std::thread::sleep(Duration::from_millis(30));
    }
    let incident = warden.wait_record("detected", 0)["incident"].clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    let named = loop {
        let records = warden.records();
        let found = records.iter().any(|r| {
            r["incident"] == incident
                && ["detected", "capture"].contains(&r["event"].as_str().unwrap_or(""))
                && r["capture"]["sites"]
                    .as_array()
                    .is_some_and(|s| !s.is_empty())
        });
        if found || Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if named {
        println!("   the code that leaks is recorded under incident {incident}");
    } else {
        println!(
            "   no code site recorded within 60 s; see {}",
            warden.stderr.display()
        );
    }
}
