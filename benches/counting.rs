//! Counting the fds of 500 processes in one sweep, and the other per-process readers of
//! `/proc/PID/*`, each against its `procfs` crate equivalent.
//!
//! Reference, measured in the same run: a bare loop of `stat("/proc/PID/fd")` over
//! prebuilt paths (the kernel's count in `st_size`, Linux ≥ 6.2). Goal: at most 2 µs per
//! process for the warden's sampler (count + cached soft limit). Every hand-written reader
//! is interleaved with the `procfs` calls that would replace it, and given as a ratio to
//! the hand-written one.
//!
//! Run: `cargo bench --bench counting`
#![allow(clippy::unwrap_used)]
// A benchmark binary: its `pub` items (and the shared harness's) are for its own modules.
#![allow(unreachable_pub)]

mod common;

use std::ffi::CString;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{interleaved, median, us};
use procfs::FromRead;
use procfs::process::{LimitValue, Limits, Process, Stat};
use vassal_warden::procs;
use vassal_warden::sample::{self, Sampler};

struct Sleepers(Vec<Child>);

impl Drop for Sleepers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

const ROUNDS: usize = 101;

/// Runs each candidate (a sweep over every PID) once per round, interleaved, and prints
/// each one's median time per process, as a ratio to the first.
fn compare(
    title: &str,
    n: usize,
    names: &[&str],
    sweeps: &mut [&mut dyn FnMut()],
) -> Vec<Duration> {
    let t = interleaved(ROUNDS, sweeps);
    println!("  {title}");
    for (name, d) in names.iter().zip(&t) {
        println!(
            "    {name:<44} {:>12}   {:.2}×",
            us(*d / u32::try_from(n).unwrap()),
            d.as_secs_f64() / t[0].as_secs_f64()
        );
    }
    t
}

/// The warden's hot path: the fd count and the sampler, against the bare syscall.
fn counting(pids: &[i32], ids: &[procs::ProcId]) {
    let n = pids.len();
    let paths: Vec<CString> = pids
        .iter()
        .map(|p| CString::new(format!("/proc/{p}/fd")).unwrap())
        .collect();
    // procfs counts through a `/proc/PID` directory handle: fresh each time, or kept.
    let kept: Vec<Process> = pids.iter().map(|p| Process::new(*p).unwrap()).collect();
    let mut sampler = Sampler::default();
    let now = Instant::now();
    println!("median of {ROUNDS} interleaved sweeps, per process:");
    let t = compare(
        "fd count (the reference: bare stat() loop over prebuilt paths)",
        n,
        &[
            "bare stat() loop (reference)",
            "sample::fd_count",
            "Sampler::sample (count + cached limit)",
            "procfs Process::new(pid).fd_count()",
            "procfs fd_count() on kept Process handles",
        ],
        &mut [
            &mut || {
                for p in &paths {
                    std::hint::black_box(rustix::fs::stat(p.as_c_str()).unwrap().st_size);
                }
            },
            &mut || {
                for p in pids {
                    std::hint::black_box(sample::fd_count(*p).unwrap());
                }
            },
            &mut || {
                for id in ids {
                    std::hint::black_box(sampler.sample(*id, now).unwrap());
                }
            },
            &mut || {
                for p in pids {
                    std::hint::black_box(Process::new(*p).unwrap().fd_count().unwrap());
                }
            },
            &mut || {
                for p in &kept {
                    std::hint::black_box(p.fd_count().unwrap());
                }
            },
        ],
    );
    let t_readdir = median(11, || {
        for p in pids {
            std::hint::black_box(sample::fd_count_readdir(*p).unwrap());
        }
    });
    println!(
        "    {:<44} {:>12}   {:.2}×",
        "readdir fallback (old kernels; median of 11)",
        us(t_readdir / u32::try_from(n).unwrap()),
        t_readdir.as_secs_f64() / t[0].as_secs_f64()
    );
    println!("  whole sweep with Sampler::sample: {}", common::ms(t[2]));
}

/// `/proc/PID/stat` and `/proc/PID/limits`, where procfs's parser could also be used on
/// a file read directly (`from_file`), without its `/proc/PID` directory handle.
fn stat_and_limits(pids: &[i32]) {
    let n = pids.len();
    let stat_paths: Vec<String> = pids.iter().map(|p| format!("/proc/{p}/stat")).collect();
    let limit_paths: Vec<String> = pids.iter().map(|p| format!("/proc/{p}/limits")).collect();
    let soft = |l: Limits| match l.max_open_files.soft_limit {
        LimitValue::Unlimited => u64::MAX,
        LimitValue::Value(v) => v,
    };
    compare(
        "/proc/PID/stat → identity (state, start time)",
        n,
        &[
            "procs::proc_id (procfs Stat::from_file)",
            "procfs Process::new(pid).stat()",
            "procfs Stat::from_file alone",
        ],
        &mut [
            &mut || {
                for p in pids {
                    std::hint::black_box(procs::proc_id(*p).unwrap());
                }
            },
            &mut || {
                for p in pids {
                    let s = Process::new(*p).unwrap().stat().unwrap();
                    std::hint::black_box((s.state, s.starttime));
                }
            },
            &mut || {
                for p in &stat_paths {
                    let s = Stat::from_file(p).unwrap();
                    std::hint::black_box((s.state, s.starttime));
                }
            },
        ],
    );
    compare(
        "/proc/PID/limits → soft RLIMIT_NOFILE",
        n,
        &[
            "sample::soft_limit (hand-written)",
            "procfs Process::new(pid).limits()",
            "procfs Limits::from_file",
        ],
        &mut [
            &mut || {
                for p in pids {
                    std::hint::black_box(sample::soft_limit(*p).unwrap());
                }
            },
            &mut || {
                for p in pids {
                    std::hint::black_box(soft(Process::new(*p).unwrap().limits().unwrap()));
                }
            },
            &mut || {
                for p in &limit_paths {
                    std::hint::black_box(soft(Limits::from_file(p).unwrap()));
                }
            },
        ],
    );
}

/// Readers of discovery and mapping: children, command line, one environment variable.
fn tree_readers(pids: &[i32]) {
    let n = pids.len();
    compare(
        "/proc/PID/task/PID/children (every master, every tick)",
        n,
        &[
            "procs::children (hand-written)",
            "procfs task_main_thread().children()",
        ],
        &mut [
            &mut || {
                for p in pids {
                    std::hint::black_box(procs::children(*p));
                }
            },
            &mut || {
                for p in pids {
                    let t = Process::new(*p).unwrap().task_main_thread().unwrap();
                    std::hint::black_box(t.children().unwrap());
                }
            },
        ],
    );
    compare(
        "/proc/PID/cmdline (a process not seen before)",
        n,
        &[
            "procs::cmdline (hand-written)",
            "procfs Process::new(pid).cmdline()",
        ],
        &mut [
            &mut || {
                for p in pids {
                    std::hint::black_box(procs::cmdline(*p).unwrap());
                }
            },
            &mut || {
                for p in pids {
                    std::hint::black_box(Process::new(*p).unwrap().cmdline().unwrap());
                }
            },
        ],
    );
    compare(
        "/proc/PID/environ → PWD (an Emperor not seen before)",
        n,
        &[
            "procs::environ_var (hand-written)",
            "procfs Process::new(pid).environ()",
        ],
        &mut [
            &mut || {
                for p in pids {
                    std::hint::black_box(procs::environ_var(*p, "PWD"));
                }
            },
            &mut || {
                for p in pids {
                    let env = Process::new(*p).unwrap().environ().unwrap();
                    std::hint::black_box(env.get(std::ffi::OsStr::new("PWD")).cloned());
                }
            },
        ],
    );
}

/// Listing every process: one readdir of /proc, against procfs's iterator of processes.
fn listing() {
    let n = procs::all_pids().len();
    compare(
        &format!("every PID in /proc ({n} processes), per process listed"),
        n,
        &[
            "procs::all_pids (hand-written)",
            "procfs all_processes() → pid",
        ],
        &mut [
            &mut || {
                std::hint::black_box(procs::all_pids());
            },
            &mut || {
                let all = procfs::process::all_processes().unwrap();
                std::hint::black_box(all.filter_map(|p| Some(p.ok()?.pid())).count());
            },
        ],
    );
}

fn main() {
    let n = 500;
    let sleepers = Sleepers(
        (0..n)
            .map(|_| {
                Command::new("sleep")
                    .arg("600")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    let pids: Vec<i32> = sleepers.0.iter().map(|c| c.id().cast_signed()).collect();
    let ids: Vec<procs::ProcId> = pids.iter().map(|p| procs::proc_id(*p).unwrap()).collect();
    let fd_path = CString::new(format!("/proc/{}/fd", pids[0])).unwrap();
    let fast_path = rustix::fs::stat(fd_path.as_c_str()).unwrap().st_size > 0;
    println!(
        "counting fds of {n} processes in one sweep; kernel {}; stat fast path {}",
        common::kernel(),
        if fast_path {
            "available"
        } else {
            "NOT available (st_size is 0)"
        }
    );
    counting(&pids, &ids);
    println!("other readers of /proc/PID, each against its procfs equivalent, per process:");
    stat_and_limits(&pids);
    tree_readers(&pids);
    listing();
}
