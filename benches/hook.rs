//! What an alert hook that hangs costs the warden: the same leak healed again and again,
//! once with no hook and once with an `on-event` hook that never returns, run for every
//! record (`on-event-for = all`, `on-event-timeout = 10m`).
//!
//! A real Emperor runs one vassal (one worker) that leaks a file per request. Each cycle
//! sends 40 leaking requests and waits for the outcome of the touch the warden decides
//! (interval 200 ms, `reload-at = 40`, `for = 1`, `predict = off`, `cooldown = 1s`,
//! `max-reloads` out of the way). Each cycle writes three records (`detected`, `action`,
//! `outcome`), each offered to the hook: the first run hangs, the others queue. Measured per
//! configuration: the time of a cycle (first leaking request to the `outcome` record on
//! disk) and the warden's mean pass (its own histogram, scraped from its endpoint).
//! The reference is the run with no hook, in the same process, on the same machine.
//!
//! Run: `cargo bench --bench hook` (`VW_BENCH_CYCLES`, default 8)
#![allow(clippy::unwrap_used)]
// A benchmark binary: its `pub` items (and the shared harness's) are for its own modules.
#![allow(unreachable_pub)]

#[path = "../tests/it/harness.rs"]
mod harness;

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Instant;

use harness::{Emperor, HookGroups, VassalSpec, Warden, metric, scrape, write_config};

struct Run {
    cycles: Vec<f64>,
    mean_pass: f64,
    passes: f64,
}

fn run(hook: bool, cycles: usize) -> Run {
    let emp = Emperor::start();
    emp.add_vassal("leaky.ini", &VassalSpec::default());
    let (_, mut workers) = emp.wait_running("leaky.ini", 1);
    let root = emp.root();
    let pids = root.join("hook-pids");
    let _groups = HookGroups(pids.clone());
    let mut extra = String::from("interval = 200ms\n");
    if hook {
        let script = root.join("hook.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho $$ >> {}\nexec sleep 3600\n",
                pids.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        write!(
            extra,
            "on-event = {}\non-event-for = all\non-event-timeout = 10m\n",
            script.display()
        )
        .unwrap();
    }
    extra += "\n[policy]\nreload-at = 40\nfor = 1\npredict = off\nverify = 30s\ncooldown = 1s\nmax-reloads = 100 per 1h\n";
    let vassals = [emp.vassals.display().to_string()];
    let cfg = write_config(root, "warden.ini", &vassals, &extra);
    let bin = Path::new(env!("CARGO_BIN_EXE_vassal-warden"));
    let warden = Warden::start_with_config(bin, &cfg, &root.join("incidents.jsonl"), &[]);
    let addr = warden.metrics_addr();
    let mut times = Vec::new();
    for k in 0..cycles {
        let t = Instant::now();
        emp.leak("leaky.ini", 40);
        let outcome = warden.wait_record("outcome", k);
        times.push(t.elapsed().as_secs_f64());
        assert_eq!(outcome["result"], "recovered", "{outcome}");
        workers = emp.wait_replaced("leaky.ini", &workers).1;
    }
    if hook {
        // The hook hung on the first record and stayed hung all along.
        let hung = std::fs::read_to_string(&pids).unwrap();
        assert_eq!(hung.lines().count(), 1, "{hung}");
    }
    let text = scrape(&addr);
    let sum = metric(&text, "vassal_warden_pass_duration_seconds_sum");
    let count = metric(&text, "vassal_warden_pass_duration_seconds_count");
    Run {
        cycles: times,
        mean_pass: sum / count,
        passes: count,
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn main() {
    let cycles: usize = std::env::var("VW_BENCH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let none = run(false, cycles);
    let hung = run(true, cycles);
    println!(
        "a leak healed {cycles} times (40 leaking requests, a touch, verified), per configuration"
    );
    for (name, r) in [("no hook", &none), ("hook hanging on every record", &hung)] {
        println!(
            "  {name:<30} cycle median {:.2} s (max {:.2} s)   mean pass {:.3} ms over {} passes",
            median(&r.cycles),
            r.cycles.iter().copied().fold(0.0, f64::max),
            r.mean_pass * 1e3,
            r.passes
        );
    }
    println!(
        "  hanging hook / no hook: cycle {:.2}×, mean pass {:.2}×",
        median(&hung.cycles) / median(&none.cycles),
        hung.mean_pass / none.mean_pass
    );
}
