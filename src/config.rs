//! The warden's configuration: `/etc/vassal-warden/warden.ini` turned, once, into
//! validated types (`Config`, `Policy`) that the rest of the program takes.
//!
//! It owns the meaning of every key and its default, and the merge order of policy:
//! built-in defaults, then `[policy]`, then the vassal's own `[vassal-warden]` section,
//! then `[vassal NAME]` in warden.ini (the host admin has the last word). A vassal's own
//! section may only tune policy: it can name no path and no command. Nothing here touches
//! /proc or the vassal files.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::emperor::Source;
use crate::error::FileError;
use crate::uwsgi_ini::{self, Entry};
use crate::vocab::HookEvent;

pub(crate) const DEFAULT_PATH: &str = "/etc/vassal-warden/warden.ini";
const DEFAULT_AUDIT_LOG: &str = "/var/log/vassal-warden/incidents.jsonl";
/// Where metrics are served unless `metrics` says otherwise: loopback only, on a port of
/// the Prometheus exporter range (9100-9999) that no common exporter uses
/// (docs/operations.md).
const DEFAULT_METRICS: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9814));

/// Every key `[warden]` accepts, in the order the documentation lists them.
pub const WARDEN_KEYS: &[&str] = &[
    "vassals",
    "interval",
    "audit-log",
    "dry-run",
    "max-concurrent",
    "metrics",
    "metrics-textfile",
    "remind",
    "on-event",
    "on-event-for",
    "on-event-timeout",
    "capture",
    "capture-window",
    "capture-samples",
];

/// Every key `[policy]`, `[vassal NAME]` and a vassal's own `[vassal-warden]` section
/// accept, in the order the documentation lists them.
pub const POLICY_KEYS: &[&str] = &[
    "reload-at",
    "max-fds",
    "for",
    "hysteresis",
    "predict",
    "predict-floor",
    "predict-window",
    "cooldown",
    "max-reloads",
    "action",
    "verify",
    "top",
    "capture-at",
    "owner",
];

/// Where a process is "over the line".
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Threshold {
    /// A fraction (0..=1) of the process's soft `RLIMIT_NOFILE`.
    Fraction(f64),
    /// An absolute number of open fds.
    Count(u64),
}

impl Threshold {
    /// The fd count at or above which a process with this soft limit is over the line.
    #[must_use]
    pub(crate) fn line(self, soft_limit: u64) -> u64 {
        match self {
            Threshold::Count(n) => n,
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            Threshold::Fraction(f) => ((soft_limit as f64) * f).ceil() as u64,
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Threshold::Fraction(x) => write!(f, "{}%", x * 100.0),
            Threshold::Count(n) => write!(f, "{n}"),
        }
    }
}

/// What the warden may do about a vassal over the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ActionMode {
    /// The gentlest action that will work (see `policy::choose`).
    Auto,
    Touch,
    ChainReload,
    RecycleWorker,
    /// Record and alert only.
    Alert,
}

impl ActionMode {
    fn parse(v: &str) -> Result<ActionMode, String> {
        Ok(match v {
            "auto" => ActionMode::Auto,
            "touch" => ActionMode::Touch,
            "chain-reload" => ActionMode::ChainReload,
            "recycle-worker" => ActionMode::RecycleWorker,
            "alert" => ActionMode::Alert,
            _ => {
                return Err(format!(
                    "`{v}` is not an action; use auto, touch, chain-reload, recycle-worker or alert"
                ));
            }
        })
    }

    #[must_use]
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ActionMode::Auto => "auto",
            ActionMode::Touch => "touch",
            ActionMode::ChainReload => "chain-reload",
            ActionMode::RecycleWorker => "recycle-worker",
            ActionMode::Alert => "alert",
        }
    }
}

/// The prediction horizon: act when a process's limit is projected sooner than this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Predict {
    /// No prediction: only the line.
    Off,
    /// As soon as the warden could no longer act in time: what an action takes on this
    /// host (learned from its own outcomes) plus one interval.
    Auto,
    /// Within a fixed time.
    Within(Duration),
}

impl fmt::Display for Predict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Predict::Off => f.write_str("off"),
            Predict::Auto => f.write_str("auto"),
            Predict::Within(d) => write!(f, "{}", humantime::format_duration(*d)),
        }
    }
}

/// Policy for one vassal, fully resolved.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Policy {
    pub reload_at: Threshold,
    /// An absolute cap that applies whatever the soft limit (which can be ~10^9).
    pub max_fds: Option<u64>,
    /// How far below the line (a fraction of it) a process must drop for its streak to
    /// clear, so that one hovering at the line does not flap.
    pub hysteresis: f64,
    /// Act when the soft limit will be reached sooner than this (least squares over the
    /// recent samples), once usage is at least `predict_floor`.
    pub predict: Predict,
    pub predict_floor: f64,
    /// Samples the prediction fits.
    pub predict_window: usize,
    /// At most this many actions per `max_reloads_window`; beyond, the vassal is flapping.
    pub max_reloads: u32,
    pub max_reloads_window: Duration,
    pub action: ActionMode,
    /// Consecutive samples over the line before acting.
    pub for_samples: u32,
    pub cooldown: Duration,
    /// How many targets a report lists.
    pub top: usize,
    /// How long to wait for a reload to show its effect before `not_recovered`.
    pub verify: Duration,
    /// Where, as a fraction of the way from a process's first count to its line, a
    /// capture of the code that leaks is armed; `None`: `capture-at = off`.
    pub capture_at: Option<f64>,
    /// Who owns the vassal (a team), for routing its alerts: a label on its series, a
    /// field of its records and of the hook's environment.
    pub owner: Option<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            reload_at: Threshold::Fraction(0.8),
            max_fds: None,
            hysteresis: 0.1,
            predict: Predict::Auto,
            predict_floor: 0.5,
            predict_window: 30,
            max_reloads: 3,
            max_reloads_window: Duration::from_secs(3600),
            action: ActionMode::Auto,
            for_samples: 2,
            cooldown: Duration::from_secs(600),
            top: 10,
            verify: Duration::from_secs(60),
            capture_at: Some(0.5),
            owner: None,
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The file it was read from, if any.
    pub path: Option<PathBuf>,
    /// Vassal directories or globs, absolute. Empty: what the running Emperors use.
    pub vassals: Vec<Source>,
    pub interval: Duration,
    /// Reloads in progress at once across the host.
    pub max_concurrent: usize,
    pub audit_log: PathBuf,
    pub dry_run: bool,
    /// Where the metrics endpoint listens; `None`: `metrics = off`.
    pub metrics: Option<SocketAddr>,
    /// Where the same text is written after each pass, for `node_exporter`'s textfile
    /// collector.
    pub metrics_textfile: Option<PathBuf>,
    /// How often an episode that lasts (flapping, given up, alert only, refused) is
    /// recorded again while it lasts.
    pub remind: Duration,
    /// The alert hook's program and arguments (`on-event`), if any.
    pub on_event: Option<Vec<String>>,
    /// Which records run it (`on-event-for`).
    pub on_event_for: Events,
    /// How long a run may take (`on-event-timeout`).
    pub on_event_timeout: Duration,
    /// `capture`, `capture-window`, `capture-samples`.
    pub capture: crate::capture::Settings,
    pub policy: Policy,
    /// `[vassal NAME]` sections: NAME and its policy settings, in file order.
    pub overrides: Vec<(String, Vec<Setting>)>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            path: None,
            vassals: Vec::new(),
            interval: Duration::from_secs(2),
            max_concurrent: 1,
            audit_log: PathBuf::from(DEFAULT_AUDIT_LOG),
            dry_run: false,
            metrics: Some(DEFAULT_METRICS),
            metrics_textfile: None,
            remind: DEFAULT_REMIND,
            on_event: None,
            on_event_for: Events::Only(HookEvent::defaults()),
            on_event_timeout: Duration::from_secs(30),
            capture: crate::capture::Settings::default(),
            policy: Policy::default(),
            overrides: Vec::new(),
        }
    }
}

impl Config {
    /// Loads `path`. A missing file at the default path means defaults; a file named with
    /// `-c` must exist.
    pub(crate) fn load(path: Option<&Path>) -> Result<Config, FileError> {
        let (path, explicit) = match path {
            Some(p) => (p.to_owned(), true),
            None => (PathBuf::from(DEFAULT_PATH), false),
        };
        // Bounded, without blocking: a FIFO or a device at the path is an error, not a
        // stall.
        match crate::bounded::read_config_text(&path, crate::bounded::MAX_CONFIG) {
            Ok(text) => Config::parse(&path, &text),
            Err(e) if e.is_not_found() && !explicit => Ok(Config::default()),
            Err(e) => Err(FileError::new(
                path,
                None,
                format!("cannot use it as the config file: {e}"),
            )),
        }
    }

    /// Parses the text of `path`. The first bad line is the error, with its number.
    pub(crate) fn parse(path: &Path, text: &str) -> Result<Config, FileError> {
        let (cfg, mut errors) = Config::parse_all(path, text);
        if errors.is_empty() {
            Ok(cfg)
        } else {
            Err(errors.swap_remove(0))
        }
    }

    /// The config at `path` for a command that only reads (`status`, `fds`,
    /// `incidents`): a running daemon keeps its config in force whatever the file says
    /// now, so a bad file does not stop the command. Every good line applies; a bad line,
    /// or a file that cannot be read, leaves the defaults, and each error is returned to be
    /// said.
    pub(crate) fn load_lenient(path: Option<&Path>) -> (Config, Vec<FileError>) {
        if let Ok(cfg) = Config::load(path) {
            return (cfg, Vec::new());
        }
        let shown = path.unwrap_or(Path::new(DEFAULT_PATH));
        match crate::bounded::read_config_text(shown, crate::bounded::MAX_CONFIG) {
            Ok(text) => Config::parse_all(shown, &text),
            Err(e) => (
                Config::default(),
                vec![FileError::new(
                    shown,
                    None,
                    format!("cannot use it as the config file: {e}"),
                )],
            ),
        }
    }

    /// Every error of the config at `path` (`check --config-only`): the file that cannot
    /// be read, or each bad line with its number, in order. None: the daemon would take it.
    #[must_use]
    pub(crate) fn errors(path: Option<&Path>) -> Vec<FileError> {
        let explicit = path.is_some();
        let path = path.unwrap_or(Path::new(DEFAULT_PATH));
        match crate::bounded::read_config_text(path, crate::bounded::MAX_CONFIG) {
            Ok(text) => Config::parse_all(path, &text).1,
            Err(e) if e.is_not_found() && !explicit => Vec::new(),
            Err(e) => vec![FileError::new(
                path,
                None,
                format!("cannot use it as the config file: {e}"),
            )],
        }
    }

    /// The config of `path` with every good line applied, and the bad lines' errors.
    fn parse_all(path: &Path, text: &str) -> (Config, Vec<FileError>) {
        let mut cfg = Config {
            path: Some(path.to_owned()),
            ..Config::default()
        };
        let mut errors = Vec::new();
        for mut e in uwsgi_ini::lex(text) {
            let v = strip_inline_comment(&e.value).to_owned();
            e.value = v;
            // `[policy]   ; defaults`: the header's own trailing comment.
            if let Some(end) = e.section.find(']') {
                e.section = std::sync::Arc::from(&e.section[..end]);
            }
            if let Err(m) = cfg.apply(&e) {
                errors.push(FileError::new(path, Some(e.line), m));
            }
        }
        (cfg, errors)
    }

    /// Applies one line of warden.ini.
    fn apply(&mut self, e: &Entry) -> Result<(), String> {
        match &*e.section {
            "warden" => self.apply_warden(&e.key, &e.value)?,
            "policy" => Setting::parse(&e.key, &e.value)?.apply(&mut self.policy),
            s if s.starts_with("vassal ") => {
                let name = s["vassal ".len()..].trim().to_owned();
                // Parsed now, so that a typo is reported at start, not at incident time.
                let setting = Setting::parse(&e.key, &e.value)?;
                match self.overrides.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, settings)) => settings.push(setting),
                    None => self.overrides.push((name, vec![setting])),
                }
            }
            "" => {
                return Err(format!(
                    "`{}` is outside any section; put it under [warden] or [policy]",
                    e.key
                ));
            }
            other => {
                return Err(format!(
                    "unknown section [{other}]; known: [warden], [policy], [vassal NAME]"
                ));
            }
        }
        Ok(())
    }

    /// Applies one `[warden]` key.
    fn apply_warden(&mut self, key: &str, v: &str) -> Result<(), String> {
        match key {
            "vassals" => self.vassals.push(parse_source(v)?),
            "interval" => {
                self.interval = parse_duration_in(key, v, Duration::from_millis(50), MAX_INTERVAL)?;
            }
            "audit-log" => {
                if !Path::new(v).is_absolute() {
                    return Err(format!("`audit-log` must be an absolute path, not `{v}`"));
                }
                self.audit_log = PathBuf::from(v);
            }
            "max-concurrent" => {
                self.max_concurrent = v.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    format!("`max-concurrent` must be a whole number, at least 1, not `{v}`")
                })?;
            }
            "dry-run" => self.dry_run = parse_bool(v)?,
            "metrics" => self.metrics = parse_metrics(v)?,
            "metrics-textfile" => self.metrics_textfile = parse_textfile(v)?,
            "remind" => {
                self.remind = parse_duration_in(key, v, Duration::from_secs(1), MAX_DURATION)?;
            }
            "on-event" => self.on_event = parse_command(v)?,
            "on-event-for" => self.on_event_for = parse_events(v)?,
            "on-event-timeout" => {
                self.on_event_timeout =
                    parse_duration_in(key, v, Duration::from_secs(1), MAX_VERIFY)?;
            }
            "capture" => self.capture.enabled = parse_bool(v)?,
            "capture-window" => {
                self.capture.window =
                    parse_duration_in(key, v, Duration::from_secs(1), MAX_CAPTURE_WINDOW)?;
            }
            "capture-samples" => {
                self.capture.samples = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_CAPTURE_SAMPLES).contains(n))
                    .ok_or_else(|| {
                        format!(
                            "`capture-samples` must be a whole number from 1 to {MAX_CAPTURE_SAMPLES}, not `{v}`"
                        )
                    })?;
            }
            other => {
                return Err(format!(
                    "unknown key `{other}` in [warden]; known: {}",
                    WARDEN_KEYS.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// The policy for the vassal named `name`, given the `[vassal-warden]` lines of its own
    /// ini file. Bad lines in the vassal's own file are returned as messages (the vassal
    /// keeps the rest), since an app user's typo must not stop the daemon.
    #[must_use]
    pub(crate) fn policy_for(&self, name: &str, own: &[Entry]) -> (Policy, Vec<String>) {
        let mut p = self.policy.clone();
        let mut problems = Vec::new();
        let admins = p.verify;
        for e in own {
            let setting = Setting::parse(&e.key, &e.value);
            if let Ok(s) = &setting
                && let Some(why) = s.loosens(&self.policy)
            {
                problems.push(format!(
                    "line {}: `{} = {}` {why}; warden.ini's is used: a vassal's own file may \
                     only make the warden more careful (to loosen it, root sets it in \
                     `[vassal {name}]` in warden.ini)",
                    e.line, e.key, e.value
                ));
                continue;
            }
            match setting {
                // A vassal cannot hold an action slot longer than the admin allows.
                Ok(Setting::Verify(d)) if d > admins => {
                    p.verify = admins;
                    problems.push(format!(
                        "line {}: `verify = {}` is longer than the warden's own ({}), which is used: \
                         a vassal cannot keep others waiting longer than warden.ini allows",
                        e.line,
                        e.value,
                        humantime::format_duration(admins)
                    ));
                }
                Ok(s) => s.apply(&mut p),
                Err(m) => problems.push(format!("line {}: {m}", e.line)),
            }
        }
        for (n, settings) in &self.overrides {
            if n == name {
                for s in settings {
                    s.apply(&mut p);
                }
            }
        }
        (p, problems)
    }
}

/// A count that does not fit (only on a 32-bit host) is as good as unbounded.
fn as_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// A `metrics =` value: `off`, or the address and port to listen on. Names are not
/// resolved: what the endpoint binds to is exactly what the file says.
fn parse_metrics(v: &str) -> Result<Option<SocketAddr>, String> {
    if v == "off" {
        return Ok(None);
    }
    v.parse().map(Some).map_err(|_| {
        format!(
            "`metrics` must be an IP address and port (`127.0.0.1:9814`, `[::1]:9814`) or `off`, not `{v}`"
        )
    })
}

/// A `metrics-textfile =` value: an absolute path ending in `.prom`, the only files
/// `node_exporter`'s textfile collector reads; `off` for none.
fn parse_textfile(v: &str) -> Result<Option<PathBuf>, String> {
    if v == "off" {
        return Ok(None);
    }
    let p = Path::new(v);
    if !p.is_absolute() || p.file_name().is_none() {
        return Err(format!(
            "`metrics-textfile` must be an absolute file path, not `{v}`"
        ));
    }
    if p.extension().is_none_or(|e| e != "prom") {
        return Err(format!(
            "`metrics-textfile` must end in `.prom` (node_exporter's textfile collector reads only those), not `{v}`"
        ));
    }
    Ok(Some(p.to_owned()))
}

/// How often a lasting episode is recorded again by default: an hour, so that a
/// condition nobody fixes is said twenty-four times a day, not at every cooldown.
pub(crate) const DEFAULT_REMIND: Duration = Duration::from_secs(3600);

/// Which records a hook hears of (`on-event-for`): every one, or those that answer to
/// one of these names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Events {
    All,
    Only(Vec<HookEvent>),
}

impl Events {
    /// True when a record that answers to `e` is heard of.
    #[must_use]
    pub(crate) fn wants(&self, e: &HookEvent) -> bool {
        match self {
            Events::All => true,
            Events::Only(names) => names.contains(e),
        }
    }
}

impl std::fmt::Display for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Events::All => f.write_str("all"),
            Events::Only(names) => {
                let names: Vec<&str> = names.iter().map(HookEvent::as_str).collect();
                f.write_str(&names.join(" "))
            }
        }
    }
}

/// The alert hook: a command run for the records that need a human.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Hook {
    /// The program (an absolute path) and its arguments, split on whitespace: no shell.
    pub argv: Vec<String>,
    /// The records it hears of.
    pub events: Events,
    /// A run that takes longer is killed.
    pub timeout: Duration,
}

impl Config {
    /// The alert hook, when `on-event` names one.
    #[must_use]
    pub(crate) fn hook(&self) -> Option<Hook> {
        Some(Hook {
            argv: self.on_event.clone()?,
            events: self.on_event_for.clone(),
            timeout: self.on_event_timeout,
        })
    }
}

/// `on-event = /path/to/program ARG…` or `off`.
fn parse_command(v: &str) -> Result<Option<Vec<String>>, String> {
    if v == "off" {
        return Ok(None);
    }
    let argv: Vec<String> = v.split_whitespace().map(str::to_owned).collect();
    match argv.first() {
        Some(p) if Path::new(p).is_absolute() => Ok(Some(argv)),
        _ => Err(format!(
            "`on-event` must start with the absolute path of a program (it is run without a shell), not `{v}`"
        )),
    }
}

/// `on-event-for = not_recovered flapping …`: names of the vocabulary, or `all`.
fn parse_events(v: &str) -> Result<Events, String> {
    let names: Vec<&str> = v
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        return Err("`on-event-for` names no event; to run no hook, set `on-event = off`".into());
    }
    let mut out = Vec::with_capacity(names.len());
    for n in names.iter().copied().filter(|n| *n != "all") {
        // Every name is checked, beside `all` too: a misspelt one is an error, not
        // silently covered.
        let Some(e) = HookEvent::parse(n) else {
            let known: Vec<String> = HookEvent::all().iter().map(ToString::to_string).collect();
            return Err(format!(
                "`on-event-for`: `{n}` is not an event name; the names are: all, {}",
                known.join(", ")
            ));
        };
        out.push(e);
    }
    if names.contains(&"all") {
        return Ok(Events::All);
    }
    Ok(Events::Only(out))
}

/// A `vassals =` value: an absolute directory or glob of vassal files.
fn parse_source(v: &str) -> Result<Source, String> {
    if v.is_empty() {
        return Err("`vassals` needs a directory or a glob".into());
    }
    let source = Source::literal(v, Path::new("/")).ok_or_else(|| {
        format!("`{v}` is not a directory or a glob; the warden watches vassal files only")
    })?;
    if !Path::new(v).is_absolute() {
        return Err(format!(
            "`vassals` must be an absolute directory or glob, not `{v}`"
        ));
    }
    Ok(source)
}

/// One policy key with its parsed value. Only policy keys exist here, which is what keeps a
/// vassal's own `[vassal-warden]` section from naming paths or commands.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Setting {
    ReloadAt(Threshold),
    For(u32),
    Cooldown(Duration),
    /// `off` (none) or a cap.
    MaxFds(Option<u64>),
    Hysteresis(f64),
    Predict(Predict),
    PredictFloor(f64),
    PredictWindow(usize),
    MaxReloads(u32, Duration),
    Action(ActionMode),
    Verify(Duration),
    Top(usize),
    CaptureAt(Option<f64>),
    /// `none`: no owner.
    Owner(Option<String>),
}

impl Setting {
    /// Parses `key = v`; the error says what is wrong and what is expected.
    pub(crate) fn parse(key: &str, v: &str) -> Result<Setting, String> {
        let count = |min: u64, what: &str| {
            v.parse::<u64>()
                .ok()
                .filter(|n| *n >= min)
                .ok_or_else(|| format!("`{key}` must be {what}, not `{v}`"))
        };
        Ok(match key {
            "reload-at" => Setting::ReloadAt(parse_threshold(v)?),
            "for" => Setting::For(
                u32::try_from(count(1, "a whole number of samples, at least 1")?)
                    .map_err(|_| format!("`for` is too large: `{v}`"))?,
            ),
            "cooldown" => Setting::Cooldown(parse_duration(v)?),
            "max-fds" if v == "off" => Setting::MaxFds(None),
            "max-fds" => Setting::MaxFds(Some(count(1, "a count of fds, or off")?)),
            "hysteresis" => Setting::Hysteresis(parse_fraction(v, key)?),
            "predict" if v == "off" => Setting::Predict(Predict::Off),
            "predict" if v == "auto" => Setting::Predict(Predict::Auto),
            "predict" => Setting::Predict(Predict::Within(parse_duration(v)?)),
            "predict-floor" => Setting::PredictFloor(parse_fraction(v, key)?),
            "predict-window" => Setting::PredictWindow(as_usize(
                Some(count(3, "a number of samples from 3 to 1000")?)
                    .filter(|n| *n <= MAX_PREDICT_WINDOW)
                    .ok_or_else(|| {
                        format!("`{key}` must be a number of samples from 3 to 1000, not `{v}`")
                    })?,
            )),
            "max-reloads" => {
                let (n, window) = parse_rate(v)?;
                Setting::MaxReloads(n, window)
            }
            "action" => Setting::Action(ActionMode::parse(v)?),
            "verify" => Setting::Verify(parse_duration_in(
                key,
                v,
                Duration::from_secs(1),
                MAX_VERIFY,
            )?),
            "top" => Setting::Top(as_usize(count(1, "a whole number, at least 1")?)),
            "capture-at" if v == "off" => Setting::CaptureAt(None),
            "capture-at" => Setting::CaptureAt(Some(parse_fraction(v, key)?)),
            "owner" => Setting::Owner(parse_owner(v)?),
            other => {
                return Err(format!(
                    "unknown policy key `{other}`; known: {}",
                    POLICY_KEYS.join(", ")
                ));
            }
        })
    }

    /// Why this setting, from a vassal's own file, would make the warden act more often
    /// than `admin`'s policy lets it: a shorter cooldown, or more reloads (in a burst, or
    /// over time) than `max-reloads` allows. `None` when it is as careful or more.
    pub(crate) fn loosens(&self, admin: &Policy) -> Option<String> {
        // An owner is a label, not a rule: a vassal's own file may name it.
        match *self {
            Setting::Cooldown(d) if d < admin.cooldown => Some(format!(
                "is shorter than warden.ini's cooldown ({})",
                humantime::format_duration(admin.cooldown)
            )),
            Setting::Action(a) if admin.action == ActionMode::Alert && a != ActionMode::Alert => {
                Some("would act where warden.ini's action is alert".to_owned())
            }
            Setting::MaxReloads(n, w) => {
                let (an, aw) = (admin.max_reloads, admin.max_reloads_window);
                // n per w against an per aw, in whole milliseconds (no float rounding).
                let rate_above = u128::from(n) * aw.as_millis() > u128::from(an) * w.as_millis();
                (n > an || rate_above).then(|| {
                    format!(
                        "allows more reloads than warden.ini's max-reloads ({an} per {})",
                        humantime::format_duration(aw)
                    )
                })
            }
            _ => None,
        }
    }

    pub(crate) fn apply(&self, p: &mut Policy) {
        match *self {
            Setting::ReloadAt(t) => p.reload_at = t,
            Setting::For(n) => p.for_samples = n,
            Setting::Cooldown(d) => p.cooldown = d,
            Setting::MaxFds(n) => p.max_fds = n,
            Setting::Hysteresis(x) => p.hysteresis = x,
            Setting::Predict(d) => p.predict = d,
            Setting::PredictFloor(x) => p.predict_floor = x,
            Setting::PredictWindow(n) => p.predict_window = n,
            Setting::MaxReloads(n, w) => (p.max_reloads, p.max_reloads_window) = (n, w),
            Setting::Action(a) => p.action = a,
            Setting::Verify(d) => p.verify = d,
            Setting::Top(n) => p.top = n,
            Setting::CaptureAt(x) => p.capture_at = x,
            Setting::Owner(ref o) => p.owner.clone_from(o),
        }
    }
}

/// The most characters an owner has: a team's name, not a sentence.
const MAX_OWNER: usize = 64;

/// An `owner =` value: a team's name as Alertmanager routes on it, 1 to 64 letters,
/// digits, `_`, `-`, `.`, `@` or `/`; `none` for no owner (the default).
fn parse_owner(v: &str) -> Result<Option<String>, String> {
    if v == "none" {
        return Ok(None);
    }
    let fits = !v.is_empty()
        && v.len() <= MAX_OWNER
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@' | '/'));
    if fits {
        Ok(Some(v.to_owned()))
    } else {
        Err(format!(
            "`owner` must be a team's name of 1 to {MAX_OWNER} letters, digits, `_`, `-`, `.`, `@` or `/` (or none), not `{v}`"
        ))
    }
}

/// `80%` or `900`.
fn parse_threshold(v: &str) -> Result<Threshold, String> {
    if let Some(pct) = v.strip_suffix('%') {
        let x: f64 = pct
            .trim()
            .parse()
            .map_err(|_| format!("`{v}` is not a percentage like 80%"))?;
        if !(x > 0.0 && x <= 100.0) {
            return Err(format!("`{v}` must be above 0% and at most 100%"));
        }
        Ok(Threshold::Fraction(x / 100.0))
    } else {
        let n: u64 = v
            .parse()
            .map_err(|_| format!("`{v}` is neither a percentage (80%) nor a count of fds (900)"))?;
        if n == 0 {
            return Err("a count of 0 fds would fire on every process".into());
        }
        Ok(Threshold::Count(n))
    }
}

/// `10%` as 0.1.
fn parse_fraction(v: &str, key: &str) -> Result<f64, String> {
    let x: f64 = v
        .strip_suffix('%')
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| format!("`{key}` must be a percentage like 10%, not `{v}`"))?;
    if (0.0..=100.0).contains(&x) {
        Ok(x / 100.0)
    } else {
        Err(format!("`{key}` must be between 0% and 100%, not `{v}`"))
    }
}

/// `3 per 1h`.
fn parse_rate(v: &str) -> Result<(u32, Duration), String> {
    let bad = || format!("`max-reloads` must look like `3 per 1h`, not `{v}`");
    let (n, window) = v.split_once(" per ").ok_or_else(bad)?;
    let n: u32 = n.trim().parse().ok().filter(|n| *n >= 1).ok_or_else(bad)?;
    Ok((n, parse_duration(window.trim())?))
}

/// The longest duration any setting takes: far beyond any sensible value, and far from
/// where adding it to a clock could overflow.
const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// The longest `verify`. The warden's action slots (`max-concurrent`) are held while an
/// action is verified, so this also bounds how long one vassal can keep others waiting.
/// The most samples a fit keeps per process: each is kept in memory for every process.
const MAX_PREDICT_WINDOW: u64 = 1000;
const MAX_VERIFY: Duration = Duration::from_secs(600);
/// The longest `capture-window`.
const MAX_CAPTURE_WINDOW: Duration = Duration::from_secs(3600);
/// The most reports a capture keeps (`capture-samples`).
const MAX_CAPTURE_SAMPLES: u32 = 100_000;

/// The longest `interval`.
const MAX_INTERVAL: Duration = Duration::from_secs(3600);

pub(crate) fn parse_duration(v: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(v)
        .map_err(|e| format!("`{v}` is not a duration like 2s, 10m or 1h ({e})"))?;
    if d > MAX_DURATION {
        return Err(format!("`{v}` is too long: at most 30 days"));
    }
    Ok(d)
}

/// A duration within `min..=max`, for `key`.
fn parse_duration_in(key: &str, v: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = parse_duration(v)?;
    if d < min || d > max {
        return Err(format!(
            "`{key}` must be between {} and {}, not `{v}`",
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(d)
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!("`{v}` is not true or false")),
    }
}

/// warden.ini allows `; comment` after a value when a blank precedes it (the design's
/// sketch uses it). uWSGI's own files do not, which is why this is not in the lexer.
fn strip_inline_comment(v: &str) -> &str {
    let mut cut = v.len();
    for (i, w) in v.as_bytes().windows(2).enumerate() {
        if (w[0] == b' ' || w[0] == b'\t') && (w[1] == b';' || w[1] == b'#') {
            cut = i;
            break;
        }
    }
    v[..cut].trim_end()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, FileError> {
        Config::parse(Path::new("/etc/vassal-warden/warden.ini"), text)
    }

    #[test]
    fn the_design_sketch_parses() {
        let cfg = parse(
            "[warden]\nvassals   = /etc/uwsgi-emperor/vassals   ; repeatable\ninterval  = 2s\n\
             audit-log = /tmp/x.jsonl\ndry-run   = false\n\n[policy]   ; defaults\nreload-at = 80%\n\
             for       = 3\ncooldown  = 10m\n\n[vassal myapp.ini]\nreload-at = 90%\n",
        )
        .unwrap();
        assert_eq!(cfg.vassals.len(), 1);
        assert_eq!(
            cfg.vassals[0].dir(),
            Path::new("/etc/uwsgi-emperor/vassals")
        );
        assert_eq!(cfg.interval, Duration::from_secs(2));
        assert_eq!(cfg.policy.for_samples, 3);
        assert_eq!(cfg.policy.reload_at, Threshold::Fraction(0.8));
        let (p, problems) = cfg.policy_for("myapp.ini", &[]);
        assert!(problems.is_empty());
        assert_eq!(p.reload_at, Threshold::Fraction(0.9));
        assert_eq!(
            cfg.policy_for("other.ini", &[]).0.reload_at,
            Threshold::Fraction(0.8)
        );
    }

    #[test]
    fn admin_override_wins_over_the_vassals_own_section() {
        let cfg = parse("[vassal a.ini]\nreload-at = 500\n").unwrap();
        let own = uwsgi_ini::lex("[vassal-warden]\nreload-at = 50%\ncooldown = 1h\n");
        let (p, _) = cfg.policy_for("a.ini", &own);
        assert_eq!(p.reload_at, Threshold::Count(500));
        assert_eq!(p.cooldown, Duration::from_secs(3600));
    }

    #[test]
    fn a_vassal_names_its_owner_and_root_has_the_last_word() {
        let cfg = parse("[policy]\nowner = platform\n[vassal b.ini]\nowner = team-b\n").unwrap();
        let own = uwsgi_ini::lex("[vassal-warden]\nowner = team-shop\n");
        // Its own file labels it; without one, the host's default; root's section wins.
        let (p, problems) = cfg.policy_for("a.ini", &own);
        assert_eq!((p.owner.as_deref(), problems.len()), (Some("team-shop"), 0));
        assert_eq!(
            cfg.policy_for("c.ini", &[]).0.owner.as_deref(),
            Some("platform")
        );
        assert_eq!(
            cfg.policy_for("b.ini", &own).0.owner.as_deref(),
            Some("team-b")
        );
        // `none` takes a default away.
        let own = uwsgi_ini::lex("[vassal-warden]\nowner = none\n");
        assert_eq!(cfg.policy_for("a.ini", &own).0.owner, None);
        // A label Alertmanager could not take, or a sentence, is refused and said.
        for bad in ["", "two words", "a\"quote", &"x".repeat(65)] {
            let own = uwsgi_ini::lex(&format!("[vassal-warden]\nowner = {bad}\n"));
            let (p, problems) = Config::default().policy_for("a.ini", &own);
            assert_eq!(p.owner, None, "{bad}");
            assert!(
                problems[0].contains("`owner` must be a team's name"),
                "{problems:?}"
            );
        }
    }

    #[test]
    fn vassal_section_cannot_name_a_path() {
        let cfg = Config::default();
        let own = uwsgi_ini::lex("[vassal-warden]\naudit-log = /etc/passwd\nfor = 5\n");
        let (p, problems) = cfg.policy_for("a.ini", &own);
        assert_eq!(p.for_samples, 5);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains("unknown policy key `audit-log`"),
            "{problems:?}"
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = parse("[warden]\ninterval = 2s\n\n[policy]\nreload-at = lots\n").unwrap_err();
        assert_eq!(e.line, Some(5));
        assert!(
            e.to_string()
                .starts_with("/etc/vassal-warden/warden.ini:5: `lots`"),
            "{e}"
        );
        let e = parse("[warden]\nintreval = 2s\n").unwrap_err();
        assert!(e.to_string().contains(":2: unknown key `intreval`"), "{e}");
        let e = parse("[polciy]\nfor = 2\n").unwrap_err();
        assert!(
            e.to_string().contains(":2: unknown section [polciy]"),
            "{e}"
        );
    }

    #[test]
    fn remediation_keys() {
        let cfg = parse(
            "[warden]\nmax-concurrent = 2\n[policy]\nmax-fds = 5000\nhysteresis = 5%\npredict = 15m\n\
             predict-floor = 50%\nmax-reloads = 3 per 1h\naction = recycle-worker\n",
        )
        .unwrap();
        assert_eq!(cfg.max_concurrent, 2);
        let p = &cfg.policy;
        assert_eq!(p.max_fds, Some(5000));
        assert!((p.hysteresis - 0.05).abs() < 1e-9);
        assert_eq!(p.predict, Predict::Within(Duration::from_secs(900)));
        assert_eq!(
            (p.max_reloads, p.max_reloads_window),
            (3, Duration::from_secs(3600))
        );
        assert_eq!(p.action, ActionMode::RecycleWorker);
        let e = parse("[policy]\nmax-reloads = lots\n").unwrap_err();
        assert!(
            e.to_string()
                .contains(":2: `max-reloads` must look like `3 per 1h`"),
            "{e}"
        );
        let e = parse("[policy]\naction = restart\n").unwrap_err();
        assert!(e.to_string().contains("not an action"), "{e}");
    }

    #[test]
    fn max_fds_off_clears_a_cap() {
        let cfg = parse("[policy]\nmax-fds = 5000\n[vassal a.ini]\nmax-fds = off\n").unwrap();
        assert_eq!(cfg.policy.max_fds, Some(5000));
        assert_eq!(cfg.policy_for("a.ini", &[]).0.max_fds, None);
    }

    /// The published key lists are exactly what the reader accepts: a listed key with a
    /// bad value is refused for its value, never as unknown.
    #[test]
    fn the_key_lists_are_the_keys_the_reader_accepts() {
        for (section, keys) in [("warden", WARDEN_KEYS), ("policy", POLICY_KEYS)] {
            for key in keys {
                let e = parse(&format!("[{section}]\n{key} = ?bad\n")).unwrap_err();
                assert!(!e.to_string().contains("unknown"), "{section}.{key}: {e}");
            }
            let e = parse(&format!("[{section}]\nno-such-key = 1\n")).unwrap_err();
            assert!(e.to_string().contains(&keys.join(", ")), "{e}");
        }
    }

    /// The shipped warden.ini with every setting uncommented is the built-in defaults
    /// (`vassals` made explicit: its default is what the running Emperors use, and the
    /// file names the fallback).
    #[test]
    fn the_shipped_warden_ini_uncommented_is_the_defaults() {
        let text = include_str!("../packaging/warden.ini")
            .lines()
            .map(|l| match l.strip_prefix(';') {
                Some(rest) if rest.starts_with(|c: char| !c.is_whitespace()) => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let cfg = parse(&text).unwrap();
        let d = Config::default();
        assert_eq!(
            cfg.vassals,
            [Source::Dir(crate::emperor::DEFAULT_VASSALS.into())]
        );
        assert_eq!(cfg.interval, d.interval);
        assert_eq!(cfg.max_concurrent, d.max_concurrent);
        assert_eq!(cfg.audit_log, d.audit_log);
        assert_eq!(cfg.dry_run, d.dry_run);
        assert_eq!(cfg.metrics, d.metrics);
        assert_eq!(cfg.metrics_textfile, d.metrics_textfile);
        assert_eq!(cfg.policy, d.policy);
        assert!(cfg.overrides.is_empty(), "{:?}", cfg.overrides);
    }

    #[test]
    fn sources_are_parsed_at_load_and_a_bad_one_is_an_error() {
        let cfg = parse("[warden]\nvassals = /srv/*/vassals/*.ini\nvassals = /etc/v\n").unwrap();
        assert_eq!(
            cfg.vassals,
            [
                Source::Glob("/srv/*/vassals/*.ini".into()),
                Source::Dir("/etc/v".into())
            ]
        );
        for (text, want) in [
            (
                "vassals = vassals",
                ":2: `vassals` must be an absolute directory or glob",
            ),
            (
                "vassals = zmq://tcp://127.0.0.1:5250",
                ":2: `zmq://tcp://127.0.0.1:5250` is not a directory or a glob",
            ),
            ("vassals =", ":2: `vassals` needs a directory or a glob"),
            (
                "audit-log = incidents.jsonl",
                ":2: `audit-log` must be an absolute path",
            ),
        ] {
            let e = parse(&format!("[warden]\n{text}\n")).unwrap_err();
            assert!(e.to_string().contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn overrides_are_typed_settings_in_file_order() {
        let cfg =
            parse("[vassal a.ini]\nreload-at = 500\nmax-reloads = 5 per 2h\nreload-at = 90%\n")
                .unwrap();
        assert_eq!(
            cfg.overrides,
            [(
                "a.ini".to_owned(),
                vec![
                    Setting::ReloadAt(Threshold::Count(500)),
                    Setting::MaxReloads(5, Duration::from_secs(7200)),
                    Setting::ReloadAt(Threshold::Fraction(0.9)),
                ]
            )]
        );
        let (p, _) = cfg.policy_for("a.ini", &[]);
        assert_eq!(p.reload_at, Threshold::Fraction(0.9));
        let e = parse("[vassal a.ini]\nfor = 0\n").unwrap_err();
        assert!(
            e.to_string()
                .contains(":2: `for` must be a whole number of samples, at least 1, not `0`"),
            "{e}"
        );
    }

    #[test]
    fn thresholds() {
        assert_eq!(parse_threshold("80%").unwrap().line(1024), 820);
        assert_eq!(parse_threshold("900").unwrap().line(1024), 900);
        assert!(parse_threshold("0").is_err());
        assert!(parse_threshold("150%").is_err());
    }

    #[test]
    fn missing_default_file_means_defaults_but_missing_named_file_is_an_error() {
        let e = Config::load(Some(Path::new("/nonexistent/warden.ini"))).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/warden.ini"), "{e}");
    }

    #[test]
    fn durations_are_bounded_so_no_clock_can_overflow() {
        for bad in [
            "[warden]\ninterval = 100000h\n",
            "[policy]\nverify = 18446744073709551615s\n",
            "[policy]\nverify = 36500d\n",
            "[policy]\ncooldown = 1000y\n",
            "[policy]\nmax-reloads = 3 per 100y\n",
            "[policy]\npredict = 100y\n",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(
                e.message.contains("at most") || e.message.contains("between"),
                "{bad}: {e}"
            );
        }
        assert!(parse("[policy]\nverify = 10m\ncooldown = 30d\n").is_ok());
    }

    #[test]
    fn a_vassals_own_file_may_only_make_the_warden_more_careful() {
        let cfg = parse("[policy]\ncooldown = 10m\nmax-reloads = 3 per 1h\n").unwrap();
        let loose =
            uwsgi_ini::lex("[vassal-warden]\ncooldown = 1s\nmax-reloads = 1000 per 1h\nfor = 3\n");
        let (p, problems) = cfg.policy_for("greedy.ini", &loose);
        assert_eq!(p.cooldown, Duration::from_secs(600));
        assert_eq!(
            (p.max_reloads, p.max_reloads_window),
            (3, Duration::from_secs(3600))
        );
        assert_eq!(p.for_samples, 3, "the rest applies");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with("line 2: `cooldown = 1s` is shorter"),
            "{problems:?}"
        );
        assert!(
            problems[0].contains("`[vassal greedy.ini]`"),
            "{problems:?}"
        );
        assert!(
            problems[1].starts_with("line 3: `max-reloads = 1000 per 1h`"),
            "{problems:?}"
        );
        // A faster rate with fewer in a burst is still more reloads over time.
        let faster = uwsgi_ini::lex("[vassal-warden]\nmax-reloads = 1 per 10m\n");
        assert_eq!(cfg.policy_for("a.ini", &faster).1.len(), 1);
        // More careful is the vassal's to choose.
        let careful = uwsgi_ini::lex("[vassal-warden]\ncooldown = 1h\nmax-reloads = 1 per 2h\n");
        let (p, problems) = cfg.policy_for("a.ini", &careful);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(p.cooldown, Duration::from_secs(3600));
        assert_eq!(
            (p.max_reloads, p.max_reloads_window),
            (1, Duration::from_secs(7200))
        );
        // A fit's window is kept in memory for every process: it is bounded.
        assert!(Setting::parse("predict-window", "1000").is_ok());
        let e = Setting::parse("predict-window", "1000000000").unwrap_err();
        assert!(e.contains("from 3 to 1000"), "{e}");
        // Where root says alert, a vassal's file cannot make it act; it can say alert.
        let alert = parse("[policy]\naction = alert\n").unwrap();
        let acts = uwsgi_ini::lex("[vassal-warden]\naction = touch\n");
        let (p, problems) = alert.policy_for("a.ini", &acts);
        assert_eq!(p.action, ActionMode::Alert);
        assert!(
            problems[0].contains("would act where warden.ini's action is alert"),
            "{problems:?}"
        );
        let quiet = uwsgi_ini::lex("[vassal-warden]\naction = alert\n");
        let (p, problems) = cfg.policy_for("a.ini", &quiet);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(p.action, ActionMode::Alert);
        // Root loosens it for one vassal in warden.ini.
        let cfg = parse("[policy]\ncooldown = 10m\n[vassal greedy.ini]\ncooldown = 1s\n").unwrap();
        assert_eq!(
            cfg.policy_for("greedy.ini", &loose).0.cooldown,
            Duration::from_secs(1)
        );
    }

    #[test]
    fn a_vassal_cannot_verify_longer_than_the_admin_allows() {
        let cfg = parse("[policy]\nverify = 30s\n").unwrap();
        let own = uwsgi_ini::lex("[vassal-warden]\nreload-at = 1\nverify = 10m\n");
        let (p, problems) = cfg.policy_for("greedy.ini", &own);
        assert_eq!(p.verify, Duration::from_secs(30));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("line 3: `verify = 10m`"),
            "{problems:?}"
        );
        // Shorter is the vassal's to choose.
        let own = uwsgi_ini::lex("[vassal-warden]\nverify = 5s\n");
        assert_eq!(
            cfg.policy_for("quick.ini", &own).0.verify,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn metrics_are_on_loopback_by_default_and_can_be_moved_or_turned_off() {
        let cfg = parse("[warden]\n").unwrap();
        assert_eq!(cfg.metrics, Some(DEFAULT_METRICS));
        assert_eq!(cfg.metrics_textfile, None);
        let cfg = parse(
            "[warden]\nmetrics = [::1]:9900 ; loopback\nmetrics-textfile = /var/lib/prometheus/node-exporter/vassal-warden.prom\n",
        )
        .unwrap();
        assert_eq!(cfg.metrics, Some("[::1]:9900".parse().unwrap()));
        assert_eq!(
            cfg.metrics_textfile.as_deref(),
            Some(Path::new(
                "/var/lib/prometheus/node-exporter/vassal-warden.prom"
            ))
        );
        assert_eq!(parse("[warden]\nmetrics = off\n").unwrap().metrics, None);
        for (text, says) in [
            ("metrics = localhost:9814", "must be an IP address and port"),
            ("metrics = 9814", "must be an IP address and port"),
            ("metrics-textfile = vw.prom", "absolute"),
            ("metrics-textfile = /var/lib/vw.txt", "must end in `.prom`"),
        ] {
            let e = parse(&format!("[warden]\n{text}\n")).unwrap_err();
            assert_eq!(e.line, Some(2), "{e}");
            assert!(e.to_string().contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn the_hook_and_reminders_are_set_in_warden_ini_only() {
        let cfg = parse("[warden]\n").unwrap();
        assert_eq!((cfg.hook(), cfg.remind), (None, DEFAULT_REMIND));
        let cfg = parse(
            "[warden]\nremind = 2h\non-event = /usr/local/bin/page-oncall --team web\n\
             on-event-for = not_recovered, flapping\non-event-timeout = 10s\n",
        )
        .unwrap();
        assert_eq!(cfg.remind, Duration::from_secs(7200));
        let hook = cfg.hook().unwrap();
        assert_eq!(hook.argv, ["/usr/local/bin/page-oncall", "--team", "web"]);
        assert_eq!(hook.events.to_string(), "not_recovered flapping");
        assert_eq!(hook.timeout, Duration::from_secs(10));
        let hook = parse("[warden]\non-event = /bin/true\n")
            .unwrap()
            .hook()
            .unwrap();
        assert_eq!(hook.events, Events::Only(HookEvent::defaults()));
        assert_eq!(hook.timeout, Duration::from_secs(30));
        for (text, says) in [
            ("on-event = mail -s x root", "absolute path of a program"),
            (
                "on-event = /bin/true\non-event-for = flaping",
                "`flaping` is not an event name",
            ),
            ("on-event = /bin/true\non-event-for = ,", "names no event"),
            (
                "on-event = /bin/true\non-event-for = all flaping",
                "`flaping` is not an event name",
            ),
            (
                "on-event = /bin/true\non-event-timeout = 1h",
                "between 1s and 10m",
            ),
            ("remind = 0s", "between 1s and 30days"),
        ] {
            let e = parse(&format!("[warden]\n{text}\n")).unwrap_err();
            assert!(e.to_string().contains(says), "{text}: {e}");
        }
        // A vassal's own file names no command: the hook is not a policy key.
        let own = uwsgi_ini::lex("[vassal-warden]\non-event = /tmp/x\nremind = 1s\n");
        let (_, problems) = parse("[warden]\n").unwrap().policy_for("app.ini", &own);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("unknown policy key `on-event`"),
            "{problems:?}"
        );
    }

    /// Values a config line may hold: numbers of any size, durations, units, rates,
    /// percentages, paths and junk.
    fn value() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            (any::<u64>(), "(ns|us|ms|s|m|h|d|w|y|)").prop_map(|(n, u)| format!("{n}{u}")),
            (any::<u32>(), any::<u64>()).prop_map(|(n, w)| format!("{n} per {w}s")),
            (0.0f64..1e6).prop_map(|x| format!("{x}%")),
            "[ -~]{0,40}",
            "/[a-z/*?]{0,20}",
        ]
    }

    fn key() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let mut keys: Vec<&str> = WARDEN_KEYS.iter().chain(POLICY_KEYS).copied().collect();
        keys.push("junk");
        proptest::sample::select(keys).prop_map(str::to_owned)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Any text is a config or an error with a line, never a panic; and whatever is
        /// accepted has every duration in range, so no clock arithmetic can overflow.
        #[test]
        fn any_config_text_is_parsed_or_refused_with_its_line(
            lines in proptest::collection::vec(
                (0..4u8, key(), value()),
                0..20,
            )
        ) {
            let mut text = String::new();
            for (section, k, v) in &lines {
                text.push_str(match section {
                    0 => "[warden]\n",
                    1 => "[policy]\n",
                    2 => "[vassal a.ini]\n",
                    _ => "",
                });
                text.push_str(k);
                text.push_str(" = ");
                text.push_str(v);
                text.push('\n');
            }
            match Config::parse(Path::new("/etc/vassal-warden/warden.ini"), &text) {
                Ok(cfg) => {
                    proptest::prop_assert!(cfg.interval <= MAX_INTERVAL);
                    let own = uwsgi_ini::lex(&format!("[vassal-warden]\n{text}"));
                    for p in [cfg.policy.clone(), cfg.policy_for("a.ini", &own).0] {
                        proptest::prop_assert!(p.verify <= MAX_VERIFY);
                        proptest::prop_assert!(p.cooldown <= MAX_DURATION);
                        proptest::prop_assert!(p.max_reloads_window <= MAX_DURATION);
                        if let Predict::Within(d) = p.predict {
                            proptest::prop_assert!(d <= MAX_DURATION);
                        }
                    }
                }
                Err(e) => proptest::prop_assert!(e.line.is_some() || text.is_empty(), "{e}"),
            }
        }
    }
}
