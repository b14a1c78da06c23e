//! Metrics: what the warden sees and does, in the Prometheus text exposition format
//! (version 0.0.4), served on a loopback port and, if asked, written to a file for
//! `node_exporter`'s textfile collector.
//!
//! This module owns the metric names, the counts of the records written (`Counts`: fed
//! by the warden where a record reaches the incident log, so the metrics never disagree
//! with the log), the histogram of pass durations, the rendering of one pass's snapshot
//! (`render`, pure; past `DETAIL_VASSALS` vassals only those in trouble have their own
//! series, and the page is bounded), and where the snapshot goes (`Outlets`). The loop renders the text
//! once at the end of a pass and swaps it into a shared slot; the server thread
//! (`serve`) and the textfile thread only ever read that text. A scrape never touches
//! the warden's state and never waits for a pass, and a pass never waits for a scrape or
//! a disk: the slot's lock is held only to swap or clone one `Arc`.

mod serve;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use crate::audit::{Event, Record};
pub use crate::mapping::State;
use crate::procs::Role;
use crate::vocab::{ActionKind, OutcomeResult, Reason};

/// Counts of the records this warden wrote, by vassal (the Emperor's name for the file).
/// They start at 0 with the process, as Prometheus counters do; a vassal no longer
/// watched is dropped.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    by_vassal: BTreeMap<String, VassalCounts>,
}

/// One vassal's counts. Every known label value is present from the start, at 0, so
/// that `rate()` and `increase()` see the first increment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VassalCounts {
    pub(crate) incidents: u64,
    /// By `ActionKind::ALL`'s order.
    pub(crate) actions: [u64; 3],
    /// By `OutcomeResult::ALL`'s order.
    pub(crate) outcomes: [u64; 3],
    /// Every known reason, then any other a record named.
    pub(crate) suppressions: Vec<(Reason, u64)>,
    /// The code that leaks, from the last capture that found it.
    pub(crate) site: Option<LeakSite>,
}

/// Where a vassal leaks, as its info series says it: the innermost frame of the app (or
/// the innermost frame, when none is the app's) at the site with the most fds still open.
/// Each value is cut to `MAX_SITE_LABEL` characters (a file keeps its end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeakSite {
    pub function: String,
    pub file: String,
    pub line: String,
}

/// The longest value a label of the leak site's series has.
pub(crate) const MAX_SITE_LABEL: usize = 120;

impl LeakSite {
    /// The site a capture names, if it found any.
    fn of(c: &crate::audit::Capture) -> Option<LeakSite> {
        let site = c.sites.iter().max_by_key(|s| s.open)?;
        let frame = site
            .frames
            .iter()
            .find(|f| f.origin == crate::capture::Origin::App)
            .or_else(|| site.frames.first())?;
        let cut_end = |s: &str| {
            let n = s.chars().count();
            s.chars()
                .skip(n.saturating_sub(MAX_SITE_LABEL))
                .collect::<String>()
        };
        Some(LeakSite {
            function: frame.function.chars().take(MAX_SITE_LABEL).collect(),
            file: cut_end(&frame.file),
            line: frame.line.map(|l| l.to_string()).unwrap_or_default(),
        })
    }
}

impl Default for VassalCounts {
    fn default() -> Self {
        VassalCounts {
            incidents: 0,
            actions: [0; 3],
            outcomes: [0; 3],
            suppressions: Reason::KNOWN.iter().map(|r| (r.clone(), 0)).collect(),
            site: None,
        }
    }
}

impl Counts {
    /// Counts one record, written to the log.
    pub(crate) fn count(&mut self, r: &Record) {
        let c = self.by_vassal.entry(r.vassal.clone()).or_default();
        match &r.event {
            Event::Detected(d) => {
                c.incidents += 1;
                if let Some(site) = d.capture.as_ref().and_then(LeakSite::of) {
                    c.site = Some(site);
                }
            }
            Event::Capture(cap) => {
                if let Some(site) = LeakSite::of(&cap.capture) {
                    c.site = Some(site);
                }
            }
            Event::Action(a) => {
                if let Some(i) = ActionKind::ALL.iter().position(|k| *k == a.action) {
                    c.actions[i] += 1;
                }
            }
            Event::Outcome(o) => {
                if let Some(i) = OutcomeResult::ALL.iter().position(|k| *k == o.result) {
                    c.outcomes[i] += 1;
                }
            }
            Event::Suppressed(s) => match c.suppressions.iter_mut().find(|(r, _)| *r == s.reason) {
                Some((_, n)) => *n += 1,
                None => c.suppressions.push((s.reason.clone(), 1)),
            },
            // The rest of an episode already counted when it started.
            Event::Reminder(_) | Event::Ended(_) | Event::Pause(_) | Event::Resume(_) => {}
        }
    }

    /// Drops the vassals not in `keep` (no longer watched): the label sets stay bounded
    /// by the vassals watched.
    pub(crate) fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.by_vassal.retain(|name, _| keep(name));
    }

    #[must_use]
    pub(crate) fn of(&self, vassal: &str) -> Option<&VassalCounts> {
        self.by_vassal.get(vassal)
    }
}

/// Upper bounds of the pass-duration buckets, in seconds: a pass over a few vassals
/// takes well under a millisecond; one that names every fd of a large process (an
/// incident) tens of milliseconds; a stats server at its deadline a second.
const BUCKETS: [f64; 12] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The durations of passes: a Prometheus histogram.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Histogram {
    /// Per bucket, not cumulative.
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| s <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += s;
    }
}

/// One sampled process of a vassal: the master, or the fullest of a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Side {
    pub fds: u64,
    /// Its soft `RLIMIT_NOFILE`.
    pub limit: u64,
    /// The fd count at which the warden acts on it.
    pub line: u64,
}

impl Side {
    /// Open fds over the soft limit (0..1); NaN for a limit of 0.
    fn usage(&self) -> f64 {
        if self.limit == 0 {
            f64::NAN
        } else {
            self.fds as f64 / self.limit as f64
        }
    }
}

/// The process nearest its soft limit of each role a vassal runs (master, worker, mule,
/// spooler, gateway, sub-Emperor, attached program), as sampled on the last pass: at most
/// one series per role and gauge, however many processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sides([Option<Side>; Role::ALL.len()]);

impl Sides {
    /// Keeps, per role, the process nearest its limit (the most fds on a tie).
    pub(crate) fn add(&mut self, role: Role, side: Side) {
        let slot = &mut self.0[role.index()];
        let fuller = |a: &Side, b: &Side| {
            let usage = |s: &Side| s.fds as f64 / s.limit.max(1) as f64;
            usage(a)
                .total_cmp(&usage(b))
                .then(a.fds.cmp(&b.fds))
                .is_gt()
        };
        if slot.is_none_or(|old| fuller(&side, &old)) {
            *slot = Some(side);
        }
    }

    /// A vassal with only a master and workers (the most common shape): `worker` is the
    /// fullest of them.
    #[must_use]
    pub fn master_and_worker(master: Option<Side>, worker: Option<Side>) -> Sides {
        let mut out = Sides::default();
        out.0[Role::Master.index()] = master;
        out.0[Role::Worker.index()] = worker;
        out
    }

    /// The processes sampled, by role name.
    fn each(&self) -> impl Iterator<Item = (&'static str, Side)> + '_ {
        Role::ALL
            .iter()
            .zip(self.0)
            .filter_map(|(r, s)| Some((r.as_str(), s?)))
    }
}

/// One vassal on the last pass.
#[derive(Debug, Clone, PartialEq)]
pub struct VassalView<'a> {
    pub name: &'a str,
    pub state: State,
    /// Sampled on the last pass (a running vassal only).
    pub sides: Sides,
    pub flapping: bool,
    pub given_up: bool,
    pub last_action: Option<SystemTime>,
    pub counts: Option<&'a VassalCounts>,
    /// Runs of the alert hook about it that failed.
    pub hook_failures: u64,
    /// The lasting episode open now (held, alert only, refused): its reason and when it
    /// started.
    pub episode: Option<(&'a str, SystemTime)>,
    /// Paused by an operator until then.
    pub paused_until: Option<SystemTime>,
    /// Who owns it (`owner =`): a label on each of its series.
    pub owner: Option<&'a str>,
}

/// The warden itself on the last pass.
#[derive(Debug, Clone, PartialEq)]
pub struct WardenView<'a> {
    pub vassals: usize,
    pub emperors: usize,
    pub processes: usize,
    /// Records owed to the incident log (it could not be written).
    pub owed: usize,
    pub last_pass: SystemTime,
    pub passes: &'a Histogram,
}

const PREFIX: &str = "vassal_warden_";

/// One metric family at a time: HELP and TYPE, then its samples.
struct Out<'a> {
    s: &'a mut String,
}

impl Out<'_> {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // HELP texts are constants with no backslash or newline to escape.
        let _ = writeln!(self.s, "# HELP {PREFIX}{name} {help}");
        let _ = writeln!(self.s, "# TYPE {PREFIX}{name} {kind}");
    }

    /// A sample of vassal `v`'s series: labelled `vassal`, then `owner` when it names
    /// one, then `more`.
    fn vsample(
        &mut self,
        name: &str,
        v: &VassalView<'_>,
        more: Option<(&str, &str)>,
        value: Value,
    ) {
        let mut labels = [("vassal", v.name), ("", ""), ("", "")];
        let mut n = 1;
        if let Some(owner) = v.owner {
            labels[n] = ("owner", owner);
            n += 1;
        }
        if let Some(m) = more {
            labels[n] = m;
            n += 1;
        }
        self.sample(name, &labels[..n], value);
    }

    /// One sample: `name{labels} value`. Label values are escaped.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: Value) {
        self.s.push_str(PREFIX);
        self.s.push_str(name);
        if !labels.is_empty() {
            self.s.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.s.push(',');
                }
                self.s.push_str(k);
                self.s.push_str("=\"");
                escape_label(self.s, v);
                self.s.push('"');
            }
            self.s.push('}');
        }
        self.s.push(' ');
        match value {
            Value::Int(n) => {
                let _ = write!(self.s, "{n}");
            }
            Value::Float(x) => push_float(self.s, x),
        }
        self.s.push('\n');
    }
}

#[derive(Debug, Clone, Copy)]
enum Value {
    Int(u64),
    Float(f64),
}

fn flag(b: bool) -> Value {
    Value::Int(u64::from(b))
}

fn count(n: usize) -> Value {
    Value::Int(u64::try_from(n).unwrap_or(u64::MAX))
}

/// A label value as the exposition format wants it: `\`, `"` and newline escaped.
fn escape_label(s: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
}

/// A float as Prometheus reads it: `NaN`, `+Inf`, `-Inf`, or Rust's shortest form.
fn push_float(s: &mut String, x: f64) {
    if x.is_nan() {
        s.push_str("NaN");
    } else if x.is_infinite() {
        s.push_str(if x > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(s, "{x}");
    }
}

/// Seconds since the epoch (negative before it: a clock set wrong).
fn epoch_seconds(t: SystemTime) -> f64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// Up to this many vassals, every vassal has its own series. Past it, only the vassals in
/// trouble have them (an open episode, flapping, given up, not running, disputed, a
/// process at 80% of its line or over it, an incident or a failed hook since the warden
/// started), the worst first, at most this many; every vassal is still counted in the
/// totals (`vassals_in_state`, `vassals_over_line`).
pub const DETAIL_VASSALS: usize = 500;

/// The per-vassal series of one pass take at most this many bytes, by an estimate that
/// is never under the truth: with long names, fewer vassals have their own series.
pub const DETAIL_BYTES: usize = 4 << 20;

/// The bytes a sample of a vassal takes at most besides the vassal's escaped name: the
/// longest family and label names, a label value and a value.
const SAMPLE_BYTES: usize = 160;

/// Renders the exposition of one pass into `s` (cleared first). Families are written
/// whole, one after the other, as the format requires. Which vassals have their own
/// series is `detailed`'s choice.
pub fn render(s: &mut String, w: &WardenView<'_>, vassals: &[VassalView<'_>]) {
    s.clear();
    let detailed = detailed(vassals);
    let mut o = Out { s };
    render_warden(&mut o, w);
    render_totals(&mut o, vassals, detailed.len());
    render_gauges(&mut o, &detailed);
    render_sites(&mut o, &detailed);
    render_counters(&mut o, &detailed);
}

/// A vassal's trouble: its level, then how full its fullest process is.
type Trouble = (u8, f64);

/// How much trouble a vassal is in, for the choice of detail: `None` for none, else
/// higher is worse, then the fullest process (of its line) first.
fn trouble(v: &VassalView<'_>) -> Option<Trouble> {
    let fullest = v
        .sides
        .each()
        .map(|(_, s)| s.fds as f64 / s.line.max(1) as f64)
        .fold(0.0, f64::max);
    let counted = v.counts.is_some_and(|c| c.incidents > 0);
    let level = if v.flapping || v.given_up || v.episode.is_some() {
        3
    } else if matches!(v.state, State::NotRunning | State::Disputed) || fullest >= 1.0 {
        2
    } else if fullest >= 0.8 || counted || v.hook_failures > 0 {
        1
    } else {
        return None;
    };
    Some((level, fullest))
}

/// An upper bound of the bytes a vassal's own series take.
fn detail_bytes(v: &VassalView<'_>) -> usize {
    let sides = v.sides.each().count() * SIDE_GAUGES.len();
    let suppressions = v
        .counts
        .map_or(Reason::KNOWN.len(), |c| c.suppressions.len());
    // vassal_state, two flags, last action, episode, a pause's end, incidents, actions,
    // outcomes, hook failures.
    let series = sides + State::ALL.len() + 2 + 1 + 1 + 1 + 1 + 3 + 3 + suppressions + 1;
    // Escaping at most doubles each byte; the owner label (`,owner=""`) is on each.
    let owner = v.owner.map_or(0, |o| 2 * o.len() + 9);
    let each = 2 * v.name.len() + owner + SAMPLE_BYTES;
    // The leak site's three labels: `MAX_SITE_LABEL` characters of up to 4 bytes each.
    let site = if v.counts.is_some_and(|c| c.site.is_some()) {
        each + 3 * (2 * 4 * MAX_SITE_LABEL + 16)
    } else {
        0
    };
    series * each + site
}

/// The vassals that have their own series this pass, in their given order: all of them
/// up to `DETAIL_VASSALS`, else those in trouble; within `DETAIL_BYTES`, which the worst
/// take first (a vassal in trouble never gives way to a quiet one with a shorter name).
fn detailed<'v, 'a>(vassals: &'v [VassalView<'a>]) -> Vec<&'v VassalView<'a>> {
    let few = vassals.len() <= DETAIL_VASSALS;
    // Worst first, then the untroubled (only while there are few), in listing order.
    let mut ranked: Vec<(usize, Option<Trouble>, &VassalView<'a>)> = vassals
        .iter()
        .enumerate()
        .map(|(i, v)| (i, trouble(v), v))
        .filter(|(_, t, _)| few || t.is_some())
        .collect();
    ranked.sort_by(|a, b| {
        let key = |t: Option<Trouble>| t.map_or((0, -1.0), |(l, f)| (l + 1, f));
        key(b.1)
            .partial_cmp(&key(a.1))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.0.cmp(&b.0))
    });
    ranked.truncate(DETAIL_VASSALS);
    let mut bytes = 0;
    let mut chosen: Vec<(usize, &VassalView<'a>)> = Vec::with_capacity(ranked.len());
    for (i, _, v) in ranked {
        let need = detail_bytes(v);
        if bytes + need <= DETAIL_BYTES {
            bytes += need;
            chosen.push((i, v));
        }
    }
    chosen.sort_by_key(|(i, _)| *i);
    chosen.into_iter().map(|(_, v)| v).collect()
}

/// The families about all vassals: how many are in each state, how many have a process
/// over its line, how many have their own series.
fn render_totals(o: &mut Out<'_>, vassals: &[VassalView<'_>], detailed: usize) {
    o.family(
        "vassals_in_state",
        "gauge",
        "Vassals watched, by state (running, idle, not_running, no_emperor, disputed).",
    );
    for state in State::ALL {
        let n = vassals.iter().filter(|v| v.state == state).count();
        o.sample("vassals_in_state", &[("state", state.as_str())], count(n));
    }
    let over = vassals
        .iter()
        .filter(|v| v.sides.each().any(|(_, s)| s.fds >= s.line))
        .count();
    let gauges = [
        (
            "vassals_over_line",
            "Vassals with a process at or over its line on the last pass.",
            count(over),
        ),
        (
            "vassals_detailed",
            "Vassals that have their own series on this page: all of them up to 500, else those in trouble, the worst first.",
            count(detailed),
        ),
    ];
    for (name, help, v) in gauges {
        o.family(name, "gauge", help);
        o.sample(name, &[], v);
    }
}

fn render_warden(o: &mut Out<'_>, w: &WardenView<'_>) {
    o.family(
        "build_info",
        "gauge",
        "The version of the running warden, as a label; always 1.",
    );
    o.sample(
        "build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        Value::Int(1),
    );
    let gauges = [
        ("vassals", "Vassal files watched.", count(w.vassals)),
        (
            "emperors",
            "Running uWSGI Emperors found.",
            count(w.emperors),
        ),
        (
            "processes",
            "Processes sampled on the last pass: every process of every running vassal.",
            count(w.processes),
        ),
        (
            "records_owed",
            "Incident records not written yet (the log could not be written); no action is taken while any is owed.",
            count(w.owed),
        ),
        (
            "last_pass_timestamp_seconds",
            "When the last pass ended, in seconds since the epoch.",
            Value::Float(epoch_seconds(w.last_pass)),
        ),
    ];
    for (name, help, v) in gauges {
        o.family(name, "gauge", help);
        o.sample(name, &[], v);
    }
    let h = w.passes;
    o.family(
        "pass_duration_seconds",
        "histogram",
        "How long a pass (map, sample, decide, act) took.",
    );
    let mut cumulative = 0;
    let mut le = String::new();
    for (b, n) in BUCKETS.iter().zip(h.counts) {
        cumulative += n;
        le.clear();
        push_float(&mut le, *b);
        o.sample(
            "pass_duration_seconds_bucket",
            &[("le", &le)],
            Value::Int(cumulative),
        );
    }
    o.sample(
        "pass_duration_seconds_bucket",
        &[("le", "+Inf")],
        Value::Int(h.count),
    );
    o.sample("pass_duration_seconds_sum", &[], Value::Float(h.sum));
    o.sample("pass_duration_seconds_count", &[], Value::Int(h.count));
}

/// The per-process gauges, each with `role`: the master, and the process nearest its
/// limit of every other role the vassal runs.
type SideGauge = (&'static str, &'static str, fn(&Side) -> Value);

const SIDE_GAUGES: [SideGauge; 4] = [
    (
        "open_fds",
        "Open file descriptors of the vassal's master, and of its process nearest its limit of each other role (worker, mule, spooler, gateway, emperor, attached, unknown).",
        |s| Value::Int(s.fds),
    ),
    ("max_fds", "Soft RLIMIT_NOFILE of that process.", |s| {
        Value::Int(s.limit)
    }),
    (
        "line_fds",
        "The open fd count at which the warden acts on that process (reload-at, max-fds).",
        |s| Value::Int(s.line),
    ),
    (
        "fds_usage_ratio",
        "Open fds of that process over its soft limit (0 to 1).",
        |s| Value::Float(s.usage()),
    ),
];

/// A 0/1 gauge of a vassal: its name, help and value.
type FlagGauge = (&'static str, &'static str, fn(&&VassalView<'_>) -> bool);
type TimeGauge = (
    &'static str,
    &'static str,
    fn(&&VassalView<'_>) -> Option<SystemTime>,
);

fn render_gauges(o: &mut Out<'_>, vassals: &[&VassalView<'_>]) {
    for (name, help, value) in SIDE_GAUGES {
        o.family(name, "gauge", help);
        for v in vassals {
            for (role, side) in v.sides.each() {
                o.vsample(name, v, Some(("role", role)), value(&side));
            }
        }
    }
    o.family(
        "vassal_state",
        "gauge",
        "1 for the vassal's state (running, idle, not_running, no_emperor, disputed), 0 for the others.",
    );
    for v in vassals {
        for state in State::ALL {
            o.vsample(
                "vassal_state",
                v,
                Some(("state", state.as_str())),
                flag(v.state == state),
            );
        }
    }
    let flags: [FlagGauge; 2] = [
        (
            "flapping",
            "1 while the vassal's reloads are held by max-reloads: the leak comes back after each.",
            |v| v.flapping,
        ),
        (
            "given_up",
            "1 while the warden only alerts for the vassal: a touch did not bring its fds down, or could not be made.",
            |v| v.given_up,
        ),
    ];
    for (name, help, get) in flags {
        o.family(name, "gauge", help);
        for v in vassals {
            o.vsample(name, v, None, flag(get(v)));
        }
    }
    let times: [TimeGauge; 2] = [
        (
            "paused_until_timestamp_seconds",
            "When an operator's pause of the vassal ends (vassal-warden pause), in seconds since the epoch; absent while it is not paused.",
            |v| v.paused_until,
        ),
        (
            "last_action_timestamp_seconds",
            "When the warden (or an operator's reload) last acted on the vassal, in seconds since the epoch; absent if never.",
            |v| v.last_action,
        ),
    ];
    for (name, help, get) in times {
        o.family(name, "gauge", help);
        for v in vassals {
            if let Some(t) = get(v) {
                o.vsample(name, v, None, Value::Float(epoch_seconds(t)));
            }
        }
    }
    o.family(
        "episode_started_timestamp_seconds",
        "gauge",
        "When the vassal's lasting episode (held, alert only, refused) started, by its reason, in seconds since the epoch; absent while none is open.",
    );
    for v in vassals {
        if let Some((reason, t)) = v.episode {
            o.vsample(
                "episode_started_timestamp_seconds",
                v,
                Some(("reason", reason)),
                Value::Float(epoch_seconds(t)),
            );
        }
    }
}

/// The code that leaks in each vassal, one series per vassal at most: for a board's "top
/// leaking code sites across the fleet", and an alert that names the function.
fn render_sites(o: &mut Out<'_>, vassals: &[&VassalView<'_>]) {
    o.family(
        "leak_site_info",
        "gauge",
        "The code that leaks in the vassal, from its last capture since the warden started: the app's innermost frame at the site with the most fds open (function, file, line; each cut to 120 characters); 1 while known.",
    );
    for v in vassals {
        let Some(site) = v.counts.and_then(|c| c.site.as_ref()) else {
            continue;
        };
        let mut labels = vec![("vassal", v.name)];
        if let Some(owner) = v.owner {
            labels.push(("owner", owner));
        }
        labels.extend([
            ("function", site.function.as_str()),
            ("file", site.file.as_str()),
            ("line", site.line.as_str()),
        ]);
        o.sample("leak_site_info", &labels, Value::Int(1));
    }
}

fn render_counters(o: &mut Out<'_>, vassals: &[&VassalView<'_>]) {
    let zero = VassalCounts::default();
    o.family(
        "incidents_total",
        "counter",
        "Incidents recorded (detected records written to the incident log).",
    );
    for v in vassals {
        let c = v.counts.unwrap_or(&zero);
        o.vsample("incidents_total", v, None, Value::Int(c.incidents));
    }
    counters_by(
        o,
        vassals,
        ("actions_total", "action"),
        "Actions recorded, by kind (recycle-worker, chain-reload, touch).",
        |c| {
            ActionKind::ALL
                .iter()
                .zip(c.actions)
                .map(|(k, n)| (k.as_str().to_owned(), n))
                .collect()
        },
    );
    counters_by(
        o,
        vassals,
        ("outcomes_total", "result"),
        "Outcomes of actions recorded, by result (recovered, not_recovered, vanished).",
        |c| {
            OutcomeResult::ALL
                .iter()
                .zip(c.outcomes)
                .map(|(r, n)| (r.as_str().to_owned(), n))
                .collect()
        },
    );
    counters_by(
        o,
        vassals,
        ("suppressions_total", "reason"),
        "Incidents not acted on (suppressed records), by reason.",
        |c| {
            c.suppressions
                .iter()
                .map(|(r, n)| (r.as_str().to_owned(), *n))
                .collect()
        },
    );
    o.family(
        "hook_failures_total",
        "counter",
        "Runs of the on-event hook that failed, timed out or were dropped (queue full).",
    );
    for v in vassals {
        o.vsample("hook_failures_total", v, None, Value::Int(v.hook_failures));
    }
}

/// One counter family with a second label (`(name, label)`), one sample per vassal and
/// value of that label.
fn counters_by(
    o: &mut Out<'_>,
    vassals: &[&VassalView<'_>],
    (name, label): (&str, &str),
    help: &str,
    values: impl Fn(&VassalCounts) -> Vec<(String, u64)>,
) {
    let zero = VassalCounts::default();
    o.family(name, "counter", help);
    for v in vassals {
        for (value, n) in values(v.counts.unwrap_or(&zero)) {
            o.vsample(name, v, Some((label, value.as_str())), Value::Int(n));
        }
    }
}

/// The latest exposition, shared with the server thread.
type Slot = Arc<Mutex<Arc<str>>>;

/// Where each pass's exposition goes: the endpoint's slot, and the textfile thread.
#[derive(Debug, Default)]
pub(crate) struct Outlets {
    slot: Option<Slot>,
    textfile: Option<Textfile>,
}

/// The textfile's path and the thread that writes it.
#[derive(Debug)]
struct Textfile {
    path: PathBuf,
    tx: mpsc::SyncSender<Arc<str>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Outlets {
    /// Binds the endpoint and starts the threads `metrics` and `metrics-textfile` ask
    /// for. A port that cannot be bound is a warning naming it and the key: the warden
    /// goes on without the endpoint. `config` names the file, for the message.
    pub(crate) fn start(
        addr: Option<SocketAddr>,
        textfile: Option<&Path>,
        config: Option<&Path>,
    ) -> Outlets {
        let mut out = Outlets::default();
        if let Some(addr) = addr {
            match serve::Server::bind(addr) {
                Ok(server) => {
                    info!(address = %server.addr(), "serving metrics at http://{}/metrics", server.addr());
                    let slot: Slot = Arc::new(Mutex::new(Arc::from("")));
                    out.slot = Some(slot.clone());
                    let _ = spawn("metrics", move || server.run(&slot));
                }
                Err(e) => warn!("{}", bind_error(addr, &e, config)),
            }
        }
        if let Some(path) = textfile {
            // One text waits at most; a newer one is sent on the next pass anyway.
            let (tx, rx) = mpsc::sync_channel::<Arc<str>>(1);
            let to = path.to_owned();
            let thread = spawn("metrics-textfile", move || write_textfiles(&to, &rx));
            out.textfile = Some(Textfile {
                path: path.to_owned(),
                tx,
                thread,
            });
        }
        out
    }

    /// Whether anything takes the exposition: no rendering otherwise.
    #[must_use]
    pub(crate) fn is_empty(&self) -> bool {
        self.slot.is_none() && self.textfile.is_none()
    }

    /// Publishes one pass's exposition. Never waits: the slot's lock guards one swap,
    /// and a textfile write still under way makes this one skipped.
    pub(crate) fn publish(&self, text: &str) {
        let text: Arc<str> = Arc::from(text);
        if let Some(t) = &self.textfile {
            // Full (the disk is slow) or gone (the thread ended): skipped.
            let _ = t.tx.try_send(text.clone());
        }
        if let Some(slot) = &self.slot {
            let old = std::mem::replace(
                &mut *slot.lock().unwrap_or_else(PoisonError::into_inner),
                text,
            );
            // Freed after the lock is let go.
            drop(old);
        }
    }

    /// Withdraws the textfile as the daemon stops cleanly: its last write is let finish,
    /// then the file goes, so that `node_exporter` serves no series of a warden that was
    /// stopped on purpose. (A warden that dies leaves it: its age is the alert.)
    pub(crate) fn withdraw(self) {
        let Some(Textfile { path, tx, thread }) = self.textfile else {
            return;
        };
        drop(tx);
        if let Some(t) = thread {
            let _ = t.join();
        }
        for p in [tmp_path(&path), path] {
            match std::fs::remove_file(&p) {
                Ok(()) => info!(file = %p.display(), "metrics textfile removed"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => warn!(
                    "cannot remove the metrics textfile {}: {e}; remove it by hand, or node_exporter serves a stopped warden's series",
                    p.display()
                ),
            }
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Option<std::thread::JoinHandle<()>> {
    match std::thread::Builder::new().name(name.to_owned()).spawn(f) {
        Ok(t) => Some(t),
        Err(e) => {
            warn!("cannot start the {name} thread: {e}; the warden goes on without it");
            None
        }
    }
}

/// Why the endpoint could not be bound, and what to do.
fn bind_error(addr: SocketAddr, e: &std::io::Error, config: Option<&Path>) -> String {
    let file = config.map_or_else(
        || crate::config::DEFAULT_PATH.to_owned(),
        |p| p.display().to_string(),
    );
    let why = match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "port {} is in use (another vassal-warden, or another exporter?)",
            addr.port()
        ),
        std::io::ErrorKind::AddrNotAvailable => {
            format!("{} is not an address of this host", addr.ip())
        }
        _ => e.to_string(),
    };
    format!(
        "cannot serve metrics on {addr}: {why}; set `metrics = ADDRESS:PORT` (or `metrics = off`) in [warden] of {file} and restart; the warden goes on without the metrics endpoint"
    )
}

/// The textfile thread: writes each text it gets to `path`, atomically. A failure is
/// said once until it changes or clears.
fn write_textfiles(path: &Path, rx: &mpsc::Receiver<Arc<str>>) {
    let mut said: Option<String> = None;
    for text in rx {
        match write_atomically(path, text.as_bytes()) {
            Ok(()) => {
                if said.take().is_some() {
                    info!(file = %path.display(), "metrics textfile written again");
                }
            }
            Err(e) => {
                let msg = format!(
                    "cannot write the metrics textfile {}: {e}; check that its directory exists and is writable by the warden, or change `metrics-textfile` in [warden]",
                    path.display()
                );
                if said.as_ref() != Some(&msg) {
                    warn!("{msg}");
                    said = Some(msg);
                }
            }
        }
    }
}

/// `PATH.tmp` beside `path`.
fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes `bytes` to `path` as a whole or not at all: to `PATH.tmp` in the same
/// directory, fsync'd, renamed over `path`. The temporary name is removed first and
/// created anew, never followed: in a directory others can write, a link planted there
/// cannot make root write elsewhere. The file is 0644 whatever the umask.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    use std::io::Write;
    let tmp = tmp_path(path);
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let fd = rustix::fs::open(
        &tmp,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )?;
    // Readable by node_exporter's user whatever the umask (the unit's is 0027).
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o644))?;
    let mut f = std::fs::File::from(fd);
    let res = f
        .write_all(bytes)
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
mod tests;
