use super::*;
use crate::audit::{Action, Detected, Outcome, Suppressed};
use crate::procs::Role;

fn record(vassal: &str, event: Event) -> Record {
    Record {
        owner: None,
        schema: crate::audit::SCHEMA,
        ts: "2026-01-01T00:00:00Z".into(),
        incident: "i".into(),
        vassal: vassal.into(),
        config: PathBuf::from("/v").join(vassal),
        event,
    }
}

fn detected() -> Event {
    Event::Detected(Detected {
        pid: 1,
        role: Role::Worker,
        fds: 900,
        limit: 1024,
        usage: 0.88,
        rule: "over".into(),
        rule_name: None,
        slope: None,
        eta_seconds: None,
        top: Vec::new(),
        by_kind: std::collections::BTreeMap::new(),
        capture: None,
    })
}

fn action(kind: ActionKind) -> Event {
    Event::Action(Action {
        action: kind,
        path: PathBuf::from("/v/a.ini"),
        mtime_before: None,
        mtime_after: None,
        dry_run: false,
        pids: Vec::new(),
        reason: None,
        note: None,
        manual: false,
    })
}

fn suppressed(reason: Reason) -> Event {
    Event::Suppressed(Suppressed {
        reason,
        action: None,
        detail: None,
        manual: false,
    })
}

/// The lines of `text` for metric `name` (samples only).
fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .collect()
}

fn sides(each: &[(Role, Side)]) -> Sides {
    let mut out = Sides::default();
    for (role, side) in each {
        out.add(*role, *side);
    }
    out
}

const NASTY: &str = "we\"ird\\na\nme.ini";

/// The counts of a few records of `shop.ini` and one of `NASTY`.
fn counted() -> Counts {
    let mut counts = Counts::default();
    for e in [
        detected(),
        action(ActionKind::Touch),
        Event::Outcome(Outcome {
            result: OutcomeResult::Recovered,
            fds_after: Some(10),
            seconds: 3.0,
            detail: None,
        }),
        suppressed(Reason::Cooldown),
        suppressed(Reason::Other("from_the_future".into())),
    ] {
        counts.count(&record("shop.ini", e));
    }
    counts.count(&record(NASTY, detected()));
    counts
}

fn rendered() -> String {
    let counts = counted();
    let mut passes = Histogram::default();
    passes.observe(Duration::from_micros(300));
    passes.observe(Duration::from_millis(30));
    passes.observe(Duration::from_secs(10));
    let w = WardenView {
        vassals: 3,
        emperors: 1,
        processes: 3,
        owed: 0,
        last_pass: SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_250),
        passes: &passes,
    };
    let side = |fds, limit| Side {
        fds,
        limit,
        line: limit * 8 / 10,
    };
    let vassals = [
        VassalView {
            name: "shop.ini",
            state: State::Running,
            sides: sides(&[
                (Role::Master, side(20, 1024)),
                (Role::Worker, side(100, 1024)),
                (Role::Worker, side(512, 1024)),
                (Role::Mule, side(900, 1024)),
            ]),
            flapping: true,
            given_up: false,
            last_action: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_799_999_000)),
            counts: counts.of("shop.ini"),
            hook_failures: 2,
            episode: Some((
                "flapping",
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_799_999_500),
            )),
            paused_until: None,
            owner: None,
        },
        VassalView {
            name: NASTY,
            state: State::Running,
            sides: sides(&[(Role::Master, side(5, 0))]),
            flapping: false,
            given_up: true,
            last_action: None,
            counts: counts.of(NASTY),
            hook_failures: 0,
            episode: None,
            paused_until: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_003_600)),
            owner: None,
        },
        VassalView {
            name: "idle.ini",
            state: State::Idle,
            sides: Sides::default(),
            flapping: false,
            given_up: false,
            last_action: None,
            counts: counts.of("idle.ini"),
            hook_failures: 0,
            episode: None,
            paused_until: None,
            owner: Some("team-idle"),
        },
    ];
    let mut s = String::from("left over from the last pass");
    render(&mut s, &w, &vassals);
    s
}

#[test]
fn every_family_has_help_and_type_before_its_samples_and_follows_the_naming_rules() {
    let text = rendered();
    assert!(!text.contains("left over"));
    let mut family: Option<(String, String)> = None;
    let mut seen = std::collections::HashSet::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if let Some(rest) = l.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(name.starts_with("vassal_warden_"), "{l}");
            assert!(seen.insert(name.to_owned()), "family {name} twice");
            let ty = lines[i + 1].strip_prefix("# TYPE ").unwrap();
            let (tname, kind) = ty.split_once(' ').unwrap();
            assert_eq!(tname, name);
            assert!(["gauge", "counter", "histogram"].contains(&kind), "{ty}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "a counter ends in _total: {name}");
            } else {
                assert!(!name.ends_with("_total"), "{name}");
            }
            assert!(
                !name.contains("_ms") && !name.contains("millis"),
                "base units: {name}"
            );
            family = Some((name.to_owned(), kind.to_owned()));
        } else if l.starts_with("# TYPE ") {
        } else {
            let (name, kind) = family.as_ref().expect("a sample before any HELP");
            let sample = l.split(['{', ' ']).next().unwrap();
            let ok = sample == name
                || (kind == "histogram"
                    && [
                        format!("{name}_bucket"),
                        format!("{name}_sum"),
                        format!("{name}_count"),
                    ]
                    .contains(&sample.to_owned()));
            assert!(ok, "sample {sample} under family {name}");
        }
    }
    for name in [
        "build_info",
        "vassals",
        "emperors",
        "pass_duration_seconds",
        "last_pass_timestamp_seconds",
        "open_fds",
        "max_fds",
        "line_fds",
        "fds_usage_ratio",
        "vassal_state",
        "flapping",
        "given_up",
        "paused_until_timestamp_seconds",
        "last_action_timestamp_seconds",
        "incidents_total",
        "actions_total",
        "outcomes_total",
        "suppressions_total",
        "hook_failures_total",
        "episode_started_timestamp_seconds",
    ] {
        assert!(seen.contains(&format!("vassal_warden_{name}")), "{name}");
    }
}

#[test]
fn values_and_labels_are_what_was_seen_and_counted() {
    let text = rendered();
    let has = |line: &str| assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
    has(&format!(
        "vassal_warden_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    ));
    has("vassal_warden_vassals 3");
    has("vassal_warden_last_pass_timestamp_seconds 1800000000.25");
    has("vassal_warden_open_fds{vassal=\"shop.ini\",role=\"master\"} 20");
    has("vassal_warden_open_fds{vassal=\"shop.ini\",role=\"worker\"} 512");
    has("vassal_warden_max_fds{vassal=\"shop.ini\",role=\"worker\"} 1024");
    has("vassal_warden_line_fds{vassal=\"shop.ini\",role=\"worker\"} 819");
    has("vassal_warden_fds_usage_ratio{vassal=\"shop.ini\",role=\"worker\"} 0.5");
    // The fullest worker only, and every other role the vassal runs.
    assert_eq!(
        samples(&text, "vassal_warden_open_fds")
            .iter()
            .filter(|l| l.contains("\"shop.ini\""))
            .count(),
        3
    );
    has("vassal_warden_open_fds{vassal=\"shop.ini\",role=\"mule\"} 900");
    has("vassal_warden_line_fds{vassal=\"shop.ini\",role=\"mule\"} 819");
    has("vassal_warden_vassal_state{vassal=\"shop.ini\",state=\"running\"} 1");
    has("vassal_warden_vassal_state{vassal=\"shop.ini\",state=\"idle\"} 0");
    // Its owner labels every series of a vassal that names one, after `vassal`.
    has("vassal_warden_vassal_state{vassal=\"idle.ini\",owner=\"team-idle\",state=\"idle\"} 1");
    has("vassal_warden_flapping{vassal=\"shop.ini\"} 1");
    has("vassal_warden_last_action_timestamp_seconds{vassal=\"shop.ini\"} 1799999000");
    has("vassal_warden_incidents_total{vassal=\"shop.ini\"} 1");
    has("vassal_warden_actions_total{vassal=\"shop.ini\",action=\"touch\"} 1");
    has("vassal_warden_actions_total{vassal=\"shop.ini\",action=\"recycle-worker\"} 0");
    has("vassal_warden_outcomes_total{vassal=\"shop.ini\",result=\"recovered\"} 1");
    has("vassal_warden_outcomes_total{vassal=\"shop.ini\",result=\"vanished\"} 0");
    has("vassal_warden_suppressions_total{vassal=\"shop.ini\",reason=\"cooldown\"} 1");
    has("vassal_warden_suppressions_total{vassal=\"shop.ini\",reason=\"busy\"} 0");
    has("vassal_warden_suppressions_total{vassal=\"shop.ini\",reason=\"from_the_future\"} 1");
    has("vassal_warden_hook_failures_total{vassal=\"shop.ini\"} 2");
    has(
        "vassal_warden_episode_started_timestamp_seconds{vassal=\"shop.ini\",reason=\"flapping\"} 1799999500",
    );
    assert_eq!(
        samples(&text, "vassal_warden_episode_started_timestamp_seconds").len(),
        1
    );
    // A vassal nothing happened to has every counter, at 0.
    has("vassal_warden_incidents_total{vassal=\"idle.ini\",owner=\"team-idle\"} 0");
    has("vassal_warden_hook_failures_total{vassal=\"idle.ini\",owner=\"team-idle\"} 0");
    assert!(
        text.lines()
            .filter(|l| l.contains("vassal=\"idle.ini\""))
            .all(|l| l.contains("vassal=\"idle.ini\",owner=\"team-idle\"")),
        "{text}"
    );
    assert!(!text.contains("vassal=\"shop.ini\",owner="), "{text}");
    assert_eq!(
        samples(&text, "vassal_warden_suppressions_total")
            .iter()
            .filter(|l| l.contains("idle.ini"))
            .count(),
        Reason::KNOWN.len()
    );
    // Not sampled: no fd gauges, and no last action when there was none.
    assert!(!text.contains("open_fds{vassal=\"idle.ini\""));
    assert_eq!(
        samples(&text, "vassal_warden_last_action_timestamp_seconds").len(),
        1
    );
    // Paused: when the pause ends, for the paused vassal only.
    assert_eq!(
        samples(&text, "vassal_warden_paused_until_timestamp_seconds"),
        [
            "vassal_warden_paused_until_timestamp_seconds{vassal=\"we\\\"ird\\\\na\\nme.ini\"} 1800003600"
        ]
    );
    // A limit of 0 has no ratio.
    assert!(
        text.contains("fds_usage_ratio{vassal=\"we\\\"ird\\\\na\\nme.ini\",role=\"master\"} NaN")
    );
}

#[test]
fn the_pass_histogram_is_cumulative_in_seconds() {
    let text = rendered();
    let buckets = samples(&text, "vassal_warden_pass_duration_seconds_bucket");
    assert_eq!(buckets.len(), BUCKETS.len() + 1);
    assert_eq!(
        buckets[0],
        "vassal_warden_pass_duration_seconds_bucket{le=\"0.0005\"} 1"
    );
    assert!(buckets.contains(&"vassal_warden_pass_duration_seconds_bucket{le=\"0.05\"} 2"));
    assert!(buckets.contains(&"vassal_warden_pass_duration_seconds_bucket{le=\"2.5\"} 2"));
    assert_eq!(
        *buckets.last().unwrap(),
        "vassal_warden_pass_duration_seconds_bucket{le=\"+Inf\"} 3"
    );
    assert!(text.contains("vassal_warden_pass_duration_seconds_count 3\n"));
    assert!(text.contains("vassal_warden_pass_duration_seconds_sum 10.0303\n"));
}

#[test]
fn a_label_value_with_a_quote_a_backslash_or_a_newline_is_escaped() {
    let mut s = String::new();
    escape_label(&mut s, NASTY);
    assert_eq!(s, "we\\\"ird\\\\na\\nme.ini");
    let text = rendered();
    // Every line is one line: no raw newline escaped a label.
    for l in text.lines().filter(|l| l.contains("ird")) {
        assert!(l.contains("{vassal=\"we\\\"ird\\\\na\\nme.ini\""), "{l}");
    }
    assert!(
        text.contains("vassal_warden_incidents_total{vassal=\"we\\\"ird\\\\na\\nme.ini\"} 1\n")
    );
}

#[test]
fn floats_are_written_as_prometheus_reads_them() {
    let mut s = String::new();
    for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.5, 1e-7, 3.0] {
        push_float(&mut s, x);
        s.push(' ');
    }
    assert_eq!(s, "NaN +Inf -Inf 0.5 0.0000001 3 ");
}

#[test]
fn every_state_name_is_listed() {
    use crate::mapping::{Mapping, State};
    for m in [
        Mapping::Idle,
        Mapping::NotRunning,
        Mapping::NoEmperor,
        Mapping::Disputed {
            master: 1,
            with: "b.ini".into(),
        },
    ] {
        assert!(State::ALL.contains(&m.state()), "{m:?}");
    }
    let names: Vec<&str> = State::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(
        names,
        ["running", "idle", "not_running", "no_emperor", "disputed"]
    );
    for s in State::ALL {
        assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
    }
}

#[test]
fn vassals_no_longer_watched_are_dropped_from_the_counts() {
    let mut counts = Counts::default();
    counts.count(&record("a.ini", detected()));
    counts.count(&record("b.ini", detected()));
    counts.retain(|n| n == "b.ini");
    assert!(counts.of("a.ini").is_none());
    assert_eq!(counts.of("b.ini").unwrap().incidents, 1);
}

#[test]
fn the_textfile_is_replaced_whole_and_never_through_a_planted_link() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vassal-warden.prom");
    write_atomically(&path, b"one\n").unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\n");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o644);
    // A link planted at the temporary name is removed, not followed.
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "keep").unwrap();
    std::os::unix::fs::symlink(&victim, tmp_path(&path)).unwrap();
    write_atomically(&path, b"two\n").unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    assert!(!tmp_path(&path).exists());
    let e = write_atomically(&dir.path().join("missing/x.prom"), b"x").unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
}

/// A running vassal for each name, quiet: master and worker at 10 fds of a line of 800.
fn quiet_vassals(names: &[String]) -> Vec<VassalView<'_>> {
    let side = Side {
        fds: 10,
        limit: 1024,
        line: 800,
    };
    names
        .iter()
        .map(|name| VassalView {
            name,
            state: State::Running,
            sides: sides(&[(Role::Master, side), (Role::Worker, side)]),
            flapping: false,
            given_up: false,
            last_action: None,
            counts: None,
            hook_failures: 0,
            episode: None,
            paused_until: None,
            owner: None,
        })
        .collect()
}

fn warden_view(passes: &Histogram, vassals: usize) -> WardenView<'_> {
    WardenView {
        vassals,
        emperors: 1,
        processes: 2 * vassals,
        owed: 0,
        last_pass: SystemTime::UNIX_EPOCH,
        passes,
    }
}

/// The vassal names that have series of their own on a page.
fn detailed_names(text: &str) -> std::collections::BTreeSet<String> {
    samples(text, "vassal_warden_vassal_state")
        .iter()
        .filter_map(|l| {
            let rest = l.split_once("{vassal=\"")?.1;
            Some(rest.split_once("\",state=")?.0.to_owned())
        })
        .collect()
}

#[test]
fn up_to_the_detail_limit_every_vassal_has_its_own_series() {
    let names: Vec<String> = (0..DETAIL_VASSALS)
        .map(|i| format!("app{i:05}.ini"))
        .collect();
    let views = quiet_vassals(&names);
    let passes = Histogram::default();
    let mut text = String::new();
    render(&mut text, &warden_view(&passes, names.len()), &views);
    assert_eq!(detailed_names(&text).len(), DETAIL_VASSALS);
    assert!(text.contains(&format!(
        "vassal_warden_vassals_detailed {DETAIL_VASSALS}\n"
    )));
    assert!(text.contains(&format!(
        "vassal_warden_vassals_in_state{{state=\"running\"}} {DETAIL_VASSALS}\n"
    )));
}

/// Few vassals, with names so long that the byte bound leaves some out: the one in
/// trouble, last in the listing, keeps its series; quiet ones give way.
#[test]
fn under_the_detail_limit_the_byte_bound_leaves_out_quiet_vassals_first() {
    let names: Vec<String> = (0..DETAIL_VASSALS)
        .map(|i| format!("{i:05}{}.ini", "x".repeat(240)))
        .collect();
    let mut views = quiet_vassals(&names);
    let last = DETAIL_VASSALS - 1;
    views[last].given_up = true;
    let passes = Histogram::default();
    let mut text = String::new();
    render(&mut text, &warden_view(&passes, names.len()), &views);
    let detailed = detailed_names(&text);
    assert!(
        detailed.len() < DETAIL_VASSALS,
        "the names are not long enough to need the bound"
    );
    assert!(
        detailed.contains(&names[last]),
        "the vassal given up lost its series"
    );
    assert!(text.contains(&format!(
        "vassal_warden_given_up{{vassal=\"{}\"}} 1\n",
        names[last]
    )));
}

/// Past the limit, only the vassals in trouble have series of their own; every vassal
/// is still counted in the totals, and the page stays small.
#[test]
fn past_the_detail_limit_only_vassals_in_trouble_have_their_own_series() {
    let names: Vec<String> = (0..5000).map(|i| format!("app{i:05}.ini")).collect();
    let mut views = quiet_vassals(&names);
    let passes = Histogram::default();
    let mut text = String::new();
    render(&mut text, &warden_view(&passes, names.len()), &views);
    assert!(detailed_names(&text).is_empty(), "{text}");
    assert!(text.contains("vassal_warden_vassals_in_state{state=\"running\"} 5000\n"));
    assert!(text.contains("vassal_warden_vassals_detailed 0\n"));
    assert!(text.len() < 8 * 1024, "{} bytes", text.len());

    let over = Side {
        fds: 900,
        limit: 1024,
        line: 800,
    };
    views[10].flapping = true;
    views[20].sides = sides(&[(Role::Mule, over)]);
    views[30].state = State::NotRunning;
    views[40].episode = Some(("alert_only", SystemTime::UNIX_EPOCH));
    views[50].hook_failures = 1;
    // Idle and without an Emperor: counted, not detailed.
    views[60].state = State::Idle;
    views[61].state = State::NoEmperor;
    render(&mut text, &warden_view(&passes, names.len()), &views);
    let want: std::collections::BTreeSet<String> = [10, 20, 30, 40, 50]
        .iter()
        .map(|i| names[*i].clone())
        .collect();
    assert_eq!(detailed_names(&text), want);
    assert!(text.contains("vassal_warden_vassals_over_line 1\n"));
    assert!(text.contains("vassal_warden_vassals_in_state{state=\"no_emperor\"} 1\n"));
    assert!(text.contains("vassal_warden_open_fds{vassal=\"app00020.ini\",role=\"mule\"} 900\n"));
}

/// Every vassal in trouble, with the longest names a file may have: the worst come
/// first, at most `DETAIL_VASSALS` of them, and the page stays within its bound.
#[test]
fn the_page_is_bounded_whatever_the_vassals_and_their_names() {
    let names: Vec<String> = (0..5000)
        .map(|i| format!("{i:05}{}.ini", "\"".repeat(246)))
        .collect();
    let mut views = quiet_vassals(&names);
    for (i, v) in views.iter_mut().enumerate() {
        v.sides = sides(&[(
            Role::Worker,
            Side {
                fds: 700 + (i as u64 % 300),
                limit: 1024,
                line: 800,
            },
        )]);
    }
    views[4999].given_up = true;
    let passes = Histogram::default();
    let mut text = String::new();
    render(&mut text, &warden_view(&passes, names.len()), &views);
    let detailed = detailed_names(&text);
    assert!(!detailed.is_empty());
    assert!(detailed.len() <= DETAIL_VASSALS, "{}", detailed.len());
    assert!(
        text.len() <= DETAIL_BYTES + 16 * 1024,
        "{} bytes for {} vassals",
        text.len(),
        detailed.len()
    );
    // The one given up is there first of all.
    assert!(
        text.contains("vassal_warden_given_up{vassal=\"04999"),
        "given up first"
    );
    // Then the fullest: none detailed is emptier than one left out.
    let fds_of = |name: &str| -> u64 {
        let i: usize = name[..5].parse().unwrap();
        700 + (i as u64 % 300)
    };
    let least_in = detailed
        .iter()
        .filter(|n| !n.starts_with("04999"))
        .map(|n| fds_of(n))
        .min()
        .unwrap();
    let most_out = (0..4999)
        .map(|i| format!("{i:05}"))
        .filter(|p| !detailed.iter().any(|n| n.starts_with(p.as_str())))
        .map(|p| fds_of(&p))
        .max()
        .unwrap();
    assert!(least_in >= most_out, "{least_in} < {most_out}");
}

#[test]
fn the_leak_site_is_the_apps_frame_at_the_fullest_site_cut_to_its_bound() {
    let capture: crate::audit::Capture = serde_json::from_value(serde_json::json!({
        "target": "/srv/cat.jpg",
        "sites": [
            {"open": 3, "opened": 3, "frames": [
                {"file": "/srv/a.py", "line": 1, "function": "few", "origin": "app"}]},
            {"open": 9, "opened": 9, "frames": [
                {"file": "/usr/lib/python3.11/io.py", "line": 5, "function": "open", "origin": "stdlib"},
                {"file": format!("/srv/{}/shop.py", "d".repeat(200)), "line": 42, "function": "f".repeat(300), "origin": "app"}]}
        ]
    }))
    .unwrap();
    let site = LeakSite::of(&capture).unwrap();
    assert_eq!(site.line, "42");
    assert_eq!(site.function, "f".repeat(MAX_SITE_LABEL));
    assert_eq!(site.file.chars().count(), MAX_SITE_LABEL);
    assert!(site.file.ends_with("/shop.py"), "{}", site.file);
    // No site, no series.
    let none: crate::audit::Capture =
        serde_json::from_value(serde_json::json!({"unavailable": "no BPF"})).unwrap();
    assert_eq!(LeakSite::of(&none), None);
}
