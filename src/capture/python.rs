//! Reading a running CPython from outside: where its thread states are, and what a code
//! object and an instruction pointer say (file, function, line).
//!
//! Only CPython 3.11 is read: its layout below was checked field by field against
//! Debian's `libpython3.11.so.1.0` (the one `uwsgi-plugin-python3` links). Every read
//! goes through `/proc/PID/mem` with a size bound, and every value read is data: a
//! pointer that leads nowhere ends the walk, a string too long is cut.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The offsets the kernel side needs to walk a thread's frames, and those this module
/// reads code objects with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Layout {
    pub tstate_cframe: u64,
    pub cframe_current: u64,
    pub frame_code: u64,
    pub frame_previous: u64,
    pub frame_instr: u64,
}

/// CPython 3.11 on `x86_64`.
pub(super) const PY311: Layout = Layout {
    tstate_cframe: 56,
    cframe_current: 8,
    frame_code: 32,
    frame_previous: 48,
    frame_instr: 56,
};

const RUNTIME_INTERP_HEAD: u64 = 40;
const INTERP_THREADS_HEAD: u64 = 16;
const TSTATE_NEXT: u64 = 8;
/// `thread_id`: the `pthread_self()` of the thread the state belongs to.
const TSTATE_THREAD_ID: u64 = 152;
const CODE_TYPE: u64 = 8;
const CODE_FIRSTLINENO: u64 = 72;
const CODE_FILENAME: u64 = 112;
const CODE_QUALNAME: u64 = 128;
const CODE_LINETABLE: u64 = 136;
const CODE_BYTECODE: u64 = 184;
const CODE_LEN: usize = 192;

/// Threads of one interpreter read at most (uWSGI runs one per core and thread).
pub(super) const MAX_THREADS: usize = 256;
/// The longest line table and name read.
const MAX_LINETABLE: u64 = 64 * 1024;
const MAX_NAME: u64 = 512;
/// The largest library or executable whose symbols are read.
pub(super) const MAX_ELF: u64 = 64 << 20;

/// Where a frame's code comes from, for a reader who wants their own code first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The app's own code.
    App,
    /// An installed package: the framework and other libraries.
    Framework,
    /// Python's standard library.
    Stdlib,
    /// A native (machine code) frame.
    Native,
    #[serde(other)]
    Other,
}

impl Origin {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::App => "app",
            Origin::Framework => "framework",
            Origin::Stdlib => "stdlib",
            Origin::Native => "native",
            Origin::Other => "other",
        }
    }

    /// Judged by the path of the file, as the interpreter imported it.
    #[must_use]
    pub(super) fn of_python_file(file: &str) -> Origin {
        if file.contains("/site-packages/") || file.contains("/dist-packages/") {
            Origin::Framework
        } else if file.starts_with('<')
            || (file.starts_with("/usr/lib/python3") || file.starts_with("/usr/local/lib/python3"))
        {
            Origin::Stdlib
        } else {
            Origin::App
        }
    }
}

/// A CPython found in a process: the address of its runtime state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Interpreter {
    pub runtime: u64,
    /// `PyCode_Type`, to tell a code object from anything else a stale pointer finds.
    pub code_type: u64,
}

/// What the maps of a process say about Python in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    /// No CPython mapped: native frames only.
    NotPython,
    /// A CPython this version cannot read, and why.
    Unreadable(String),
    Python(Interpreter),
}

/// One mapping of `/proc/PID/maps` backed by a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    /// The kernel's number of the file's device (its superblock's), as in `mountinfo`.
    pub dev: u32,
    pub inode: u64,
    pub path: String,
}

impl Mapping {
    /// The file mapped, as the process sees its path (through its root), if it is on a
    /// local filesystem of the process's (`mounts`: nothing on a network or FUSE one is
    /// touched, not even by `stat`) and that path still leads to the inode mapped: a
    /// file renamed or replaced since is not read. (`/proc/PID/map_files` would need
    /// `CAP_SYS_ADMIN`.)
    pub(crate) fn file(&self, pid: i32, mounts: &Mounts) -> Option<PathBuf> {
        if !mounts.is_local(self.dev) {
            return None;
        }
        let p = PathBuf::from(format!("/proc/{pid}/root{}", self.path));
        let st = rustix::fs::stat(&p).ok()?;
        (st.st_ino == self.inode).then_some(p)
    }
}

/// The mounts of a process's namespace, from `/proc/PID/mountinfo` (bounded): each
/// mount's device (the kernel's number of its superblock: what `i_sb->s_dev` is, which
/// `stat` does not say on btrfs), and which devices are network or FUSE filesystems.
#[derive(Debug, Default)]
pub(crate) struct Mounts {
    by_id: HashMap<u64, u32>,
    local: HashSet<u32>,
}

/// Filesystem types whose files are never touched: a server elsewhere, or a user's FUSE
/// daemon, could leave even a `stat` hanging.
fn is_remote(fstype: &str) -> bool {
    const REMOTE: [&str; 11] = [
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "9p",
        "ceph",
        "ocfs2",
        "glusterfs",
        "afs",
        "lustre",
        "gfs2",
    ];
    fstype.starts_with("fuse") || REMOTE.contains(&fstype)
}

impl Mounts {
    pub(crate) fn of(pid: i32) -> Mounts {
        let path = format!("/proc/{pid}/mountinfo");
        match crate::bounded::read(Path::new(&path), 8 << 20) {
            Ok(raw) => Mounts::parse(&String::from_utf8_lossy(&raw)),
            Err(_) => Mounts::default(),
        }
    }

    fn parse(text: &str) -> Mounts {
        let mut m = Mounts::default();
        for line in text.lines() {
            // ID PARENT MAJOR:MINOR ROOT POINT OPTIONS [TAGS...] - FSTYPE SOURCE OPTIONS
            let mut f = line.split(' ');
            let (Some(Ok(id)), Some(Some((major, minor)))) = (
                f.next().map(str::parse::<u64>),
                f.nth(1).map(|d| d.split_once(':')),
            ) else {
                continue;
            };
            let (Ok(major), Ok(minor)) = (major.parse::<u32>(), minor.parse::<u32>()) else {
                continue;
            };
            let dev = (major << 20) | (minor & 0xf_ffff);
            m.by_id.insert(id, dev);
            let fstype = line
                .split_once(" - ")
                .and_then(|(_, t)| t.split(' ').next());
            if fstype.is_some_and(|t| !is_remote(t)) {
                m.local.insert(dev);
            }
        }
        m
    }

    /// The device of mount `id`.
    pub(crate) fn dev(&self, id: u64) -> Option<u32> {
        self.by_id.get(&id).copied()
    }

    /// Whether `dev` is a local filesystem mounted in the namespace (one not found is
    /// not).
    pub(super) fn is_local(&self, dev: u32) -> bool {
        self.local.contains(&dev)
    }
}

/// The file-backed mappings of `pid`, bounded.
pub(super) fn mappings(pid: i32) -> std::io::Result<Vec<Mapping>> {
    let raw = crate::bounded::read(Path::new(&format!("/proc/{pid}/maps")), 8 << 20)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(String::from_utf8_lossy(&raw)
        .lines()
        .filter_map(parse_mapping)
        .collect())
}

fn parse_mapping(line: &str) -> Option<Mapping> {
    let mut it = line.splitn(6, ' ');
    let range = it.next()?;
    let _perms = it.next()?;
    let offset = u64::from_str_radix(it.next()?, 16).ok()?;
    let (major, minor) = it.next()?.split_once(':')?;
    let dev = (u32::from_str_radix(major, 16).ok()? << 20)
        | (u32::from_str_radix(minor, 16).ok()? & 0xf_ffff);
    let inode = it.next()?.parse().ok()?;
    let path = it.next()?.trim_start();
    if !path.starts_with('/') {
        return None;
    }
    let (s, e) = range.split_once('-')?;
    Some(Mapping {
        start: u64::from_str_radix(s, 16).ok()?,
        end: u64::from_str_radix(e, 16).ok()?,
        offset,
        dev,
        inode,
        path: path.to_owned(),
    })
}

/// The C library a process maps: glibc's `libc.so.6`, by that exact name.
pub(super) fn libc(maps: &[Mapping]) -> Option<&Mapping> {
    maps.iter()
        .find(|m| m.offset == 0 && m.path.rsplit('/').next() == Some("libc.so.6"))
}

/// Whether the file at `path` (one `Mapping::file` found, so on a local filesystem)
/// may be read by root: a regular file of at most `MAX_ELF` bytes; with `system`, also
/// root's and writable by root only (a library every process trusts, not one a tenant
/// could change under the read).
pub(crate) fn readable(path: &Path, system: bool) -> Result<(), String> {
    let st = rustix::fs::stat(path).map_err(|e| e.to_string())?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err("not a regular file".into());
    }
    if u64::try_from(st.st_size).unwrap_or(u64::MAX) > MAX_ELF {
        return Err("larger than 64 MiB, not read".into());
    }
    if system && (st.st_uid != 0 || st.st_mode & 0o022 != 0) {
        return Err("not root's, or writable by others: not trusted".into());
    }
    Ok(())
}

/// Finds the CPython of `pid` among its mappings: a `libpython3.X` library, as uWSGI's
/// python plugin loads it (an interpreter linked statically reads as not Python).
pub(crate) fn find(pid: i32, maps: &[Mapping], mounts: &Mounts) -> Found {
    let lib = maps.iter().find(|m| {
        m.offset == 0
            && m.path
                .rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with("libpython3."))
    });
    let Some(lib) = lib else {
        return Found::NotPython;
    };
    let name = lib.path.rsplit('/').next().unwrap_or("");
    if !name.starts_with("libpython3.11.") {
        return Found::Unreadable(format!(
            "{name}: only CPython 3.11's frames are read by this version"
        ));
    }
    let Some(file) = lib.file(pid, mounts) else {
        return Found::Unreadable(format!(
            "{}: on a network or FUSE filesystem, or replaced since it was mapped",
            lib.path
        ));
    };
    if let Err(why) = readable(&file, true) {
        return Found::Unreadable(format!("{}: {why}", lib.path));
    }
    match symbols(&file, &["_PyRuntime", "PyCode_Type"]) {
        Ok(found) => {
            let bias = lib.start.wrapping_sub(found.base);
            match (found.addrs[0], found.addrs[1]) {
                (Some(rt), Some(ct)) => Found::Python(Interpreter {
                    runtime: bias.wrapping_add(rt.0),
                    code_type: bias.wrapping_add(ct.0),
                }),
                _ => Found::Unreadable(format!("{}: no _PyRuntime symbol", lib.path)),
            }
        }
        Err(e) => Found::Unreadable(format!("{}: {e}", lib.path)),
    }
}

/// The addresses of `names` in the dynamic symbols of the ELF file at `path`, and the
/// lowest address it loads at (subtracted from where it is mapped, that is its bias).
/// What an ELF file says of some of its dynamic symbols.
#[derive(Debug, Clone)]
pub(crate) struct Symbols {
    /// The lowest address it loads at (page aligned): its bias is where it is mapped
    /// less this.
    pub base: u64,
    /// Per name asked for: its address in the file's terms, and its offset in the file
    /// (what a uprobe is placed by).
    pub addrs: Vec<Option<(u64, u64)>>,
}

pub(crate) fn symbols(path: &Path, names: &[&str]) -> Result<Symbols, String> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    type Key = (u64, u64, i64, Vec<String>);
    // Every worker of a vassal maps the same libpython: it is read once, not once each.
    static SEEN: OnceLock<Mutex<HashMap<Key, Symbols>>> = OnceLock::new();
    let st = rustix::fs::stat(path).map_err(|e| e.to_string())?;
    let key = (
        st.st_dev,
        st.st_ino,
        st.st_mtime,
        names.iter().map(|n| (*n).to_owned()).collect(),
    );
    let seen = SEEN.get_or_init(Mutex::default);
    if let Some(hit) = seen.lock().ok().and_then(|m| m.get(&key).cloned()) {
        return Ok(hit);
    }
    let found = read_symbols(path, names)?;
    if let Ok(mut m) = seen.lock() {
        if m.len() >= 64 {
            m.clear();
        }
        m.insert(key, found.clone());
    }
    Ok(found)
}

fn read_symbols(path: &Path, names: &[&str]) -> Result<Symbols, String> {
    use object::{Object, ObjectSegment, ObjectSymbol};
    let data = crate::bounded::read(path, MAX_ELF).map_err(|e| e.to_string())?;
    let obj = object::File::parse(&*data).map_err(|e| e.to_string())?;
    let segments: Vec<(u64, u64, u64)> = obj
        .segments()
        .map(|s| (s.address(), s.size(), s.file_range().0))
        .collect();
    let base = segments.iter().map(|s| s.0).min().unwrap_or(0) & !0xfff;
    let mut addrs = vec![None; names.len()];
    for sym in obj.dynamic_symbols() {
        if let Ok(n) = sym.name()
            && let Some(i) = names.iter().position(|x| *x == n)
        {
            let vaddr = sym.address();
            let offset = segments
                .iter()
                .find(|(a, size, _)| vaddr >= *a && vaddr - a < *size)
                .map(|(a, _, off)| vaddr - a + off);
            addrs[i] = offset.map(|o| (vaddr, o));
        }
    }
    Ok(Symbols { base, addrs })
}

/// Reads the memory of one process, bounded.
pub(crate) struct Memory(File);

impl Memory {
    pub(crate) fn open(pid: i32) -> std::io::Result<Memory> {
        File::open(format!("/proc/{pid}/mem")).map(Memory)
    }

    fn bytes(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.0.read_exact_at(&mut buf, addr).ok()?;
        Some(buf)
    }

    fn u64(&self, addr: u64) -> Option<u64> {
        let b = self.bytes(addr, 8)?;
        Some(u64::from_ne_bytes(b.try_into().ok()?))
    }
}

/// The thread states of the interpreter: (`pthread_self()` of its thread, `PyThreadState`
/// address). Not the native thread id: a forked worker's states keep its parent's.
pub(crate) fn threads(mem: &Memory, interp: &Interpreter) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let Some(head) = mem.u64(interp.runtime.wrapping_add(RUNTIME_INTERP_HEAD)) else {
        return out;
    };
    if head == 0 {
        return out;
    }
    let mut ts = mem.u64(head.wrapping_add(INTERP_THREADS_HEAD)).unwrap_or(0);
    while ts != 0 && out.len() < MAX_THREADS {
        let Some(me) = mem.u64(ts.wrapping_add(TSTATE_THREAD_ID)) else {
            break;
        };
        out.push((me, ts));
        ts = mem.u64(ts.wrapping_add(TSTATE_NEXT)).unwrap_or(0);
    }
    out
}

/// One frame of a site: Python (file, line, function) or native (file, symbol).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Frame {
    pub file: String,
    /// Absent for a native frame, or an instruction without a line.
    pub line: Option<u32>,
    pub function: String,
    pub origin: Origin,
}

/// What a frame needs of its code object, read once per code object.
#[derive(Debug, Clone)]
pub(crate) struct Code {
    file: String,
    function: String,
    first_line: i32,
    table: Vec<u8>,
}

/// Reads code object `code`; `None` when it is not one (the frame changed under the
/// read, or the memory lies).
pub(crate) fn code(mem: &Memory, interp: &Interpreter, code: u64) -> Option<Code> {
    let raw = mem.bytes(code, CODE_LEN)?;
    let field = |off: u64| {
        let at = usize::try_from(off).ok()?;
        Some(u64::from_ne_bytes(raw.get(at..at + 8)?.try_into().ok()?))
    };
    if field(CODE_TYPE)? != interp.code_type {
        return None;
    }
    let at = usize::try_from(CODE_FIRSTLINENO).ok()?;
    let first_line = i32::from_ne_bytes(raw.get(at..at + 4)?.try_into().ok()?);
    Some(Code {
        file: string(mem, field(CODE_FILENAME)?).unwrap_or_else(|| "?".into()),
        function: string(mem, field(CODE_QUALNAME)?).unwrap_or_else(|| "?".into()),
        first_line,
        table: bytes_object(mem, field(CODE_LINETABLE)?).unwrap_or_default(),
    })
}

impl Code {
    /// The frame of this code object, at `code` in memory, stopped at instruction
    /// `instr`.
    pub(crate) fn frame(&self, code: u64, instr: u64) -> Frame {
        let index = instr
            .cast_signed()
            .wrapping_sub(code.wrapping_add(CODE_BYTECODE).cast_signed())
            / 2;
        let line = line_of(&self.table, self.first_line, index);
        Frame {
            origin: Origin::of_python_file(&self.file),
            file: self.file.clone(),
            line: line.and_then(|l| u32::try_from(l).ok()),
            function: self.function.clone(),
        }
    }
}

/// A `str` object's text: compact ASCII, compact of any kind, or legacy (pointer to
/// its data); at most `MAX_NAME` characters.
fn string(mem: &Memory, addr: u64) -> Option<String> {
    let head = mem.bytes(addr, 48)?;
    let len = u64::from_ne_bytes(head[16..24].try_into().ok()?);
    let state = u32::from_ne_bytes(head[32..36].try_into().ok()?);
    let kind = (state >> 2) & 7;
    let compact = state & (1 << 5) != 0;
    let ascii = state & (1 << 6) != 0;
    let len = len.min(MAX_NAME);
    let data = match (compact, ascii) {
        (true, true) => addr.wrapping_add(48),
        (true, false) => addr.wrapping_add(72),
        (false, _) => mem.u64(addr.wrapping_add(72))?,
    };
    let width = match kind {
        1 => 1,
        2 => 2,
        4 => 4,
        _ => return None,
    };
    let raw = mem.bytes(data, usize::try_from(len * width).ok()?)?;
    let text = match width {
        1 => raw.iter().map(|b| char::from(*b)).collect(),
        2 => raw
            .chunks_exact(2)
            .map(|c| {
                char::from_u32(u32::from(u16::from_ne_bytes([c[0], c[1]]))).unwrap_or('\u{fffd}')
            })
            .collect(),
        _ => raw
            .chunks_exact(4)
            .map(|c| {
                char::from_u32(u32::from_ne_bytes([c[0], c[1], c[2], c[3]])).unwrap_or('\u{fffd}')
            })
            .collect(),
    };
    Some(text)
}

/// A `bytes` object's content, at most `MAX_LINETABLE` bytes.
fn bytes_object(mem: &Memory, addr: u64) -> Option<Vec<u8>> {
    let size = mem.u64(addr.wrapping_add(16))?;
    if size > MAX_LINETABLE {
        return None;
    }
    mem.bytes(addr.wrapping_add(32), usize::try_from(size).ok()?)
}

fn varint(t: &[u8], i: &mut usize) -> Option<i64> {
    let mut b = *t.get(*i)?;
    *i += 1;
    let mut val = i64::from(b & 63);
    let mut shift = 0;
    while b & 64 != 0 {
        b = *t.get(*i)?;
        *i += 1;
        shift += 6;
        if shift > 56 {
            return None;
        }
        val |= i64::from(b & 63) << shift;
    }
    Some(val)
}

fn svarint(t: &[u8], i: &mut usize) -> Option<i64> {
    let v = varint(t, i)?;
    Some(if v & 1 == 0 { v >> 1 } else { -(v >> 1) })
}

/// The line of instruction `index` (in code units) by CPython 3.11's location table
/// (`Objects/locations.md`); an index before the first instruction is the first line.
pub(crate) fn line_of(table: &[u8], first_line: i32, index: i64) -> Option<i64> {
    if index < 0 {
        return Some(i64::from(first_line));
    }
    let mut line = i64::from(first_line);
    let (mut i, mut unit) = (0usize, 0i64);
    while i < table.len() {
        let first = table[i];
        i += 1;
        let code = (first >> 3) & 15;
        let length = i64::from(first & 7) + 1;
        let here = match code {
            15 => None,
            14 => {
                line = line.checked_add(svarint(table, &mut i)?)?;
                for _ in 0..3 {
                    varint(table, &mut i)?;
                }
                Some(line)
            }
            13 => {
                line = line.checked_add(svarint(table, &mut i)?)?;
                Some(line)
            }
            10..=12 => {
                line += i64::from(code - 10);
                i += 2;
                Some(line)
            }
            _ => {
                i += 1;
                Some(line)
            }
        };
        if (unit..unit.saturating_add(length)).contains(&index) {
            return here;
        }
        unit = unit.saturating_add(length);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn py_positions(src: &str) -> Vec<(Vec<u8>, i32, Vec<Option<i64>>)> {
        // CPython itself says, for every instruction of every code object in `src`, its
        // line: the oracle the parser is checked against.
        let script = format!(
            r"
import sys, json
src = {src:?}
out = []
def walk(co):
    out.append([list(co.co_linetable), co.co_firstlineno, [p[0] for p in co.co_positions()]])
    for c in co.co_consts:
        if hasattr(c, 'co_linetable'):
            walk(c)
walk(compile(src, 'x.py', 'exec'))
print(json.dumps(out))
"
        );
        let out = std::process::Command::new("/usr/bin/python3")
            .args(["-c", &script])
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Vec<(Vec<u8>, i32, Vec<Option<i64>>)> =
            serde_json::from_slice(&out.stdout).expect("json");
        v
    }

    #[test]
    fn line_table_matches_cpython_for_every_instruction() {
        let src = "def f(a,\n      b):\n    x = [i\n         for i in range(a)\n         if i]\n    try:\n        y = 1/0\n    except ZeroDivisionError:\n        y = (a +\n             b)\n    with open('/dev/null') as g:\n        pass\n\n\n\n    return lambda q: q + \\\n        y\n"
            .repeat(3)
            .replace("def f", "def f1")
            .replacen("def f1", "def f2", 1);
        let all = py_positions(&src);
        assert!(all.len() >= 6, "functions, lambdas and comprehensions");
        for (table, first, lines) in all {
            for (i, want) in lines.iter().enumerate() {
                let got = line_of(&table, first, i64::try_from(i).unwrap());
                assert_eq!(
                    got, *want,
                    "instruction {i} of a code object at line {first}"
                );
            }
        }
    }

    #[test]
    fn origin_by_path() {
        assert_eq!(Origin::of_python_file("/srv/shop/app.py"), Origin::App);
        assert_eq!(
            Origin::of_python_file("/usr/lib/python3/dist-packages/bottle.py"),
            Origin::Framework
        );
        assert_eq!(
            Origin::of_python_file("/usr/local/lib/python3.11/site-packages/flask/app.py"),
            Origin::Framework
        );
        assert_eq!(
            Origin::of_python_file("/usr/lib/python3.11/socket.py"),
            Origin::Stdlib
        );
        assert_eq!(Origin::of_python_file("<frozen codecs>"), Origin::Stdlib);
    }

    #[test]
    fn mounts_say_which_devices_are_local() {
        let m = Mounts::parse(
            "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n\
             40 22 0:35 / /home/ann/net rw shared:9 - fuse.sshfs ann@far:/ rw\n\
             41 22 0:36 / /srv/nfs rw - nfs4 far:/srv rw\n\
             42 22 0:37 / /tmp rw master:3 opt:x - tmpfs tmpfs rw\n",
        );
        assert_eq!(m.dev(22), Some((254 << 20) | 1));
        assert_eq!(m.dev(40), Some(35));
        assert!(m.is_local((254 << 20) | 1));
        assert!(m.is_local(37), "tmpfs, after two optional tags");
        assert!(!m.is_local(35), "FUSE");
        assert!(!m.is_local(36), "NFS");
        assert!(!m.is_local(99), "not mounted here");
    }

    #[test]
    fn maps_lines() {
        let m = parse_mapping(
            "7f00a000-7f00b000 r-xp 00002000 fe:01 123 /usr/lib/x86_64-linux-gnu/libc.so.6",
        )
        .unwrap();
        assert_eq!(m.dev, (0xfe << 20) | 1);
        assert_eq!(m.start, 0x7f00_a000);
        assert_eq!(m.offset, 0x2000);
        assert_eq!(m.inode, 123);
        assert_eq!(m.path, "/usr/lib/x86_64-linux-gnu/libc.so.6");
        assert_eq!(
            parse_mapping("7f00a000-7f00b000 rw-p 00000000 00:00 0 [heap]"),
            None
        );
        assert_eq!(
            parse_mapping("1000-2000 r--p 00000000 fe:01 9 /srv/a b (deleted)")
                .unwrap()
                .path,
            "/srv/a b (deleted)"
        );
    }
}
