//! Reading ini files the way uWSGI does (core/ini.c, uWSGI 2.0.21).
//!
//! This module owns the lexer shared by vassal files and the warden's own config, and the
//! `VassalIni` view of a vassal file: its `[uwsgi]` options (repeated keys accumulate,
//! magic variables expanded, includes loaded and references expanded by `load`, all
//! bounded) and its optional `[vassal-warden]` policy section.
//! uWSGI's rules, kept exactly: a line is a comment only when its first non-blank
//! character is `;` or `#` (no inline comments); a section header is `[` up to the line's
//! last character; keys and values are trimmed of blanks, tabs and `\r`; a line without
//! `=` is a key with an empty value; no quoting, no escapes. Files are read only through
//! `bounded` (no blocking open, regular files, a size bound).

use std::path::{Path, PathBuf};

use crate::error::FileError;

mod load;

pub use load::{MAX_FILES, MAX_INCLUDE_DEPTH, MAX_REFERENCES, MAX_TOTAL, MAX_VALUE};

/// One `key = value` line, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub line: usize,
    /// Shared by the entries of one section: a file of one huge header and many short
    /// lines costs the header once, not once per line.
    pub section: std::sync::Arc<str>,
    pub key: String,
    pub value: String,
}

fn strip_blanks(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t' || c == '\r')
}

/// Splits ini text into entries, as core/ini.c does. Sections are kept so that callers
/// pick the one they read.
pub fn lex(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut section: std::sync::Arc<str> = std::sync::Arc::from("");
    for (i, raw) in text.split('\n').enumerate() {
        let line = strip_blanks(raw);
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            // uWSGI drops the last character whatever it is (normally `]`).
            let mut chars = rest.chars();
            chars.next_back();
            section = std::sync::Arc::from(chars.as_str());
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (strip_blanks(k), strip_blanks(v)),
            None => (line, ""),
        };
        out.push(Entry {
            line: i + 1,
            section: section.clone(),
            key: key.to_owned(),
            value: value.to_owned(),
        });
    }
    out
}

/// A vassal ini file as uWSGI would read it.
#[derive(Debug, Clone, Default)]
pub struct VassalIni {
    /// The `[uwsgi]` options in the order uWSGI ends up with them (includes loaded in
    /// place, `inherit` files at the end), magic variables and references expanded.
    pub options: Vec<(String, String)>,
    /// The `[vassal-warden]` section of the file itself (not of its includes): policy
    /// overrides, not interpreted here.
    pub warden: Vec<Entry>,
    /// Every other file read to load it (`ini =`, `include =`, `inherit =`, `@(file)`),
    /// in the order read.
    pub includes: Vec<PathBuf>,
}

impl VassalIni {
    /// Reads `path` (an absolute path) as a vassal started in the file's own directory
    /// reads it: relative includes are taken from there, as under an Emperor watching
    /// that directory.
    pub fn read(path: &Path) -> Result<Self, FileError> {
        let cwd = path.parent().unwrap_or(Path::new("/"));
        Self::read_in(path, cwd, "uwsgi")
    }

    /// Reads `path` as a uWSGI process whose working directory is `cwd` reads
    /// `--ini path:section`: every file is read without blocking and with a size bound
    /// (`bounded`), includes are loaded where uWSGI loads them, and the expansion is
    /// bounded (`MAX_VALUE`, `MAX_TOTAL`, `MAX_REFERENCES`, `MAX_INCLUDE_DEPTH`,
    /// `MAX_FILES`). A file or include uWSGI could not load is an error naming the file.
    pub fn read_in(path: &Path, cwd: &Path, section: &str) -> Result<Self, FileError> {
        load::load(path, cwd, section, None)
    }

    /// Parses `text` as the content of `path`; includes are read from `path`'s directory.
    pub fn parse(path: &Path, text: &str, section: &str) -> Result<Self, FileError> {
        let cwd = path.parent().unwrap_or(Path::new("/"));
        load::load(path, cwd, section, Some(text))
    }

    /// Every value of `key`, in order.
    pub fn values<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.options
            .iter()
            .filter(move |(k, _)| option_eq(k, key))
            .map(|(_, v)| v.as_str())
    }

    /// The last value of `key` (uWSGI's "last one wins" for scalar options).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(k, _)| option_eq(k, key))
            .map(|(_, v)| v.as_str())
    }

    /// A boolean option as uWSGI reads it: present with an empty value, `true`, `1`, ...
    pub fn flag(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| {
            !matches!(
                v.to_ascii_lowercase().as_str(),
                "0" | "false" | "no" | "off"
            )
        })
    }
}

/// uWSGI accepts `_` for `-` in option names.
fn option_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .all(|(x, y)| x == y || (x == b'_' && y == b'-') || (x == b'-' && y == b'_'))
}

// Runs once per error message: not worth a crate for counting bytes faster.
#[allow(clippy::naive_bytecount)]
fn line_of(bytes: &[u8], pos: usize) -> usize {
    bytes[..pos.min(bytes.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The names uWSGI's magic variables give one file (core/uwsgi.c
/// `config_magic_table_fill`).
#[derive(Debug, Clone, Default)]
struct Names {
    file_name: String,
    stem: String,
    ext: String,
    /// The directory with a trailing slash.
    dir: String,
    dir_name: String,
    components: Vec<String>,
    full: String,
    /// The name it was asked by (`%o`).
    given: String,
    /// The section named by `file.ini:section`, else empty.
    section: String,
}

impl Names {
    fn of(path: &Path, given: &str, section: &str) -> Names {
        let file_name = path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (stem, ext) = match file_name.rsplit_once('.') {
            Some((s, e)) => (s.to_owned(), e.to_owned()),
            None => (file_name.clone(), String::new()),
        };
        let parent = path.parent().unwrap_or(Path::new("/"));
        let mut dir = parent.to_string_lossy().into_owned();
        if !dir.ends_with('/') {
            dir.push('/');
        }
        Names {
            stem,
            ext,
            dir,
            dir_name: parent
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            components: parent
                .components()
                .filter_map(|c| match c {
                    std::path::Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                    _ => None,
                })
                .collect(),
            full: path.to_string_lossy().into_owned(),
            given: given.to_owned(),
            section: section.to_owned(),
            file_name,
        }
    }

    /// A lowercase letter's value for this file; uppercase letters ask the same of the
    /// first file read (the vassal file itself).
    fn get(&self, letter: char) -> Option<&str> {
        Some(match letter.to_ascii_lowercase() {
            'n' => &self.stem,
            's' => &self.file_name,
            'e' => &self.ext,
            'd' => &self.dir,
            'p' => &self.full,
            'o' => &self.given,
            'c' => &self.dir_name,
            'x' => &self.section,
            _ => return None,
        })
    }
}

/// Expands uWSGI's magic variables over the whole text, as uWSGI does when it reads the
/// file (core/utils.c `uwsgi_open_and_read`), before lines are split and trimmed: `%n`
/// name without extension, `%s` file name, `%e` extension, `%d` directory with a trailing
/// slash, `%p` absolute path, `%c` name of the directory, `%0`..`%9` components of the
/// directory, `%o` the path it was read from (under an Emperor, uWSGI gives the name
/// relative to the vassal directory instead), `%x` the section named by `file:section`,
/// `%h` host name, `%k` CPU count, `%%` a percent sign; in an included file, the
/// uppercase `%N %S %E %D %P %C %O %X` name the vassal file. Other letters uWSGI knows
/// (`%t %T %j %i %V %u %U %g %G`) cannot be known to match here and, like unknown ones,
/// expand to nothing — which is what uWSGI does with unknown ones. `%(` is left for the
/// reference pass. `None` when the result would be larger than `MAX_TOTAL` (a long path
/// repeated by `%p` on every line of a large file): such a file is refused, not expanded.
#[must_use]
pub fn expand_magic(text: &str, path: &Path) -> Option<String> {
    let names = Names::of(path, &path.to_string_lossy(), "");
    expand_magic_with(text, &names, &names)
}

fn expand_magic_with(text: &str, this: &Names, top: &Names) -> Option<String> {
    if !text.contains('%') {
        return Some(text.to_owned());
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let cpus = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .to_string();
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(&next) = chars.peek() else {
            out.push('%');
            break;
        };
        if next == '(' {
            out.push('%');
            continue;
        }
        chars.next();
        match next {
            'h' => out.push_str(&host),
            'k' => out.push_str(&cpus),
            '%' => out.push('%'),
            d @ '0'..='9' => {
                let i = d as usize - '0' as usize;
                out.push_str(this.components.get(i).map_or("", String::as_str));
            }
            l if l.is_ascii_lowercase() => out.push_str(this.get(l).unwrap_or_default()),
            u => out.push_str(top.get(u).unwrap_or_default()),
        }
        if out.len() > MAX_TOTAL {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> VassalIni {
        VassalIni::parse(
            Path::new("/etc/uwsgi-emperor/vassals/shop.ini"),
            text,
            "uwsgi",
        )
        .unwrap()
    }

    #[test]
    fn inline_hash_stays_in_the_value() {
        let ini = parse("[uwsgi]\nsocket = /run/%n.sock # not a comment\n");
        assert_eq!(ini.get("socket"), Some("/run/shop.sock # not a comment"));
    }

    #[test]
    fn whole_line_comments_and_blank_lines_are_skipped() {
        let ini = parse("; top\n[uwsgi]\n  # indented comment\n\n\tmaster = true\r\n");
        assert_eq!(ini.options, vec![("master".into(), "true".into())]);
    }

    #[test]
    fn repeated_keys_accumulate_and_last_wins_for_get() {
        let ini = parse("[uwsgi]\nenv = A=1\nenv = B=2\nprocesses = 2\nprocesses = 4\n");
        assert_eq!(ini.values("env").collect::<Vec<_>>(), ["A=1", "B=2"]);
        assert_eq!(ini.get("processes"), Some("4"));
    }

    #[test]
    fn backslashes_and_quotes_are_kept_verbatim() {
        let ini = parse("[uwsgi]\nroute = ^/foo\\.(png|jpg)$ static:/srv/\"x\"\n");
        assert_eq!(
            ini.get("route"),
            Some("^/foo\\.(png|jpg)$ static:/srv/\"x\"")
        );
    }

    #[test]
    fn other_sections_are_ignored_and_warden_section_is_kept() {
        let ini = parse("[app]\nfoo = 1\n[uwsgi]\nmaster = 1\n[vassal-warden]\nreload-at = 90%\n");
        assert_eq!(ini.get("foo"), None);
        assert_eq!(ini.warden.len(), 1);
        assert_eq!(ini.warden[0].key, "reload-at");
        assert_eq!(ini.warden[0].line, 6);
    }

    #[test]
    fn magic_variables_expand() {
        let path = std::env::var("PATH").unwrap_or_default();
        let ini = parse(
            "[uwsgi]\nsearch = $(PATH)\nbase = /srv/%n\nchdir = %(base)\npidfile = %d%n.pid\nself = %p\npct = 100%%\nodd = %q\n",
        );
        assert_eq!(ini.get("search"), Some(path.as_str()));
        assert_eq!(ini.get("base"), Some("/srv/shop"));
        assert_eq!(ini.get("chdir"), Some("/srv/shop"));
        assert_eq!(
            ini.get("pidfile"),
            Some("/etc/uwsgi-emperor/vassals/shop.pid")
        );
        assert_eq!(ini.get("self"), Some("/etc/uwsgi-emperor/vassals/shop.ini"));
        assert_eq!(ini.get("pct"), Some("100%"));
        // Unknown magic variables expand to nothing, as in uWSGI.
        assert_eq!(ini.get("odd"), Some(""));
    }

    #[test]
    fn line_without_equals_is_a_flag() {
        let ini = parse("[uwsgi]\nmaster\nvacuum = false\n");
        assert!(ini.flag("master"));
        assert!(!ini.flag("vacuum"));
        assert!(!ini.flag("absent"));
    }

    #[test]
    fn underscores_match_dashes() {
        let ini = parse("[uwsgi]\nmax_fd = 64\n");
        assert_eq!(ini.get("max-fd"), Some("64"));
    }

    #[test]
    fn file_without_uwsgi_section_is_an_error_naming_the_file() {
        let err = VassalIni::parse(Path::new("/v/bad.ini"), "garbage\n[other]\nx=1\n", "uwsgi")
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/v/bad.ini: no [uwsgi] section"),
            "{err}"
        );
    }

    #[test]
    fn nul_byte_is_an_error_with_its_line() {
        let err = VassalIni::parse(
            Path::new("/v/bad.ini"),
            "[uwsgi]\nmaster = 1\n\0\0",
            "uwsgi",
        )
        .unwrap_err();
        assert_eq!(err.line, Some(3));
    }

    fn token() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            Just("%(a)".to_owned()),
            Just("%(b)".to_owned()),
            Just("%(a + 1)".to_owned()),
            Just("$(HOME)".to_owned()),
            Just("@(/etc/hostname)".to_owned()),
            Just("@(missing)".to_owned()),
            Just("%n%d%p%x%%%".to_owned()),
            Just("(".to_owned()),
            Just(")".to_owned()),
            Just("\n[uwsgi]\n".to_owned()),
            Just("\n[vassal-warden]\n".to_owned()),
            Just("\nini = other.ini\n".to_owned()),
            Just("\0".to_owned()),
            "[ -~]{0,12}",
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Any text is a vassal config or an error naming the file, never a panic or an
        /// unbounded expansion.
        #[test]
        fn any_vassal_text_is_read_within_its_bounds(
            lines in proptest::collection::vec(
                ("[abc]|ini|include|set|[a-z-]{1,8}", proptest::collection::vec(token(), 0..6)),
                0..30,
            )
        ) {
            let mut text = String::from("[uwsgi]\n");
            for (key, value) in &lines {
                text.push_str(key);
                text.push_str(" = ");
                text.push_str(&value.concat());
                text.push('\n');
            }
            let path = Path::new("/nonexistent/vassals/x.ini");
            match VassalIni::parse(path, &text, "uwsgi") {
                Ok(ini) => {
                    let total: usize = ini.options.iter().map(|(k, v)| k.len() + v.len()).sum();
                    proptest::prop_assert!(total <= MAX_TOTAL);
                    for (_, v) in &ini.options {
                        proptest::prop_assert!(v.len() <= MAX_VALUE);
                    }
                }
                Err(e) => proptest::prop_assert!(e.to_string().starts_with("/nonexistent/vassals/x.ini")),
            }
        }

        /// Doubling references (`aN = %(aN-1)%(aN-1)`) of any length are bounded.
        #[test]
        fn reference_bombs_of_any_length_are_bounded(n in 1usize..80, seed in "[a-z]{1,16}") {
            use std::fmt::Write as _;
            let mut text = format!("[uwsgi]\na0 = {seed}\n");
            for i in 1..n {
                let _ = writeln!(text, "a{i} = %(a{})%(a{})", i - 1, i - 1);
            }
            if let Ok(ini) = VassalIni::parse(Path::new("/v/bomb.ini"), &text, "uwsgi") {
                for (_, v) in &ini.options {
                    proptest::prop_assert!(v.len() <= MAX_VALUE);
                }
            }
        }
    }

    /// A header of 600 KB followed by 200,000 one-letter lines, within the 1 MiB read
    /// bound: each line used to carry its own copy of the section name (about 120 GB).
    #[test]
    fn a_huge_section_name_is_held_once_not_once_per_line() {
        let mut text = format!("[{}]\n", "A".repeat(600_000));
        text.push_str(&"x\n".repeat(200_000));
        let entries = lex(&text);
        assert_eq!(entries.len(), 200_000);
        assert!(std::sync::Arc::ptr_eq(
            &entries[0].section,
            &entries[199_999].section
        ));
        assert!(VassalIni::parse(Path::new("/v/big.ini"), &text, "uwsgi").is_err());
    }

    /// `%p` on every line of a large file, with a long path: refused, not expanded.
    #[test]
    fn magic_that_would_expand_past_the_bound_is_refused() {
        let long = format!("/{}/v.ini", "d".repeat(4000));
        let text = format!("[uwsgi]\n{}", "a = %p\n".repeat(150_000));
        let e = VassalIni::parse(Path::new(&long), &text, "uwsgi").unwrap_err();
        assert!(e.to_string().contains("expand to more than 4 MiB"), "{e}");
        assert!(expand_magic(&text, Path::new(&long)).is_none());
    }
}
