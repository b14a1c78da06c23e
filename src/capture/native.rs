//! Native frames: a return address → the file mapped there and the symbol that contains
//! it, from the file's own symbol table (`.symtab` where it was not stripped, else
//! `.dynsym`). An address no symbol covers is named `object+0xADDRESS` (its address in
//! the file's terms, what `addr2line -e object` takes), never after the nearest symbol
//! before it, which is another function's.

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

/// One function symbol: where it starts, how long it is, its name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Symbol {
    start: u64,
    size: u64,
    name: String,
}

/// The function symbols of one mapped file, sorted by address, with what turns a file
/// offset into an address of the file (its loadable segments).
struct Symbols {
    segments: Vec<(u64, u64, u64)>,
    functions: Vec<Symbol>,
}

impl Symbols {
    fn read(path: &Path) -> Option<Symbols> {
        use object::{Object, ObjectSegment};
        let data = crate::bounded::read(path, MAX_ELF).ok()?;
        let obj = object::File::parse(&*data).ok()?;
        let segments = obj
            .segments()
            .filter_map(|s| {
                let (off, len) = s.file_range();
                Some((off, len, s.address())).filter(|_| len > 0)
            })
            .collect();
        // The full table when the file kept one: it names static functions too, which
        // the dynamic table (exported names only) would pass over for a neighbour's.
        let mut functions = functions_of(obj.symbols());
        if functions.is_empty() {
            functions = functions_of(obj.dynamic_symbols());
        }
        Some(Symbols {
            segments,
            functions,
        })
    }

    /// The symbol containing `file_offset`, and how far into it; `Err` with the address
    /// in the file's terms when no symbol does.
    fn name_at(&self, file_offset: u64) -> Option<Result<(&str, u64), u64>> {
        let (off, _, vaddr) = self
            .segments
            .iter()
            .find(|(off, len, _)| file_offset >= *off && file_offset - off < *len)?;
        let addr = (file_offset - off).wrapping_add(*vaddr);
        Some(containing(&self.functions, addr).ok_or(addr))
    }
}

fn functions_of<'d, S: object::ObjectSymbol<'d>>(syms: impl Iterator<Item = S>) -> Vec<Symbol> {
    let mut out: Vec<Symbol> = syms
        .filter(|s| s.is_definition() && s.kind() == object::SymbolKind::Text)
        .filter_map(|s| {
            Some(Symbol {
                start: s.address(),
                size: s.size(),
                name: cut(s.name().ok()?),
            })
        })
        .take(MAX_SYMBOLS)
        .collect();
    out.sort();
    // Aliases of one function (same start): the first name, the largest size.
    out.dedup_by(|later, kept| {
        let same = later.start == kept.start;
        if same {
            kept.size = kept.size.max(later.size);
        }
        same
    });
    out
}

/// The function of `functions` (sorted by start) whose extent holds `addr`, and the
/// offset into it. A symbol of size 0 (hand-written assembly may say none) holds only its
/// first byte.
fn containing(functions: &[Symbol], addr: u64) -> Option<(&str, u64)> {
    let i = functions.partition_point(|f| f.start <= addr);
    // Functions may nest (a local alias inside a larger one): look back for any that
    // reaches `addr`, a bounded way.
    functions[..i]
        .iter()
        .rev()
        .take(8)
        .find(|f| addr - f.start < f.size.max(1))
        .map(|f| (f.name.as_str(), addr - f.start))
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
        let object = m.path.rsplit('/').next().unwrap_or(&m.path);
        let function = match found {
            Some(Ok((name, off))) => format!("{name}+{:#x}", off + back),
            Some(Err(addr)) => format!("{object}+{:#x}", addr + back),
            // A file not read, or an offset outside its loadable segments: the offset in
            // the file.
            None => format!("{object}+{file_offset:#x}"),
        };
        Frame {
            file: m.path.clone(),
            line: None,
            function,
            origin: Origin::Native,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(start: u64, size: u64, name: &str) -> Symbol {
        Symbol {
            start,
            size,
            name: name.into(),
        }
    }

    #[test]
    fn an_address_is_named_by_the_symbol_that_holds_it_or_by_none() {
        let table = vec![
            sym(0x1000, 0x100, "exported"),
            sym(0x1400, 0, "asm_entry"),
            sym(0x2000, 0x400, "outer"),
            sym(0x2100, 0x10, "inner_alias"),
        ];
        assert_eq!(containing(&table, 0x1000), Some(("exported", 0)));
        assert_eq!(containing(&table, 0x10ff), Some(("exported", 0xff)));
        // Past its end, before the next: no symbol's, not "exported+0x300".
        assert_eq!(containing(&table, 0x1300), None);
        assert_eq!(containing(&table, 0x1400), Some(("asm_entry", 0)));
        assert_eq!(containing(&table, 0x1401), None);
        assert_eq!(containing(&table, 0x2105), Some(("inner_alias", 5)));
        assert_eq!(containing(&table, 0x2200), Some(("outer", 0x200)));
        assert_eq!(containing(&table, 0x0fff), None);
    }

    /// A function that is not exported, in a library with its full symbol table and in
    /// the same library stripped to its dynamic one.
    #[test]
    fn a_static_function_is_named_from_symtab_and_never_after_its_exported_neighbour() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("lib.c");
        std::fs::write(
            &src,
            "int exported(int x) { return x * 3 + 1; }\n\
             __attribute__((noinline)) static int hidden(int x) { int s = 0; \
             for (int i = 0; i < x; i++) s += i * x; return s; }\n\
             int (*keep)(int) = hidden;\n",
        )
        .unwrap();
        let full = dir.path().join("libfull.so");
        let ok = std::process::Command::new("cc")
            .args(["-O1", "-shared", "-fPIC", "-o"])
            .arg(&full)
            .arg(&src)
            .status()
            .unwrap();
        assert!(ok.success());
        let stripped = dir.path().join("libstripped.so");
        let ok = std::process::Command::new("strip")
            .args(["--strip-all", "-o"])
            .arg(&stripped)
            .arg(&full)
            .status()
            .unwrap();
        assert!(ok.success());

        let with_symtab = Symbols::read(&full).unwrap();
        let hidden = with_symtab
            .functions
            .iter()
            .find(|f| f.name == "hidden")
            .expect(".symtab names the static function")
            .clone();
        let inside = hidden.start + hidden.size / 2;
        // Shared objects are linked at 0: file offsets and addresses agree in .text.
        let offset_of = |s: &Symbols, addr: u64| {
            s.segments
                .iter()
                .find(|(_, len, vaddr)| addr >= *vaddr && addr - vaddr < *len)
                .map(|(off, _, vaddr)| addr - vaddr + off)
                .unwrap()
        };
        assert_eq!(
            with_symtab.name_at(offset_of(&with_symtab, inside)),
            Some(Ok(("hidden", hidden.size / 2)))
        );

        let dynamic_only = Symbols::read(&stripped).unwrap();
        assert!(dynamic_only.functions.iter().any(|f| f.name == "exported"));
        assert!(!dynamic_only.functions.iter().any(|f| f.name == "hidden"));
        assert_eq!(
            dynamic_only.name_at(offset_of(&dynamic_only, inside)),
            Some(Err(inside)),
            "inside a function .dynsym does not name: its address, not a neighbour's name"
        );
    }
}
