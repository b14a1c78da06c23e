//! Sampling: how many fds a process has open, and its soft `RLIMIT_NOFILE`.
//!
//! Counting uses the kernel's count in `stat("/proc/PID/fd").st_size` (Linux >= 6.2, one
//! syscall, no allocation), and falls back to reading the directory when it is 0 (older
//! kernels report 0). The soft limit comes from `/proc/PID/limits` (readable without
//! privileges), cached per process identity and refreshed now and then because
//! `prlimit(1)` can change it. Both readers are hand-written because they measure faster
//! than the `procfs` crate's (docs/PERFORMANCE.md). Nothing here decides or writes.

use std::collections::HashMap;
use std::ffi::CStr;
use std::io;
use std::time::{Duration, Instant};

use rustix::fs::{Dir, Mode, OFlags};

use crate::procs::ProcId;

/// How long a cached soft limit is trusted.
const LIMIT_TTL: Duration = Duration::from_secs(60);

/// `/proc/PID/fd` as a C string in a stack buffer: the hot path allocates nothing.
struct FdDir {
    buf: [u8; 32],
}

impl FdDir {
    fn new(pid: i32) -> FdDir {
        let mut buf = [0u8; 32];
        let prefix = b"/proc/";
        buf[..prefix.len()].copy_from_slice(prefix);
        let mut digits = [0u8; 11];
        let mut n = pid.unsigned_abs();
        let mut len = 0;
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let mut at = prefix.len();
        for d in digits[..len].iter().rev() {
            buf[at] = *d;
            at += 1;
        }
        buf[at..at + 3].copy_from_slice(b"/fd");
        // buf[at + 3] stays 0: the terminating NUL.
        FdDir { buf }
    }

    fn as_cstr(&self) -> &CStr {
        // The buffer always holds a NUL after the path: 32 bytes fit "/proc/" + 10 digits
        // + "/fd" + NUL, and the rest of the buffer is zeros.
        CStr::from_bytes_until_nul(&self.buf).expect("FdDir always holds a NUL")
    }
}

/// The number of open fds of `pid`.
pub fn fd_count(pid: i32) -> io::Result<u64> {
    let path = FdDir::new(pid);
    let st = rustix::fs::stat(path.as_cstr())?;
    // `st_size` of a /proc/PID/fd directory is a count, never negative.
    let size = st.st_size.cast_unsigned();
    if size > 0 {
        return Ok(size);
    }
    fd_count_readdir(pid)
}

/// Counts the entries of `/proc/PID/fd` one by one: the fallback, and the reference the
/// fast path is checked against.
pub fn fd_count_readdir(pid: i32) -> io::Result<u64> {
    let fd = rustix::fs::open(
        FdDir::new(pid).as_cstr(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut n = 0;
    for entry in Dir::read_from(&fd)? {
        let entry = entry?;
        if entry.file_name().to_bytes().first() != Some(&b'.') {
            n += 1;
        }
    }
    Ok(n)
}

/// Parses the "Max open files" soft limit out of `/proc/PID/limits`. `unlimited` is
/// `u64::MAX`.
fn parse_soft_limit(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..]
        .split_ascii_whitespace()
        .next()?;
    if soft == "unlimited" {
        Some(u64::MAX)
    } else {
        soft.parse().ok()
    }
}

pub fn soft_limit(pid: i32) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    parse_soft_limit(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/{pid}/limits has no readable \"Max open files\" line"),
        )
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub fds: u64,
    pub limit: u64,
}

#[derive(Debug)]
struct CachedLimit {
    start_time: u64,
    limit: u64,
    read_at: Instant,
}

/// Samples processes, caching each one's soft limit.
#[derive(Debug, Default)]
pub struct Sampler {
    limits: HashMap<i32, CachedLimit>,
}

impl Sampler {
    /// One sample of `id`. An error means the process is gone (or unreadable); callers treat
    /// it as "not sampled this time".
    pub fn sample(&mut self, id: ProcId, now: Instant) -> io::Result<Sample> {
        let fds = fd_count(id.pid)?;
        let limit = match self.limits.get(&id.pid) {
            Some(c)
                if c.start_time == id.start_time && now.duration_since(c.read_at) < LIMIT_TTL =>
            {
                c.limit
            }
            _ => {
                let limit = soft_limit(id.pid)?;
                self.limits.insert(
                    id.pid,
                    CachedLimit {
                        start_time: id.start_time,
                        limit,
                        read_at: now,
                    },
                );
                limit
            }
        };
        Ok(Sample { fds, limit })
    }

    /// Forgets processes not in `alive`, so the cache does not grow with PID churn.
    pub fn retain(&mut self, alive: impl Fn(i32) -> bool) {
        self.limits.retain(|pid, _| alive(*pid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_dir_paths() {
        assert_eq!(FdDir::new(1).as_cstr(), c"/proc/1/fd");
        assert_eq!(FdDir::new(4_194_304).as_cstr(), c"/proc/4194304/fd");
        assert_eq!(FdDir::new(i32::MAX).as_cstr(), c"/proc/2147483647/fd");
    }

    #[test]
    fn limits_parsing() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max processes             95524                95524                processes \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(parse_soft_limit(text), Some(1024));
        let unl =
            "Max open files            unlimited            unlimited            files     \n";
        assert_eq!(parse_soft_limit(unl), Some(u64::MAX));
    }

    #[test]
    fn fast_count_equals_directory_count() {
        // A child that holds a known number of fds and nothing else changes them.
        let mut child = std::process::Command::new("bash")
            .arg("-c")
            .arg("i=10; while [ $i -lt 47 ]; do eval \"exec $i</dev/null\"; i=$((i+1)); done; echo ready; exec sleep 30")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let pid = child.id().cast_signed();
        // After `ready`, bash execs sleep, which closes bash's own close-on-exec fds:
        // count once that is done, so that both counts see the same table.
        for _ in 0..500 {
            if std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "sleep")
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let fast = fd_count(pid).unwrap();
        let slow = fd_count_readdir(pid).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(fast, slow);
        assert!(fast >= 37, "{fast}");
    }

    #[test]
    fn vanished_process_is_an_error_not_a_panic() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id().cast_signed();
        child.wait().unwrap();
        assert!(fd_count(pid).is_err());
    }
}
