//! The line of an instruction, by the three line-table formats CPython has had: the
//! `co_lnotab` of 3.9, the `co_linetable` of 3.10 (PEP 626), and the location table of
//! 3.11 and later (`Objects/locations.md`). Tables are data read from another process:
//! a table that ends early or overflows gives no line, never a panic.

/// Which format a code object's line table is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// 3.9: pairs (bytes of code, line increment as a signed byte).
    Lnotab,
    /// 3.10: pairs (bytes of code, line increment as a signed byte, -128: no line).
    Pep626,
    /// 3.11 and later: the location table, in code units.
    Locations,
}

impl Format {
    /// The line of the instruction at `offset` bytes into the code: what
    /// `PyCode_Addr2Line` gives. An offset before the first instruction (a frame not yet
    /// started) is the first line.
    pub(crate) fn line(self, table: &[u8], first_line: i32, offset: i64) -> Option<i64> {
        match self {
            Format::Lnotab => Some(lnotab(table, first_line, offset)),
            Format::Pep626 => pep626(table, first_line, offset),
            Format::Locations => locations(table, first_line, offset.div_euclid(2)),
        }
    }
}

/// `PyCode_Addr2Line` of 3.9: the increments up to the last pair that starts at or
/// before the offset.
fn lnotab(table: &[u8], first_line: i32, offset: i64) -> i64 {
    let mut line = i64::from(first_line);
    let mut addr = 0i64;
    for pair in table.chunks_exact(2) {
        addr += i64::from(pair[0]);
        if addr > offset {
            break;
        }
        line += i64::from(pair[1].cast_signed());
    }
    line
}

/// `PyCode_Addr2Line` of 3.10: walks the address ranges (empty ones only move the line)
/// until the one holding the offset.
fn pep626(table: &[u8], first_line: i32, offset: i64) -> Option<i64> {
    if offset < 0 {
        return Some(i64::from(first_line));
    }
    let mut computed = i64::from(first_line);
    let (mut start, mut end, mut line) = (-1i64, 0i64, None);
    let mut pairs = table.chunks_exact(2);
    while end <= offset || start == end {
        let pair = pairs.next()?;
        start = end;
        end += i64::from(pair[0]);
        let delta = pair[1].cast_signed();
        line = if delta == -128 {
            None
        } else {
            computed += i64::from(delta);
            Some(computed)
        };
    }
    line
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

/// The line of instruction `index` (in code units) by the location table of 3.11 and
/// later; an index before the first instruction is the first line.
fn locations(table: &[u8], first_line: i32, index: i64) -> Option<i64> {
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
    fn location_table_matches_cpython_for_every_instruction() {
        let src = "def f(a,\n      b):\n    x = [i\n         for i in range(a)\n         if i]\n    try:\n        y = 1/0\n    except ZeroDivisionError:\n        y = (a +\n             b)\n    with open('/dev/null') as g:\n        pass\n\n\n\n    return lambda q: q + \\\n        y\n"
            .repeat(3)
            .replace("def f", "def f1")
            .replacen("def f1", "def f2", 1);
        let all = py_positions(&src);
        assert!(all.len() >= 6, "functions, lambdas and comprehensions");
        for (table, first, lines) in all {
            for (i, want) in lines.iter().enumerate() {
                let unit = i64::try_from(i).unwrap();
                let got = Format::Locations.line(&table, first, unit * 2);
                assert_eq!(
                    got, *want,
                    "instruction {i} of a code object at line {first}"
                );
            }
        }
    }

    /// 3.9's `co_lnotab` of
    /// ```text
    /// 10 def f():        (first line 10)
    /// 11     a = 1       bytes 0-3
    /// 12     b = 2       bytes 4-7
    /// 300    c = 3       bytes 8-11 (line +288: two pairs, 127 + 127 + 34)
    /// 299    d = 4       bytes 12-  (line -1)
    /// ```
    #[test]
    fn lnotab_increments_up_to_the_offset() {
        let table = [0u8, 1, 4, 1, 4, 127, 0, 127, 0, 34, 4, 0xff];
        let line = |off| Format::Lnotab.line(&table, 10, off);
        assert_eq!(line(0), Some(11));
        assert_eq!(line(3), Some(11));
        assert_eq!(line(4), Some(12));
        assert_eq!(line(8), Some(300));
        assert_eq!(line(11), Some(300));
        assert_eq!(line(12), Some(299));
        assert_eq!(line(400), Some(299));
        assert_eq!(Format::Lnotab.line(&[], 7, 0), Some(7));
    }

    /// 3.10's `co_linetable`: a range with no line (-128), an empty range that only moves
    /// the line, and a delta past one byte split over two pairs.
    #[test]
    fn pep626_ranges_give_lines_and_no_line() {
        // bytes 0-5: line 11; 6-7: no line; (empty: +1); 8-13: line 13;
        // 14-15: +127 then 16-19: +3 → 140 and 143.
        let table = [6u8, 1, 2, 0x80, 0, 1, 6, 1, 2, 127, 4, 3];
        let line = |off| Format::Pep626.line(&table, 10, off);
        assert_eq!(line(0), Some(11));
        assert_eq!(line(5), Some(11));
        assert_eq!(line(6), None);
        assert_eq!(line(8), Some(13));
        assert_eq!(line(13), Some(13));
        assert_eq!(line(14), Some(140));
        assert_eq!(line(19), Some(143));
        assert_eq!(line(20), None, "past the table");
        assert_eq!(line(-2), Some(10), "not started: the first line");
    }

    #[test]
    fn a_table_cut_short_gives_no_line() {
        assert_eq!(Format::Locations.line(&[0xf0 | 6], 3, 100), None);
        assert_eq!(Format::Locations.line(&[0x70], 3, 0), None);
        assert_eq!(Format::Pep626.line(&[4], 3, 2), None);
    }
}
