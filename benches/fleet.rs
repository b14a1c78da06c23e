//! What a fleet of wardens costs a Prometheus: series per vassal and bytes per scrape, and
//! one real Prometheus scraping many wardens at once as the anchor of the arithmetic.
//!
//! Part 1, the page: a real Emperor runs 10, 50, then 100 Python vassals (a master and a
//! worker each); a real warden watches them; one scrape of its endpoint gives bytes,
//! samples, and samples per vassal (the lines that name a vassal, over the vassals
//! named). Then another Emperor runs 1,000 vassals of the same shape, uWSGI alone (no
//! plugin, no app: about a megabyte each, where this host cannot run 1,000 Python
//! vassals): a warden's page of them all quiet, and of them all over their line (a
//! dry-run warden whose line is 5 fds), since past 500 vassals only those in trouble keep
//! series of their own. Beside it, `metrics::render` of the same, the text the endpoint
//! serves.
//!
//! Part 2, one Prometheus: 50 wardens, each with its own log and port, watch the same 50
//! vassals (a host of 50 vassals, 50 times); Debian's Prometheus scrapes all 50 every 5 s
//! for `VW_BENCH_SECONDS` (120 by default). Its own metrics say the series in its head
//! and the samples it appends a second. From these, with the arithmetic shown, what 1,000
//! hosts × 50 vassals cost at a 30 s scrape.
//!
//! Run: `cargo bench --bench fleet` (needs root, uWSGI and Prometheus:
//! `scripts/ensure-uwsgi`, `scripts/ensure-prometheus`).
#![allow(clippy::unwrap_used)]
#![allow(unreachable_pub)]

#[path = "../tests/it/harness.rs"]
mod harness;

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use harness::{Emperor, Group, VassalSpec, Warden};
use vassal_warden::metrics::{self, Histogram, VassalCounts, WardenView};

const VASSALS: usize = 50;
const WARDENS: usize = 50;

/// What a page holds: its samples, those that name a vassal, and the vassals they name.
struct Count {
    samples: usize,
    of_vassals: usize,
    vassals: usize,
}

impl Count {
    fn of(page: &str) -> Count {
        let all: Vec<&str> = page.lines().filter(|l| !l.starts_with('#')).collect();
        let named: Vec<&str> = all
            .iter()
            .filter_map(|l| Some(l.split_once("vassal=\"")?.1.split_once('"')?.0))
            .collect();
        let vassals: std::collections::BTreeSet<&str> = named.iter().copied().collect();
        Count {
            samples: all.len(),
            of_vassals: named.len(),
            vassals: vassals.len(),
        }
    }

    /// `n` vassals watched: the line of the benchmark's output.
    fn line(&self, page: &str, n: usize) -> String {
        format!(
            "{:>8} bytes, {:>6} samples, {:>3} vassals with series of their own, {} per vassal, {} of the warden's own, {:.0} bytes per vassal",
            page.len(),
            self.samples,
            self.vassals,
            self.of_vassals.checked_div(self.vassals).unwrap_or(0),
            self.samples - self.of_vassals,
            page.len() as f64 / n as f64
        )
    }
}

/// The page `metrics::render` makes for `n` running vassals, quiet or all in trouble.
fn rendered(n: usize, trouble: bool) -> String {
    let names: Vec<String> = (0..n).map(|i| format!("app{i:04}.ini")).collect();
    let counts = VassalCounts::default();
    let views = common::running_views(&names, trouble, Some(&counts));
    let mut passes = Histogram::default();
    passes.observe(Duration::from_millis(1));
    let w = WardenView {
        vassals: n,
        emperors: 1,
        processes: 2 * n,
        owed: 0,
        last_pass: SystemTime::now(),
        passes: &passes,
    };
    let mut text = String::new();
    metrics::render(&mut text, &w, &views);
    text
}

/// `GET PATH` of the HTTP server at `addr`: the body.
fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer.split_once("\r\n\r\n").unwrap().1.to_owned()
}

/// The value of an instant query at the Prometheus at `addr`.
fn query(addr: &str, q: &str) -> f64 {
    let mut enc = String::new();
    for b in q.bytes() {
        if b.is_ascii_alphanumeric() || b"_.-~".contains(&b) {
            enc.push(b as char);
        } else {
            let _ = std::fmt::Write::write_fmt(&mut enc, format_args!("%{b:02X}"));
        }
    }
    let body = get(addr, &format!("/api/v1/query?query={enc}"));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{q}: {body}"))
}

fn main() {
    let bin = Path::new(env!("CARGO_BIN_EXE_vassal-warden"));
    // An Emperor of 1,000 vassals holds a few fds for each: this process and what it starts
    // may open as many as the hard limit allows.
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: nofile.maximum,
            maximum: nofile.maximum,
        },
    )
    .unwrap();
    let emp = Emperor::start();
    // The real pages at 10, 50 and 100 running vassals, one warden each; then the host of
    // Part 2 keeps 50.
    let names: Vec<String> = (0..100).map(|i| format!("app{i:02}.ini")).collect();
    let dir = emp.vassals.display().to_string();
    let vassals = [dir];
    println!("series per vassal and bytes per scrape");
    let mut running = 0;
    for n in [10, 50, 100] {
        for name in &names[running..n] {
            emp.add_vassal(name, &VassalSpec::default());
        }
        for name in &names[running..n] {
            emp.wait_running(name, 1);
        }
        running = n;
        real_page(bin, &vassals, n, "", &[]);
    }
    thousand(bin);
    for name in &names[VASSALS..] {
        std::fs::remove_file(emp.ini_path(name)).unwrap();
    }
    harness::wait_for(
        Duration::from_secs(120),
        "the Emperor to stop 50 vassals",
        || {
            names[VASSALS..]
                .iter()
                .all(|n| emp.master_of(n).is_none())
                .then_some(())
        },
    );
    let dirs: Vec<tempfile::TempDir> = (0..WARDENS)
        .map(|_| {
            tempfile::Builder::new()
                .prefix("vw-fleet-")
                .tempdir()
                .unwrap()
        })
        .collect();
    let wardens: Vec<Warden> = dirs
        .iter()
        .map(|d| Warden::start_watching(bin, d.path(), &vassals, "", &[]))
        .collect();
    let addrs: Vec<String> = wardens.iter().map(Warden::metrics_addr).collect();
    rendered_pages();
    prometheus(&addrs);
    drop(wardens);
}

/// Part 1: a real warden's page, watching `vassals` where `n` vassals run, with `policy`
/// and `args`; once a pass has sampled all `n`.
fn real_page(bin: &Path, vassals: &[String], n: usize, policy: &str, args: &[&str]) {
    let root = tempfile::Builder::new()
        .prefix("vw-page-")
        .tempdir()
        .unwrap();
    let start = std::time::Instant::now();
    let warden = Warden::start_watching(bin, root.path(), vassals, policy, args);
    let addr = warden.metrics_addr();
    let running = format!("vassal_warden_vassals_in_state{{state=\"running\"}} {n}\n");
    let page = harness::wait_for(
        Duration::from_secs(120),
        "a page of every vassal running",
        || Some(get(&addr, "/metrics")).filter(|p| p.contains(&running)),
    );
    let first = start.elapsed();
    let what = if args.contains(&"--dry-run") {
        "over their line"
    } else {
        "running        "
    };
    // The passes after this page's: their mean time (the first pass also finds the
    // vassals' processes).
    let value = |page: &str, name: &str| -> f64 {
        page.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap()
    };
    let (count, sum) = (
        "vassal_warden_pass_duration_seconds_count",
        "vassal_warden_pass_duration_seconds_sum",
    );
    let before = value(&page, count);
    let later = harness::wait_for(Duration::from_secs(300), "five more passes", || {
        Some(get(&addr, "/metrics")).filter(|p| value(p, count) >= before + 5.0)
    });
    let passes = value(&later, count) - before;
    let pass_ms = 1e3 * (value(&later, sum) - value(&page, sum)) / passes;
    let status = std::fs::read_to_string(format!("/proc/{}/status", warden.pid())).unwrap();
    let rss_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap();
    println!(
        "  real endpoint, {n:>4} vassals {what}: {}",
        Count::of(&page).line(&page, n),
    );
    println!(
        "    the page of them all {:.2} s after the warden started; then a pass {pass_ms:.0} ms (mean of {passes}); the warden {:.1} MB resident",
        first.as_secs_f64(),
        rss_kb / 1024.0
    );
}

/// Part 1 at 1,000 vassals: an Emperor of its own runs them, uWSGI alone (a master and a
/// worker each, no plugin and no app); a warden's page of them quiet, then of them all
/// over a line of 5 fds (a dry run: nothing is done to them).
fn thousand(bin: &Path) {
    const N: usize = 1000;
    let emp = Emperor::start();
    let run = emp.root().join("run");
    for i in 0..N {
        let ini = format!(
            "[uwsgi]\nmaster = true\nprocesses = 1\nsocket = {}/%n.sock\n",
            run.display()
        );
        std::fs::write(emp.ini_path(&format!("light{i:04}.ini")), ini).unwrap();
    }
    let started = std::time::Instant::now();
    harness::wait_for(
        Duration::from_secs(600),
        "1,000 vassals to run, each with its worker",
        || {
            let masters = harness::children(emp.emperor_pid());
            let whole = masters
                .iter()
                .filter(|m| !harness::children(**m).is_empty())
                .count();
            (whole >= N).then_some(())
        },
    );
    let emperor_fds = std::fs::read_dir(format!("/proc/{}/fd", emp.emperor_pid()))
        .unwrap()
        .count();
    println!(
        "  ({N} vassals of uWSGI alone running after {:.0} s; their Emperor holds {emperor_fds} fds)",
        started.elapsed().as_secs_f64()
    );
    let vassals = [emp.vassals.display().to_string()];
    real_page(bin, &vassals, N, "", &[]);
    real_page(bin, &vassals, N, "reload-at = 5", &["--dry-run"]);
}

/// Part 1, the same pages made by `metrics::render`, which the endpoint serves.
fn rendered_pages() {
    for (n, trouble) in [(100, false), (1000, false), (1000, true)] {
        let text = rendered(n, trouble);
        let what = if trouble {
            "in trouble     "
        } else {
            "running        "
        };
        println!(
            "  render,        {n:>4} vassals {what}: {}",
            Count::of(&text).line(&text, n)
        );
    }
}

/// Part 2: one Prometheus scraping the wardens at `addrs`, and the fleet's arithmetic.
fn prometheus(addrs: &[String]) {
    let seconds: u64 = std::env::var("VW_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let prom_dir = tempfile::Builder::new()
        .prefix("vw-prom-")
        .tempdir()
        .unwrap();
    let (_prometheus, prom_addr) = start_prometheus(prom_dir.path(), addrs);
    std::thread::sleep(Duration::from_secs(seconds));
    // The wardens' series in the head (their samples, and the 5 Prometheus adds to each
    // target: up, scrape_duration_seconds, …); and all it appends a second (its scrapes
    // of itself too).
    let series = query(&prom_addr, "count({job=\"vassal-warden\"})");
    let appended = query(
        &prom_addr,
        "rate(prometheus_tsdb_head_samples_appended_total[1m])",
    );
    let scraped = query(
        &prom_addr,
        "sum(scrape_samples_scraped{job=\"vassal-warden\"})",
    );
    let up = query(&prom_addr, "sum(up{job=\"vassal-warden\"})");
    let bytes: usize = addrs.iter().map(|a| get(a, "/metrics").len()).sum();
    let per_target = scraped / up;
    println!(
        "one Prometheus scraping {WARDENS} wardens of {VASSALS} vassals each, every 5 s, over {seconds} s"
    );
    println!("  targets up {up:.0}; samples per scrape {per_target:.0} per target");
    println!(
        "  head series {series:.0} ({:.0} per target: its samples and 5 of Prometheus's own); appended {appended:.0} samples/s (5 s scrape)",
        series / up
    );
    println!(
        "  bytes per scrape {:.0} per target ({bytes} for all {WARDENS})",
        bytes as f64 / WARDENS as f64
    );
    let hosts = 1000.0;
    let fleet_series = hosts * series / up;
    let fleet_rate = hosts * per_target / 30.0;
    let fleet_bw = hosts * (bytes as f64 / WARDENS as f64) / 30.0;
    println!("1,000 hosts × {VASSALS} vassals at a 30 s scrape:");
    println!(
        "  series      1000 × {:.0} = {fleet_series:.0}",
        series / up
    );
    println!(
        "  samples/s   1000 × {per_target:.0} / 30 s = {fleet_rate:.0} (measured here: {:.0}/s for {WARDENS} targets at 5 s, {:.0} per target per scrape)",
        appended,
        appended * 5.0 / up
    );
    println!(
        "  bandwidth   1000 × {:.0} bytes / 30 s = {:.1} MB/s uncompressed",
        bytes as f64 / WARDENS as f64,
        fleet_bw / 1e6
    );
}

/// Debian's Prometheus, its data in `dir`, scraping `addrs` every 5 s: its process group,
/// and the address of its API.
fn start_prometheus(dir: &Path, addrs: &[String]) -> (Group, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let targets = addrs
        .iter()
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\nscrape_configs:\n  - job_name: vassal-warden\n    static_configs:\n      - targets: [{targets}]\n  - job_name: prometheus\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    let prom_addr = format!("127.0.0.1:{port}");
    let group = Group::spawn(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    (group, prom_addr)
}
