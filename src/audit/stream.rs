//! The whole log read as a stream (`incidents`): every file of it, rotations first,
//! one line at a time, so that memory stays bounded whatever the history; and a start
//! time found without reading what comes before it. Records are written in time order,
//! so the files older than the start are skipped by their first record, and in a plain
//! file the first record at the start is found by bisection over byte offsets.

use std::fs::File;
use std::io::{BufRead, BufReader, Read as _, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{BadLine, Record, parse_timestamp, rotations};

/// The longest line read as a record: far beyond any the warden writes. A longer one is
/// skipped, and reported, without being held in memory.
pub(crate) const MAX_LINE: usize = 1 << 20;

/// The most a compressed rotation is inflated to when streamed: past it, the rest of
/// the file is reported unread.
const MAX_INFLATED: u64 = 16 << 30;

/// Below this many bytes, the bisection reads on instead of seeking.
const BISECT_DONE: u64 = 64 << 10;

/// What a line of the log was.
pub(crate) enum Line<'a> {
    Record(Raw<'a>),
    Bad(BadLine),
}

/// A record as its line has it: the bytes, and what filters read (its vassal and file),
/// the rest not parsed yet (`record` does).
pub(crate) struct Raw<'a> {
    pub bytes: &'a [u8],
    pub vassal: String,
    pub config: PathBuf,
    file: &'a Path,
    line: Option<usize>,
    offset: u64,
}

impl Raw<'_> {
    /// The whole record; a line that does not read as one is a bad line, said where it is.
    pub(crate) fn record(&self) -> Result<Record, BadLine> {
        serde_json::from_slice(self.bytes).map_err(|e| BadLine {
            file: self.file.to_owned(),
            line: self.line,
            offset: self.offset,
            message: e.to_string(),
        })
    }
}

/// What every record has, read without the rest (which is skipped, not parsed).
#[derive(serde::Deserialize)]
struct Head {
    ts: String,
    vassal: String,
    config: PathBuf,
    #[allow(dead_code)]
    event: serde::de::IgnoredAny,
}

/// Calls `each` with every record of the log at `log` and its rotations, oldest first,
/// from `since` on when given (and with every line that cannot be read, reported
/// where it is). Returns whether the log exists. `each` may stop the stream with an
/// error (a closed pipe), which is returned.
pub(crate) fn each_record(
    log: &Path,
    since: Option<SystemTime>,
    mut each: impl FnMut(Line<'_>) -> std::io::Result<()>,
) -> std::io::Result<bool> {
    let mut files: Vec<PathBuf> = rotations(log);
    files.reverse();
    let live = match std::fs::metadata(log) {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(e),
    };
    // Rotated and not written to since: the history is in the rotations.
    let exists = live || !files.is_empty();
    if live {
        files.push(log.to_owned());
    }
    // The oldest file that can hold a record at `since` or later: the newest whose
    // first record is older than `since` (every file before it is older still).
    let first = match since {
        None => 0,
        Some(cut) => (0..files.len())
            .rev()
            .find(|&i| first_time(&files[i]).is_some_and(|t| t < cut))
            .unwrap_or(0),
    };
    for (i, path) in files.iter().enumerate().skip(first) {
        let gz = path.extension().is_some_and(|e| e == "gz");
        let opened = File::open(path);
        let f = match opened {
            Ok(f) => f,
            Err(e) if path != log => {
                each(Line::Bad(BadLine {
                    file: path.clone(),
                    line: None,
                    offset: 0,
                    message: format!("cannot read it: {e}"),
                }))?;
                continue;
            }
            Err(e) => return Err(e),
        };
        if gz {
            let mut r = BufReader::new(flate2::read::MultiGzDecoder::new(f).take(MAX_INFLATED));
            lines(path, &mut r, 0, true, since, &mut each)?;
            if r.get_ref().limit() == 0 {
                each(Line::Bad(BadLine {
                    file: path.clone(),
                    line: None,
                    offset: MAX_INFLATED,
                    message: format!(
                        "inflates to more than {} GiB; the rest of it is not read",
                        MAX_INFLATED >> 30
                    ),
                }))?;
            }
        } else {
            let mut f = f;
            let start = match since {
                Some(cut) if i == first => seek_to(&mut f, cut)?,
                _ => 0,
            };
            f.seek(SeekFrom::Start(start))?;
            lines(path, BufReader::new(f), start, start == 0, since, &mut each)?;
        }
    }
    Ok(exists)
}

/// Streams the lines of `r` (which starts at byte `offset` of `path`, at a line's start
/// when `whole`, else in a line, which is skipped) to `each`, those older than `since`
/// left out.
fn lines(
    path: &Path,
    mut r: impl BufRead,
    offset: u64,
    whole: bool,
    since: Option<SystemTime>,
    each: &mut impl FnMut(Line<'_>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut at = offset;
    let mut number = 0usize;
    let mut buf = Vec::new();
    let mut skip_first = !whole;
    loop {
        let here = at;
        let (n, fits) = match read_line(&mut r, &mut buf) {
            Ok(x) => x,
            Err(e) => {
                return each(Line::Bad(BadLine {
                    file: path.to_owned(),
                    line: None,
                    offset: here,
                    message: format!("cannot be read to its end ({e}); what came before is read"),
                }));
            }
        };
        if n == 0 {
            return Ok(());
        }
        at += n as u64;
        number += 1;
        if std::mem::take(&mut skip_first) || (fits && buf.iter().all(u8::is_ascii_whitespace)) {
            continue;
        }
        let bad = |message: String| {
            Line::Bad(BadLine {
                file: path.to_owned(),
                line: whole.then_some(number),
                offset: here,
                message,
            })
        };
        if !fits {
            each(bad(format!("longer than {} KiB", MAX_LINE >> 10)))?;
            continue;
        }
        match serde_json::from_slice::<Head>(&buf) {
            Ok(head) => {
                let old =
                    since.is_some_and(|cut| parse_timestamp(&head.ts).is_none_or(|t| t < cut));
                if !old {
                    each(Line::Record(Raw {
                        bytes: &buf,
                        vassal: head.vassal,
                        config: head.config,
                        file: path,
                        line: whole.then_some(number),
                        offset: here,
                    }))?;
                }
            }
            Err(e) => each(bad(e.to_string()))?,
        }
    }
}

/// Reads one line into `buf` (without its newline), keeping at most `MAX_LINE` bytes of
/// it. Returns the bytes the line took in the file (0 at the end) and whether it fit.
fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<(usize, bool)> {
    buf.clear();
    let mut taken = 0;
    let mut fits = true;
    loop {
        let chunk = match r.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok((taken, fits));
        }
        let (part, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (&chunk[..i], Some(i + 1)),
            None => (chunk, None),
        };
        if fits && buf.len() + part.len() <= MAX_LINE {
            buf.extend_from_slice(part);
        } else {
            fits = false;
            buf.clear();
        }
        let used = done.unwrap_or(chunk.len());
        r.consume(used);
        taken += used;
        if done.is_some() {
            return Ok((taken, fits));
        }
    }
}

/// The time of the first record of the file at `path` that reads (of its first lines).
fn first_time(path: &Path) -> Option<SystemTime> {
    let f = File::open(path).ok()?;
    let mut buf = Vec::new();
    if path.extension().is_some_and(|e| e == "gz") {
        let mut r = BufReader::new(flate2::read::MultiGzDecoder::new(f).take(MAX_INFLATED));
        first_time_in(&mut r, &mut buf)
    } else {
        first_time_in(&mut BufReader::new(f), &mut buf)
    }
}

/// The time of the first of the next few lines of `r` that reads as a record.
fn first_time_in(r: &mut impl BufRead, buf: &mut Vec<u8>) -> Option<SystemTime> {
    for _ in 0..16 {
        let (n, fits) = read_line(r, buf).ok()?;
        if n == 0 {
            return None;
        }
        if fits && let Some(t) = time_of(buf) {
            return Some(t);
        }
    }
    None
}

/// The `ts` of a record's line.
fn time_of(line: &[u8]) -> Option<SystemTime> {
    #[derive(serde::Deserialize)]
    struct Ts {
        ts: String,
    }
    parse_timestamp(&serde_json::from_slice::<Ts>(line).ok()?.ts)
}

/// An offset in the plain file `f` at or before its first record at `cut` or later:
/// bisection over byte offsets, each probe the first whole line after it.
fn seek_to(f: &mut File, cut: SystemTime) -> std::io::Result<u64> {
    let (mut lo, mut hi) = (0u64, f.metadata()?.len());
    let mut buf = Vec::new();
    while hi - lo > BISECT_DONE {
        let mid = lo + (hi - lo) / 2;
        f.seek(SeekFrom::Start(mid))?;
        let mut r = BufReader::new(&mut *f);
        // The rest of the line `mid` falls in, then the next whole one.
        let (skipped, _) = read_line(&mut r, &mut buf)?;
        let t = first_time_in(&mut r, &mut buf);
        match t {
            Some(t) if t >= cut => hi = mid,
            // Older, or nothing that reads before the end: start later.
            Some(_) => lo = mid + skipped as u64,
            None => hi = mid,
        }
    }
    Ok(lo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;
    use std::time::{Duration, UNIX_EPOCH};

    const T0: u64 = 1_800_000_000;

    fn line(i: u64) -> String {
        let ts = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(T0 + i));
        format!(
            r#"{{"schema":1,"ts":"{ts}","incident":"i{i}","vassal":"a.ini","config":"/v/a.ini","event":"resume","who":"w","reason":"r"}}"#
        )
    }

    fn lines_of(from: u64, to: u64) -> String {
        let mut s = String::new();
        for i in from..to {
            writeln!(s, "{}", line(i)).unwrap();
        }
        s
    }

    /// The incidents of each record read, and the bad lines' texts.
    fn read(log: &Path, since: Option<u64>) -> (Vec<String>, Vec<String>) {
        let (mut ids, mut bad) = (Vec::new(), Vec::new());
        let since = since.map(|s| UNIX_EPOCH + Duration::from_secs(T0 + s));
        each_record(log, since, |l| {
            match l {
                Line::Record(r) => ids.push(r.record().unwrap().incident),
                Line::Bad(b) => bad.push(b.to_string()),
            }
            Ok(())
        })
        .unwrap();
        (ids, bad)
    }

    #[test]
    fn since_starts_at_the_first_record_of_its_time_whatever_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("incidents.jsonl");
        std::fs::write(&log, lines_of(0, 50_000)).unwrap();
        for since in [0, 1, 777, 25_000, 49_999] {
            let (ids, bad) = read(&log, Some(since));
            assert_eq!(ids.len() as u64, 50_000 - since);
            assert_eq!(ids[0], format!("i{since}"));
            assert!(bad.is_empty(), "{bad:?}");
        }
        assert!(read(&log, Some(60_000)).0.is_empty());
        assert_eq!(read(&log, None).0.len(), 50_000);
    }

    #[test]
    fn a_line_too_long_is_reported_and_skipped_and_older_files_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("incidents.jsonl");
        let long = format!("{{\"ts\":\"{}\"}}", "x".repeat(MAX_LINE + 10));
        std::fs::write(
            &log,
            lines_of(100, 102) + &long + "\n" + &lines_of(102, 104),
        )
        .unwrap();
        std::fs::write(dir.path().join("incidents.jsonl.1"), lines_of(0, 100)).unwrap();
        std::fs::write(dir.path().join("incidents.jsonl.2.gz"), b"\x1f\x8b broken").unwrap();
        let (ids, bad) = read(&log, None);
        assert_eq!(ids.len(), 104);
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad[0].contains("incidents.jsonl.2.gz"), "{bad:?}");
        assert!(
            bad[1].contains("incidents.jsonl:3: unreadable line skipped (longer than 1024 KiB)"),
            "{bad:?}"
        );
        // From a time in the log itself: its rotations are not opened.
        let (ids, bad) = read(&log, Some(101));
        assert_eq!(ids, ["i101", "i102", "i103"]);
        assert_eq!(bad.len(), 1, "{bad:?}");
        // From a time in the first rotation: the broken older one is not opened.
        let (ids, bad) = read(&log, Some(50));
        assert_eq!((ids.len(), ids[0].as_str()), (54, "i50"));
        assert_eq!(bad.len(), 1, "{bad:?}");
    }
}
