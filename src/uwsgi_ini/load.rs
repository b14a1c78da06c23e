//! Loading a vassal file as uWSGI 2.0.21 loads it: includes in place, then the three
//! expansion passes, then `inherit` files — each step bounded.
//!
//! What uWSGI does (core/ini.c, core/config.c, core/uwsgi.c), kept here:
//! - Each file is read whole and its magic variables expanded before its lines are
//!   split. `ini = FILE[:section]` and `include = FILE` are immediate options: the file
//!   is loaded at that point, its options land right after the line that named it.
//!   Relative paths are opened from the working directory (under an Emperor watching a
//!   directory, that directory). `ini = :section` reads another section of the last file.
//! - Immediate options keep their value as written. The others then go through three
//!   passes, each over every option in order: `$(ENV)`, then `@(FILE)` (the file's content,
//!   less one trailing newline), then `%(key)` (the first value of option `key`, or
//!   `%(a + 1)` arithmetic). A reference that cannot be resolved stays as written. After a
//!   replacement the value is scanned again from its second byte, so a reference that
//!   expands to another reference is expanded too.
//! - `inherit = FILE` is not immediate: it is loaded after the passes, and its options
//!   are appended at the end, unexpanded.
//! - A file uWSGI cannot open (`ini`, `include`, `inherit`, `@()`) makes uWSGI exit: here
//!   it is an error naming the vassal file, the line, and the file.
//!
//! Bounds uWSGI does not have: every file through `bounded` (1 MiB), include depth
//! (`MAX_INCLUDE_DEPTH`, so a loop is an error), files per vassal (`MAX_FILES`), one
//! expanded value (`MAX_VALUE`), all options together (`MAX_TOTAL`), and replacements
//! (`MAX_REFERENCES`). A vassal past a bound is an error for that vassal only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{Entry, Names, VassalIni, expand_magic_with, lex, line_of};
use crate::bounded::{self, MAX_CONFIG};
use crate::error::FileError;

/// The largest value of one option once expanded: 64 KiB.
pub const MAX_VALUE: usize = 64 * 1024;
/// The largest sum of all keys and values of one vassal: 4 MiB.
pub const MAX_TOTAL: usize = 4 * 1024 * 1024;
/// How deep includes may nest (uWSGI has no bound: a loop never ends there).
pub const MAX_INCLUDE_DEPTH: usize = 8;
/// How many files (the vassal file, includes, `@()` files) one vassal may read.
pub const MAX_FILES: usize = 64;
/// How many `$()`, `@()` and `%()` replacements one vassal may make.
pub const MAX_REFERENCES: usize = 1024;

/// Options uWSGI runs as soon as it reads them (`UWSGI_OPT_IMMEDIATE` in core/uwsgi.c and
/// the python plugin): their values are not expanded by the passes.
const IMMEDIATE: &[&str] = &[
    "xmlconfig",
    "xml",
    "config",
    "fallback-config",
    "strict",
    "set",
    "set-placeholder",
    "set-ph",
    "declare-option",
    "resolve",
    "for",
    "for-glob",
    "for-times",
    "for-readline",
    "endfor",
    "end-for",
    "if-opt",
    "if-not-opt",
    "if-env",
    "if-not-env",
    "ifenv",
    "if-reload",
    "if-not-reload",
    "if-hostname",
    "if-not-hostname",
    "if-hostname-match",
    "if-not-hostname-match",
    "if-exists",
    "if-not-exists",
    "ifexists",
    "if-plugin",
    "if-not-plugin",
    "ifplugin",
    "if-file",
    "if-not-file",
    "if-dir",
    "if-not-dir",
    "ifdir",
    "if-directory",
    "endif",
    "end-if",
    "blacklist",
    "end-blacklist",
    "whitelist",
    "end-whitelist",
    "include",
    "inject-before",
    "inject-after",
    "stop",
    "reload",
    "pause",
    "suspend",
    "resume",
    "connect-and-read",
    "extract",
    "listen",
    "umask",
    "help",
    "usage",
    "print-sym",
    "print-symbol",
    "spooler-processes",
    "signal",
    "flock",
    "flock-wait",
    "flock2",
    "flock-wait2",
    "immediate-uid",
    "immediate-gid",
    "ini",
    "yaml",
    "yml",
    "json",
    "js",
    "command-mode",
    "pcre-jit",
    "early-envdir",
    "plugins",
    "plugin",
    "need-plugins",
    "need-plugin",
    "plugins-dir",
    "plugin-dir",
    "autoload",
    "dlopen",
    "binary-append-data",
    "iprint",
    "exit",
    "cflags",
    "dot-h",
    "config-py",
    "build-plugin",
    "ini-paste",
    "ini-paste-logged",
    "python-version",
];

/// Formats uWSGI loads by extension (`include`, `inherit`); only ini is parsed here.
const OTHER_FORMATS: [&str; 5] = [".xml", ".yaml", ".yml", ".json", ".js"];

/// Where an option was read: which file (index into `Loader::files`), which line, and
/// the line of the vassal file that led there.
#[derive(Debug, Clone, Copy)]
struct At {
    file: usize,
    line: usize,
    top_line: usize,
}

#[derive(Debug)]
struct Opt {
    key: String,
    value: String,
    /// Run at once by uWSGI (immediate) or already loaded (`inherit`): not expanded.
    configured: bool,
    at: At,
}

struct Loader<'a> {
    top: &'a Path,
    cwd: &'a Path,
    top_names: Names,
    opts: Vec<Opt>,
    warden: Vec<Entry>,
    /// Every file read, the vassal file first.
    files: Vec<PathBuf>,
    /// The files being loaded, outermost first (for loops).
    stack: Vec<PathBuf>,
    /// uWSGI's `last_file`, for `ini = :section`.
    last_file: Option<String>,
    total: usize,
    references: usize,
    /// Whose word the file is (`trust::authority`): includes are read only as far as
    /// that user could read them. `None` when it cannot be told (text given directly).
    owner: Option<u32>,
}

/// Loads `path` (its content `text` when given) as uWSGI would with `--ini path:section`
/// from `cwd`.
pub(super) fn load(
    path: &Path,
    cwd: &Path,
    section: &str,
    text: Option<&str>,
) -> Result<VassalIni, FileError> {
    let x = if section == "uwsgi" { "" } else { section };
    let given = path.to_string_lossy();
    let mut l = Loader {
        top: path,
        cwd,
        top_names: Names::of(path, &given, x),
        opts: Vec::new(),
        warden: Vec::new(),
        files: Vec::new(),
        stack: Vec::new(),
        last_file: None,
        total: 0,
        references: 0,
        owner: if text.is_some() {
            None
        } else {
            crate::trust::authority(path)
        },
    };
    // A tenant's link to a file it could not read is not read as root (nor echoed).
    if let Some(owner) = l.owner.filter(|o| *o != 0)
        && let Ok(m) = std::fs::metadata(path)
        && !crate::trust::may_read(owner, &m)
    {
        return Err(FileError::new(
            path,
            None,
            format!(
                "it is uid {owner}'s, and leads to a file of uid {} that uid {owner} could not \
                 read: it is not read, and uWSGI running as that user could not load it either",
                std::os::unix::fs::MetadataExt::uid(&m)
            ),
        ));
    }
    let text = match text {
        Some(t) => t.to_owned(),
        None => read_top(path)?,
    };
    l.load_text(path, (&given, section, x), &text, None)?;
    l.passes()?;
    l.inherit()?;
    Ok(VassalIni {
        options: l.opts.into_iter().map(|o| (o.key, o.value)).collect(),
        warden: l.warden,
        includes: l.files.into_iter().skip(1).collect(),
    })
}

fn read_top(path: &Path) -> Result<String, FileError> {
    let bytes = bounded::read_config(path, MAX_CONFIG)
        .map_err(|e| FileError::new(path, None, e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| {
        FileError::new(
            path,
            Some(line_of(e.as_bytes(), e.utf8_error().valid_up_to())),
            "not UTF-8 text: this is not an ini file uWSGI can use",
        )
    })
}

/// `file:section` as uWSGI splits it (at the last colon): the file, the section asked
/// (`uwsgi` unless named), and what `%x` says (the text after the colon).
fn split_section(spec: &str) -> (&str, &str, &str) {
    if spec.contains("://") {
        // A URL: refused whole by `admit`.
        return (spec, "uwsgi", "");
    }
    match spec.rsplit_once(':') {
        Some((file, "")) => (file, "uwsgi", ""),
        Some((file, sect)) => (file, sect, sect),
        None => (spec, "uwsgi", ""),
    }
}

impl Loader<'_> {
    /// An error at `at`: the vassal file and its line, and the included file's when the
    /// option came from one.
    fn error(&self, at: Option<At>, message: impl Into<String>) -> FileError {
        let message = message.into();
        match at {
            None => FileError::new(self.top, None, message),
            Some(a) if a.file == 0 => FileError::new(self.top, Some(a.line), message),
            Some(a) => FileError::new(
                self.top,
                Some(a.top_line),
                format!("in {}:{}: {message}", self.files[a.file].display(), a.line),
            ),
        }
    }

    /// The path a relative name opens under the vassal's working directory.
    fn resolve(&self, name: &str) -> PathBuf {
        let p = Path::new(name);
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.cwd.join(p)
        }
    }

    /// Checks that one more file may be read from `at`, naming `what` asked for it.
    fn admit(&self, at: At, what: &str, name: &str) -> Result<PathBuf, FileError> {
        if name.contains("://") || name == "-" {
            return Err(self.error(
                Some(at),
                format!(
                    "`{what}` loads `{name}`, which is not a local file the warden can check; \
                     it will not touch this vassal (make it a file path to allow that)"
                ),
            ));
        }
        if self.files.len() >= MAX_FILES {
            return Err(self.error(
                Some(at),
                format!("it reads more than {MAX_FILES} files; merge its includes"),
            ));
        }
        let path = self.resolve(name);
        // Read as root only what the file's owner could read: a tenant's vassal file
        // cannot make the warden read another user's file (and echo it in a message).
        if let Some(owner) = self.owner.filter(|o| *o != 0)
            && let Ok(m) = std::fs::metadata(&path)
            && !crate::trust::may_read(owner, &m)
        {
            return Err(self.error(
                Some(at),
                format!(
                    "`{what}` names {}, which uid {owner}, whose file this is, could not read: \
                     it is not read, and uWSGI running as that user could not load it either",
                    path.display()
                ),
            ));
        }
        Ok(path)
    }

    /// Loads the ini `spec` (`file`, `file:section` or `:section`) named at `at`.
    fn include_ini(&mut self, spec: &str, at: At) -> Result<(), FileError> {
        let (file, asked, x) = split_section(spec);
        let file = match (file, &self.last_file) {
            ("", Some(last)) => last.clone(),
            _ => file.to_owned(),
        };
        let path = self.admit(at, "ini", &file)?;
        if self.stack.len() >= MAX_INCLUDE_DEPTH {
            return Err(self.error(
                Some(at),
                format!(
                    "includes nest deeper than {MAX_INCLUDE_DEPTH} at `{spec}`; \
                     if a file includes itself, uWSGI never finishes loading it: break the loop"
                ),
            ));
        }
        let text = bounded::read_config_text(&path, MAX_CONFIG).map_err(|e| {
            self.error(
                Some(at),
                format!(
                    "cannot load `{spec}` ({}): {e}; uWSGI would fail to load this vassal",
                    path.display()
                ),
            )
        })?;
        self.last_file = Some(file.clone());
        self.load_text(&path, (&file, asked, x), &text, Some(at))
    }

    /// Loads `name` as `include`/`inherit` do: by extension, case-sensitive as in uWSGI
    /// (`uwsgi_endswith`).
    #[allow(clippy::case_sensitive_file_extension_comparisons)]
    fn include_any(&mut self, name: &str, at: At) -> Result<(), FileError> {
        if name.ends_with(".ini") {
            return self.include_ini(name, at);
        }
        if !OTHER_FORMATS.iter().any(|x| name.ends_with(x)) {
            return Err(self.error(
                Some(at),
                format!(
                    "uWSGI cannot load `{name}`: it loads includes by extension \
                     (.ini, .xml, .yaml, .yml, .json, .js); rename it"
                ),
            ));
        }
        // Read to check that uWSGI can open it; its options are not parsed here.
        let path = self.admit(at, "include", name)?;
        bounded::read_config(&path, MAX_CONFIG).map_err(|e| {
            self.error(
                Some(at),
                format!("cannot load `{name}` ({}): {e}", path.display()),
            )
        })?;
        self.files.push(path);
        Ok(())
    }

    /// Lexes one file's text and adds its `asked` section's options (loading immediate
    /// includes in place). `x` is what `%x` says; `from` is the line that included it,
    /// `None` for the vassal file.
    fn load_text(
        &mut self,
        path: &Path,
        (given, asked, x): (&str, &str, &str),
        text: &str,
        from: Option<At>,
    ) -> Result<(), FileError> {
        let key_path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        if from.is_some() && self.stack.contains(&key_path) {
            return Err(self.error(
                from,
                format!(
                    "{} includes itself; uWSGI would never finish loading it: break the loop",
                    path.display()
                ),
            ));
        }
        if let Some(pos) = text.find('\0') {
            let line = line_of(text.as_bytes(), pos);
            let what = "contains a NUL byte: this is not an ini file uWSGI can use";
            return Err(match from {
                None => FileError::new(self.top, Some(line), what),
                Some(_) => self.error(from, format!("{}:{line} {what}", path.display())),
            });
        }
        let names = Names::of(path, given, x);
        let Some(expanded) = expand_magic_with(text, &names, &self.top_names) else {
            let what = format!(
                "its magic variables (`%p`, `%d`, ...) expand to more than {} MiB: it is refused",
                super::MAX_TOTAL >> 20
            );
            return Err(match from {
                None => FileError::new(self.top, None, what),
                Some(_) => self.error(from, format!("{} {what}", path.display())),
            });
        };
        let file = self.files.len();
        self.files.push(path.to_owned());
        self.stack.push(key_path);
        let mut any = false;
        for e in lex(&expanded) {
            if *e.section == *asked {
                any = true;
                let at = At {
                    file,
                    line: e.line,
                    top_line: from.map_or(e.line, |f| f.top_line),
                };
                self.add(e.key, e.value, at)?;
            } else if from.is_none() && &*e.section == "vassal-warden" {
                self.warden.push(e);
            }
        }
        self.stack.pop();
        if from.is_none() && !any {
            return Err(self.error(
                None,
                format!(
                    "no [{asked}] section with options: uWSGI would start nothing from it; \
                     add the section or remove the file"
                ),
            ));
        }
        Ok(())
    }

    /// Adds one option; an immediate include is loaded right away.
    fn add(&mut self, key: String, value: String, at: At) -> Result<(), FileError> {
        self.total += key.len() + value.len();
        if self.total > MAX_TOTAL {
            return Err(self.error(
                Some(at),
                format!(
                    "its options add up to more than {} MiB; no real vassal is this large: \
                     shrink it",
                    MAX_TOTAL >> 20
                ),
            ));
        }
        let include = match key.as_str() {
            "ini" => Some((true, value.clone())),
            "include" => Some((false, value.clone())),
            _ => None,
        };
        self.opts.push(Opt {
            configured: IMMEDIATE.contains(&key.as_str()),
            key,
            value,
            at,
        });
        match include {
            Some((true, spec)) => self.include_ini(&spec, at),
            Some((false, name)) => self.include_any(&name, at),
            None => Ok(()),
        }
    }

    /// The `inherit` files, loaded after the passes as uWSGI's configure step does; their
    /// options go at the end, and an `inherit` in them is loaded when reached.
    fn inherit(&mut self) -> Result<(), FileError> {
        let mut i = 0;
        while i < self.opts.len() {
            if !self.opts[i].configured && self.opts[i].key == "inherit" {
                self.opts[i].configured = true;
                let (name, at) = (self.opts[i].value.clone(), self.opts[i].at);
                self.include_any(&name, at)?;
            }
            i += 1;
        }
        Ok(())
    }
}

/// The expansion passes.
impl Loader<'_> {
    fn passes(&mut self) -> Result<(), FileError> {
        let mut first: HashMap<String, usize> = HashMap::new();
        for (i, o) in self.opts.iter().enumerate() {
            first.entry(o.key.clone()).or_insert(i);
        }
        for symbol in [b'$', b'@', b'%'] {
            for i in 0..self.opts.len() {
                let o = &self.opts[i];
                if o.configured || !o.value.as_bytes().contains(&symbol) {
                    continue;
                }
                let mut value = std::mem::take(&mut self.opts[i].value);
                let result = self.pass(i, &mut value, symbol, &first);
                self.opts[i].value = value;
                result?;
            }
        }
        Ok(())
    }

    /// One pass over one value (core/utils.c `uwsgi_apply_config_pass`, byte for byte).
    fn pass(
        &mut self,
        i: usize,
        value: &mut String,
        symbol: u8,
        first: &HashMap<String, usize>,
    ) -> Result<(), FileError> {
        let (mut has, mut depth, mut start, mut j) = (0usize, 0usize, 0usize, 0usize);
        while j < value.len() {
            let c = value.as_bytes()[j];
            if c == symbol {
                has = 1;
            } else if c == b'(' && has == 1 {
                (has, depth, start) = (2, 0, j + 1);
            } else if has > 1 {
                if c == b'(' {
                    has += 1;
                    depth += 1;
                } else if c == b')' && depth > 0 {
                    has += 1;
                    depth -= 1;
                } else if c == b')' && has <= 2 {
                    has = 0;
                } else if c == b')' {
                    let key = value[start..start + has - 2].to_owned();
                    has = 0;
                    let found = self.resolve_ref(i, value, symbol, &key, first)?;
                    if let Some(with) = found {
                        self.replace(i, value, start - 2..start + key.len() + 1, &with)?;
                        // uWSGI starts over at the value's second byte.
                        j = 1;
                        continue;
                    }
                } else {
                    has += 1;
                }
            } else {
                has = 0;
            }
            j += 1;
        }
        Ok(())
    }

    fn replace(
        &mut self,
        i: usize,
        value: &mut String,
        range: std::ops::Range<usize>,
        with: &str,
    ) -> Result<(), FileError> {
        let at = Some(self.opts[i].at);
        let key = self.opts[i].key.clone();
        self.references += 1;
        if self.references > MAX_REFERENCES {
            return Err(self.error(
                at,
                format!(
                    "`{key}`: more than {MAX_REFERENCES} $(), @() and %() replacements in this \
                     vassal; simplify its references"
                ),
            ));
        }
        let old = range.len();
        value.replace_range(range, with);
        self.total = (self.total + with.len()).saturating_sub(old);
        if value.len() > MAX_VALUE {
            return Err(self.error(
                at,
                format!(
                    "`{key}` expands to more than {} KiB: its references multiply \
                     (uWSGI would run out of memory loading it); fix its %() references",
                    MAX_VALUE / 1024
                ),
            ));
        }
        if self.total > MAX_TOTAL {
            return Err(self.error(
                at,
                format!(
                    "its options expand to more than {} MiB; fix its %() references",
                    MAX_TOTAL >> 20
                ),
            ));
        }
        Ok(())
    }

    /// What `key` stands for in this pass; `None` leaves the reference as written.
    fn resolve_ref(
        &mut self,
        i: usize,
        current: &str,
        symbol: u8,
        key: &str,
        first: &HashMap<String, usize>,
    ) -> Result<Option<String>, FileError> {
        Ok(match symbol {
            b'$' => std::env::var(key).ok(),
            b'@' => Some(self.at_file(i, key)?),
            _ => {
                let lookup = |name: &str| {
                    first.get(name).map(|&k| {
                        if k == i {
                            current.to_owned()
                        } else {
                            self.opts[k].value.clone()
                        }
                    })
                };
                placeholder(key, lookup)
            }
        })
    }

    /// `@(FILE)`: the file's content, less one trailing newline; uWSGI stops at a NUL.
    fn at_file(&mut self, i: usize, name: &str) -> Result<String, FileError> {
        let at = self.opts[i].at;
        let path = self.admit(at, "@()", name)?;
        let bytes = bounded::read_config(&path, MAX_VALUE as u64).map_err(|e| {
            self.error(
                Some(at),
                format!(
                    "cannot read `@({name})` ({}): {e}; uWSGI would fail to load this vassal",
                    path.display()
                ),
            )
        })?;
        self.files.push(path);
        let mut bytes: Vec<u8> = bytes.into_iter().take_while(|b| *b != 0).collect();
        if matches!(bytes.last(), Some(b'\n' | b'\r')) {
            bytes.pop();
        }
        String::from_utf8(bytes)
            .map_err(|_| self.error(Some(at), format!("`@({name})` is not UTF-8 text")))
    }
}

/// `%(key)`, or uWSGI's arithmetic `%(a + 1)` (core/config.c `uwsgi_manage_placeholder`):
/// tokens split by spaces, numbers taken as they are, other tokens as option values,
/// `+ - * /` applied to the next token, `++`/`--` to the result so far, else
/// concatenation.
fn placeholder(key: &str, lookup: impl Fn(&str) -> Option<String>) -> Option<String> {
    if !key.contains(' ') {
        return lookup(key);
    }
    let mut current: Option<String> = None;
    let mut op = "";
    for token in key.split(' ').filter(|t| !t.is_empty()) {
        let value = if token.bytes().all(|b| b.is_ascii_digit()) {
            token.to_owned()
        } else if matches!(token, "+" | "-" | "*" | "/") {
            op = token;
            continue;
        } else if matches!(token, "++" | "--") {
            if let Some(c) = &current {
                let n = strtoll(c);
                let n = if token == "++" {
                    n.wrapping_add(1)
                } else {
                    n.wrapping_sub(1)
                };
                current = Some(n.to_string());
            }
            op = "";
            continue;
        } else {
            lookup(token).unwrap_or_default()
        };
        let (a, b) = (current.as_deref().map_or(0, strtoll), strtoll(&value));
        current = Some(match op {
            "+" => a.wrapping_add(b).to_string(),
            "-" => a.wrapping_sub(b).to_string(),
            "*" => a.wrapping_mul(b).to_string(),
            "/" => a.checked_div(b).unwrap_or(0).to_string(),
            _ => current.unwrap_or_default() + &value,
        });
        op = "";
    }
    current
}

/// C's `strtoll(s, NULL, 10)`: leading blanks, a sign, digits; saturating.
fn strtoll(text: &str) -> i64 {
    let trimmed = text.trim_start();
    let (neg, digits) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    let mut acc: i64 = 0;
    for byte in digits.bytes().take_while(u8::is_ascii_digit) {
        let digit = i64::from(byte - b'0');
        acc = match acc.checked_mul(10).and_then(|x| x.checked_add(digit)) {
            Some(next) => next,
            None => return if neg { i64::MIN } else { i64::MAX },
        };
    }
    if neg { -acc } else { acc }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let p = d.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        d
    }

    fn read(d: &tempfile::TempDir, name: &str) -> Result<VassalIni, FileError> {
        VassalIni::read(&d.path().join(name))
    }

    #[test]
    fn reference_bomb_is_an_error_naming_the_file_and_line() {
        let mut text = String::from("[uwsgi]\na0 = x\n");
        for i in 1..=36 {
            writeln!(text, "a{i} = %(a{})%(a{})", i - 1, i - 1).unwrap();
        }
        let d = dir_with(&[("bomb.ini", &text)]);
        let e = read(&d, "bomb.ini").unwrap_err();
        // a17 (2^17 bytes) is the first value over 64 KiB; it is on line 19.
        assert_eq!(e.line, Some(19), "{e}");
        assert!(
            e.to_string()
                .contains("bomb.ini:19: `a17` expands to more than 64 KiB"),
            "{e}"
        );
    }

    #[test]
    fn self_reference_that_grows_is_bounded() {
        let d = dir_with(&[("grow.ini", "[uwsgi]\na = x%(a)\n")]);
        let e = read(&d, "grow.ini").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
    }

    #[test]
    fn includes_load_in_place_relative_to_the_working_directory() {
        let d = dir_with(&[
            (
                "v/app.ini",
                "[uwsgi]\na = 1\nini = inc/base.ini\nb = %(c)\n",
            ),
            ("v/inc/base.ini", "[uwsgi]\nc = from %n\n"),
        ]);
        let ini = VassalIni::read(&d.path().join("v/app.ini")).unwrap();
        let keys: Vec<&str> = ini.options.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "ini", "c", "b"]);
        assert_eq!(ini.get("b"), Some("from base"));
        assert_eq!(ini.includes, [d.path().join("v/inc/base.ini")]);
    }

    #[test]
    fn a_missing_include_names_the_vassal_file_its_line_and_the_include() {
        let d = dir_with(&[("app.ini", "[uwsgi]\nmaster = 1\nini = base.ini\n")]);
        let e = read(&d, "app.ini").unwrap_err();
        assert_eq!(e.path, d.path().join("app.ini"));
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("cannot load `base.ini`"), "{e}");
        assert!(e.message.contains("does not exist"), "{e}");
        let d = dir_with(&[("at.ini", "[uwsgi]\nkey = @(gone.txt)\n")]);
        let e = read(&d, "at.ini").unwrap_err();
        assert!(
            e.to_string()
                .contains("at.ini:2: cannot read `@(gone.txt)`"),
            "{e}"
        );
    }

    #[test]
    fn include_loops_are_errors() {
        let d = dir_with(&[
            ("a.ini", "[uwsgi]\nini = b.ini\n"),
            ("b.ini", "[uwsgi]\ninclude = a.ini\n"),
        ]);
        let e = read(&d, "a.ini").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("includes itself"), "{e}");
    }

    #[test]
    fn errors_inside_includes_say_where() {
        let d = dir_with(&[
            ("a.ini", "[uwsgi]\n\nini = b.ini\n"),
            ("b.ini", "[uwsgi]\nx = 1\ny = @(nope)\n"),
        ]);
        let e = read(&d, "a.ini").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("b.ini:3: cannot read `@(nope)`"), "{e}");
    }

    #[test]
    fn schemes_and_unknown_formats_are_not_taken_on_trust() {
        let d = dir_with(&[
            ("h.ini", "[uwsgi]\nini = http://example.com/x.ini\n"),
            ("t.ini", "[uwsgi]\ninclude = notes.txt\n"),
        ]);
        assert!(
            read(&d, "h.ini")
                .unwrap_err()
                .message
                .contains("not a local file")
        );
        assert!(
            read(&d, "t.ini")
                .unwrap_err()
                .message
                .contains("by extension")
        );
    }

    #[test]
    fn inherit_goes_last_and_is_not_expanded() {
        let d = dir_with(&[
            ("a.ini", "[uwsgi]\ninherit = t.ini\nx = 1\n"),
            ("t.ini", "[uwsgi]\ny = %(x)\n"),
        ]);
        let ini = read(&d, "a.ini").unwrap();
        assert_eq!(
            ini.options.last().unwrap(),
            &("y".to_owned(), "%(x)".to_owned())
        );
    }

    #[test]
    fn references_follow_uwsgi() {
        let d = dir_with(&[(
            "r.ini",
            "[uwsgi]\nx = 1\nx = 2\nfirst = %(x)\nfwd = %(later)\nlater = L%(x)\nunk = %(nope)\n\
             nested = %(x%(x))\nsum = %(x + 3)\nprod = %(x * x ++)\n",
        )]);
        let ini = read(&d, "r.ini").unwrap();
        assert_eq!(ini.get("first"), Some("1"));
        assert_eq!(ini.get("fwd"), Some("L1"));
        assert_eq!(ini.get("unk"), Some("%(nope)"));
        assert_eq!(ini.get("nested"), Some("%(x1)"));
        assert_eq!(ini.get("sum"), Some("4"));
        assert_eq!(ini.get("prod"), Some("2"));
    }

    #[test]
    fn at_file_drops_one_trailing_newline() {
        let d = dir_with(&[("a.ini", "[uwsgi]\nk = <@(s.txt)>\n"), ("s.txt", "v\n\n")]);
        assert_eq!(read(&d, "a.ini").unwrap().get("k"), Some("<v\n>"));
    }

    #[test]
    fn strtoll_like_c() {
        assert_eq!(strtoll("  -12abc"), -12);
        assert_eq!(strtoll("x"), 0);
        assert_eq!(strtoll("99999999999999999999"), i64::MAX);
    }

    /// A tenant's vassal file that includes (or `@()`s) a file only root can read: not
    /// read, and the vassal reads as one uWSGI could not load.
    #[test]
    fn a_tenants_file_cannot_make_root_read_what_the_tenant_could_not() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let secret = d.path().join("secret.ini");
        std::fs::write(&secret, "[uwsgi]\nmaster = 1\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        for line in ["ini = secret.ini", "chdir = @(secret.ini)"] {
            let v = d.path().join("tenant.ini");
            std::fs::write(&v, format!("[uwsgi]\n{line}\n")).unwrap();
            std::os::unix::fs::chown(&v, Some(65534), Some(65534)).unwrap();
            let e = load(&v, d.path(), "uwsgi", None).unwrap_err();
            assert!(
                e.to_string()
                    .contains("uid 65534, whose file this is, could not read"),
                "{e}"
            );
            // Readable by all: read.
            std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(load(&v, d.path(), "uwsgi", None).is_ok());
            std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
}
