//! What a capture costs the app it watches: the time added to an open, and to a request.
//!
//! Part 1, one open: this process opens and closes a file in a loop, with no capture
//! (the reference), armed for another file (each open traps into the uprobe, which looks
//! the file up and returns), armed for this very file (each open is reported: fd, inode,
//! native stack), and armed on another process only (this one is not touched). With
//! `kernel.bpf_stats_enabled` on, the kernel's own count gives the mean time of the
//! program per run: the pause of the thread inside the probe.
//!
//! Part 2, one request: a real Emperor runs `tests/apps/shop.py` (bottle, one worker);
//! `GET /shop/peek` opens and closes `static/cat.jpg` through three Python frames under
//! bottle. Requests are timed over the vassal's unix socket with no capture, armed for
//! another file, and armed for cat.jpg with a budget large enough that every open is
//! reported with its Python frames.
//!
//! Part 3, one request on each release: the same request and the same capture with its
//! Python frames, in a Debian 12 root (uWSGI 2.0.21, CPython 3.11) and a Debian 13 root
//! (uWSGI 2.0.28, CPython 3.13), each against its own reference, in one run.
//!
//! Run: `cargo bench --bench capture` (`VW_BENCH_OPENS`, default 20000;
//! `VW_BENCH_REQUESTS`, default 2000). Needs root with `CAP_BPF` and `CAP_PERFMON`.
#![allow(clippy::unwrap_used)]
// A benchmark binary: its `pub` items (and the shared harness's) are for its own modules.
#![allow(unreachable_pub)]

#[path = "../tests/it/harness.rs"]
mod harness;

use std::path::Path;
use std::time::{Duration, Instant};

use harness::{Emperor, EmperorOptions, Root, VassalSpec, debian_root};
use vassal_warden::capture::{ProgramStats, Session};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Mean nanoseconds per open+close of `path`, over `n`.
fn opens(path: &Path, n: usize) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        drop(std::hint::black_box(std::fs::File::open(path).unwrap()));
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn mean_run(before: ProgramStats, after: ProgramStats) -> String {
    let runs = after.runs - before.runs;
    if runs == 0 {
        return "-".into();
    }
    format!(
        "{:.0} ns",
        (after.nanos - before.nanos) as f64 / runs as f64
    )
}

struct BpfStats(String);

impl BpfStats {
    fn on() -> BpfStats {
        let path = "/proc/sys/kernel/bpf_stats_enabled";
        let old = std::fs::read_to_string(path).unwrap_or_else(|_| "0".into());
        let _ = std::fs::write(path, "1");
        BpfStats(old.trim().to_owned())
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", &self.0);
    }
}

/// The median of `v`.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Rounds of each condition, interleaved, so that the machine's drift hits all alike.
const ROUNDS: usize = 5;

fn part_one(dir: &Path, n: usize) {
    let this = dir.join("this");
    let other = dir.join("other");
    std::fs::write(&this, b"x").unwrap();
    std::fs::write(&other, b"y").unwrap();
    let me = std::process::id().cast_signed();
    let budget = u32::try_from(n * 4).unwrap();
    opens(&this, n / 10); // warm the page cache and the dentry
    let mut sleeper = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let sleeper_pid = sleeper.id().cast_signed();
    let (mut none, mut elsewhere, mut other_file, mut this_file) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut other_runs, mut this_runs) = (ProgramStats::default(), ProgramStats::default());
    let add = |a: &mut ProgramStats, before: ProgramStats, after: ProgramStats| {
        a.runs += after.runs - before.runs;
        a.nanos += after.nanos - before.nanos;
    };
    for _ in 0..ROUNDS {
        none.push(opens(&this, n));

        let s = Session::start(&[sleeper_pid], &this, budget).unwrap();
        elsewhere.push(opens(&this, n));
        drop(s.finish());

        let s = Session::start(&[me], &other, budget).unwrap();
        let before = s.stats().0;
        other_file.push(opens(&this, n));
        add(&mut other_runs, before, s.stats().0);
        drop(s.finish());

        let s = Session::start(&[me], &this, budget).unwrap();
        let before = s.stats().0;
        this_file.push(opens(&this, n));
        add(&mut this_runs, before, s.stats().0);
        drop(s.finish());
    }
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let reference = median(none);
    let row = |name: &str, v: Vec<f64>, run: String| {
        let m = median(v);
        println!("| {name} | {m:.0} ns | {:.2} | {run} |", m / reference);
    };
    println!("## one open+close (median of {ROUNDS} rounds of {n}, this process)\n");
    println!("| capture | per open | vs none | program per run |");
    println!("|---|---:|---:|---:|");
    println!("| none (reference) | {reference:.0} ns | 1.00 | - |");
    row("armed on another process", elsewhere, "-".into());
    row(
        "armed here, another file",
        other_file,
        mean_run(ProgramStats::default(), other_runs),
    );
    row(
        "armed here, this file, every open reported",
        this_file,
        mean_run(ProgramStats::default(), this_runs),
    );
    println!();
}

/// Per-request times in microseconds, sorted.
fn requests(emp: &Emperor, n: usize) -> Vec<f64> {
    let mut t: Vec<f64> = (0..n)
        .map(|_| {
            let start = Instant::now();
            emp.try_request("shop.ini", "/shop/peek").unwrap();
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t
}

fn summary(name: &str, t: &[f64], reference: &[f64], run: &str) {
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    // The q-quantile by rank: (len - 1) × q, rounded down.
    let p = |v: &[f64], q: u32| v[(v.len() - 1) * q as usize / 100];
    println!(
        "| {name} | {:.0} µs | {:.0} µs | {:.0} µs | {:.3} | {run} |",
        mean(t),
        p(t, 50),
        p(t, 99),
        mean(t) / mean(reference)
    );
}

/// An Emperor (started as `opts` say) running `tests/apps/shop.py` with one worker, and
/// the vassal's master and worker.
fn shop_emperor(opts: &EmperorOptions) -> (Emperor, [i32; 2]) {
    let emp = Emperor::start_with(opts);
    std::fs::write(
        emp.root().join("shop.py"),
        include_str!("../tests/apps/shop.py"),
    )
    .unwrap();
    let text = emp
        .ini_text(&VassalSpec {
            max_fd: 1024,
            ..VassalSpec::default()
        })
        .replace("/app.py", "/shop.py");
    std::fs::write(emp.ini_path("shop.ini"), text).unwrap();
    let (master, workers) = emp.wait_running("shop.ini", 1);
    (emp, [master, workers[0]])
}

fn part_two(n: usize) {
    let (emp, pids) = shop_emperor(&EmperorOptions::default());
    let cat = emp.root().join("static/cat.jpg");
    let other = emp.root().join("static/config.db");
    let budget = u32::try_from(n * 4).unwrap();
    requests(&emp, n / 10);
    let reference = requests(&emp, n);

    let s = Session::start(&pids, &other, budget).unwrap();
    let before = s.stats().0;
    let armed_other = requests(&emp, n);
    let other_run = mean_run(before, s.stats().0);
    drop(s.finish());

    let s = Session::start(&pids, &cat, budget).unwrap();
    let before = s.stats().0;
    let armed_this = requests(&emp, n);
    let this_run = mean_run(before, s.stats().0);
    let c = s.finish();
    let after = requests(&emp, n);

    println!("## one request, GET /shop/peek ({n} each, one worker)\n");
    println!("| capture | mean | p50 | p99 | mean vs none | program per run |");
    println!("|---|---:|---:|---:|---:|---:|");
    summary("none (reference)", &reference, &reference, "-");
    summary("armed, another file", &armed_other, &reference, &other_run);
    summary(
        "armed, cat.jpg: every open reported with its Python frames",
        &armed_this,
        &reference,
        &this_run,
    );
    summary("none again, after", &after, &reference, "-");
    let frames = c.sites.first().map_or(0, |s| s.frames.len());
    println!(
        "\nreports: {}; sites: {}; frames in the first: {frames}",
        c.reports,
        c.sites.len()
    );
}

/// Part 3: the same request, and the same capture with every open reported with its
/// Python frames, on two Debian releases' own uWSGI and CPython (each in a root of its
/// own, `tests/it/stacks.rs`'s way), in one run: what the frame walk costs on 3.11's
/// layout beside 3.13's (read from the interpreter's debug offsets).
fn part_three(n: usize) {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let target = tmp.parent().unwrap();
    println!(
        "\n## one request, GET /shop/peek, on each release ({ROUNDS} interleaved rounds of {} each, one worker)\n",
        n / ROUNDS
    );
    println!("| release | capture | mean | p50 | p99 | mean vs none | program per run |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    let mut per_request = Vec::new();
    for (suite, python) in [
        ("bookworm", "uWSGI 2.0.21, CPython 3.11"),
        ("trixie", "uWSGI 2.0.28, CPython 3.13"),
    ] {
        let tar = debian_root(
            suite,
            "uwsgi-core,uwsgi-plugin-python3,python3-bottle",
            target,
        );
        let root = Root::extract(&tar, tmp);
        let (emp, pids) = shop_emperor(&EmperorOptions {
            within: root.within(),
            ..EmperorOptions::default()
        });
        let cat = emp.root().join("static/cat.jpg");
        requests(&emp, n / 10);
        // Interleaved rounds, so that the machine's drift hits both alike.
        let (mut reference, mut armed) = (Vec::new(), Vec::new());
        let (mut runs, mut reports) = (ProgramStats::default(), 0);
        for _ in 0..ROUNDS {
            reference.extend(requests(&emp, n / ROUNDS));
            let s = Session::start(&pids, &cat, u32::try_from(n * 4).unwrap()).unwrap();
            // The first opens after arming fault in the pages the breakpoints went into.
            requests(&emp, n / ROUNDS / 10);
            let before = s.stats().0;
            armed.extend(requests(&emp, n / ROUNDS));
            let after = s.stats().0;
            runs.runs += after.runs - before.runs;
            runs.nanos += after.nanos - before.nanos;
            reports += s.finish().reports;
        }
        reference.sort_by(f64::total_cmp);
        armed.sort_by(f64::total_cmp);
        summary(
            &format!("{suite} ({python}) | none (reference)"),
            &reference,
            &reference,
            "-",
        );
        summary(
            &format!("{suite} ({python}) | cat.jpg, every open reported ({reports} reports)"),
            &armed,
            &reference,
            &mean_run(ProgramStats::default(), runs),
        );
        per_request.push(format!(
            "{suite}: the kernel side ran {:.2} times per request",
            runs.runs as f64 / armed.len() as f64
        ));
    }
    println!();
    for line in per_request {
        println!("{line}");
    }
}

fn main() {
    let _stats = BpfStats::on();
    let dir = tempfile::tempdir().unwrap();
    part_one(dir.path(), env("VW_BENCH_OPENS", 20_000));
    part_two(env("VW_BENCH_REQUESTS", 2000));
    part_three(env("VW_BENCH_REQUESTS", 2000));
    std::thread::sleep(Duration::from_millis(10));
}
