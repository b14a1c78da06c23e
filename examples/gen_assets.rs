//! Writes the files of the Debian package that are made from the code, so that they
//! cannot drift from it: a manual page for the command and one for each subcommand (from
//! the clap definitions, `vassal_warden::cli::Cli`), and the bash, zsh and fish
//! completions.
//!
//! ```sh
//! cargo run --example gen_assets -- OUTDIR
//! ```
//!
//! writes `OUTDIR/man/vassal-warden.1`, `OUTDIR/man/vassal-warden-SUBCOMMAND.1` and
//! `OUTDIR/completions/{vassal-warden.bash,_vassal-warden,vassal-warden.fish}`, and
//! prints each path. `scripts/build-deb` runs it and compresses the pages; the
//! integration tests (`tests/it/packaging.rs`) run [`generate`] and check that every
//! subcommand and every flag is there. The manual page of warden.ini is hand-written:
//! `packaging/vassal-warden.ini.5`.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Inline, Roff, bold, roman};
use vassal_warden::cli::Cli;

/// The command's name, as installed.
pub const BIN: &str = "vassal-warden";

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        eprintln!("usage: cargo run --example gen_assets -- OUTDIR");
        return ExitCode::from(2);
    };
    match generate(Path::new(&out)) {
        Ok(paths) => {
            for p in paths {
                println!("{}", p.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gen_assets: {}: {e}", out.to_string_lossy());
            ExitCode::FAILURE
        }
    }
}

/// Writes every manual page and completion under `out`; returns their paths.
pub fn generate(out: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = man_pages(&out.join("man"))?;
    written.extend(completions(&out.join("completions"))?);
    Ok(written)
}

/// `vassal-warden.1` and `vassal-warden-SUBCOMMAND.1` for each subcommand.
fn man_pages(dir: &Path) -> io::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir)?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Gives each subcommand its display name (`vassal-warden-run`) and its version.
    cmd.build();
    let mut written = vec![write_page(dir, &cmd, &main_extra(&cmd))?];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        written.push(write_page(dir, sub, &sub_extra())?);
    }
    Ok(written)
}

/// One page: clap's sections, then `extra`, then the version.
fn write_page(dir: &Path, cmd: &clap::Command, extra: &Roff) -> io::Result<PathBuf> {
    let man = Man::new(cmd.clone())
        .source(format!("{BIN} {}", env!("CARGO_PKG_VERSION")))
        .manual("vassal-warden manual");
    let path = dir.join(man.get_filename());
    let mut w = io::BufWriter::new(fs::File::create(&path)?);
    man.render_title(&mut w)?;
    man.render_name_section(&mut w)?;
    man.render_synopsis_section(&mut w)?;
    man.render_description_section(&mut w)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut w)?;
    }
    if cmd.has_subcommands() {
        man.render_subcommands_section(&mut w)?;
    }
    extra.to_writer(&mut w)?;
    if cmd.get_version().is_some() {
        man.render_version_section(&mut w)?;
    }
    w.flush()?;
    Ok(path)
}

/// What the command's page says beyond its flags: exit codes, environment, files.
fn main_extra(cmd: &clap::Command) -> Roff {
    let mut r = Roff::new();
    section(&mut r, "EXIT STATUS");
    for (code, meaning) in [
        ("0", "Success."),
        (
            "1",
            "A runtime error, or problems found by check (each one is printed with what to do).",
        ),
        (
            "2",
            "A usage or configuration error (the file and line are named).",
        ),
    ] {
        item(&mut r, code, meaning);
    }
    paragraph(
        &mut r,
        "health exits in the Nagios tradition instead: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
    );
    section(&mut r, "ENVIRONMENT");
    item(
        &mut r,
        "VASSAL_WARDEN_LOG",
        "How much to log to standard error (journald under systemd): error, warn, info (the default), debug, or a tracing filter.",
    );
    section(&mut r, "FILES");
    for (path, meaning) in [
        (
            "/etc/vassal-warden/warden.ini",
            "The configuration; optional, see vassal-warden.ini(5).",
        ),
        (
            "/var/log/vassal-warden/incidents.jsonl",
            "The incident log: JSON lines, append-only, each record written to disk before the next step.",
        ),
        (
            "/lib/systemd/system/vassal-warden.service",
            "The systemd unit that runs the daemon.",
        ),
    ] {
        item(&mut r, path, meaning);
    }
    let mut refs: Vec<(String, &str)> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| (format!("{BIN}-{}", s.get_name()), "1"))
        .collect();
    refs.extend([
        ("vassal-warden.ini".to_owned(), "5"),
        ("systemctl".to_owned(), "1"),
        ("logrotate".to_owned(), "8"),
    ]);
    see_also(&mut r, &refs);
    r
}

/// `SEE ALSO` with each page as `name(N)`, the name in bold.
fn see_also(r: &mut Roff, refs: &[(String, &str)]) {
    section(r, "SEE ALSO");
    let mut line: Vec<Inline> = Vec::new();
    for (i, (name, n)) in refs.iter().enumerate() {
        let sep = if i + 1 == refs.len() { "" } else { ", " };
        line.push(bold(name.as_str()));
        line.push(roman(format!("({n}){sep}")));
    }
    r.text(line);
}

/// What each subcommand's page adds: where the rest is.
fn sub_extra() -> Roff {
    let mut r = Roff::new();
    see_also(
        &mut r,
        &[(BIN.to_owned(), "1"), ("vassal-warden.ini".to_owned(), "5")],
    );
    r
}

fn section(r: &mut Roff, title: &str) {
    r.control("SH", [title]);
}

fn paragraph(r: &mut Roff, text: &str) {
    r.control("PP", []).text([roman(text)]);
}

/// A tagged paragraph: the tag in bold (a code, a name, a path), then what it means.
fn item(r: &mut Roff, tag: &str, text: &str) {
    r.control("TP", []).text([bold(tag)]).text([roman(text)]);
}

/// bash, zsh and fish completions, named as each shell's vendor directory expects.
fn completions(dir: &Path) -> io::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (shell, name) in [
        (Shell::Bash, format!("{BIN}.bash")),
        (Shell::Zsh, format!("_{BIN}")),
        (Shell::Fish, format!("{BIN}.fish")),
    ] {
        let path = dir.join(name);
        let mut w = io::BufWriter::new(fs::File::create(&path)?);
        clap_complete::generate(shell, &mut Cli::command(), BIN, &mut w);
        w.flush()?;
        written.push(path);
    }
    Ok(written)
}
