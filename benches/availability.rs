//! Availability through a sustained leak: how many requests fail, how many workers are
//! recycled and how slow requests get, with the warden (default config) beside two
//! baselines measured in the same run: no warden at all, and uWSGI's own `max-requests`
//! set low enough to survive the same leak.
//!
//! For each leak rate, a fresh Emperor runs one vassal (2 workers, `max-fd = 1024`, an app
//! that leaks one file per request), and 2 clients, one per worker, each send RATE
//! requests a second on its unix socket, each request taking 80% of its slot to answer,
//! so that both workers are busy most of the time and leak in lockstep at RATE fds a
//! second each (the case where they reach their limits together) for a window long enough to reach the limit two or three times
//! (2.5 × 1024 / RATE s, at least 30 s; `VW_BENCH_SECONDS` fixes it) at 20, 50 and 100 leaked fds a
//! second per worker (`VW_BENCH_RATES=5,20` for others; rate 0 is a control of 100
//! requests a second per worker that leak nothing). Each configuration runs
//! `VW_BENCH_RUNS` times (10 by default), each with a fresh Emperor: a loss that happens
//! in one run of three shows as the worst run beside the median. `VW_BENCH_SETUPS`
//! (`none,max-requests,warden`) picks the setups. A failed request is one not answered
//! `200 OK` (the app's `Errno 24`, a connection closed with no answer, or no answer
//! within 10 s). Recycles are the master's "Respawned uWSGI worker" lines; reloads the
//! Emperor's "reload the uwsgi instance".
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
/// One client per worker.
const CLIENTS: u32 = WORKERS;
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
    const ALL: [Setup; 3] = [Setup::NoWarden, Setup::MaxRequests, Setup::Warden];

    fn name(self) -> &'static str {
        match self {
            Setup::NoWarden => "no warden",
            Setup::MaxRequests => "uWSGI max-requests",
            Setup::Warden => "vassal-warden (defaults)",
        }
    }

    /// Its name in `VW_BENCH_SETUPS`.
    fn key(self) -> &'static str {
        match self {
            Setup::NoWarden => "none",
            Setup::MaxRequests => "max-requests",
            Setup::Warden => "warden",
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

/// One client per worker, each sending `per_sec` requests a second for `window`, each
/// request taking 80% of its slot to answer: every worker is busy most of the time, so
/// the workers leak in lockstep (the case where they reach their limits together). A
/// request that fails at once does not make its client hurry: it waits for its next slot,
/// so that failures count requests a user would have sent, not how fast a client can be
/// refused.
fn traffic(
    socket: &Path,
    path: &str,
    per_sec: u32,
    window: Duration,
) -> (usize, usize, Vec<Duration>) {
    let stop = Arc::new(AtomicBool::new(false));
    let step = Duration::from_secs(1) / per_sec;
    let url = format!("{path}?ms={}", step.as_millis() * 4 / 5);
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let socket: PathBuf = socket.to_owned();
            let halt = stop.clone();
            let url = url.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut out = Vec::new();
                let mut n = 0;
                while !halt.load(Ordering::Relaxed) {
                    if let Some(w) = (start + step * n).checked_duration_since(Instant::now()) {
                        std::thread::sleep(w);
                    }
                    out.push(get(&socket, &url));
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

fn run(setup: Setup, rate: u32, window: Duration, n: usize) -> Run {
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
    let warden = (setup == Setup::Warden).then(|| {
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
        traffic(&emp.socket("shop.ini"), path, per_worker, window);
    latencies.sort();
    let log = emp.log_text();
    if let Some(dir) = std::env::var_os("VW_BENCH_DEBUG") {
        // Keep the Emperor's log, the incident log and the warden's, to see what happened.
        let keep = PathBuf::from(dir).join(format!("availability-{rate}-{}-{n}", setup.key()));
        std::fs::write(keep.with_extension("emperor.log"), &log).unwrap();
        let _ = std::fs::copy(
            emp.root().join("incidents.jsonl"),
            keep.with_extension("jsonl"),
        );
        if let Some(w) = &warden {
            std::fs::write(keep.with_extension("warden.log"), w.log()).unwrap();
        }
        eprintln!(
            "run {n}: {failed} failed; logs kept at {}.*",
            keep.display()
        );
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
fn pct<T: Copy + Default>(sorted: &[T], p: usize) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    sorted[(sorted.len() - 1) * p / 100]
}

/// The median of `v` (the lower of the middle two).
fn median<T: Copy + Ord + Default>(v: &[T]) -> T {
    let mut v = v.to_vec();
    v.sort_unstable();
    pct(&v, 50)
}

fn main() {
    let env = |k: &str| std::env::var(k).ok();
    // A window long enough for each worker to reach its limit two or three times over,
    // unless `VW_BENCH_SECONDS` fixes it.
    let fixed: Option<u64> = env("VW_BENCH_SECONDS").and_then(|s| s.parse().ok());
    let window_for = |rate: u32| {
        Duration::from_secs(
            fixed.unwrap_or_else(|| (u64::from(MAX_FD) * 5 / 2 / u64::from(rate.max(1))).max(30)),
        )
    };
    let runs: usize = env("VW_BENCH_RUNS")
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
        .max(1);
    let rates: Vec<u32> = env("VW_BENCH_RATES")
        .unwrap_or_else(|| "0,20,50,100".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let wanted = env("VW_BENCH_SETUPS").unwrap_or_else(|| "none,max-requests,warden".into());
    let setups: Vec<Setup> = Setup::ALL
        .into_iter()
        .filter(|s| wanted.split(',').any(|w| w.trim() == s.key()))
        .collect();
    println!(
        "availability: 1 vassal, {WORKERS} workers, max-fd {MAX_FD}, one leaked fd per request, \
         {CLIENTS} clients, {runs} runs per configuration; kernel {}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "{:>12} {:>7}  {:<26} {:>9} {:>14} {:>12} {:>9} {:>8} {:>8} {:>9} {:>9}",
        "leak/worker",
        "window",
        "setup",
        "requests",
        "failed median",
        "failed worst",
        "runs lost",
        "recycles",
        "reloads",
        "p50",
        "p99"
    );
    for rate in rates {
        for &setup in &setups {
            let window = window_for(rate);
            let all: Vec<Run> = (0..runs).map(|n| run(setup, rate, window, n)).collect();
            let failed: Vec<usize> = all.iter().map(|r| r.failed).collect();
            let mut latencies: Vec<Duration> = all
                .iter()
                .flat_map(|r| r.latencies.iter().copied())
                .collect();
            latencies.sort_unstable();
            let recycles: Vec<usize> = all.iter().map(|r| r.recycles).collect();
            let reloads: Vec<usize> = all.iter().map(|r| r.reloads).collect();
            println!(
                "{:>10}/s {:>6}s  {:<26} {:>9} {:>14} {:>12} {:>9} {:>8} {:>8} {:>7.1}ms {:>7.1}ms",
                rate,
                window.as_secs(),
                setup.name(),
                median(&all.iter().map(|r| r.requests).collect::<Vec<_>>()),
                median(&failed),
                failed.iter().max().copied().unwrap_or(0),
                format!("{}/{runs}", failed.iter().filter(|f| **f > 0).count()),
                median(&recycles),
                median(&reloads),
                pct(&latencies, 50).as_secs_f64() * 1e3,
                pct(&latencies, 99).as_secs_f64() * 1e3,
            );
        }
    }
}
