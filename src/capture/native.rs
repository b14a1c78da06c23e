//! Native frames: a return address → the file mapped there and the nearest symbol before
//! it, from the file's own symbol tables (`.symtab` where it was not stripped, else
//! `.dynsym`).

use std::collections::HashMap;
use std::path::Path;

use super::python::{Frame, MAX_ELF, Mapping, Mounts, Origin};

/// Files whose symbols one process's frames are named from, at most.
const MAX_FILES: usize = 16;
/// Symbols kept per file, at most.
const MAX_SYMBOLS: usize = 1 << 20;
/// The longest symbol name kept, in bytes.
const MAX_SYMBOL: usize = 256;

/// `name`, cut to `MAX_SYMBOL` bytes (on a character boundary).
fn cut(name: &str) -> String {
    let mut end = name.len().min(MAX_SYMBOL);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_owned()
}

/// The symbols of one mapped file, sorted by address, with what turns a file offset into
/// an address of the file (its loadable segments).
struct Symbols {
    segments: Vec<(u64, u64, u64)>,
    names: Vec<(u64, String)>,
}

impl Symbols {
    fn read(path: &Path) -> Option<Symbols> {
        use object::{Object, ObjectSegment, ObjectSymbol};
        let data = crate::bounded::read(path, MAX_ELF).ok()?;
        let obj = object::File::parse(&*data).ok()?;
        let segments = obj
            .segments()
            .filter_map(|s| {
                let (off, len) = s.file_range();
                Some((off, len, s.address())).filter(|_| len > 0)
            })
            .collect();
        let mut names: Vec<(u64, String)> = obj
            .symbols()
            .chain(obj.dynamic_symbols())
            .filter(|s| s.is_definition() && s.kind() == object::SymbolKind::Text)
            .filter_map(|s| Some((s.address(), cut(s.name().ok()?))))
            .take(MAX_SYMBOLS)
            .collect();
        names.sort();
        names.dedup_by_key(|n| n.0);
        Some(Symbols { segments, names })
    }

    fn name_at(&self, file_offset: u64) -> Option<(&str, u64)> {
        let (off, _, vaddr) = self
            .segments
            .iter()
            .find(|(off, len, _)| file_offset >= *off && file_offset - off < *len)?;
        let addr = (file_offset - off).wrapping_add(*vaddr);
        let i = self.names.partition_point(|(a, _)| *a <= addr);
        let (start, name) = self.names.get(i.checked_sub(1)?)?;
        Some((name.as_str(), addr - start))
    }
}

/// Names native return addresses of one process; files are read once each.
pub(super) struct Symbolizer {
    pid: i32,
    maps: Vec<Mapping>,
    mounts: Mounts,
    files: HashMap<String, Option<Symbols>>,
}

impl Symbolizer {
    pub(crate) fn new(pid: i32, maps: Vec<Mapping>, mounts: Mounts) -> Symbolizer {
        Symbolizer {
            pid,
            maps,
            mounts,
            files: HashMap::new(),
        }
    }

    /// The frame of `ip`: `function+0xOFF` in the file, or the file offset where the
    /// file has no symbol there. A return address (not `exact`) points after its call,
    /// so the symbol is looked up one byte before it.
    pub(crate) fn frame(&mut self, ip: u64, exact: bool) -> Frame {
        let Some(m) = self.maps.iter().find(|m| (m.start..m.end).contains(&ip)) else {
            return Frame {
                file: "?".into(),
                line: None,
                function: format!("{ip:#x}"),
                origin: Origin::Native,
            };
        };
        let file_offset = ip - m.start + m.offset;
        let pid = self.pid;
        if !self.files.contains_key(&m.path) && self.files.len() < MAX_FILES {
            let read = m
                .file(pid, &self.mounts)
                .filter(|p| super::python::readable(p, false).is_ok())
                .and_then(|p| Symbols::read(&p));
            self.files.insert(m.path.clone(), read);
        }
        let back = u64::from(!exact);
        let found = self
            .files
            .get(&m.path)
            .and_then(Option::as_ref)
            .and_then(|s| s.name_at(file_offset.saturating_sub(back)));
        let function = match found {
            Some((name, off)) => format!("{name}+{:#x}", off + back),
            None => format!("{file_offset:#x}"),
        };
        Frame {
            file: m.path.clone(),
            line: None,
            function,
            origin: Origin::Native,
        }
    }
}
