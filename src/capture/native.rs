//! Native frames: a return address → the file mapped there and the nearest symbol before
//! it, from the file's own symbol tables (`.symtab` where it was not stripped, else
//! `.dynsym`).

use std::collections::HashMap;
use std::path::PathBuf;

use super::python::{Frame, MAX_ELF, Mapping, Origin};

/// The symbols of one mapped file, sorted by address, with what turns a file offset into
/// an address of the file (its loadable segments).
struct Symbols {
    segments: Vec<(u64, u64, u64)>,
    names: Vec<(u64, String)>,
}

impl Symbols {
    fn read(path: Option<PathBuf>) -> Option<Symbols> {
        use object::{Object, ObjectSegment, ObjectSymbol};
        let data = crate::bounded::read(&path?, MAX_ELF).ok()?;
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
            .filter_map(|s| Some((s.address(), s.name().ok()?.to_owned())))
            .collect();
        names.sort();
        names.dedup_by_key(|n| n.0);
        Some(Symbols { segments, names })
    }

    fn name_at(&self, file_offset: u64) -> Option<(&str, u64)> {
        let (off, _, vaddr) = self
            .segments
            .iter()
            .find(|(off, len, _)| (*off..off + len).contains(&file_offset))?;
        let addr = file_offset - off + vaddr;
        let i = self.names.partition_point(|(a, _)| *a <= addr);
        let (start, name) = self.names.get(i.checked_sub(1)?)?;
        Some((name.as_str(), addr - start))
    }
}

/// Names native return addresses of one process; files are read once each.
pub(crate) struct Symbolizer {
    pid: i32,
    maps: Vec<Mapping>,
    files: HashMap<String, Option<Symbols>>,
}

impl Symbolizer {
    pub(crate) fn new(pid: i32, maps: Vec<Mapping>) -> Symbolizer {
        Symbolizer {
            pid,
            maps,
            files: HashMap::new(),
        }
    }

    /// The frame of `ip`: `function+0xOFF` in the file's basename, or the file offset
    /// where the file has no symbol there.
    pub(crate) fn frame(&mut self, ip: u64) -> Frame {
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
        let syms = self
            .files
            .entry(m.path.clone())
            .or_insert_with(|| Symbols::read(m.file(pid)));
        // A return address points after the call: the call itself is one byte before.
        let function = match syms
            .as_ref()
            .and_then(|s| s.name_at(file_offset.saturating_sub(1)))
        {
            Some((name, off)) => format!("{name}+{:#x}", off + 1),
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
