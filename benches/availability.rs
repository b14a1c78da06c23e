//! Availability through a sustained leak: how many requests fail, how many workers are
//! recycled and how slow requests get, with the warden (default config) beside two
//! baselines measured in the same run: no warden at all, and uWSGI's own `max-requests`
//! set low enough to survive the same leak.
//!
//! For each leak rate, a fresh Emperor runs one vassal (2 workers, `max-fd = 1024`, an app
//! that leaks one file per request), and 4 client threads send steady traffic on its unix
//! socket at 2 × RATE requests a second (RATE leaked fds a second per worker) for a window
//! (90 s by default, `VW_BENCH_SECONDS` to change it) at 20, 50 and 100 leaked fds a
//! second per worker (`VW_BENCH_RATES=5,20` for others), and a control with no leak (rate
//! 0: 100 requests a second per worker that leak nothing). A failed request is one not
//! answered `200 OK` (the app's `Errno 24`, or no answer within 10 s). Recycles are the master's "Respawned uWSGI worker" lines; reloads
//! the Emperor's "reload the uwsgi instance".
//!
//! Run: `cargo bench --bench availability`
#![allow(clippy::unwrap_used)]
// A benchmark binary: its `pub` items (and the shared harness's) are for its own modules.
#![allow(unreachable_pub)]

#[path = "../tests/it/harness.rs"]
mod harness;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use harness::{Emperor, VassalSpec, Warden, write_config};

const WORKERS: u32 = 2;
const MAX_FD: u32 = 1024;
const CLIENTS: u32 = 4;
/// The `max-requests` baseline: a fresh worker holds about 10 fds, so 900 leaked requests
/// stay under 1024. uWSGI does not recycle a worker younger than `min-worker-lifetime`
/// (10 s unless set), whatever its requests: at 100 a second that is 1,000 leaked fds, so
/// the baseline sets it to 1 s, or it could not survive the leak at all.
const MAX_REQUESTS: u32 = 900;

#[derive(Clone, Copy, PartialEq)]
enum Setup {
    NoWarden,
    MaxRequests,
    Warden,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::NoWarden => "no warden",
            Setup::MaxRequests => "uWSGI max-requests",
            Setup::Warden => "vassal-warden (defaults)",
        }
    }
}

/// What one run saw.
struct Run {
    requests: usize,
    failed: usize,
    latencies: Vec<Duration>,
    recycles: usize,
    reloads: usize,
}

/// One request; whether it was answered `200 OK`, and how long it took.
fn get(socket: &Path, path: &str) -> (bool, Duration) {
    let t = Instant::now();
    let ok = (|| -> std::io::Result<bool> {
        let mut s = UnixStream::connect(socket)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: bench\r\n\r\n")?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        Ok(buf.starts_with("HTTP/1.0 200") || buf.starts_with("HTTP/1.1 200"))
    })()
    .unwrap_or(false);
    (ok, t.elapsed())
}

/// `CLIENTS` threads sending `per_sec` requests a second in all, for `window`.
fn traffic(
    socket: &Path,
    path: &'static str,
    per_sec: u32,
    window: Duration,
) -> (usize, usize, Vec<Duration>) {
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let socket: PathBuf = socket.to_owned();
            let halt = stop.clone();
            std::thread::spawn(move || {
                let step = Duration::from_secs(1) * CLIENTS / per_sec;
                // Spread the clients' phases over one step.
                let start = Instant::now() + step * i / CLIENTS;
                let mut out = Vec::new();
                let mut n = 0;
                while !halt.load(Ordering::Relaxed) {
                    if let Some(w) = (start + step * n).checked_duration_since(Instant::now()) {
                        std::thread::sleep(w);
                    }
                    out.push(get(&socket, path));
                    n += 1;
                }
                out
            })
        })
        .collect();
    std::thread::sleep(window);
    stop.store(true, Ordering::Relaxed);
    let all: Vec<(bool, Duration)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let failed = all.iter().filter(|(ok, _)| !ok).count();
    let latencies = all.iter().map(|(_, d)| *d).collect();
    (all.len(), failed, latencies)
}

fn run(setup: Setup, rate: u32, window: Duration) -> Run {
    let emp = Emperor::start();
    let mut spec = VassalSpec {
        processes: WORKERS,
        max_fd: MAX_FD,
        ..VassalSpec::default()
    };
    if setup == Setup::MaxRequests {
        spec.extra.push(format!("max-requests = {MAX_REQUESTS}"));
        spec.extra.push("min-worker-lifetime = 1".into());
    }
    emp.add_vassal("shop.ini", &spec);
    emp.wait_running("shop.ini", WORKERS as usize);
    let _warden = (setup == Setup::Warden).then(|| {
        let cfg = write_config(
            emp.root(),
            "warden.ini",
            &[emp.vassals.display().to_string()],
            "",
        );
        Warden::start_with_config(
            Path::new(env!("CARGO_BIN_EXE_vassal-warden")),
            &cfg,
            &emp.root().join("incidents.jsonl"),
            &[],
        )
    });
    // Rate 0: the control, 100 requests a second per worker that leak nothing.
    let (path, per_worker) = if rate == 0 {
        ("/", 100)
    } else {
        ("/leak", rate)
    };
    let (requests, failed, mut latencies) =
        traffic(&emp.socket("shop.ini"), path, per_worker * WORKERS, window);
    latencies.sort();
    let log = emp.log_text();
    if std::env::var_os("VW_BENCH_DEBUG").is_some() {
        // Keep the Emperor's log and the incident log, to see what happened.
        let keep = std::env::temp_dir().join(format!(
            "availability-{rate}-{}",
            setup.name().split_whitespace().next().unwrap_or("run")
        ));
        std::fs::write(keep.with_extension("log"), &log).unwrap();
        let _ = std::fs::copy(
            emp.root().join("incidents.jsonl"),
            keep.with_extension("jsonl"),
        );
        eprintln!("logs kept at {}.{{log,jsonl}}", keep.display());
    }
    Run {
        requests,
        failed,
        latencies,
        recycles: log.matches("Respawned uWSGI worker").count(),
        reloads: emp.reloads("shop.ini"),
    }
}

/// The `p`th percentile (0..=100) of `sorted`.
fn pct(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() - 1) * p / 100]
}

fn main() {
    let seconds: u64 = std::env::var("VW_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(90);
    let rates: Vec<u32> = std::env::var("VW_BENCH_RATES")
        .unwrap_or_else(|_| "0,20,50,100".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let window = Duration::from_secs(seconds);
    println!(
        "availability: 1 vassal, {WORKERS} workers, max-fd {MAX_FD}, one leaked fd per request, \
         {CLIENTS} clients, {seconds} s per run; kernel {}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "{:>14}  {:<26} {:>9} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "leak/worker", "setup", "requests", "failed", "recycles", "reloads", "p50", "p99"
    );
    for rate in rates {
        for setup in [Setup::NoWarden, Setup::MaxRequests, Setup::Warden] {
            let r = run(setup, rate, window);
            println!(
                "{:>12}/s  {:<26} {:>9} {:>8} {:>8} {:>8} {:>7.1}ms {:>7.1}ms",
                rate,
                setup.name(),
                r.requests,
                r.failed,
                r.recycles,
                r.reloads,
                pct(&r.latencies, 50).as_secs_f64() * 1e3,
                pct(&r.latencies, 99).as_secs_f64() * 1e3,
            );
        }
    }
}
