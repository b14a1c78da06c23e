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
        written.push(write_page(dir, sub, &sub_extra(sub.get_name()))?);
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
/// Tagged lines of a manual page: a code or an example, and what it means.
pub type Entries = &'static [(&'static str, &'static str)];

/// A usage error, or a config that does not load: exit 2 of the commands that load it.
const USAGE_ERROR: (&str, &str) = (
    "2",
    "A usage error, or a config that does not load (its file and line are named).",
);

/// What each subcommand's exit codes mean, and examples of it with what they do. A
/// subcommand missing here fails the packaging tests.
pub const USAGE: &[(&str, Entries, Entries)] = &[
    (
        "run",
        &[
            (
                "0",
                "Stopped by SIGTERM or SIGINT, after its hooks finished (or, with --once, the pass is done).",
            ),
            ("1", "A runtime error the daemon cannot go on with."),
            USAGE_ERROR,
        ],
        &[
            (
                "vassal-warden run",
                "The daemon in the foreground, as the systemd unit runs it.",
            ),
            (
                "vassal-warden run --once --dry-run",
                "One pass that records what it would do and touches nothing.",
            ),
        ],
    ),
    (
        "status",
        &[
            (
                "0",
                "The report was printed (it reports; health judges). A bad warden.ini is said on standard error and its defaults used.",
            ),
            ("1", "A runtime error."),
            ("2", "A usage error."),
        ],
        &[(
            "vassal-warden status --json | jq '.vassals[].concerns'",
            "What is wrong with each vassal, as JSON.",
        )],
    ),
    (
        "fds",
        &[
            ("0", "The report was printed."),
            ("1", "No such process or vassal, or its fds cannot be read."),
            ("2", "A usage error."),
        ],
        &[(
            "vassal-warden fds shop --top 5",
            "The five targets each process of shop.ini holds most of.",
        )],
    ),
    (
        "incidents",
        &[
            ("0", "The records were printed (none is not an error)."),
            ("1", "The incident log cannot be read."),
            (
                "2",
                "A usage error (a --since that is neither a duration nor a date).",
            ),
        ],
        &[
            (
                "vassal-warden incidents --since 24h",
                "Yesterday's incidents, one row each.",
            ),
            (
                "vassal-warden incidents --json --since 2026-09-01 --vassal shop",
                "Every record of shop.ini since that date, as JSON lines.",
            ),
        ],
    ),
    (
        "reload",
        &[
            (
                "0",
                "Reloaded and verified (or, with --dry-run, the checks passed).",
            ),
            (
                "1",
                "Refused (the reason is recorded and printed), or the reload was not confirmed.",
            ),
            USAGE_ERROR,
        ],
        &[(
            "vassal-warden reload shop --reason 'stuck after deploy'",
            "Touch shop.ini so that the Emperor reloads it, recorded and verified.",
        )],
    ),
    (
        "pause",
        &[
            ("0", "Paused, and recorded in the incident log."),
            (
                "1",
                "No such vassal, or the pause could not be written or recorded.",
            ),
            USAGE_ERROR,
        ],
        &[(
            "vassal-warden pause shop --for 2h --reason 'deploy, JIRA-123'",
            "Leave shop.ini alone for two hours: recorded, not acted on, not reminded.",
        )],
    ),
    (
        "resume",
        &[
            ("0", "The pause was lifted, and recorded."),
            (
                "1",
                "No such vassal, it was not paused, or it could not be recorded.",
            ),
            USAGE_ERROR,
        ],
        &[(
            "vassal-warden resume shop --reason 'deployed'",
            "Act on shop.ini again from the warden's next pass.",
        )],
    ),
    (
        "health",
        &[
            (
                "0",
                "OK: a warden runs, and every vassal is within its limits.",
            ),
            (
                "1",
                "WARNING: over the line, held back, flapping, paused, or it cannot tell whether a warden runs.",
            ),
            (
                "2",
                "CRITICAL: no warden runs with this incident log, a process is at its limit, or over the line with the warden held back or given up, or nothing can be recorded.",
            ),
            ("3", "UNKNOWN: the config does not load."),
        ],
        &[(
            "vassal-warden health",
            "One line for Nagios or Icinga, e.g. VASSAL-WARDEN CRITICAL - no vassal-warden runs with the incident log ...",
        )],
    ),
    (
        "check",
        &[
            ("0", "Nothing wrong (with -t: the config loads)."),
            (
                "1",
                "Problems found, each printed with what to do (no warden running is one).",
            ),
            (
                "2",
                "A usage error, or a config that does not load (with -t: every bad line, as FILE:LINE).",
            ),
        ],
        &[
            (
                "vassal-warden check",
                "What the warden sees: Emperors, vassals, mappings, and every problem.",
            ),
            (
                "vassal-warden check -t && systemctl reload vassal-warden",
                "Test warden.ini before the daemon re-reads it (the unit's reload does this too).",
            ),
        ],
    ),
];

/// The exit codes and examples of subcommand `name`; none when it has no entry.
pub fn usage_of(name: &str) -> (Entries, Entries) {
    USAGE
        .iter()
        .find(|(n, ..)| *n == name)
        .map_or((&[], &[]), |(_, codes, examples)| (codes, examples))
}

fn sub_extra(name: &str) -> Roff {
    let mut r = Roff::new();
    let (codes, examples) = usage_of(name);
    section(&mut r, "EXIT STATUS");
    for (code, meaning) in codes {
        item(&mut r, code, meaning);
    }
    section(&mut r, "EXAMPLES");
    for (example, what) in examples {
        item(&mut r, example, what);
    }
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
