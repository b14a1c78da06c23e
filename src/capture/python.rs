//! Reading a running CPython from outside: where its thread states are, and what a code
//! object and an instruction pointer say (file, function, line).
//!
//! CPython 3.9 to 3.14 are read (`layout`: tables for 3.9 to 3.12, the process's own
//! debug offsets from 3.13 on), as a `libpython3.X` library (uWSGI's python plugin) or
//! linked into the executable (a `uwsgi` built with its Python inside, `python3`
//! itself). Every read goes through `/proc/PID/mem` with a size bound, and every value
//! read is data: a pointer that leads nowhere ends the walk, a string too long is cut.

mod layout;
mod lines;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use layout::Instr;
pub(crate) use layout::Layout;

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

/// A CPython found in a process: the address of its runtime state, and its layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Interpreter {
    pub runtime: u64,
    /// `PyCode_Type`, to tell a code object from anything else a stale pointer finds.
    pub code_type: u64,
    pub layout: Layout,
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
    /// The file mapped, if it is on a local filesystem of the process's (`mounts`:
    /// nothing on a network or FUSE one is touched, not even by `stat`) and a path to it
    /// still leads to the inode mapped: a file renamed or replaced since is not read.
    /// The kernel writes the path as the reader sees it: through the process's root
    /// when both share it, from the reader's root when that holds the file (a process
    /// in a chroot seen from the host), from the root of the mount namespace the file is
    /// mounted in otherwise: each is tried. (`/proc/PID/map_files`
    /// would need `CAP_SYS_ADMIN`.)
    pub(crate) fn file(&self, pid: i32, mounts: &Mounts) -> Option<PathBuf> {
        if !mounts.is_local(self.dev) {
            return None;
        }
        let root = format!("/proc/{pid}/root");
        let through_root = PathBuf::from(format!("{root}{}", self.path));
        // In another mount namespace, a chroot's files are named from that namespace's
        // root: the part that is the process's own root comes off.
        let its_root = rustix::fs::readlink(root.as_str(), Vec::new()).ok();
        let under_root = its_root.and_then(|r| {
            let rest = self.path.strip_prefix(r.to_str().ok()?)?;
            (r.as_bytes() != b"/" && rest.starts_with('/'))
                .then(|| PathBuf::from(format!("{root}{rest}")))
        });
        [
            Some(through_root),
            Some(PathBuf::from(&self.path)),
            under_root,
        ]
        .into_iter()
        .flatten()
        .find(|p| rustix::fs::stat(p).is_ok_and(|st| st.st_ino == self.inode))
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

/// The C library a process maps: glibc's `libc.so.6` (2.34 and later), or the
/// `libc-2.NN.so` that name links to in older releases (Debian 11's 2.31).
pub(super) fn libc(maps: &[Mapping]) -> Option<&Mapping> {
    glibc_part(maps, "libc")
}

/// glibc's `libpthread` as a process maps it before 2.34 (`libpthread.so.0`, or the
/// `libpthread-2.NN.so` it names); from 2.34 on it is part of the C library.
pub(super) fn libpthread(maps: &[Mapping]) -> Option<&Mapping> {
    glibc_part(maps, "libpthread")
}

/// The start of the mapping of glibc's library `stem`, by its soname (`STEM.so.N`) or its
/// file name before 2.34 (`STEM-2.NN.so`).
fn glibc_part<'m>(maps: &'m [Mapping], stem: &str) -> Option<&'m Mapping> {
    maps.iter().find(|m| {
        m.offset == 0
            && m.path
                .rsplit('/')
                .next()
                .and_then(|n| n.strip_prefix(stem))
                .is_some_and(|rest| {
                    let versioned = rest
                        .strip_prefix("-2.")
                        .and_then(|v| v.strip_suffix(".so"))
                        .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()));
                    versioned
                        || rest == ".so.6" && stem == "libc"
                        || rest == ".so.0" && stem == "libpthread"
                })
    })
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
/// python plugin loads it, else the executable when it exports `_PyRuntime` (Python
/// linked in). Its version comes from `Py_Version` (3.11 and later), else from the
/// library's name or, in an executable, from the functions each version added.
pub(crate) fn find(pid: i32, maps: &[Mapping], mounts: &Mounts) -> Found {
    let exe = rustix::fs::readlink(format!("/proc/{pid}/exe").as_str(), Vec::new())
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let lib = maps.iter().find(|m| {
        m.offset == 0
            && m.path
                .rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with("libpython3."))
    });
    let (object, named) = match lib {
        Some(lib) => (lib, minor_of_library(&lib.path)),
        None => match maps
            .iter()
            .find(|m| m.offset == 0 && exe.as_deref() == Some(m.path.as_str()))
        {
            Some(exe) => (exe, None),
            None => return Found::NotPython,
        },
    };
    let Some(file) = object.file(pid, mounts) else {
        return Found::Unreadable(format!(
            "{}: on a network or FUSE filesystem, or replaced since it was mapped",
            object.path
        ));
    };
    if let Err(why) = readable(&file, true) {
        return Found::Unreadable(format!("{}: {why}", object.path));
    }
    let names = [
        "_PyRuntime",
        "PyCode_Type",
        "Py_Version",
        "PyAIter_Check",
        "PyFrame_GetCode",
    ];
    let found = match symbols(&file, &names) {
        Ok(found) => found,
        Err(e) => return Found::Unreadable(format!("{}: {e}", object.path)),
    };
    let bias = object.start.wrapping_sub(found.base);
    let at = |i: usize| found.addrs[i].map(|(vaddr, _)| bias.wrapping_add(vaddr));
    let (Some(runtime), Some(code_type)) = (at(0), at(1)) else {
        if lib.is_none() {
            // An executable without Python in it.
            return Found::NotPython;
        }
        return Found::Unreadable(format!("{}: no _PyRuntime symbol", object.path));
    };
    let mem = match Memory::open(pid) {
        Ok(m) => m,
        Err(e) => return Found::Unreadable(format!("/proc/{pid}/mem: {e}")),
    };
    let minor = match at(2).and_then(|a| mem.u64(a)) {
        Some(version) => u32::try_from((version >> 16) & 0xff).ok(),
        None if named.is_some() => named,
        None if at(3).is_some() => Some(10),
        None if at(4).is_some() => Some(9),
        None => None,
    };
    match layout_of(&mem, runtime, minor) {
        Ok(layout) => Found::Python(Interpreter {
            runtime,
            code_type,
            layout,
        }),
        Err(why) => Found::Unreadable(format!("{}: {why}", object.path)),
    }
}

/// The layout of CPython 3.`minor`: a table, or the debug offsets at `runtime`.
fn layout_of(mem: &Memory, runtime: u64, minor: Option<u32>) -> Result<Layout, String> {
    let Some(minor) = minor.filter(|m| *m >= 9) else {
        return Err("a CPython older than 3.9, whose frames are not read".into());
    };
    if let Some(l) = layout::table(minor) {
        return Ok(l);
    }
    let raw = mem
        .bytes(runtime, layout::DEBUG_LEN)
        .ok_or_else(|| format!("CPython 3.{minor}: _PyRuntime cannot be read"))?;
    layout::from_debug_offsets(&raw).map_err(|why| format!("CPython 3.{minor}: {why}"))
}

/// The minor version a `libpython3.X.so…` file name says.
fn minor_of_library(path: &str) -> Option<u32> {
    let name = path.rsplit('/').next()?;
    let rest = name.strip_prefix("libpython3.")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
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
    let l = &interp.layout;
    let mut out = Vec::new();
    let Some(head) = mem.u64(interp.runtime.wrapping_add(l.runtime_interp_head)) else {
        return out;
    };
    if head == 0 {
        return out;
    }
    let mut ts = mem
        .u64(head.wrapping_add(l.interp_threads_head))
        .unwrap_or(0);
    while ts != 0 && out.len() < MAX_THREADS {
        let Some(me) = mem.u64(ts.wrapping_add(l.tstate_thread_id)) else {
            break;
        };
        out.push((me, ts));
        ts = mem.u64(ts.wrapping_add(l.tstate_next)).unwrap_or(0);
    }
    out
}

/// The frames of thread state `tstate` as the kernel side reads them, innermost first:
/// (code object, instruction), at most `max`, entry shims left out. For a reader of a
/// process that is stopped, or does not run Python at the time (tests, and a check that
/// a layout fits).
pub(crate) fn raw_frames(mem: &Memory, l: &Layout, tstate: u64, max: usize) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut frame = mem.u64(tstate.wrapping_add(l.tstate_frame)).unwrap_or(0);
    if let Some(current) = l.cframe_current {
        frame = if frame == 0 {
            0
        } else {
            mem.u64(frame.wrapping_add(current)).unwrap_or(0)
        };
    }
    for _ in 0..max * 2 {
        if frame == 0 || out.len() >= max {
            break;
        }
        let (Some(code), Some(instr), Some(prev)) = (
            mem.u64(frame.wrapping_add(l.frame_code)),
            mem.u64(frame.wrapping_add(l.frame_instr)),
            mem.u64(frame.wrapping_add(l.frame_previous)),
        ) else {
            break;
        };
        let shim = l
            .frame_owner
            .and_then(|o| mem.bytes(frame.wrapping_add(o), 1))
            .is_some_and(|b| b[0] >= 3);
        if !shim {
            out.push((code, instr));
        }
        frame = prev;
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

/// Reads the code object a frame points to (`code`, as the frame holds it: 3.14 tags
/// the pointer); `None` when it is not one (the frame changed under the read, an entry
/// frame, or the memory lies).
pub(crate) fn code(mem: &Memory, interp: &Interpreter, code: u64) -> Option<Code> {
    let l = &interp.layout;
    let code = code & !l.code_tag_bits;
    let raw = mem.bytes(code, usize::try_from(l.code_len()).ok()?)?;
    let field = |off: u64| {
        let at = usize::try_from(off).ok()?;
        Some(u64::from_ne_bytes(raw.get(at..at + 8)?.try_into().ok()?))
    };
    if field(8)? != interp.code_type {
        return None;
    }
    let at = usize::try_from(l.code.firstlineno).ok()?;
    let first_line = i32::from_ne_bytes(raw.get(at..at + 4)?.try_into().ok()?);
    Some(Code {
        file: string(mem, l, field(l.code.filename)?).unwrap_or_else(|| "?".into()),
        function: string(mem, l, field(l.code.name)?).unwrap_or_else(|| "?".into()),
        first_line,
        table: bytes_object(mem, field(l.code.linetable)?).unwrap_or_default(),
    })
}

impl Code {
    /// The frame of this code object, at `code` in memory (as the frame holds it),
    /// stopped at `instr` (as the frame holds it: a pointer, or `f_lasti`).
    pub(crate) fn frame(&self, l: &Layout, code: u64, instr: u64) -> Frame {
        let offset = match l.instr {
            Instr::Pointer { bytecode } => instr.cast_signed().wrapping_sub(
                (code & !l.code_tag_bits)
                    .wrapping_add(bytecode)
                    .cast_signed(),
            ),
            // An `int`: the low half of the word read (little-endian).
            #[allow(clippy::cast_possible_truncation)]
            Instr::Lasti { unit } => i64::from((instr as u32).cast_signed()).saturating_mul(unit),
        };
        let line = l.lines.line(&self.table, self.first_line, offset);
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
fn string(mem: &Memory, l: &Layout, addr: u64) -> Option<String> {
    let head = mem.bytes(addr, 40)?;
    let len = u64::from_ne_bytes(head[16..24].try_into().ok()?);
    let state = u32::from_ne_bytes(head[32..36].try_into().ok()?);
    let kind = (state >> 2) & 7;
    let compact = state & (1 << 5) != 0;
    let ascii = state & (1 << 6) != 0;
    let len = len.min(MAX_NAME);
    let data = match (compact, ascii) {
        (true, true) => addr.wrapping_add(l.str_ascii),
        (true, false) => addr.wrapping_add(l.str_compact),
        (false, _) => mem.u64(addr.wrapping_add(l.str_compact))?,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A script whose main thread waits three calls deep: `inner` (in `time.sleep`),
    /// called by `outer`, called by the module.
    const NESTED: &str = "import sys, time\n\
        def inner():\n\
        \x20   sys.stdout.write('ready\\n'); sys.stdout.flush()\n\
        \x20   time.sleep(60)  # inner waits\n\
        def outer():\n\
        \x20   inner()  # outer calls\n\
        outer()  # module calls\n";

    fn line(marker: &str) -> u32 {
        let i = NESTED.lines().position(|l| l.ends_with(marker)).unwrap();
        u32::try_from(i).unwrap() + 1
    }

    /// Runs `python` on `NESTED` and reads its frames from outside.
    fn walk(python: &Path) -> (String, Vec<(String, Option<u32>)>) {
        use std::io::{BufRead, BufReader};
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("nested.py");
        std::fs::write(&script, NESTED).unwrap();
        let mut child = std::process::Command::new(python)
            .arg(&script)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready, "ready\n");
        // Past the write, into the sleep.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let pid = i32::try_from(child.id()).unwrap();
        let maps = mappings(pid).unwrap();
        let version = match find(pid, &maps, &Mounts::of(pid)) {
            Found::Python(i) => format!("3.{}", i.layout.minor),
            other => panic!("{}: {other:?}", python.display()),
        };
        let stacks = crate::capture::python_stacks(pid);
        let _ = child.kill();
        let _ = child.wait();
        let stacks = stacks.unwrap();
        let main = stacks.last().expect("a thread state").clone();
        let frames = main
            .into_iter()
            .filter(|f| f.file == script.to_str().unwrap())
            .map(|f| (f.function, f.line))
            .collect();
        (version, frames)
    }

    /// Every CPython on this machine, from 3.9 on: Debian's (its interpreter linked into
    /// the executable) and pyenv's (a `libpython3.X.so` each). The Debian releases'
    /// own interpreters are walked in the tests of each release (tests/it/stacks.rs).
    #[test]
    fn the_frames_of_a_live_interpreter_are_walked_on_every_version_here() {
        let mut pythons = vec![PathBuf::from("/usr/bin/python3")];
        let pyenv = std::env::var_os("PYENV_ROOT").map_or_else(
            || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".pyenv"),
            PathBuf::from,
        );
        for minor in 9..=14 {
            let found = glob::glob(&format!(
                "{}/versions/3.{minor}.*/bin/python3.{minor}",
                pyenv.display()
            ))
            .unwrap()
            .flatten()
            .next();
            pythons.extend(found);
        }
        let want = vec![
            ("inner".to_owned(), Some(line("# inner waits"))),
            ("outer".to_owned(), Some(line("# outer calls"))),
            ("<module>".to_owned(), Some(line("# module calls"))),
        ];
        let mut walked = Vec::new();
        for python in &pythons {
            let (version, frames) = walk(python);
            assert_eq!(frames, want, "{} (CPython {version})", python.display());
            walked.push(version);
        }
        eprintln!("walked CPython {walked:?}");
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
    fn glibc_is_found_by_its_name_old_and_new() {
        let m = |path: &str| Mapping {
            start: 0,
            end: 1,
            offset: 0,
            dev: 0,
            inode: 1,
            path: path.into(),
        };
        for name in [
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            "/lib/x86_64-linux-gnu/libc-2.31.so",
        ] {
            assert!(libc(&[m(name)]).is_some(), "{name}");
        }
        for name in [
            "/srv/app/libc.so.6.evil",
            "/lib/libc-2.x.so",
            "/lib/libcrypt.so.1",
        ] {
            assert!(libc(&[m(name)]).is_none(), "{name}");
        }
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
