//! Text for a reader: one line or many, with nothing a terminal would act on.
//!
//! This module is a leaf: every layer that shows a name it did not choose (a file name,
//! a hook's stderr, a frame's function) makes it safe here, and it imports nothing of the
//! crate. It does no I/O.

use std::fmt::Write as _;

/// `s` as one line for a terminal: line breaks in it (a file name may hold one) are shown
/// escaped too, so no name can forge a line of the report.
#[must_use]
pub(crate) fn one_line(s: &str) -> String {
    escape(s, false)
}

/// `n` and the noun for it: `1 vassal`, `2 vassals`, `0 processes`.
#[must_use]
pub(crate) fn counted(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `s` fit for a terminal: control characters, C1 controls and bidirectional overrides
/// shown escaped (`\x1b`, `\u{202e}`); line breaks kept.
#[must_use]
pub fn for_terminal(s: &str) -> String {
    escape(s, true)
}

/// `s` with every character that a terminal would act on written as an escape instead:
/// C0 controls and DEL (`\x1b`, `\r`, `\t`, and `\n` unless `newlines` are kept), C1
/// controls, and the bidirectional overrides and isolates (`\u{202e}`), which can make a
/// name read as another.
#[must_use]
pub(crate) fn escape(s: &str, newlines: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' if newlines => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0'..='\x1f' | '\x7f' => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            '\u{80}'..='\u{9f}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{061c}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}' => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(
            escape("a\x1b[2Jb\rc\td\u{9b}e\u{202e}f\x7f", false),
            r"a\x1b[2Jb\rc\td\u{9b}e\u{202e}f\x7f"
        );
        assert_eq!(escape("one\ntwo", true), "one\ntwo");
        assert_eq!(escape("one\ntwo", false), r"one\ntwo");
        assert_eq!(one_line("one\ntwo"), r"one\ntwo");
        assert_eq!(
            for_terminal("one\ntwo\x1b"),
            r"one
two\x1b"
        );
        assert_eq!(
            escape("/srv/app/café → ×745", false),
            "/srv/app/café → ×745"
        );
    }
}
