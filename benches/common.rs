//! Shared by the benchmarks: timing by median of repeated runs, and a helper process that
//! holds a known set of fds.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `f` `runs` times after one warm-up run; returns the median duration.
pub fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    f();
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// Runs every function of `fs` once per round, `rounds` times after one warm-up round,
/// interleaved so that drifts in machine load hit all of them alike; returns each one's
/// median. Each round starts one function further on, so that no function always runs
/// right after the same other one (reading a /proc table warms the kernel's caches for
/// whoever reads it next).
pub fn interleaved(rounds: usize, fs: &mut [&mut dyn FnMut()]) -> Vec<Duration> {
    for f in fs.iter_mut() {
        f();
    }
    let n = fs.len();
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(rounds); n];
    for round in 0..rounds {
        for k in 0..n {
            let i = (round + k) % n;
            let t = Instant::now();
            fs[i]();
            times[i].push(t.elapsed());
        }
    }
    times
        .into_iter()
        .map(|mut t| {
            t.sort();
            t[t.len() / 2]
        })
        .collect()
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

pub fn us(d: Duration) -> String {
    format!("{:.3} µs", d.as_secs_f64() * 1e6)
}

/// tests/helpers/holder.py with `args`; killed on drop.
pub struct Holder(pub Child);

impl Holder {
    /// # Panics
    /// When the helper cannot start or does not say it is ready.
    pub fn start(args: &[String]) -> Holder {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/helpers/holder.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "holder did not start");
        Holder(child)
    }

    pub fn pid(&self) -> i32 {
        self.0.id().cast_signed()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The kernel, for the record.
pub fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// A view of each of `names` as a running vassal with a master and a worker, each at 12
/// of 1,024 fds (or 900, all flapping, when `trouble`), with `counts`.
pub fn running_views<'a>(
    names: &'a [String],
    trouble: bool,
    counts: Option<&'a vassal_warden::metrics::VassalCounts>,
) -> Vec<vassal_warden::metrics::VassalView<'a>> {
    use vassal_warden::metrics::{Side, Sides, State, VassalView};
    let side = Side {
        fds: if trouble { 900 } else { 12 },
        limit: 1024,
        line: 820,
    };
    names
        .iter()
        .map(|name| VassalView {
            name,
            state: State::Running,
            sides: Sides::master_and_worker(Some(side), Some(side)),
            flapping: trouble,
            given_up: false,
            last_action: None,
            counts,
            hook_failures: 0,
            episode: None,
            paused_until: None,
            owner: None,
        })
        .collect()
}
