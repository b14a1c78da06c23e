//! The daemon's own cost: CPU and memory while watching 150 processes at a 1 s interval.
//!
//! A real Emperor with 50 vassals of 1 master + 2 workers each; the warden watches them
//! with the default policy (nothing fires). Measured over a window (60 s by default,
//! `VW_BENCH_SECONDS` to change it): the warden's CPU time from /proc/PID/stat, its RSS at
//! the start and the end of the window (no growth per sample) and its peak. References in
//! the same run: the Emperor's own CPU over the same window (it polls its vassal directory
//! every second too), the bare syscalls of the same sampling (150 `stat` calls a
//! second), and a second warden with `metrics = off` watching the same vassals (the
//! measured one serves metrics, as shipped). Then the cost of rendering one pass's
//! metrics against the warden's mean pass, from its own histogram. Budget: ≤ 0.5% of
//! one core, ≤ 10 MiB RSS.
//!
//! Run: `cargo bench --bench daemon`
#![allow(clippy::unwrap_used)]
// A benchmark binary: its `pub` items (and the shared harness's) are for its own modules.
#![allow(unreachable_pub)]

#[path = "../tests/it/harness.rs"]
mod harness;

use std::path::Path;
use std::time::{Duration, Instant};

use harness::{Emperor, VassalSpec, Warden, metric, scrape};

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: i32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &text[text.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime); `rest` starts at field 3.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

fn status_kib(pid: i32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = text.lines().find(|l| l.starts_with(key)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The bare syscalls of the same sampling, timed here: how many processes, and the time
/// of one `stat` of each.
fn bare_sweep(emp: &Emperor) -> (usize, f64) {
    let pids: Vec<i32> = harness::children(emp.pid())
        .into_iter()
        .flat_map(|m| std::iter::once(m).chain(harness::children(m)))
        .collect();
    let paths: Vec<std::ffi::CString> = pids
        .iter()
        .map(|p| std::ffi::CString::new(format!("/proc/{p}/fd")).unwrap())
        .collect();
    let t = Instant::now();
    for _ in 0..100 {
        for p in &paths {
            std::hint::black_box(rustix::fs::stat(p.as_c_str()).ok());
        }
    }
    (pids.len(), t.elapsed().as_secs_f64() / 100.0)
}

fn main() {
    let seconds: u64 = std::env::var("VW_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let emp = Emperor::start();
    let spec = VassalSpec {
        processes: 2,
        ..VassalSpec::default()
    };
    for i in 0..50 {
        emp.add_vassal(&format!("app{i:02}.ini"), &spec);
    }
    for i in 0..50 {
        emp.wait_running(&format!("app{i:02}.ini"), 2);
    }
    // The warden as shipped (metrics on) and, beside it over the same window, one with
    // `metrics = off`: the reference for what the metrics cost.
    let warden = start_warden(&emp, "on", "127.0.0.1:0");
    let plain = start_warden(&emp, "off", "off");
    let pid = warden.pid();
    let plain_pid = plain.pid();
    // Let start-up (baselines of every process) pass before measuring.
    std::thread::sleep(Duration::from_secs(3));

    let (w0, e0, rss0, p0) = (
        cpu_seconds(pid),
        cpu_seconds(emp.pid()),
        status_kib(pid, "VmRSS:"),
        cpu_seconds(plain_pid),
    );
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let wall = t0.elapsed().as_secs_f64();
    let (w1, e1, rss1, hwm, p1) = (
        cpu_seconds(pid),
        cpu_seconds(emp.pid()),
        status_kib(pid, "VmRSS:"),
        status_kib(pid, "VmHWM:"),
        cpu_seconds(plain_pid),
    );
    let (processes, bare_per_sweep) = bare_sweep(&emp);
    let exposition = scrape(&warden.metrics_addr());

    let warden_pct = (w1 - w0) / wall * 100.0;
    let emperor_pct = (e1 - e0) / wall * 100.0;
    let bare_pct = bare_per_sweep * 100.0; // one sweep a second
    println!(
        "daemon watching {processes} processes ({} vassals) at a 1 s interval, over {wall:.0} s",
        50
    );
    println!("  warden CPU                     {warden_pct:>7.3}% of one core   (budget 0.5%)");
    println!(
        "  Emperor CPU, same window       {emperor_pct:>7.3}% of one core   warden/Emperor {}",
        if emperor_pct > 0.0 {
            format!("{:.1}×", warden_pct / emperor_pct)
        } else {
            "n/a (under one 10 ms tick)".to_owned()
        }
    );
    println!(
        "  bare stat() of every process  {bare_pct:>7.3}% of one core   warden/bare {:.1}×",
        warden_pct / bare_pct
    );
    println!(
        "  warden RSS {:.1} MiB at start of window, {:.1} MiB at end, peak {:.1} MiB   (budget 10 MiB)",
        rss0 as f64 / 1024.0,
        rss1 as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!(
        "  (CPU time is counted in 10 ms ticks: {:.2} s for the warden)",
        w1 - w0
    );
    let plain_pct = (p1 - p0) / wall * 100.0;
    println!(
        "  warden with metrics = off, same window {plain_pct:>7.3}% of one core   with/without metrics {:.2}×",
        warden_pct / plain_pct
    );
    report_rendering(&exposition);
}

/// Starts a warden watching `emp` with `metrics = METRICS`, its files in `root/NAME/`.
fn start_warden(emp: &Emperor, name: &str, metrics: &str) -> Warden {
    let dir = emp.root().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("warden.ini");
    let log = dir.join("incidents.jsonl");
    std::fs::write(
        &cfg,
        format!(
            "[warden]\nvassals = {}\ninterval = 1s\naudit-log = {}\nmetrics = {metrics}\n",
            emp.vassals.display(),
            log.display()
        ),
    )
    .unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_vassal-warden"));
    Warden::start_with_config(bin, &cfg, &log, &[])
}

/// What rendering one pass's metrics costs: the median time of `metrics::render` for 50
/// vassals (as the warden renders them: master and worker sampled, every counter),
/// against the mean pass of the warden measured above (from its own histogram).
fn report_rendering(exposition: &str) {
    use vassal_warden::metrics::{self, Histogram, Side, VassalView, WardenView};
    let names: Vec<String> = (0..50).map(|i| format!("app{i:02}.ini")).collect();
    let side = Side {
        fds: 12,
        limit: 1024,
        line: 820,
    };
    let views: Vec<VassalView<'_>> = names
        .iter()
        .map(|name| VassalView {
            name,
            state: metrics::State::Running,
            sides: metrics::Sides::master_and_worker(Some(side), Some(side)),
            flapping: false,
            given_up: false,
            last_action: None,
            counts: None,
            hook_failures: 0,
            episode: None,
            paused_until: None,
            owner: None,
        })
        .collect();
    let mut passes = Histogram::default();
    passes.observe(Duration::from_millis(1));
    let w = WardenView {
        vassals: 50,
        emperors: 1,
        processes: 150,
        owed: 0,
        last_pass: std::time::SystemTime::now(),
        passes: &passes,
    };
    let mut text = String::new();
    let mut times: Vec<f64> = (0..1001)
        .map(|_| {
            let t = Instant::now();
            metrics::render(&mut text, &w, &views);
            std::hint::black_box(&text);
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let render = times[times.len() / 2];
    let mean_pass = metric(exposition, "vassal_warden_pass_duration_seconds_sum")
        / metric(exposition, "vassal_warden_pass_duration_seconds_count");
    println!(
        "  metrics: rendering one pass (50 vassals, {} bytes) {:.1} µs, median of 1001; \
         the warden's mean pass {:.2} ms (its own histogram); render/pass {:.1}%",
        text.len(),
        render * 1e6,
        mean_pass * 1e3,
        render / mean_pass * 100.0
    );
    assert_eq!(
        text.lines().count(),
        exposition.lines().count(),
        "the rendered sample should have the shape of the warden's own"
    );
}
