//! The command line: flags parsed once into validated options, one function per command.
//!
//! This module owns argument parsing, loading the config for commands that need it, and
//! rendering reports as tables or JSON. Errors come back to `main` with their exit code:
//! 2 for usage and configuration, 1 for runtime.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::audit::{self, Event as Rec, Record};
use crate::config::{self, Config, ConfigError};
use crate::daemon;
use crate::forensics::{self, Report};
use crate::inventory::{Inventory, Vassal};
use crate::mapping::Mapping;
use crate::policy;
use crate::sample;

#[derive(Debug, Parser)]
#[command(
    name = "vassal-warden",
    version,
    about = "Keeps uWSGI Emperor vassals alive when their apps leak file descriptors"
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
        #[arg(short, long)]
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
        #[arg(short, long)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// The leak report for one process or every process of a vassal.
    Fds {
        /// A PID, or a vassal's name (`shop.ini`, `shop`) or path.
        target: String,
        #[arg(long, default_value_t = 10)]
        top: usize,
        #[arg(short, long)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Incidents from the incident log.
    Incidents {
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Only incidents newer than this (e.g. 24h, 30m).
        #[arg(long, value_parser = parse_duration_arg)]
        since: Option<Duration>,
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
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// What the warden sees and why: Emperors, vassals, mapping, problems.
    Check {
        #[arg(short, long)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    config::parse_duration(s)
}

/// An error with the exit code it should produce.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0:#}")]
    Runtime(#[from] anyhow::Error),
    /// Problems were found and reported already (`check`).
    #[error("")]
    Problems,
}

impl Failure {
    #[must_use]
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Config(_) => 2,
            Failure::Runtime(_) | Failure::Problems => 1,
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
            daemon::run(cfg, daemon::Options { dry_run, once })?;
            Ok(())
        }
        Command::Status { config, json } => status(&Config::load(config.as_deref())?, json),
        Command::Fds {
            target,
            top,
            config,
            json,
        } => fds(&Config::load(config.as_deref())?, &target, top, json),
        Command::Incidents {
            config,
            since,
            vassal,
            json,
        } => incidents(
            &Config::load(config.as_deref())?,
            since,
            vassal.as_deref(),
            json,
        ),
        Command::Check { config, json } => check(&Config::load(config.as_deref())?, json),
        Command::Reload {
            vassal,
            reason,
            dry_run,
            config,
        } => {
            let cfg = Config::load(config.as_deref())?;
            let mut w = crate::warden::Warden::new(cfg, false);
            match w.manual_reload(&vassal, &reason, dry_run)? {
                _ if dry_run => {
                    println!("{vassal}: checks passed; not touched (dry run); recorded");
                }
                audit::OutcomeResult::Recovered => {
                    println!("{vassal}: reloaded; new workers are up");
                }
                other => {
                    return Err(anyhow::anyhow!(
                        "{vassal}: touched, but the reload was not confirmed ({}); see `vassal-warden incidents --vassal {vassal}`",
                        serde_json::to_value(other).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
                    )
                    .into());
                }
            }
            Ok(())
        }
    }
}

fn inventory(cfg: &Config) -> Inventory {
    let mut inv = Inventory::default();
    inv.refresh(cfg);
    inv.map_all();
    inv
}

#[derive(Debug, Serialize)]
struct ProcStatus {
    pid: i32,
    role: audit::Role,
    fds: Option<u64>,
    limit: Option<u64>,
    usage: Option<f64>,
    /// The fd count at which the policy fires.
    line: Option<u64>,
}

#[derive(Debug, Serialize)]
struct VassalStatus {
    vassal: String,
    config: PathBuf,
    state: &'static str,
    emperor: Option<i32>,
    method: Option<String>,
    processes: Vec<ProcStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
}

fn state_name(m: &Mapping) -> &'static str {
    match m {
        Mapping::Running(_) => "running",
        Mapping::Idle => "idle",
        Mapping::NotRunning => "not_running",
        Mapping::NoEmperor => "no_emperor",
    }
}

fn vassal_status(v: &Vassal) -> VassalStatus {
    let mut processes = Vec::new();
    let mut method = None;
    if let Mapping::Running(p) = &v.mapping {
        method = Some(p.method.to_string());
        for (i, id) in p.all().enumerate() {
            let fds = sample::fd_count(id.pid).ok();
            let limit = sample::soft_limit(id.pid).ok();
            #[allow(clippy::cast_precision_loss)]
            let usage = fds.zip(limit).map(|(f, l)| f as f64 / l as f64);
            processes.push(ProcStatus {
                pid: id.pid,
                role: if i == 0 {
                    audit::Role::Master
                } else {
                    audit::Role::Worker
                },
                fds,
                limit,
                usage,
                line: limit.map(|l| policy::line(&v.policy, l)),
            });
        }
    }
    VassalStatus {
        vassal: v.file.name.clone(),
        config: v.file.path.clone(),
        state: state_name(&v.mapping),
        emperor: v.emperor,
        method,
        processes,
        problem: v.ini.as_ref().err().map(ToString::to_string),
    }
}

fn fmt_limit(l: Option<u64>) -> String {
    match l {
        Some(u64::MAX) => "unlimited".into(),
        Some(l) => l.to_string(),
        None => "?".into(),
    }
}

fn fmt_usage(u: Option<f64>) -> String {
    u.map_or_else(|| "?".into(), |u| format!("{:.1}%", u * 100.0))
}

fn status(cfg: &Config, json: bool) -> Result<(), Failure> {
    let inv = inventory(cfg);
    let vassals: Vec<VassalStatus> = inv.vassals.values().map(vassal_status).collect();
    let mut out = std::io::stdout().lock();
    if json {
        let doc = serde_json::json!({
            "emperors": inv.emperors.iter().map(|e| e.pid).collect::<Vec<_>>(),
            "sources": inv.sources.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "sources_from": inv.sources_from,
            "vassals": vassals,
        });
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&doc).context("encoding status")?
        )
        .ok();
        return Ok(());
    }
    if inv.emperors.is_empty() {
        writeln!(
            out,
            "no running uWSGI Emperor found: nothing will be touched until one runs"
        )
        .ok();
    }
    writeln!(
        out,
        "{:<24} {:<12} {:>8} {:<7} {:>6} {:>10} {:>7} {:>6}  MAPPED BY",
        "VASSAL", "STATE", "PID", "ROLE", "FDS", "LIMIT", "USED", "LINE"
    )
    .ok();
    for v in &vassals {
        if v.processes.is_empty() {
            writeln!(out, "{:<24} {:<12}", v.vassal, v.state).ok();
        }
        for (i, p) in v.processes.iter().enumerate() {
            let (name, state, method) = if i == 0 {
                (
                    v.vassal.as_str(),
                    v.state,
                    v.method.as_deref().unwrap_or(""),
                )
            } else {
                ("", "", "")
            };
            writeln!(
                out,
                "{:<24} {:<12} {:>8} {:<7} {:>6} {:>10} {:>7} {:>6}  {}",
                name,
                state,
                p.pid,
                p.role.to_string(),
                p.fds.map_or_else(|| "?".into(), |f| f.to_string()),
                fmt_limit(p.limit),
                fmt_usage(p.usage),
                p.line.map_or_else(|| "?".into(), |l| l.to_string()),
                method
            )
            .ok();
        }
        if let Some(problem) = &v.problem {
            writeln!(out, "  ! {problem}").ok();
        }
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct FdsSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    vassal: Option<String>,
    role: Option<audit::Role>,
    limit: Option<u64>,
    usage: Option<f64>,
    #[serde(flatten)]
    report: Report,
}

fn fds(cfg: &Config, target: &str, top: usize, json: bool) -> Result<(), Failure> {
    let mut sections = Vec::new();
    if let Ok(pid) = target.parse::<i32>() {
        let report = forensics::report(pid, top, None, None).with_context(|| {
            format!("cannot read the open fds of PID {pid}: is it running, and is the warden root?")
        })?;
        sections.push(section(None, None, report));
    } else {
        let inv = inventory(cfg);
        let v = inv.find(target).ok_or_else(|| {
            anyhow::anyhow!(
                "no vassal named `{target}` in {}; `vassal-warden status` lists them",
                inv.sources
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        let Mapping::Running(procs) = &v.mapping else {
            return Err(anyhow::anyhow!(
                "vassal `{}` has no running processes ({})",
                v.file.name,
                state_name(&v.mapping)
            )
            .into());
        };
        for (i, id) in procs.all().enumerate() {
            let role = if i == 0 {
                audit::Role::Master
            } else {
                audit::Role::Worker
            };
            match forensics::report(id.pid, top, None, (i > 0).then_some(procs.master.pid)) {
                Ok(r) => sections.push(section(Some(&v.file.name), Some(role), r)),
                Err(e) => eprintln!(
                    "vassal-warden: PID {} ({role}) vanished while being read: {e}",
                    id.pid
                ),
            }
        }
    }
    let mut out = std::io::stdout().lock();
    if json {
        let doc = if sections.len() == 1 && target.parse::<i32>().is_ok() {
            serde_json::to_value(&sections[0])
        } else {
            serde_json::to_value(&sections)
        }
        .context("encoding report")?;
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&doc).context("encoding report")?
        )
        .ok();
        return Ok(());
    }
    for s in &sections {
        let role = s.role.map(|r| format!(" ({r})")).unwrap_or_default();
        let vassal = s
            .vassal
            .as_deref()
            .map(|v| format!("{v} "))
            .unwrap_or_default();
        writeln!(
            out,
            "{vassal}PID {}{role}: {} fds / soft limit {} ({} used)",
            s.report.pid,
            s.report.fds,
            fmt_limit(s.limit),
            fmt_usage(s.usage)
        )
        .ok();
        writeln!(
            out,
            "  {:>7}  {:>7}  {:<10}  TARGET",
            "COUNT", "GROWTH", "KIND"
        )
        .ok();
        for t in &s.report.top {
            let growth = t.growth.map_or_else(|| "-".into(), |g| format!("{g:+}"));
            let inherited = match t.inherited {
                Some(n) if n == t.count => "  (inherited from the master)".to_owned(),
                Some(n) if n > 0 => format!("  ({n} inherited from the master)"),
                _ => String::new(),
            };
            writeln!(
                out,
                "  {:>7}  {:>7}  {:<10}  {}{inherited}",
                t.count, growth, t.kind, t.target
            )
            .ok();
        }
        let kinds: Vec<String> = s
            .report
            .by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        writeln!(out, "  by kind: {}\n", kinds.join(", ")).ok();
    }
    Ok(())
}

fn section(vassal: Option<&str>, role: Option<audit::Role>, report: Report) -> FdsSection {
    let limit = sample::soft_limit(report.pid).ok();
    #[allow(clippy::cast_precision_loss)]
    let usage = limit.map(|l| report.fds as f64 / l as f64);
    FdsSection {
        vassal: vassal.map(str::to_owned),
        role,
        limit,
        usage,
        report,
    }
}

fn incidents(
    cfg: &Config,
    since: Option<Duration>,
    vassal: Option<&str>,
    json: bool,
) -> Result<(), Failure> {
    let path = &cfg.audit_log;
    let (records, bad) = match audit::read_log(path) {
        Ok(x) => x,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !json {
                println!("no incidents: {} does not exist yet", path.display());
            }
            return Ok(());
        }
        Err(e) => {
            return Err(
                anyhow::anyhow!("cannot read the incident log {}: {e}", path.display()).into(),
            );
        }
    };
    for b in &bad {
        eprintln!(
            "vassal-warden: {}:{}: unreadable line skipped ({})",
            path.display(),
            b.line,
            b.message
        );
    }
    let cutoff = since.map(|d| SystemTime::now() - d);
    let keep = |r: &Record| {
        let ok_time = cutoff.is_none_or(|c| audit::parse_timestamp(&r.ts).is_some_and(|t| t >= c));
        let ok_vassal = vassal.is_none_or(|n| {
            r.vassal == n
                || r.config.file_name().and_then(|f| f.to_str()) == Some(n)
                || r.config.file_stem().and_then(|f| f.to_str()) == Some(n)
        });
        ok_time && ok_vassal
    };
    let records: Vec<&Record> = records.iter().filter(|r| keep(r)).collect();
    let mut out = std::io::stdout().lock();
    if json {
        for r in records {
            writeln!(
                out,
                "{}",
                serde_json::to_string(r).context("encoding record")?
            )
            .ok();
        }
        return Ok(());
    }
    // One row per incident, in order of first appearance.
    let mut order: Vec<&str> = Vec::new();
    for r in &records {
        if !order.contains(&r.incident.as_str()) {
            order.push(&r.incident);
        }
    }
    writeln!(
        out,
        "{:<20}  {:<18} {:>8} {:>11}  {:<34}  {:<10}  OUTCOME",
        "TIME", "VASSAL", "PID", "FDS/LIMIT", "TOP TARGET", "ACTION"
    )
    .ok();
    for id in order {
        let recs: Vec<&&Record> = records.iter().filter(|r| r.incident == id).collect();
        let first = recs[0];
        let mut pid = String::new();
        let mut fds = String::new();
        let mut top = String::new();
        let mut action = String::from("-");
        let mut outcome = String::from("-");
        for r in &recs {
            match &r.event {
                Rec::Detected(d) => {
                    pid = d.pid.to_string();
                    fds = format!("{}/{}", d.fds, fmt_limit(Some(d.limit)));
                    if let Some(t) = d.top.first() {
                        top = format!("{} ×{}", t.target, t.count);
                    }
                }
                Rec::Action(a) => action = a.action.to_string(),
                Rec::Suppressed(s) => outcome = format!("suppressed: {}", s.reason),
                Rec::Outcome(o) => {
                    outcome = format!(
                        "{} in {:.1}s{}",
                        serde_json::to_value(o.result)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default(),
                        o.seconds,
                        o.fds_after
                            .map(|f| format!(", {f} fds"))
                            .unwrap_or_default()
                    );
                }
            }
        }
        writeln!(
            out,
            "{:<20}  {:<18} {:>8} {:>11}  {:<34}  {:<10}  {}",
            first.ts,
            first.vassal,
            pid,
            fds,
            truncate(&top, 34),
            action,
            outcome
        )
        .ok();
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let keep: String = s
            .chars()
            .rev()
            .take(n - 1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("…{keep}")
    }
}

fn check(cfg: &Config, json: bool) -> Result<(), Failure> {
    let inv = inventory(cfg);
    let mut problems: Vec<String> = Vec::new();
    if inv.emperors.is_empty() {
        problems.push("no running uWSGI Emperor found: start uwsgi-emperor (systemctl start uwsgi-emperor); nothing is touched until one runs".into());
    }
    for (pid, view) in &inv.views {
        if let Some(e) = &view.stats_error {
            problems.push(format!("Emperor {pid}: {e}"));
        }
    }
    let mut vassals = Vec::new();
    for v in inv.vassals.values() {
        let link = std::fs::read_link(&v.file.path).ok();
        if let Err(e) = &v.ini {
            problems.push(format!("{e}"));
        }
        for p in &v.policy_problems {
            problems.push(format!("{}: [vassal-warden] {p}", v.file.path.display()));
        }
        match &v.mapping {
            Mapping::NoEmperor if !inv.emperors.is_empty() => problems.push(format!(
                "{}: no running Emperor watches {}; point an Emperor at it or remove it from `vassals`",
                v.file.path.display(),
                v.source
            )),
            Mapping::NotRunning => problems.push(format!(
                "{}: its Emperor runs but no master process was found for it; see the Emperor's log (throttled or failing vassal?)",
                v.file.path.display()
            )),
            _ => {}
        }
        let mut s = serde_json::to_value(vassal_status(v)).context("encoding check")?;
        if let Mapping::Running(p) = &v.mapping
            && v.policy.max_fds.is_none()
            && sample::soft_limit(p.master.pid).is_ok_and(|l| l > 1 << 20)
        {
            problems.push(format!(
                "{}: its soft fd limit is over 2^20, so a percentage of it never fires; set `max-fds` for it or `max-fd` in the vassal",
                v.file.path.display()
            ));
        }
        s["link_target"] = serde_json::json!(link);
        s["policy"] = serde_json::json!({
            "reload-at": v.policy.reload_at.to_string(),
            "for": v.policy.for_samples,
            "cooldown": humantime::format_duration(v.policy.cooldown).to_string(),
            "max-fds": v.policy.max_fds,
            "predict": v.policy.predict.to_string(),
            "max-reloads": format!("{} per {}", v.policy.max_reloads, humantime::format_duration(v.policy.max_reloads_window)),
            "action": v.policy.action.as_str(),
            "verify": humantime::format_duration(v.policy.verify).to_string(),
            "top": v.policy.top,
        });
        vassals.push(s);
    }
    let emperors: Vec<serde_json::Value> = inv
        .emperors
        .iter()
        .map(|e| {
            serde_json::json!({
                "pid": e.pid,
                "master_pid": e.master_pid,
                "config_file": e.config_file,
                "sources": e.sources.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "nofollow": e.nofollow,
                "stats": e.stats,
                "freq": e.freq,
                "tyrant": e.tyrant,
            })
        })
        .collect();
    let mut out = std::io::stdout().lock();
    if json {
        let doc = serde_json::json!({
            "config": cfg.path,
            "audit_log": cfg.audit_log,
            "sources": inv.sources.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "sources_from": inv.sources_from,
            "emperors": emperors,
            "vassals": vassals,
            "problems": problems,
        });
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&doc).context("encoding check")?
        )
        .ok();
    } else {
        writeln!(
            out,
            "config: {}",
            cfg.path
                .as_ref()
                .map_or_else(|| "defaults (no file)".into(), |p| p.display().to_string())
        )
        .ok();
        writeln!(out, "incident log: {}", cfg.audit_log.display()).ok();
        writeln!(
            out,
            "vassal sources ({}): {}",
            inv.sources_from,
            inv.sources
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
        .ok();
        for e in &emperors {
            writeln!(out, "emperor: {e}").ok();
        }
        for v in &vassals {
            let procs = v["processes"].as_array().map_or(0, Vec::len);
            writeln!(
                out,
                "vassal {} ({}): {} {} process(es), mapped by {}{}",
                v["vassal"].as_str().unwrap_or_default(),
                v["config"].as_str().unwrap_or_default(),
                v["state"].as_str().unwrap_or_default(),
                procs,
                v["method"].as_str().unwrap_or("-"),
                v["link_target"]
                    .as_str()
                    .map(|t| format!(", links to {t}"))
                    .unwrap_or_default()
            )
            .ok();
        }
        if problems.is_empty() {
            writeln!(out, "no problems found").ok();
        }
        for p in &problems {
            writeln!(out, "problem: {p}").ok();
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Failure::Problems)
    }
}
