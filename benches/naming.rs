//! Naming every fd of one process holding 19,000 fds of mixed kinds.
//!
//! Reference, measured in the same run: the floor (a minimal readdir + readlinkat loop
//! into a reused buffer, no allocation, no classification) and `lsof -p PID` when it is
//! installed. Goal: at most 1.3× the floor, at least 5× faster than lsof. Then the socket
//! table readers of `sockets`, each against the `procfs` crate's reader of the same table,
//! interleaved.
//!
//! Run: `cargo bench --bench naming`
#![allow(clippy::unwrap_used)]
// A benchmark binary: its `pub` items (and the shared harness's) are for its own modules.
#![allow(unreachable_pub)]

mod common;

use std::ffi::CString;
use std::net::TcpListener;
use std::process::Command;

use common::{Holder, interleaved, median, ms};
use procfs::process::Process;
use rustix::fs::{Dir, Mode, OFlags};
use vassal_warden::forensics;
use vassal_warden::sockets::{SocketTable, Table};

/// The floor: what any tool must at least do to name every fd.
fn floor(pid: i32) -> usize {
    let path = CString::new(format!("/proc/{pid}/fd")).unwrap();
    let dir = rustix::fs::open(
        path.as_c_str(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    let mut buf = [0u8; 4096];
    let mut n = 0;
    for e in Dir::read_from(&dir).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_bytes()[0] == b'.' {
            continue;
        }
        if let Ok(len) = rustix::fs::readlinkat_raw(&dir, e.file_name(), &mut buf[..]) {
            n += usize::from(len > 0);
        }
    }
    n
}

/// The holder (19,003 fds) and the accepted ends of its TCP connections, which live here.
fn start_holder(dir: &std::path::Path) -> (Holder, Vec<std::net::TcpStream>) {
    let paths: Vec<String> = (0..3)
        .map(|i| {
            let p = dir.join(format!("file{i}.dat"));
            std::fs::write(&p, b"x").unwrap();
            p.display().to_string()
        })
        .collect();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // Accept the connections so the backlog never fills.
    let acceptor = std::thread::spawn(move || {
        (0..2000)
            .map(|_| listener.accept().unwrap().0)
            .collect::<Vec<_>>()
    });
    let mut args: Vec<String> = Vec::new();
    for p in &paths {
        args.extend(["--files".into(), "3000".into(), p.clone()]);
    }
    for (flag, n) in [
        ("--unixpair", "2000"),
        ("--pipe", "1500"),
        ("--eventfd", "500"),
        ("--epoll", "500"),
    ] {
        args.extend([flag.into(), n.into()]);
    }
    args.extend(["--tcp".into(), "2000".into(), addr]);
    let holder = Holder::start(&args);
    (holder, acceptor.join().unwrap())
}

/// The budget: `report` against the floor and lsof.
fn naming(pid: i32) {
    let fds = vassal_warden::sample::fd_count(pid).unwrap();
    let runs = 41;
    let t = interleaved(
        runs,
        &mut [
            &mut || {
                std::hint::black_box(floor(pid));
            },
            &mut || {
                std::hint::black_box(forensics::read_fds(pid).unwrap());
            },
            &mut || {
                std::hint::black_box(forensics::report(pid, 10, None, None).unwrap());
            },
            &mut || {
                std::hint::black_box(SocketTable::read(pid));
            },
        ],
    );
    let (t_floor, t_read, t_report, t_sockets) = (t[0], t[1], t[2], t[3]);
    let lsof = Command::new("lsof").arg("-v").output().is_ok();
    let t_lsof = lsof.then(|| {
        median(5, || {
            let out = Command::new("lsof")
                .args(["-n", "-P", "-p", &pid.to_string()])
                .output()
                .unwrap();
            std::hint::black_box(out.stdout.len());
        })
    });
    println!(
        "naming every fd of one process: {fds} fds (files, tcp, unix, pipes, eventfd, epoll); kernel {}",
        common::kernel()
    );
    println!("median of {runs} interleaved rounds (lsof: 5 runs)");
    println!(
        "  floor (readdir + readlinkat, no allocation)   {:>10}   1.00×",
        ms(t_floor)
    );
    let ratio = |t: std::time::Duration| t.as_secs_f64() / t_floor.as_secs_f64();
    println!(
        "  forensics::read_fds (name every fd)           {:>10}   {:.2}× floor",
        ms(t_read),
        ratio(t_read)
    );
    println!(
        "  forensics::report (name, classify, resolve sockets, group, top 10)   {:>10}   {:.2}× floor",
        ms(t_report),
        ratio(t_report)
    );
    println!("  (of which reading all socket tables: {})", ms(t_sockets));
    match t_lsof {
        Some(t) => println!(
            "  lsof -n -P -p PID                             {:>10}   {:.2}× floor; report is {:.1}× faster than lsof",
            ms(t),
            ratio(t),
            t.as_secs_f64() / t_report.as_secs_f64()
        ),
        None => println!("  lsof: not installed (apt-get install lsof to compare)"),
    }
}

/// Prints one line of a comparison: time and ratio to `base`.
fn line(name: &str, t: std::time::Duration, base: std::time::Duration) {
    println!(
        "    {name:<52} {:>10}   {:.2}×",
        ms(t),
        t.as_secs_f64() / base.as_secs_f64()
    );
}

/// Each socket table, read and parsed whole by `sockets` (more than `report` does: it
/// keeps only the sockets the process holds) and by procfs through its `Process`,
/// interleaved, with the bare read of the text as a reference for what the kernel costs.
fn tables(pid: i32) {
    let runs = 41;
    let process = Process::new(pid).unwrap();
    let text = |t: Table| std::fs::read_to_string(format!("/proc/{pid}/net/{}", t.file())).unwrap();
    let inet = [Table::Tcp, Table::Tcp6, Table::Udp, Table::Udp6];
    let t_inet = interleaved(
        runs,
        &mut [
            &mut || {
                std::hint::black_box(SocketTable::read_tables(pid, &inet));
            },
            &mut || {
                std::hint::black_box(process.tcp().unwrap());
                std::hint::black_box(process.tcp6().unwrap());
                std::hint::black_box(process.udp().unwrap());
                std::hint::black_box(process.udp6().unwrap());
            },
            &mut || {
                for t in inet {
                    std::hint::black_box(text(t));
                }
            },
        ],
    );
    let t_unix = interleaved(
        runs,
        &mut [
            &mut || {
                std::hint::black_box(SocketTable::read_tables(pid, &[Table::Unix]));
            },
            &mut || {
                std::hint::black_box(process.unix().unwrap());
            },
            &mut || {
                std::hint::black_box(text(Table::Unix));
            },
        ],
    );
    let lines = |t: &Table| text(*t).lines().count() - 1;
    println!(
        "socket tables of the same namespace, read and parsed whole; median of {runs} interleaved rounds per table kind"
    );
    println!(
        "  tcp + tcp6 + udp + udp6 ({} sockets)",
        inet.iter().map(lines).sum::<usize>()
    );
    line(
        "sockets::SocketTable (procfs parser, one open)",
        t_inet[0],
        t_inet[0],
    );
    line("procfs Process::{tcp,tcp6,udp,udp6}", t_inet[1], t_inet[0]);
    line(
        "bare read of the text, no parsing (reference)",
        t_inet[2],
        t_inet[0],
    );
    println!("  unix ({} sockets)", lines(&Table::Unix));
    line("sockets::SocketTable (hand-written)", t_unix[0], t_unix[0]);
    line(
        "procfs Process::unix (drops the listening flag)",
        t_unix[1],
        t_unix[0],
    );
    line(
        "bare read of the text, no parsing (reference)",
        t_unix[2],
        t_unix[0],
    );
    println!("  netlink: procfs has no reader for this table (hand-written)");
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let (holder, _accepted) = start_holder(dir.path());
    naming(holder.pid());
    tables(holder.pid());
}
