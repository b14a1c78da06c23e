//! The metrics endpoint at 5,000 vassals, and with 200 slow or idle clients.
//!
//! Part 1, the page: `metrics::render` for 50 quiet vassals (the reference), 5,000 quiet
//! vassals, 5,000 vassals all in trouble, and the same with 250-byte names (the worst
//! case the bounds allow): bytes, samples and the median time to render.
//!
//! Part 2, the endpoint: a real warden watching 5,000 vassal files (no Emperor runs them:
//! each is `no_emperor`). A scrape's latency alone (the reference), then with 200 clients
//! holding connections (100 silent, 100 that sent one byte of their request) and one
//! that asked for the page and does not read it: median and worst of 50 scrapes each.
//!
//! Run: `cargo bench --bench endpoint`
#![allow(clippy::unwrap_used)]
#![allow(unreachable_pub)]

#[path = "../tests/it/harness.rs"]
mod harness;

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use vassal_warden::metrics::{self, Histogram, VassalView, WardenView};

fn views(names: &[String], trouble: bool) -> Vec<VassalView<'_>> {
    common::running_views(names, trouble, None)
}

/// Renders `views`: bytes, samples, median time.
fn page(views: &[VassalView<'_>]) -> (usize, usize, Duration) {
    let mut passes = Histogram::default();
    passes.observe(Duration::from_millis(1));
    let w = WardenView {
        vassals: views.len(),
        emperors: 1,
        processes: 2 * views.len(),
        owed: 0,
        last_pass: SystemTime::now(),
        passes: &passes,
    };
    let mut text = String::new();
    let t = common::median(51, || {
        metrics::render(&mut text, &w, views);
        std::hint::black_box(&text);
    });
    let samples = text.lines().filter(|l| !l.starts_with('#')).count();
    (text.len(), samples, t)
}

fn report_pages() {
    let small: Vec<String> = (0..50).map(|i| format!("app{i:02}.ini")).collect();
    let many: Vec<String> = (0..5000).map(|i| format!("app{i:05}.ini")).collect();
    let long: Vec<String> = (0..5000)
        .map(|i| format!("{i:05}{}.ini", "x".repeat(241)))
        .collect();
    let (ref_bytes, ref_samples, ref_t) = page(&views(&small, false));
    println!("metrics page (render, median of 51):");
    println!(
        "  50 quiet vassals (reference)        {ref_bytes:>9} bytes {ref_samples:>6} samples {}",
        common::us(ref_t)
    );
    for (what, names, trouble) in [
        ("5,000 quiet vassals", &many, false),
        ("5,000 in trouble", &many, true),
        ("5,000 in trouble, 250-byte names", &long, true),
    ] {
        let (bytes, samples, t) = page(&views(names, trouble));
        println!(
            "  {what:<35} {bytes:>9} bytes {samples:>6} samples {}   {:.2}× the bytes, {:.2}× the time",
            common::us(t),
            bytes as f64 / ref_bytes as f64,
            t.as_secs_f64() / ref_t.as_secs_f64()
        );
    }
}

/// One scrape on a new connection: how long until the whole page was read.
fn timed_scrape(addr: &str) -> Duration {
    let t = Instant::now();
    let body = harness::scrape(addr);
    let d = t.elapsed();
    assert!(body.contains("vassal_warden_vassals_in_state"));
    d
}

fn scrapes(addr: &str, n: usize) -> (Duration, Duration) {
    let mut times: Vec<Duration> = (0..n).map(|_| timed_scrape(addr)).collect();
    times.sort();
    (times[n / 2], times[n - 1])
}

fn report_endpoint() {
    let dir = tempfile::Builder::new()
        .prefix("vw-bench-")
        .tempdir()
        .unwrap();
    let vassals = dir.path().join("vassals");
    std::fs::create_dir(&vassals).unwrap();
    for i in 0..5000u64 {
        // Names as random as a host's: no common prefix.
        let name = format!("{:016x}.ini", i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        std::fs::write(
            vassals.join(name),
            "[uwsgi]\nplugins = python3\nsocket = /run/x.sock\n",
        )
        .unwrap();
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_vassal-warden"));
    let warden =
        harness::Warden::start_watching(bin, dir.path(), &[vassals.display().to_string()], "", &[]);
    let addr = warden.metrics_addr();
    let body = harness::scrape(&addr);
    let samples = body.lines().filter(|l| !l.starts_with('#')).count();
    let pass = harness::metric(&body, "vassal_warden_pass_duration_seconds_sum")
        / harness::metric(&body, "vassal_warden_pass_duration_seconds_count");
    println!(
        "metrics endpoint, a warden watching 5,000 vassal files: page {} bytes, {samples} samples; mean pass {:.1} ms",
        body.len(),
        pass * 1e3
    );
    let (alone, alone_worst) = scrapes(&addr, 50);
    let silent: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    let mut slow: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    for s in &mut slow {
        s.write_all(b"G").unwrap();
    }
    let mut reader = TcpStream::connect(&addr).unwrap();
    reader.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    // Within the clients' deadline (2 s): they are all held while these run.
    let (held, held_worst) = scrapes(&addr, 50);
    println!(
        "  a scrape alone (reference)              median {}  worst {}",
        common::ms(alone),
        common::ms(alone_worst)
    );
    println!(
        "  with 200 slow or idle clients held      median {}  worst {}   {:.2}× the reference (median)",
        common::ms(held),
        common::ms(held_worst),
        held.as_secs_f64() / alone.as_secs_f64()
    );
    drop((silent, slow, reader));
}

fn main() {
    report_pages();
    report_endpoint();
}
