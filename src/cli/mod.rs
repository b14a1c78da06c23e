//! The command line: flags parsed once into validated options, dispatch to one module per
//! command, and the one place where reports reach standard output.
//!
//! This module owns argument parsing, loading the config for commands that need it, and
//! writing each command's report — a typed value that `status`, `check`, `fds` and
//! `incidents` build first and then render as a table or as JSON. Errors come back to
//! `main` with their exit code: 2 for usage and configuration, 1 for runtime. A reader
//! that goes away (`| head`) is not an error.

mod check;
mod fds;
mod incidents;
mod status;
mod table;
mod traceback;

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::audit;
use crate::config::{self, Config};
use crate::daemon;
use crate::episode::{Episode, Level};
use crate::error::FileError;
use crate::inventory::Inventory;
use crate::text::{counted, one_line};
use crate::warden::Warden;

pub use crate::text::for_terminal;

#[derive(Debug, Parser)]
#[command(
    name = "vassal-warden",
    version,
    about = "Keeps uWSGI Emperor vassals alive when their apps leak file descriptors",
    long_about = "Keeps uWSGI Emperor vassals alive when their apps leak file descriptors.\n\n\
        It finds every vassal ini file the running Emperors watch, maps each one to its \
        master and worker PIDs, and samples each process's open fds against its soft \
        RLIMIT_NOFILE. When a process crosses the line it writes an incident record naming \
        what leaks before it acts: it recycles the leaking workers (SIGHUP) when that is \
        enough, or touches the vassal's ini so that the Emperor reloads it gracefully, then \
        verifies that the fds came back down. `run` is the daemon; the other commands show \
        what it sees and what it did."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground (systemd-friendly).
    Run {
        /// Config file [default: /etc/vassal-warden/warden.ini; missing means defaults]
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Record incidents but never touch a vassal.
        #[arg(long)]
        dry_run: bool,
        /// One sampling pass (and the verification of any reload it started), then exit.
        #[arg(long)]
        once: bool,
    },
    /// Every vassal: its processes, fds against the soft limit, headroom.
    Status {
        /// Config file [default: /etc/vassal-warden/warden.ini; missing means defaults]
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print one JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The leak report for one process or every process of a vassal.
    Fds {
        /// A PID, or a vassal's name (`shop.ini`, `shop`) or path.
        target: String,
        /// How many open targets to list per process.
        #[arg(long, value_name = "N", default_value_t = 10)]
        top: usize,
        /// Config file [default: /etc/vassal-warden/warden.ini; missing means defaults]
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print one JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Incidents from the incident log.
    Incidents {
        /// Config file [default: /etc/vassal-warden/warden.ini; missing means defaults]
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Only records from this time on: a duration back from now (24h, 90d) or a date
        /// or time in UTC (2026-09-01, 2026-09-01T12:00:00Z).
        #[arg(long, value_name = "WHEN", value_parser = incidents::parse_since)]
        since: Option<std::time::SystemTime>,
        /// Only this vassal.
        #[arg(long)]
        vassal: Option<String>,
        /// The records as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// A manual, audited graceful reload of one vassal (touch its ini), then verified.
    Reload {
        /// The vassal's name (`shop.ini`, `shop`) or path.
        vassal: String,
        /// Why, for the incident log.
        #[arg(long, default_value = "operator request")]
        reason: String,
        /// Check and record, but do not touch.
        #[arg(long)]
        dry_run: bool,
        /// Config file [default: /etc/vassal-warden/warden.ini; missing means defaults]
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Leave a vassal alone for a while: it is still sampled and its incidents recorded
    /// (marked paused), but nothing is done to it and no reminder is written. The running
    /// warden honours it on its next pass; it survives restarts and ends by itself.
    Pause {
        /// The vassal's name (`shop.ini`, `shop`) or path.
        vassal: String,
        /// How long (e.g. 30m, 2h, 3d); a pause already there is replaced.
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_pause_length)]
        length: Duration,
        /// Why, for the incident log and whoever looks at `status`.
        #[arg(long)]
        reason: String,
        /// Config file [default: /etc/vassal-warden/warden.ini; missing means defaults]
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// End a vassal's pause now: the running warden acts on it again from its next pass.
    Resume {
        /// The vassal's name (`shop.ini`, `shop`) or path.
        vassal: String,
        /// Why, for the incident log.
        #[arg(long, default_value = "operator request")]
        reason: String,
        /// Config file [default: /etc/vassal-warden/warden.ini; missing means defaults]
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// One line for a monitoring system (Nagios, Icinga, a Prometheus textfile check):
    /// exit 0 OK, 1 WARNING (over the line, a reload held back, flapping), 2 CRITICAL
    /// (at the limit, or over the line with the warden held back or given up), 3 UNKNOWN.
    Health {
        /// Config file [default: /etc/vassal-warden/warden.ini; missing means defaults]
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// What the warden sees and why: Emperors, vassals, mapping, problems.
    Check {
        /// Config file [default: /etc/vassal-warden/warden.ini; missing means defaults]
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Test the config file alone, as the daemon would load it (`nginx -t`): every
        /// error with its file and line, exit 0 or 2. The unit's reload runs this first.
        #[arg(short = 't', long)]
        config_only: bool,
        /// Print one JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn parse_pause_length(s: &str) -> Result<Duration, String> {
    match config::parse_duration(s)? {
        d if d.is_zero() => Err("a pause must last some time (e.g. 30m, 2h)".into()),
        d => Ok(d),
    }
}

/// An error with the exit code it should produce.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Config(#[from] FileError),
    #[error("{0:#}")]
    Runtime(#[from] anyhow::Error),
    /// Problems were found and reported already (`check`).
    #[error("")]
    Problems,
    /// `health` reported, with this exit code.
    #[error("")]
    Health(i32),
    /// `check -t`: this many errors in the config, each said already.
    #[error("")]
    Invalid(usize),
}

impl Failure {
    #[must_use]
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Config(_) | Failure::Invalid(_) => 2,
            Failure::Runtime(_) | Failure::Problems => 1,
            Failure::Health(code) => *code,
        }
    }
}

pub fn main(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Run {
            config,
            dry_run,
            once,
        } => {
            let cfg = Config::load(config.as_deref())?;
            let lock = own_log(&cfg.audit_log)?;
            daemon::run(cfg, daemon::Options { dry_run, once }, lock)?;
            Ok(())
        }
        Command::Status { config, json } => {
            let cfg = read_only_config(config.as_deref());
            let episodes = Episodes::read(&cfg);
            print(
                &status::StatusReport::build(&inventory(&cfg), &episodes),
                json,
            )
        }
        Command::Health { config } => health(config.as_deref()),
        Command::Fds {
            target,
            top,
            config,
            json,
        } => {
            let cfg = read_only_config(config.as_deref());
            let report = match target.parse::<i32>() {
                Ok(pid) => fds::FdsReport::for_pid(pid, top)?,
                Err(_) => {
                    fds::FdsReport::for_vassal(&inventory(&cfg), &target, top, &cfg.audit_log)?
                }
            };
            print(&report, json)
        }
        Command::Incidents {
            config,
            since,
            vassal,
            json,
        } => {
            let cfg = read_only_config(config.as_deref());
            let filter = incidents::Filter {
                since,
                vassal: vassal.as_deref(),
            };
            incidents::show(&cfg.audit_log, &filter, json)
        }
        Command::Check {
            config,
            config_only: true,
            ..
        } => check_config(config.as_deref()),
        Command::Check { config, json, .. } => check(config.as_deref(), json),
        Command::Reload {
            vassal,
            reason,
            dry_run,
            config,
        } => reload(Config::load(config.as_deref())?, &vassal, &reason, dry_run),
        Command::Pause {
            vassal,
            length,
            reason,
            config,
        } => pause(Config::load(config.as_deref())?, &vassal, length, &reason),
        Command::Resume {
            vassal,
            reason,
            config,
        } => resume(Config::load(config.as_deref())?, &vassal, &reason),
    }
}

/// The config for a command that only reads: a bad warden.ini is said (each error with
/// its file and line, on standard error) and the command goes on with the defaults for
/// what could not be read, as the daemon goes on with the config in force.
fn read_only_config(config: Option<&std::path::Path>) -> Config {
    let (cfg, errors) = Config::load_lenient(config);
    for e in &errors {
        eprintln!(
            "vassal-warden: warning: {}; the default is used for it here (the running warden keeps the config it has; `vassal-warden check -t` lists every error)",
            one_line(&e.to_string())
        );
    }
    cfg
}

/// `check`: the report, and exit 1 when it found problems.
fn check(config: Option<&std::path::Path>, json: bool) -> Result<(), Failure> {
    let cfg = Config::load(config)?;
    let report = check::CheckReport::build(&cfg, &inventory(&cfg), &Episodes::read(&cfg));
    print(&report, json)?;
    // Even when the reader went away, the verdict is the check's, not the pipe's.
    if report.problems.is_empty() {
        Ok(())
    } else {
        Err(Failure::Problems)
    }
}

/// `check -t`: the config file alone, every error on its own line (to standard error,
/// as a config error is), or one line saying it loads.
fn check_config(config: Option<&std::path::Path>) -> Result<(), Failure> {
    let errors = Config::errors(config);
    let shown = config.unwrap_or(std::path::Path::new(config::DEFAULT_PATH));
    if errors.is_empty() {
        let line = if shown.exists() {
            format!("{}: the configuration is valid", shown.display())
        } else {
            format!("{}: absent; the defaults apply", shown.display())
        };
        return emit(|w| writeln!(w, "{}", one_line(&line)));
    }
    for e in &errors {
        eprintln!("vassal-warden: {}", one_line(&e.to_string()));
    }
    Err(Failure::Invalid(errors.len()))
}

/// Takes the lock that makes the daemon the only one writing its incident log. Another
/// daemon holding it is a configuration error (exit 2). A lock that cannot be made (the
/// log's directory is not writable) is not: the daemon runs, alerting only since no
/// record can be written there either, and takes the lock once it can.
fn own_log(log: &std::path::Path) -> Result<Option<audit::OwnerLock>, Failure> {
    match audit::OwnerLock::take(log) {
        Ok(l) => Ok(Some(l)),
        Err(e @ audit::LockError::Held { .. }) => {
            Err(FileError::new(log, None, e.to_string()).into())
        }
        Err(e) => {
            tracing::error!(file = %log.display(), "{e}");
            Ok(None)
        }
    }
}

/// `health`: the worst concern decides the exit code; the line says what and where.
fn health(config: Option<&std::path::Path>) -> Result<(), Failure> {
    let (line, code) = match Config::load(config) {
        Err(e) => (format!("VASSAL-WARDEN UNKNOWN - {e}"), 3),
        Ok(cfg) => {
            let episodes = Episodes::read(&cfg);
            let report = status::StatusReport::build(&inventory(&cfg), &episodes);
            let mut concerns = report.concerns();
            // A log that cannot be read hides cooldowns, flapping and given-up vassals.
            if let Some(p) = &episodes.problem {
                concerns.push((Level::Warning, p.clone()));
            }
            // No record, no action: a log that cannot take one stops every remedy.
            if let Some(why) = cannot_record(&cfg.audit_log) {
                concerns.push((Level::Critical, why));
            }
            // Nothing guards the vassals when no warden runs, whatever they look like now.
            if let Some(concern) = unguarded(&audit::owner(&cfg.audit_log)) {
                concerns.insert(0, concern);
            }
            let level = concerns.iter().map(|c| c.0).max().unwrap_or(Level::Ok);
            let (vassals, procs) = report.counts();
            let what = if level == Level::Ok {
                format!(
                    "{}, {} within their limits",
                    counted(vassals, "vassal", "vassals"),
                    counted(procs, "process", "processes")
                )
            } else {
                concerns
                    .into_iter()
                    .map(|(_, c)| c)
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            let name = match level {
                Level::Ok => "OK",
                Level::Warning => "WARNING",
                Level::Critical => "CRITICAL",
            };
            (format!("VASSAL-WARDEN {name} - {what}"), level.exit_code())
        }
    };
    emit(|w| writeln!(w, "{}", one_line(&line)))?;
    if code == 0 {
        Ok(())
    } else {
        Err(Failure::Health(code))
    }
}

/// What is wrong when `owner` says no warden runs with the log, or that this command
/// cannot tell (it may not read the lock): critical, or a warning.
fn unguarded(owner: &audit::Owner) -> Option<(Level, String)> {
    match owner {
        audit::Owner::Running(_) => None,
        audit::Owner::None(why) => Some((
            Level::Critical,
            format!(
                "{why}: nothing guards these vassals; start it (systemctl start vassal-warden)"
            ),
        )),
        audit::Owner::Unknown(why) => Some((Level::Warning, why.clone())),
    }
}

/// Room a record needs, at least, on the log's filesystem: far more than one record.
const ROOM_TO_RECORD: u64 = 64 << 10;

/// Why the incident log `log` cannot take a record now (so the warden cannot act): its
/// directory is not one, its filesystem is read-only or full (as root sees it: root may
/// use the blocks reserved for it), or has no inode left for a log to be created.
fn cannot_record(log: &std::path::Path) -> Option<String> {
    let dir = log.parent().filter(|d| !d.as_os_str().is_empty())?;
    let fs = match rustix::fs::statvfs(dir) {
        Ok(fs) => fs,
        Err(e) => {
            return Some(format!(
                "cannot record, so cannot act: {} ({e}); make the incident log's directory a writable directory",
                dir.display()
            ));
        }
    };
    if fs.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY) {
        return Some(format!(
            "cannot record, so cannot act: {} is on a read-only filesystem; remount it read-write, or set `audit-log` in [warden] to a writable place",
            dir.display()
        ));
    }
    // A log to be created (the first record, or after a rotation) needs an inode.
    if fs.f_files > 0 && fs.f_ffree == 0 && !log.exists() {
        return Some(format!(
            "cannot record, so cannot act: {} has no free inode to create {}; free some on its filesystem",
            dir.display(),
            log.display()
        ));
    }
    let blocks = if rustix::process::geteuid().is_root() {
        fs.f_bfree
    } else {
        fs.f_bavail
    };
    let free = blocks.saturating_mul(fs.f_frsize);
    (free < ROOM_TO_RECORD).then(|| {
        format!(
            "cannot record, so cannot act: {} has {} KiB free; free space on its filesystem",
            dir.display(),
            free / 1024
        )
    })
}

/// Each vassal's episode as the incident log tells it: actions, ladder, flapping.
pub(crate) struct Episodes {
    by_config: std::collections::HashMap<PathBuf, Episode>,
    /// The operators' pauses, as their file beside the log says.
    pauses: Vec<crate::pauses::Pause>,
    /// Why the log could not be read, when it exists and could not: cooldowns, flapping
    /// and the ladder are then unknown, and `status` and `check` say so.
    problem: Option<String>,
}

impl Episodes {
    /// Reads the log of `cfg` as the daemon does at start (with its rotated
    /// predecessor). A log that does not exist yet tells that nothing happened.
    fn read(cfg: &Config) -> Episodes {
        let (pauses, pause_problem) = match crate::pauses::read(&cfg.audit_log) {
            Ok((p, _)) => (p, None),
            Err(why) => (
                Vec::new(),
                Some(format!("{why}: whether a vassal is paused is not known")),
            ),
        };
        match audit::read_history(&cfg.audit_log, audit::HISTORY_TAIL, audit::HISTORY_FILES) {
            Ok(read) => Episodes {
                by_config: Episode::replay(&audit::history(&read.records)),
                pauses,
                problem: pause_problem,
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Episodes {
                by_config: std::collections::HashMap::new(),
                pauses,
                problem: pause_problem,
            },
            Err(e) => Episodes {
                by_config: std::collections::HashMap::new(),
                pauses,
                problem: Some({
                    let log = format!(
                        "cannot read the incident log {} ({e}): cooldowns, flapping and the ladder are not known; make it readable by this user",
                        cfg.audit_log.display()
                    );
                    match pause_problem {
                        Some(p) => format!("{log}; {p}"),
                        None => log,
                    }
                }),
            },
        }
    }

    fn of(&self, config: &std::path::Path) -> Option<&Episode> {
        self.by_config.get(config)
    }

    /// The pause in force for the vassal file `config`.
    fn paused(&self, config: &std::path::Path) -> Option<&crate::pauses::Pause> {
        let now = std::time::SystemTime::now();
        self.pauses
            .iter()
            .find(|p| p.config == config && p.holds(now))
    }
}

fn pause(cfg: Config, vassal: &str, length: Duration, reason: &str) -> Result<(), Failure> {
    let p = Warden::new(cfg, false).manual_pause(vassal, length, reason)?;
    let line = format!(
        "{}: paused until {} ({}); recorded",
        p.vassal,
        p.until,
        humantime::format_duration(length)
    );
    emit(|w| writeln!(w, "{}", one_line(&line)))
}

fn resume(cfg: Config, vassal: &str, reason: &str) -> Result<(), Failure> {
    let p = Warden::new(cfg, false).manual_resume(vassal, reason)?;
    let line = format!("{}: resumed (it was {}); recorded", p.vassal, p.describe());
    emit(|w| writeln!(w, "{}", one_line(&line)))
}

fn reload(cfg: Config, vassal: &str, reason: &str, dry_run: bool) -> Result<(), Failure> {
    let mut w = Warden::new(cfg, false);
    let line = match w.manual_reload(vassal, reason, dry_run)? {
        _ if dry_run => format!("{vassal}: checks passed; not touched (dry run); recorded"),
        audit::OutcomeResult::Recovered => format!("{vassal}: reloaded; new workers are up"),
        other => {
            return Err(anyhow::anyhow!(
                "{vassal}: touched, but the reload was not confirmed ({other}); see `vassal-warden incidents --vassal {vassal}`"
            )
            .into());
        }
    };
    emit(|w| writeln!(w, "{}", one_line(&line)))
}

/// A command's report: one typed value, shown as a table or printed as JSON.
trait Report: Serialize {
    fn write_text(&self, w: &mut dyn Write) -> io::Result<()>;

    /// One JSON document.
    fn write_json(&self, w: &mut dyn Write) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut *w, self)?;
        writeln!(w)
    }
}

/// Prints a report. Text is for a terminal: any control character in it (a file name
/// can hold an escape sequence) is shown escaped. JSON is escaped by its own rules.
fn print(report: &impl Report, json: bool) -> Result<(), Failure> {
    emit(|w| {
        if json {
            report.write_json(w)
        } else {
            let mut text = Vec::new();
            report.write_text(&mut text)?;
            w.write_all(crate::text::for_terminal(&String::from_utf8_lossy(&text)).as_bytes())
        }
    })
}

/// Writes to standard output. A closed pipe (`vassal-warden status | head -1`) ends the
/// output quietly, as ripgrep does: the reader has what it wanted. Any other write error
/// (a full disk behind a redirection) is a runtime error.
fn emit(write: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> Result<(), Failure> {
    let mut out = io::BufWriter::new(io::stdout().lock());
    match write(&mut out).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(anyhow::Error::new(e)
            .context("cannot write to standard output")
            .into()),
        _ => Ok(()),
    }
}

/// The inventory as the daemon would see it now: discovered, read and mapped.
fn inventory(cfg: &Config) -> Inventory {
    let mut inv = Inventory::default();
    inv.refresh(cfg);
    inv.map_all();
    inv
}

/// Open fds as a fraction of the soft limit.
fn usage(fds: u64, limit: u64) -> f64 {
    fds as f64 / limit as f64
}
