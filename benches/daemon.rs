//! The daemon's own cost: CPU and memory while watching 150 processes at a 1 s interval.
//!
//! A real Emperor with 50 vassals of 1 master + 2 workers each; the warden watches them
//! with the default policy (nothing fires). Measured over a window (60 s by default,
//! `VW_BENCH_SECONDS` to change it): the warden's CPU time from /proc/PID/stat, its RSS at
//! the start and the end of the window (no growth per sample) and its peak. References in
//! the same run: the Emperor's own CPU over the same window (it polls its vassal directory
//! every second too), and the bare syscalls of the same sampling (150 `stat` calls a
//! second). Budget: ≤ 0.5% of one core, ≤ 10 MiB RSS.
//!
//! Run: `cargo bench --bench daemon`
#![allow(clippy::unwrap_used)]
// A benchmark binary: its `pub` items (and the shared harness's) are for its own modules.
#![allow(unreachable_pub)]

#[path = "../tests/it/harness.rs"]
mod harness;

use std::path::Path;
use std::time::{Duration, Instant};

use harness::{Emperor, VassalSpec, Warden};

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

fn warden_pid(log: &Path) -> i32 {
    // The warden is the leader of its process group; its PID is in no log, so find the
    // child of this process running the binary.
    let me = std::process::id().cast_signed();
    harness::children(me)
        .into_iter()
        .find(|p| {
            std::fs::read_link(format!("/proc/{p}/exe"))
                .is_ok_and(|e| e.file_name().is_some_and(|n| n == "vassal-warden"))
        })
        .unwrap_or_else(|| panic!("no warden child; see {}", log.display()))
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
    let bin = Path::new(env!("CARGO_BIN_EXE_vassal-warden"));
    let cfg = emp.root().join("warden.ini");
    std::fs::write(
        &cfg,
        format!(
            "[warden]\nvassals = {}\ninterval = 1s\naudit-log = {}\n",
            emp.vassals.display(),
            emp.root().join("incidents.jsonl").display()
        ),
    )
    .unwrap();
    let warden = Warden::start_with_config(bin, &cfg, &emp.root().join("incidents.jsonl"), &[]);
    let pid = warden_pid(&warden.stderr);
    // Let start-up (baselines of every process) pass before measuring.
    std::thread::sleep(Duration::from_secs(3));

    let (w0, e0, rss0) = (
        cpu_seconds(pid),
        cpu_seconds(emp.pid()),
        status_kib(pid, "VmRSS:"),
    );
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let wall = t0.elapsed().as_secs_f64();
    let (w1, e1, rss1, hwm) = (
        cpu_seconds(pid),
        cpu_seconds(emp.pid()),
        status_kib(pid, "VmRSS:"),
        status_kib(pid, "VmHWM:"),
    );
    let (processes, bare_per_sweep) = bare_sweep(&emp);

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
}
