//! `check`: what the warden sees and why — its config, the Emperors, every vassal with
//! its mapping and policy, and every problem with what to do about it.
//!
//! This module owns the check report and the rules that turn what the inventory found
//! into problems. The report is built once and rendered as readable lines or as JSON;
//! the caller turns "problems found" into exit code 1. It reads, never acts.

use std::io::{self, Write};
use std::path::PathBuf;

use serde::Serialize;

use super::status::VassalStatus;
use super::{Episodes, Report};
use crate::config::{Config, Policy};
use crate::emperor::Emperor;
use crate::inventory::{Inventory, Vassal};
use crate::mapping::Mapping;
use crate::sample;
use crate::{ability, episode};

/// What `check` shows and `check --json` prints.
#[derive(Debug, Serialize)]
pub(super) struct CheckReport {
    /// The warden's config file; none when it runs on defaults.
    config: Option<PathBuf>,
    audit_log: PathBuf,
    sources: Vec<String>,
    sources_from: &'static str,
    emperors: Vec<EmperorCheck>,
    vassals: Vec<VassalCheck>,
    /// Whose abilities the "could it act" problems judge: the running warden's (its
    /// capabilities and mounts), or this command's when none runs with this log.
    judged_as: String,
    /// Whether captures of the code that leaks can run, and why not.
    captures: String,
    /// Each a sentence naming the file or PID and what to do.
    pub problems: Vec<String>,
}

/// One running Emperor as the warden understood its command line and config.
#[derive(Debug, Serialize)]
struct EmperorCheck {
    pid: i32,
    /// Debian's layout: the Emperor's own master above it.
    master_pid: Option<i32>,
    config_file: Option<PathBuf>,
    sources: Vec<String>,
    /// Directories it watches that the warden does not watch for it, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    unwatched: Vec<String>,
    nofollow: bool,
    stats: Option<String>,
    /// `emperor-freq` in seconds, when set.
    freq: Option<u32>,
    tyrant: bool,
    on_demand: bool,
}

#[derive(Debug, Serialize)]
struct VassalCheck {
    #[serde(flatten)]
    status: VassalStatus,
    /// Where the vassal file links to, when it is a symlink.
    link_target: Option<PathBuf>,
    policy: PolicyView,
}

/// The policy in force for one vassal, spelled as in warden.ini.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
struct PolicyView {
    reload_at: String,
    #[serde(rename = "for")]
    for_samples: u32,
    cooldown: String,
    max_fds: Option<u64>,
    predict: String,
    max_reloads: String,
    action: &'static str,
    verify: String,
    top: usize,
    capture_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
}

/// The Emperor scans its vassal directories every `emperor-freq` seconds, 3 unless set.
const DEFAULT_FREQ: u32 = 3;

impl CheckReport {
    pub(super) fn build(cfg: &Config, inv: &Inventory, episodes: &Episodes) -> CheckReport {
        let mut problems = emperor_problems(inv);
        problems.extend(episodes.problem.clone());
        if let Some(hook) = cfg.hook()
            && let Err(e) = crate::hook::check_program(&hook)
        {
            problems.push(format!(
                "on-event hook {}: {e}; fix it in [warden] of the config, or the hook never runs",
                hook.argv[0]
            ));
        }
        let vassals = inv
            .vassals
            .values()
            .map(|v| {
                problems.extend(vassal_problems(inv, v, &cfg.audit_log));
                let status = VassalStatus::of(v, episodes);
                // What is wrong now is a problem too, not only what is misconfigured (which
                // the lines above say already, and better).
                problems.extend(
                    status
                        .concerns
                        .iter()
                        // A pause is an operator's choice, not a problem.
                        .filter(|c| {
                            !matches!(
                                c.kind,
                                episode::ConcernKind::CannotAct | episode::ConcernKind::Paused
                            )
                        })
                        .map(|c| format!("{}: {}", v.file.name, c.text)),
                );
                VassalCheck {
                    status,
                    link_target: std::fs::read_link(&v.file.path).ok(),
                    policy: PolicyView::of(&v.policy),
                }
            })
            .collect();
        let owner = crate::audit::owner(&cfg.audit_log);
        let daemon = owner.pid();
        let judged_as = match &owner {
            crate::audit::Owner::Running(Some(pid)) => format!("the running warden (PID {pid})"),
            crate::audit::Owner::Running(None) => {
                "this command (a warden runs with this incident log; its PID cannot be read)"
                    .to_owned()
            }
            crate::audit::Owner::None(_) => {
                "this command (no warden runs with this incident log)".to_owned()
            }
            crate::audit::Owner::Unknown(_) => {
                "this command (whether a warden runs with this incident log cannot be told)"
                    .to_owned()
            }
        };
        // First: whatever else is right, nothing is guarded while no warden runs.
        if let Some((_, why)) = super::unguarded(&owner) {
            problems.insert(0, why);
        }
        let captures = captures(cfg, daemon);
        CheckReport {
            judged_as,
            config: cfg.path.clone(),
            audit_log: cfg.audit_log.clone(),
            sources: inv.sources.iter().map(ToString::to_string).collect(),
            sources_from: inv.sources_from,
            emperors: inv.emperors.iter().map(EmperorCheck::of).collect(),
            vassals,
            captures,
            problems,
        }
    }
}

/// Whether captures can run for the warden judged: off, its capabilities, then what the
/// kernel says when this command loads the programs (and unloads them).
fn captures(cfg: &Config, daemon: Option<i32>) -> String {
    if !cfg.capture.enabled {
        return "off (capture = off in [warden])".into();
    }
    let view = crate::ability::Viewpoint::of(daemon);
    if let Err(e) = crate::ability::capture(view.caps) {
        return format!("unavailable: {e}");
    }
    // The kernel is asked by loading the programs here; without the capabilities this
    // command cannot, and says so rather than answer for the warden.
    if crate::ability::capture(crate::ability::Caps::own()).is_err() {
        return "not known: the warden has the capabilities, but this command cannot load the programs to ask the kernel (run it as root)".into();
    }
    match crate::capture::Captures::new(cfg.capture).availability() {
        Ok(()) => "available: uprobes on the C library, Python frames of CPython 3.11".into(),
        Err(why) => format!("unavailable: {why}"),
    }
}

fn emperor_problems(inv: &Inventory) -> Vec<String> {
    let mut problems = Vec::new();
    if inv.emperors.is_empty() {
        problems.push("no running uWSGI Emperor found: start uwsgi-emperor (systemctl start uwsgi-emperor); nothing is touched until one runs".into());
    }
    for src in &inv.sources {
        let watchers: Vec<String> = inv
            .emperors
            .iter()
            .filter(|e| e.watches(src))
            .map(|e| e.pid.to_string())
            .collect();
        if watchers.len() < 2 {
            continue;
        }
        match crate::inventory::watcher(&inv.emperors, src) {
            None => problems.push(format!(
                "Emperors {} all watch {src}: which one runs its vassals cannot be told, so none of them is acted on; stop the Emperor that should not be there",
                watchers.join(", ")
            )),
            Some(chosen) => problems.push(format!(
                "Emperors {} all watch {src}: {chosen} is taken to run its vassals (root's, the one root started, else the oldest), the others are ignored for it; stop the Emperor that should not be there",
                watchers.join(", ")
            )),
        }
    }
    let mut views: Vec<_> = inv.views.iter().collect();
    views.sort_by_key(|(pid, _)| **pid);
    for (pid, view) in views {
        // Only an Emperor that runs vassals the warden watches: another one's stats
        // server is none of this config's business.
        let ours = inv
            .emperor(*pid)
            .is_some_and(|e| inv.sources.iter().any(|s| e.watches(s)));
        if let Some(e) = view.stats_error.as_ref().filter(|_| ours) {
            problems.push(format!("Emperor {pid}: {e}"));
        }
    }
    problems
}

fn vassal_problems(inv: &Inventory, v: &Vassal, audit_log: &std::path::Path) -> Vec<String> {
    let path = v.file.path.display();
    let mut problems = Vec::new();
    if let Err(e) = &v.ini {
        problems.push(e.to_string());
    }
    for p in &v.policy_problems {
        problems.push(format!("{path}: [vassal-warden] {p}"));
    }
    match &v.mapping {
        Mapping::NoEmperor if !inv.emperors.is_empty() => problems.push(format!(
            "{path}: no running Emperor watches {}; point an Emperor at it or remove it from `vassals`",
            v.source
        )),
        Mapping::NotRunning => problems.push(format!(
            "{path}: its Emperor runs but no master process was found for it; see the Emperor's log (throttled or failing vassal?)"
        )),
        Mapping::Disputed { master, with } => problems.push(format!(
            "{path}: {with} maps to the same master (PID {master}), so neither is acted on; check their `pidfile` and socket settings"
        )),
        _ => {}
    }
    problems.extend(could_act(inv, v, audit_log));
    if let Mapping::Running(p) = &v.mapping
        && v.policy.max_fds.is_none()
        && sample::soft_limit(p.master.pid).is_ok_and(|l| l > 1 << 20)
    {
        problems.push(format!(
            "{path}: its soft fd limit is over 2^20, so a percentage of it never fires; set `max-fds` for it or `max-fd` in the vassal"
        ));
    }
    problems
}

/// Whether the warden, as it runs now, could carry out each action on `v`: read what
/// its processes hold, recycle its workers, touch the file a reload touches (and its
/// `touch-chain-reload` file). Each problem names what is missing.
fn could_act(inv: &Inventory, v: &Vassal, audit_log: &std::path::Path) -> Vec<String> {
    let Mapping::Running(p) = &v.mapping else {
        return Vec::new();
    };
    let view = ability::Viewpoint::of(crate::audit::running_owner(audit_log));
    let caps = view.caps;
    let name = &v.file.name;
    let authority = crate::trust::authority(&v.file.path);
    let nofollow = v
        .emperor
        .and_then(|e| inv.emperor(e))
        .is_some_and(|e| e.nofollow);
    let mut checks = vec![ability::read_fds(caps, p.master.pid)];
    checks.extend(p.workers.first().map(|w| ability::signal(caps, w.pid)));
    checks.push(ability::touch(&view, &v.file.path, nofollow, authority));
    if let Some(chain) = v
        .ini
        .as_ref()
        .ok()
        .and_then(|i| i.get("touch-chain-reload"))
    {
        checks.push(ability::touch(&view, &v.cwd.join(chain), false, authority));
    }
    checks
        .into_iter()
        .filter_map(Result::err)
        .map(|e| format!("{name}: {e}"))
        .collect()
}

impl EmperorCheck {
    fn of(e: &Emperor) -> EmperorCheck {
        EmperorCheck {
            pid: e.pid,
            master_pid: e.master_pid,
            config_file: e.config_file.clone(),
            sources: e.sources.iter().map(ToString::to_string).collect(),
            unwatched: e.unwatched.iter().map(|(_, why)| why.clone()).collect(),
            nofollow: e.nofollow,
            stats: e.stats.clone(),
            freq: e.freq,
            tyrant: e.tyrant,
            on_demand: e.on_demand,
        }
    }
}

impl PolicyView {
    fn of(p: &Policy) -> PolicyView {
        let duration = |d| humantime::format_duration(d).to_string();
        PolicyView {
            reload_at: p.reload_at.to_string(),
            for_samples: p.for_samples,
            cooldown: duration(p.cooldown),
            max_fds: p.max_fds,
            predict: p.predict.to_string(),
            max_reloads: format!("{} per {}", p.max_reloads, duration(p.max_reloads_window)),
            action: p.action.as_str(),
            verify: duration(p.verify),
            top: p.top,
            capture_at: p
                .capture_at
                .map_or_else(|| "off".into(), |x| format!("{}%", x * 100.0)),
            owner: p.owner.clone(),
        }
    }
}

impl Report for CheckReport {
    fn write_text(&self, w: &mut dyn Write) -> io::Result<()> {
        let config = self
            .config
            .as_ref()
            .map_or_else(|| "defaults (no file)".into(), |p| p.display().to_string());
        writeln!(w, "config: {config}")?;
        writeln!(w, "incident log: {}", self.audit_log.display())?;
        writeln!(
            w,
            "vassal sources ({}): {}",
            self.sources_from,
            self.sources.join(", ")
        )?;
        for e in &self.emperors {
            e.write_text(w)?;
        }
        for v in &self.vassals {
            v.write_text(w)?;
        }
        writeln!(w, "what it could do is judged for {}", self.judged_as)?;
        writeln!(w, "captures of the code that leaks: {}", self.captures)?;
        if self.problems.is_empty() {
            writeln!(w, "no problems found")?;
        }
        for p in &self.problems {
            writeln!(w, "problem: {}", crate::text::one_line(p))?;
        }
        Ok(())
    }
}

fn yes_no(b: bool) -> String {
    (if b { "yes" } else { "no" }).to_owned()
}

impl EmperorCheck {
    fn write_text(&self, w: &mut dyn Write) -> io::Result<()> {
        match self.master_pid {
            Some(m) => writeln!(w, "emperor {} (under its own master {m})", self.pid)?,
            None => writeln!(w, "emperor {}", self.pid)?,
        }
        let fields = [
            (
                "config file",
                self.config_file.as_ref().map_or_else(
                    || "none on its command line".into(),
                    |p| p.display().to_string(),
                ),
            ),
            ("vassal dirs", self.sources.join(", ")),
            ("nofollow", yes_no(self.nofollow)),
            ("tyrant", yes_no(self.tyrant)),
            ("on demand", yes_no(self.on_demand)),
            ("stats", self.stats.clone().unwrap_or_else(|| "none".into())),
            (
                "scans every",
                self.freq
                    .map_or_else(|| format!("{DEFAULT_FREQ}s (default)"), |f| format!("{f}s")),
            ),
        ];
        let label_width = fields.iter().map(|(l, _)| l.len() + 1).max().unwrap_or(0);
        for (label, value) in fields {
            writeln!(w, "  {:<label_width$} {value}", format!("{label}:"))?;
        }
        for why in &self.unwatched {
            writeln!(w, "  not watched: {}", crate::text::one_line(why))?;
        }
        Ok(())
    }
}

impl VassalCheck {
    fn write_text(&self, w: &mut dyn Write) -> io::Result<()> {
        let s = &self.status;
        let link = self
            .link_target
            .as_ref()
            .map(|t| format!(", links to {}", t.display()))
            .unwrap_or_default();
        let line = format!(
            "vassal {} ({}): {} {} process(es), mapped by {}{link}",
            s.vassal,
            s.config.display(),
            s.state,
            s.processes.len(),
            s.method.as_deref().unwrap_or("-"),
        );
        writeln!(w, "{}", crate::text::one_line(&line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emperor_reads_as_lines_not_json() {
        let e = EmperorCheck {
            pid: 1234,
            master_pid: Some(1233),
            config_file: Some("/etc/uwsgi-emperor/emperor.ini".into()),
            sources: vec!["/etc/uwsgi-emperor/vassals".into()],
            unwatched: Vec::new(),
            nofollow: true,
            stats: None,
            freq: None,
            tyrant: false,
            on_demand: false,
        };
        let mut out = Vec::new();
        e.write_text(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "emperor 1234 (under its own master 1233)
  config file: /etc/uwsgi-emperor/emperor.ini
  vassal dirs: /etc/uwsgi-emperor/vassals
  nofollow:    yes
  tyrant:      no
  on demand:   no
  stats:       none
  scans every: 3s (default)
"
        );
    }
}
