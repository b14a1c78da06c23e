//! Where CPython keeps what a capture reads, per version, on `x86_64` (default builds:
//! not debug, not free-threaded).
//!
//! 3.9 to 3.12 are tables taken from CPython's own headers for each version. 3.13 and
//! later publish their layout in the running process: `_PyRuntime` starts with
//! `_Py_DebugOffsets` (the cookie `xdebugpy`, the version, then the offsets of every
//! field a debugger reads), so those are read there and a new release needs no new table
//! as long as that struct keeps its shape. Every number read from a process is data:
//! offsets past the sizes read are refused.

use super::lines::Format;

/// How a frame says where it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Instr {
    /// 3.9 and 3.10: `f_lasti`, an `int` of the frame object, in bytes (3.9) or in code
    /// units of two bytes (3.10).
    Lasti { unit: i64 },
    /// 3.11 and later: a pointer to the instruction, in the code object's own bytecode,
    /// which starts `bytecode` bytes into it.
    Pointer { bytecode: u64 },
}

/// The fields of a code object that name a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CodeFields {
    pub firstlineno: u64,
    pub filename: u64,
    /// `co_qualname` where there is one (3.11 and later), else `co_name`.
    pub name: u64,
    pub linetable: u64,
}

/// One version's layout: what the kernel side walks, and what is read from
/// `/proc/PID/mem` to name what it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    /// 3.minor.
    pub minor: u32,
    /// `PyThreadState` → the current frame (3.9, 3.10, 3.13 and later) or its `cframe`
    /// (3.11, 3.12).
    pub tstate_frame: u64,
    /// `_PyCFrame.current_frame`, where the thread state points to a `cframe`.
    pub cframe_current: Option<u64>,
    pub frame_code: u64,
    pub frame_previous: u64,
    pub frame_instr: u64,
    /// The frame's `owner` byte (3.12 and later): frames owned by the C stack or the
    /// interpreter (3 and above) are entry shims, not code of the app.
    pub frame_owner: Option<u64>,
    /// Bits of the frame's code pointer that are tags, not address (3.14's stack
    /// references).
    pub code_tag_bits: u64,
    pub runtime_interp_head: u64,
    pub interp_threads_head: u64,
    pub tstate_next: u64,
    /// `thread_id`: the `pthread_self()` of the thread the state belongs to.
    pub tstate_thread_id: u64,
    pub code: CodeFields,
    pub instr: Instr,
    pub lines: Format,
    /// Where a `str`'s characters start: ASCII-only compact strings, other compact
    /// strings (and, for a legacy string, where its pointer to them is).
    pub str_ascii: u64,
    pub str_compact: u64,
}

impl Layout {
    /// Bytes of a code object read to name a frame.
    pub(crate) fn code_len(&self) -> u64 {
        let c = self.code;
        let bytecode = match self.instr {
            Instr::Pointer { bytecode } => bytecode,
            Instr::Lasti { .. } => 0,
        };
        [c.firstlineno, c.filename, c.name, c.linetable, bytecode]
            .into_iter()
            .max()
            .unwrap_or(0)
            + 8
    }
}

/// CPython 3.9 (checked against 3.9.18 and Debian 11's 3.9.2).
const PY39: Layout = Layout {
    minor: 9,
    tstate_frame: 24,
    cframe_current: None,
    frame_code: 32,
    frame_previous: 24,
    frame_instr: 104,
    frame_owner: None,
    code_tag_bits: 0,
    runtime_interp_head: 32,
    interp_threads_head: 8,
    tstate_next: 8,
    tstate_thread_id: 176,
    code: CodeFields {
        firstlineno: 40,
        filename: 104,
        name: 112,
        linetable: 120,
    },
    instr: Instr::Lasti { unit: 1 },
    lines: Format::Lnotab,
    str_ascii: 48,
    str_compact: 72,
};

/// CPython 3.10: 3.9's frame object, with `f_lasti` in code units and PEP 626's table.
const PY310: Layout = Layout {
    minor: 10,
    frame_instr: 96,
    instr: Instr::Lasti { unit: 2 },
    lines: Format::Pep626,
    ..PY39
};

/// CPython 3.11 (checked field by field against Debian 12's `libpython3.11.so.1.0`).
const PY311: Layout = Layout {
    minor: 11,
    tstate_frame: 56,
    cframe_current: Some(8),
    frame_code: 32,
    frame_previous: 48,
    frame_instr: 56,
    frame_owner: None,
    code_tag_bits: 0,
    runtime_interp_head: 40,
    interp_threads_head: 16,
    tstate_next: 8,
    tstate_thread_id: 152,
    code: CodeFields {
        firstlineno: 72,
        filename: 112,
        name: 128,
        linetable: 136,
    },
    instr: Instr::Pointer { bytecode: 184 },
    lines: Format::Locations,
    str_ascii: 48,
    str_compact: 72,
};

/// CPython 3.12 (from its headers; checked against 3.12.1).
const PY312: Layout = Layout {
    minor: 12,
    tstate_frame: 56,
    cframe_current: Some(0),
    frame_code: 0,
    frame_previous: 8,
    frame_instr: 56,
    frame_owner: Some(70),
    code_tag_bits: 0,
    runtime_interp_head: 40,
    interp_threads_head: 72,
    tstate_next: 8,
    tstate_thread_id: 136,
    code: CodeFields {
        firstlineno: 68,
        filename: 112,
        name: 128,
        linetable: 136,
    },
    instr: Instr::Pointer { bytecode: 192 },
    lines: Format::Locations,
    str_ascii: 40,
    str_compact: 56,
};

/// The layout of CPython 3.`minor` where it is a table here (3.9 to 3.12); later ones
/// are read from the process (`from_debug_offsets`).
pub(crate) fn table(minor: u32) -> Option<Layout> {
    match minor {
        9 => Some(PY39),
        10 => Some(PY310),
        11 => Some(PY311),
        12 => Some(PY312),
        _ => None,
    }
}

/// The start of `_Py_DebugOffsets`.
pub(crate) const DEBUG_COOKIE: &[u8; 8] = b"xdebugpy";
/// Bytes of `_Py_DebugOffsets` read: 3.14's whole struct (3.13's is shorter, and is
/// followed by more of `_PyRuntime`).
pub(crate) const DEBUG_LEN: usize = 760;
/// An offset read from a process larger than this is not believed: every field read is
/// within the first kilobyte of its struct in 3.13 and 3.14, and a code object is read
/// up to its last field for every frame reported, so the bound is the most read per
/// frame a tenant's interpreter can ask for.
const MAX_OFFSET: u64 = 8 << 10;

/// Where each field is in `_Py_DebugOffsets`, for one shape of that struct.
struct DebugFields {
    interpreters_head: usize,
    threads_head: usize,
    tstate_next: usize,
    tstate_current_frame: usize,
    tstate_thread_id: usize,
    frame_previous: usize,
    frame_executable: usize,
    frame_instr_ptr: usize,
    frame_owner: usize,
    code_filename: usize,
    code_qualname: usize,
    code_linetable: usize,
    code_firstlineno: usize,
    code_adaptive: usize,
    str_ascii_size: usize,
}

/// 3.13's `_Py_DebugOffsets`.
const DEBUG_313: DebugFields = DebugFields {
    interpreters_head: 40,
    threads_head: 72,
    tstate_next: 168,
    tstate_current_frame: 184,
    tstate_thread_id: 192,
    frame_previous: 232,
    frame_executable: 240,
    frame_instr_ptr: 248,
    frame_owner: 264,
    code_filename: 280,
    code_qualname: 296,
    code_linetable: 304,
    code_firstlineno: 312,
    code_adaptive: 344,
    str_ascii_size: 560,
};

/// 3.14's: fields added to the thread state, frame and code object entries.
const DEBUG_314: DebugFields = DebugFields {
    interpreters_head: 40,
    threads_head: 72,
    tstate_next: 192,
    tstate_current_frame: 208,
    tstate_thread_id: 216,
    frame_previous: 256,
    frame_executable: 264,
    frame_instr_ptr: 272,
    frame_owner: 288,
    code_filename: 320,
    code_qualname: 336,
    code_linetable: 344,
    code_firstlineno: 352,
    code_adaptive: 384,
    str_ascii_size: 640,
};

/// The layout a CPython of 3.13 or later publishes at the start of its `_PyRuntime`
/// (`raw`, at least `DEBUG_LEN` bytes of it); why not, in one line.
pub(crate) fn from_debug_offsets(raw: &[u8]) -> Result<Layout, String> {
    if raw.get(..8) != Some(&DEBUG_COOKIE[..]) {
        return Err("_PyRuntime does not start with its debug offsets (no xdebugpy)".into());
    }
    let word = |at: usize| -> Result<u64, String> {
        raw.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_ne_bytes)
            .ok_or_else(|| "the debug offsets are cut short".to_owned())
    };
    let version = word(8)?;
    let (major, minor) = ((version >> 24) & 0xff, (version >> 16) & 0xff);
    if major != 3 || minor < 13 {
        return Err(format!("debug offsets of version {major}.{minor}"));
    }
    if word(16)? != 0 {
        return Err(format!(
            "CPython 3.{minor} built free-threaded: its frames are not read by this version"
        ));
    }
    let f = if minor == 13 { &DEBUG_313 } else { &DEBUG_314 };
    let off = |at: usize| -> Result<u64, String> {
        let v = word(at)?;
        if v > MAX_OFFSET {
            return Err(format!("a debug offset of {v} bytes is not believed"));
        }
        Ok(v)
    };
    Ok(Layout {
        minor: u32::try_from(minor).unwrap_or(0),
        tstate_frame: off(f.tstate_current_frame)?,
        cframe_current: None,
        frame_code: off(f.frame_executable)?,
        frame_previous: off(f.frame_previous)?,
        frame_instr: off(f.frame_instr_ptr)?,
        frame_owner: Some(off(f.frame_owner)?),
        // 3.14's `_PyStackRef`: the low two bits tag a deferred or borrowed reference.
        code_tag_bits: if minor >= 14 { 3 } else { 0 },
        runtime_interp_head: off(f.interpreters_head)?,
        interp_threads_head: off(f.threads_head)?,
        tstate_next: off(f.tstate_next)?,
        tstate_thread_id: off(f.tstate_thread_id)?,
        code: CodeFields {
            firstlineno: off(f.code_firstlineno)?,
            filename: off(f.code_filename)?,
            name: off(f.code_qualname)?,
            linetable: off(f.code_linetable)?,
        },
        instr: Instr::Pointer {
            bytecode: off(f.code_adaptive)?,
        },
        lines: Format::Locations,
        str_ascii: off(f.str_ascii_size)?,
        // Not among the debug offsets: the ASCII header and two more words (the UTF-8
        // form's length and pointer), as in every version since 3.12.
        str_compact: off(f.str_ascii_size)? + 16,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `_Py_DebugOffsets` of `len` words with `fields` set (word index → value).
    fn debug(version: u64, fields: &[(usize, u64)]) -> Vec<u8> {
        let mut raw = vec![0u8; DEBUG_LEN];
        raw[..8].copy_from_slice(DEBUG_COOKIE);
        raw[8..16].copy_from_slice(&version.to_ne_bytes());
        for (at, v) in fields {
            raw[*at..at + 8].copy_from_slice(&v.to_ne_bytes());
        }
        raw
    }

    #[test]
    fn debug_offsets_of_313_and_314_are_read_by_their_own_shape() {
        // The values Debian's 3.13 and 3.14 publish (read off their libraries).
        let l = from_debug_offsets(&debug(
            0x030d_05f0,
            &[
                (40, 632),
                (184, 72),
                (192, 152),
                (248, 56),
                (264, 70),
                (344, 200),
                (560, 40),
            ],
        ))
        .unwrap();
        assert_eq!(l.minor, 13);
        assert_eq!(
            (l.runtime_interp_head, l.tstate_frame, l.tstate_thread_id),
            (632, 72, 152)
        );
        assert_eq!((l.frame_instr, l.frame_owner), (56, Some(70)));
        assert_eq!(l.instr, Instr::Pointer { bytecode: 200 });
        assert_eq!((l.str_ascii, l.str_compact, l.code_tag_bits), (40, 56, 0));

        let l = from_debug_offsets(&debug(
            0x030e_00f0,
            &[(40, 808), (288, 74), (384, 208), (640, 40)],
        ))
        .unwrap();
        assert_eq!(l.minor, 14);
        assert_eq!(l.runtime_interp_head, 808);
        assert_eq!(l.frame_owner, Some(74));
        assert_eq!(l.instr, Instr::Pointer { bytecode: 208 });
        assert_eq!(l.code_tag_bits, 3);
    }

    #[test]
    fn debug_offsets_that_lie_are_refused() {
        let mut raw = debug(0x030d_05f0, &[]);
        raw[0] = b'y';
        assert!(from_debug_offsets(&raw).unwrap_err().contains("xdebugpy"));
        let free = debug(0x030d_05f0, &[(16, 1)]);
        assert!(
            from_debug_offsets(&free)
                .unwrap_err()
                .contains("free-threaded")
        );
        let huge = debug(0x030d_05f0, &[(344, 1 << 20)]);
        assert!(
            from_debug_offsets(&huge)
                .unwrap_err()
                .contains("not believed")
        );
        let old = debug(0x030b_07f0, &[]);
        assert!(from_debug_offsets(&old).is_err());
        assert!(from_debug_offsets(&DEBUG_COOKIE[..]).is_err(), "cut short");
    }

    #[test]
    fn tables_cover_39_to_312_only() {
        for minor in 9..=12 {
            assert_eq!(table(minor).map(|l| l.minor), Some(minor));
        }
        assert_eq!(table(8), None);
        assert_eq!(table(13), None, "read from the process");
    }
}
