//! Counting the fds of 500 processes in one sweep.
//!
//! Reference, measured in the same run: a bare loop of `stat("/proc/PID/fd")` over
//! prebuilt paths (the kernel's count in `st_size`, Linux ≥ 6.2). Goal: at most 2 µs per
//! process for the warden's sampler (count + cached soft limit).
//!
//! Run: `cargo bench --bench counting`
#![allow(clippy::unwrap_used)]

mod common;

use std::ffi::CString;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use common::{interleaved, median, us};
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
    let paths: Vec<CString> = pids
        .iter()
        .map(|p| CString::new(format!("/proc/{p}/fd")).unwrap())
        .collect();
    let fast_path = rustix::fs::stat(paths[0].as_c_str()).unwrap().st_size > 0;

    let runs = 101;
    let mut sampler = Sampler::default();
    let now = Instant::now();
    let t = interleaved(
        runs,
        &mut [
            &mut || {
                for p in &paths {
                    std::hint::black_box(rustix::fs::stat(p.as_c_str()).unwrap().st_size);
                }
            },
            &mut || {
                for p in &pids {
                    std::hint::black_box(sample::fd_count(*p).unwrap());
                }
            },
            &mut || {
                for id in &ids {
                    std::hint::black_box(sampler.sample(*id, now).unwrap());
                }
            },
        ],
    );
    let (t_bare, t_count, t_sample) = (t[0], t[1], t[2]);
    let t_readdir = median(11, || {
        for p in &pids {
            std::hint::black_box(sample::fd_count_readdir(*p).unwrap());
        }
    });
    let per = |d: std::time::Duration| d / n;
    println!(
        "counting fds of {n} processes in one sweep; kernel {}; stat fast path {}",
        common::kernel(),
        if fast_path {
            "available"
        } else {
            "NOT available (st_size is 0)"
        }
    );
    println!("median of {runs} interleaved sweeps, per process:");
    println!(
        "  bare stat() loop (reference)           {:>12}   1.00×",
        us(per(t_bare))
    );
    println!(
        "  sample::fd_count                       {:>12}   {:.2}×",
        us(per(t_count)),
        t_count.as_secs_f64() / t_bare.as_secs_f64()
    );
    println!(
        "  Sampler::sample (count + cached limit) {:>12}   {:.2}×",
        us(per(t_sample)),
        t_sample.as_secs_f64() / t_bare.as_secs_f64()
    );
    println!(
        "  readdir fallback (old kernels)         {:>12}   {:.2}×",
        us(per(t_readdir)),
        t_readdir.as_secs_f64() / t_bare.as_secs_f64()
    );
    println!(
        "  whole sweep with Sampler::sample: {}",
        common::ms(t_sample)
    );
}
