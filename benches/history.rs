//! `incidents` over a long history, beside the daemon's own start on the same log.
//!
//! Writes a history of about 1 GB (1.6 million records over 399 days, as a year of a busy
//! host's incidents would be) and a rotated file beside it, `.1.gz`, that inflates to 3 GiB
//! (crafted: one record repeated; the rotation is older than every record of the log).
//! Then, each run as a separate process and timed with GNU time (wall time, peak RSS):
//! the daemon's start (`run --once` on the same log: it reads the last 4 MiB of the log
//! and of two rotations) as the reference, `incidents --json --since 24h`, `--since 400d`
//! (every record of the log, the rotation skipped by its first record), the table over
//! everything (the rotation inflated too). Budget: ≤ 50 MB, and `--since 24h` well under a
//! second.
//!
//! Run: `cargo bench --bench history` (the history is written under `target/tmp`, about
//! 1.1 GB, and kept for the next run).
#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

/// Records in the log, one every 21.5 s over 399 days.
const RECORDS: u64 = 1_600_000;
const SPAN: Duration = Duration::from_secs(399 * 86_400);

fn record(at: SystemTime, i: u64) -> String {
    let ts = humantime::format_rfc3339_seconds(at);
    let n = 200 + i % 300;
    format!(
        r#"{{"schema":1,"ts":"{ts}","incident":"20261206T000000Z-{i}-1","vassal":"shop{v}.ini","config":"/etc/uwsgi-emperor/vassals/shop{v}.ini","event":"detected","pid":{pid},"role":"worker","fds":{n},"limit":1024,"usage":0.5,"rule":"reload-at","top":[{{"target":"/srv/shop/static/cat.jpg","kind":"file","count":{n},"growth":{n},"inherited":0}},{{"target":"socket:[tcp 127.0.0.1:5432]","kind":"socket","count":12,"growth":0,"inherited":0}},{{"target":"/dev/null","kind":"file","count":3,"growth":0,"inherited":3}}],"by_kind":{{"file":{n},"socket":12,"other":4}}}}"#,
        v = i % 40,
        pid = 1000 + i % 30_000,
    ) + "\n"
}

fn write_history(dir: &Path) -> PathBuf {
    let log = dir.join("incidents.jsonl");
    let done = dir.join("written");
    if done.exists() {
        return log;
    }
    std::fs::create_dir_all(dir).unwrap();
    let now = SystemTime::now();
    let start = now - SPAN;
    let step = SPAN.as_secs_f64() / RECORDS as f64;
    let mut f = std::io::BufWriter::new(std::fs::File::create(&log).unwrap());
    for i in 0..RECORDS {
        let at = start + Duration::from_secs_f64(step * i as f64);
        f.write_all(record(at, i).as_bytes()).unwrap();
    }
    f.flush().unwrap();
    // The rotation: older than the log, 3 GiB inflated.
    let old = record(start - Duration::from_secs(86_400), 0);
    let gz = std::fs::File::create(dir.join("incidents.jsonl.1.gz")).unwrap();
    let mut enc = flate2::write::GzEncoder::new(gz, flate2::Compression::fast());
    let block = old.repeat(4096);
    let mut written = 0u64;
    while written < 3 << 30 {
        enc.write_all(block.as_bytes()).unwrap();
        written += block.len() as u64;
    }
    enc.finish().unwrap();
    std::fs::write(&done, "").unwrap();
    log
}

/// Wall seconds, peak RSS in MB, and the lines printed, of `vassal-warden ARGS`.
fn timed(bin: &Path, cfg: &Path, args: &[&str]) -> (f64, f64, usize) {
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%e %M"])
        .arg(bin)
        .args(args)
        .arg("-c")
        .arg(cfg)
        .output()
        .expect("GNU time (apt-get install time)");
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default().to_owned();
    let mut f = last.split_whitespace();
    let secs: f64 = f
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    let kib: f64 = f
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    let lines = out.stdout.split(|b| *b == b'\n').count() - 1;
    (secs, kib / 1000.0, lines)
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = root.join("target/release/vassal-warden");
    let status = Command::new("cargo")
        .args(["build", "--release", "--bin", "vassal-warden"])
        .status()
        .unwrap();
    assert!(status.success());
    let dir = root.join("target/tmp/history-bench");
    let log = write_history(&dir);
    let size = std::fs::metadata(&log).unwrap().len();
    let cfg = dir.join("warden.ini");
    // No vassal anywhere: the start reads its history, makes one pass over nothing.
    std::fs::write(
        &cfg,
        format!(
            "[warden]\nvassals = {}\naudit-log = {}\nmetrics = off\n",
            dir.join("no-vassals").display(),
            log.display()
        ),
    )
    .unwrap();
    println!(
        "history: {:.2} GB, {RECORDS} records over {} days, and a rotation of 3 GiB inflated",
        size as f64 / 1e9,
        SPAN.as_secs() / 86_400
    );
    let (start_s, start_mb, _) = timed(&bin, &cfg, &["run", "--once"]);
    println!(
        "  daemon start (run --once)             {start_s:7.2} s  {start_mb:6.1} MB   (reference)"
    );
    for (what, args) in [
        (
            "incidents --json --since 24h",
            &["incidents", "--json", "--since", "24h"][..],
        ),
        (
            "incidents --json --since 400d",
            &["incidents", "--json", "--since", "400d"][..],
        ),
        ("incidents (table, everything)", &["incidents"][..]),
    ] {
        let (s, mb, lines) = timed(&bin, &cfg, args);
        println!(
            "  {what:<36} {s:7.2} s  {mb:6.1} MB   {lines} lines; time/start {:.2}×, memory/start {:.2}×",
            s / start_s.max(0.01),
            mb / start_mb
        );
    }
}
