//! Plain-text tables whose columns are as wide as their widest cell, and the formatting
//! of the cells the reports share.
//!
//! This module owns the layout of the human-readable output: column widths come from the
//! header and the rows (so one long value widens its own column and moves nothing else),
//! numbers align right, text left, and no line ends in spaces; control characters in a
//! value (a file name can hold a terminal escape sequence) are shown escaped, never sent
//! to the terminal. It knows nothing of what the cells mean and does no I/O beyond
//! writing to the writer it is given.

use std::io::{self, Write};

use crate::text::escape;

/// Space between two columns.
const GAP: &str = "  ";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Align {
    Left,
    Right,
}

#[derive(Debug)]
enum Row {
    Cells(Vec<String>),
    /// A line of its own under the row before it, outside the columns.
    Note(String),
}

/// A table, built row by row and then written at once.
#[derive(Debug)]
pub(super) struct Table {
    indent: usize,
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Row>,
}

impl Table {
    pub(super) fn new(columns: &[(&'static str, Align)]) -> Table {
        Table {
            indent: 0,
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Every line, header included, starts with this many spaces.
    #[must_use]
    pub(super) fn indent(mut self, spaces: usize) -> Table {
        self.indent = spaces;
        self
    }

    /// Adds a row; missing cells at its end are empty.
    pub(super) fn row(&mut self, cells: Vec<String>) {
        debug_assert!(cells.len() <= self.columns.len(), "more cells than columns");
        let cells = cells.into_iter().map(|c| escape(&c, false)).collect();
        self.rows.push(Row::Cells(cells));
    }

    /// Adds a line that is not part of the columns (a problem under a vassal, say).
    pub(super) fn note(&mut self, line: &str) {
        self.rows.push(Row::Note(escape(line, false)));
    }

    fn widths(&self) -> Vec<usize> {
        let mut widths: Vec<usize> = self.columns.iter().map(|(h, _)| width(h)).collect();
        for row in &self.rows {
            if let Row::Cells(cells) = row {
                for (w, cell) in widths.iter_mut().zip(cells) {
                    *w = (*w).max(width(cell));
                }
            }
        }
        widths
    }

    pub(super) fn write(&self, w: &mut dyn Write) -> io::Result<()> {
        let widths = self.widths();
        let header: Vec<&str> = self.columns.iter().map(|(h, _)| *h).collect();
        self.write_line(w, &widths, &header)?;
        for row in &self.rows {
            match row {
                Row::Cells(cells) => {
                    let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
                    self.write_line(w, &widths, &cells)?;
                }
                Row::Note(line) => writeln!(w, "{line}")?,
            }
        }
        Ok(())
    }

    fn write_line(&self, w: &mut dyn Write, widths: &[usize], cells: &[&str]) -> io::Result<()> {
        let mut line = " ".repeat(self.indent);
        for (i, ((_, align), width)) in self.columns.iter().zip(widths).enumerate() {
            if i > 0 {
                line.push_str(GAP);
            }
            let cell = cells.get(i).copied().unwrap_or("");
            match align {
                Align::Left => write_pad(&mut line, format_args!("{cell:<width$}")),
                Align::Right => write_pad(&mut line, format_args!("{cell:>width$}")),
            }
        }
        writeln!(w, "{}", line.trim_end())
    }
}

/// Columns are measured in characters: targets hold `→` and `…`, one column each.
fn width(s: &str) -> usize {
    s.chars().count()
}

/// A soft limit: `unlimited` for `RLIM_INFINITY`, `?` when it could not be read.
pub(super) fn limit(l: Option<u64>) -> String {
    match l {
        Some(u64::MAX) => "unlimited".into(),
        Some(l) => l.to_string(),
        None => "?".into(),
    }
}

/// A fraction of the soft limit, as a percentage.
pub(super) fn usage(u: Option<f64>) -> String {
    u.map_or_else(|| "?".into(), |u| format!("{:.1}%", u * 100.0))
}

/// A count that could not be read shows as `?`.
pub(super) fn count(n: Option<u64>) -> String {
    n.map_or_else(|| "?".into(), |n| n.to_string())
}

/// Keeps the last `n` characters of `s`, marking the cut with `…` (a path's end says
/// more than its start).
pub(super) fn tail(s: &str, n: usize) -> String {
    let len = width(s);
    if len <= n {
        return s.to_owned();
    }
    let keep: String = s.chars().skip(len + 1 - n).collect();
    format!("…{keep}")
}

/// Appends a padded cell; writing to a `String` cannot fail.
fn write_pad(line: &mut String, cell: std::fmt::Arguments<'_>) {
    let _ = std::fmt::Write::write_fmt(line, cell);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(t: &Table) -> String {
        let mut out = Vec::new();
        t.write(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_long_value_widens_its_own_column_and_shifts_nothing_after_it() {
        let mut t = Table::new(&[
            ("ACTION", Align::Left),
            ("PID", Align::Right),
            ("OUTCOME", Align::Left),
        ]);
        t.row(vec!["touch".into(), "42".into(), "recovered".into()]);
        t.row(vec![
            "recycle-worker".into(),
            "4242".into(),
            "vanished".into(),
        ]);
        assert_eq!(
            render(&t),
            "ACTION           PID  OUTCOME\n\
             touch             42  recovered\n\
             recycle-worker  4242  vanished\n"
        );
    }

    #[test]
    fn widths_count_characters_and_lines_end_without_spaces() {
        let mut t = Table::new(&[("TARGET", Align::Left), ("KIND", Align::Left)]).indent(2);
        t.row(vec!["unix → /run/a.sock".into(), "socket".into()]);
        t.row(vec!["x".into()]);
        t.note("  ! a note");
        assert_eq!(
            render(&t),
            "  TARGET              KIND\n  \
               unix → /run/a.sock  socket\n  \
               x\n  \
             ! a note\n"
        );
    }

    #[test]
    fn control_characters_in_cells_and_notes_are_shown_escaped() {
        let mut t = Table::new(&[("VASSAL", Align::Left), ("STATE", Align::Left)]);
        t.row(vec!["\x1b]0;owned\x07.ini".into(), "running".into()]);
        t.note("  ! \x1b[31mred");
        assert_eq!(
            render(&t),
            "VASSAL                STATE\n\
             \\x1b]0;owned\\x07.ini  running\n  \
             ! \\x1b[31mred\n"
        );
    }

    #[test]
    fn tail_keeps_the_end_of_long_values() {
        assert_eq!(tail("/srv/app/cat.jpg", 20), "/srv/app/cat.jpg");
        assert_eq!(tail("/srv/app/cat.jpg", 8), "…cat.jpg");
        assert_eq!(width(&tail("/srv/app/static/cat.jpg ×745", 10)), 10);
    }

    #[test]
    fn limits_and_usage_read_like_the_kernel_means_them() {
        assert_eq!(limit(Some(u64::MAX)), "unlimited");
        assert_eq!(limit(Some(1024)), "1024");
        assert_eq!(limit(None), "?");
        assert_eq!(usage(Some(830.0 / 1024.0)), "81.1%");
        assert_eq!(count(None), "?");
    }
}
