//! The alerting rules and the Grafana dashboard in `packaging/` against the real tools
//! and the real warden: promtool accepts the rules and their unit tests pass, every alert
//! is tested both firing and quiet, every `vassal_warden_*` name they use is one a
//! running warden serves, and the dashboard is JSON that Grafana can import, each panel
//! with a query that promtool accepts.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::bin;
use crate::harness::{Warden, scrape};

const RULES: &str = "packaging/prometheus/vassal-warden.rules.yml";
const RULES_TEST: &str = "packaging/prometheus/vassal-warden.rules.test.yml";
const DASHBOARD: &str = "packaging/grafana/vassal-warden.json";

/// The repository's root.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `promtool ARGS…` run from the repository's root: its verdict and what it said.
fn promtool(args: &[&str]) -> (bool, String) {
    tool(
        "promtool",
        "Debian's prometheus package; scripts/ensure-prometheus installs it",
        args,
    )
}

/// `PROGRAM ARGS…` run from the repository's root: its verdict and what it said
/// (`whence` says where the program comes from, should it be missing).
fn tool(program: &str, whence: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("{program} ({whence}): {e}"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// The value of `key: VALUE` lines of a YAML file, wherever they are (`- key:` too).
fn yaml_values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim_start().trim_start_matches("- ");
            l.strip_prefix(key)?.strip_prefix(':').map(str::trim)
        })
        .filter(|v| !v.is_empty())
        .collect()
}

/// The alerts the rules file defines.
fn alerts() -> BTreeSet<String> {
    let names: BTreeSet<String> = yaml_values(&read(RULES), "alert")
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert!(
        names.len() >= 10,
        "too few alerts found in {RULES}: {names:?}"
    );
    names
}

/// Every `vassal_warden_…` name in `text` (letters and underscores after the prefix).
fn metric_names(text: &str) -> BTreeSet<String> {
    const PREFIX: &str = "vassal_warden_";
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find(PREFIX) {
        let tail = &rest[at + PREFIX.len()..];
        let len = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(format!("{PREFIX}{}", &tail[..len]));
        rest = &tail[len..];
    }
    names
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// The dashboard's panels, each with its title.
fn panels(d: &Value) -> Vec<(&str, &Value)> {
    let panels = d["panels"].as_array().expect("a `panels` array");
    assert!(!panels.is_empty(), "{DASHBOARD} has no panels");
    panels
        .iter()
        .map(|p| (p["title"].as_str().unwrap_or("(untitled)"), p))
        .collect()
}

#[test]
fn promtool_check_rules_accepts_the_rules_file() {
    let (ok, said) = promtool(&["check", "rules", RULES]);
    assert!(ok, "promtool check rules {RULES} failed:\n{said}");
}

#[test]
fn promtool_unit_tests_of_the_rules_pass() {
    let (ok, said) = promtool(&["test", "rules", RULES_TEST]);
    assert!(ok, "promtool test rules {RULES_TEST} failed:\n{said}");
}

/// Each alert has a case that expects it to fire (an `exp_labels` under its
/// `alertname`) and one that expects it quiet (`exp_alerts: []`); a test of a name the
/// rules do not define would pass quietly forever, so there is none.
#[test]
fn every_alert_has_a_test_where_it_fires_and_one_where_it_does_not() {
    let alerts = alerts();
    let tests = read(RULES_TEST);
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    let mut current: Option<&str> = None;
    for line in tests.lines() {
        let l = line.trim_start().trim_start_matches("- ");
        if let Some(name) = l.strip_prefix("alertname:") {
            let name = name.trim();
            assert!(
                alerts.contains(name),
                "{RULES_TEST} tests `{name}`, which {RULES} does not define"
            );
            current = Some(name);
        } else if l.starts_with("exp_labels:") {
            fires.insert(current.expect("exp_labels before any alertname").to_owned());
        } else if l.replace(' ', "") == "exp_alerts:[]" {
            quiet.insert(current.expect("exp_alerts before any alertname").to_owned());
        }
    }
    let never_fires: Vec<_> = alerts.difference(&fires).collect();
    assert!(
        never_fires.is_empty(),
        "no test in {RULES_TEST} expects these alerts to fire: {never_fires:?}"
    );
    let never_quiet: Vec<_> = alerts.difference(&quiet).collect();
    assert!(
        never_quiet.is_empty(),
        "no test in {RULES_TEST} expects these alerts to stay quiet: {never_quiet:?}"
    );
}

/// The names come from a running warden's exposition (its `# TYPE` lines: every family
/// is declared even with no vassal to show), not from a list kept by hand.
#[test]
fn every_metric_the_rules_and_the_dashboard_use_is_one_the_warden_serves() {
    let dir = tempfile::tempdir().unwrap();
    let vassals = dir.path().join("vassals");
    fs::create_dir(&vassals).unwrap();
    let warden = Warden::start_watching(
        &bin(),
        dir.path(),
        &[vassals.display().to_string()],
        "",
        &[],
    );
    let text = scrape(&warden.metrics_addr());
    let mut served = BTreeSet::new();
    for line in text.lines() {
        let Some(decl) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = decl.split_once(' ').unwrap();
        served.insert(name.to_owned());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                served.insert(format!("{name}{suffix}"));
            }
        }
    }
    assert!(served.contains("vassal_warden_build_info"), "{text}");
    for path in [RULES, RULES_TEST, DASHBOARD] {
        let used = metric_names(&read(path));
        assert!(!used.is_empty(), "{path} names no vassal_warden_ metric");
        let unknown: Vec<_> = used.difference(&served).collect();
        assert!(
            unknown.is_empty(),
            "{path} uses metrics the warden does not serve: {unknown:?}\nit serves: {served:?}"
        );
    }
}

/// Importable anywhere: every panel queries through the `DS_PROMETHEUS` data source
/// variable, and the dashboard offers a `vassal` variable made from the vassals' series.
#[test]
fn the_dashboard_parses_and_every_panel_has_a_query_and_the_vassal_variable_exists() {
    let d = dashboard();
    assert!(
        d["schemaVersion"].as_u64().unwrap() >= 39,
        "{}",
        d["schemaVersion"]
    );
    let vars = d["templating"]["list"]
        .as_array()
        .expect("a templating list");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no `{name}` variable in {DASHBOARD}"))
    };
    assert_eq!(var("DS_PROMETHEUS")["type"], "datasource");
    assert_eq!(var("DS_PROMETHEUS")["query"], "prometheus");
    let vassal = var("vassal");
    assert_eq!(vassal["type"], "query");
    assert!(
        vassal["definition"]
            .as_str()
            .unwrap()
            .starts_with("label_values(vassal_warden_open_fds"),
        "{vassal}"
    );
    let mut ids = BTreeSet::new();
    for (title, p) in panels(&d) {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "{title}: its id is taken"
        );
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no targets");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(
                !expr.trim().is_empty(),
                "{title}: a target without expr: {t}"
            );
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        }
    }
}

/// Each panel's query, with Grafana's variables given values, is a recording rule that
/// `promtool check rules` must parse: a typo in a query fails here, not on the screen.
#[test]
fn every_dashboard_query_is_promql_that_promtool_accepts() {
    let d = dashboard();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut n = 0;
    for (title, p) in panels(&d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "5m")
                .replace("$instance", ".*")
                .replace("$vassal", ".*");
            n += 1;
            // A JSON string is a YAML double-quoted scalar.
            write!(
                rules,
                "      - record: dashboard_query_{n}\n        expr: {}\n        labels:\n          panel: {}\n",
                Value::from(expr),
                Value::from(title)
            )
            .unwrap();
        }
    }
    assert!(n >= 10, "only {n} queries in {DASHBOARD}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard.rules.yml");
    fs::write(&file, &rules).unwrap();
    let (ok, said) = promtool(&["check", "rules", file.to_str().unwrap()]);
    assert!(
        ok,
        "promtool refused a query of {DASHBOARD}:\n{said}\n{rules}"
    );
    assert!(said.contains(&format!("{n} rules found")), "{said}");
}

const ALERTMANAGER: &str = "packaging/alertmanager/vassal-warden.alertmanager.yml";

/// `amtool ARGS…` run from the repository's root: its verdict and what it said.
fn amtool(args: &[&str]) -> (bool, String) {
    tool(
        "amtool",
        "Debian's prometheus-alertmanager; scripts/ensure-prometheus installs it",
        args,
    )
}

/// Each alert of the rules file with its `severity`.
fn severities() -> Vec<(String, String)> {
    let text = read(RULES);
    let mut out = Vec::new();
    let mut alert: Option<String> = None;
    for line in text.lines() {
        let l = line.trim_start().trim_start_matches("- ");
        if let Some(name) = l.strip_prefix("alert:") {
            alert = Some(name.trim().to_owned());
        } else if let Some(sev) = l.strip_prefix("severity:")
            && let Some(name) = alert.take()
        {
            out.push((name, sev.trim().to_owned()));
        }
    }
    assert_eq!(
        out.len(),
        alerts().len(),
        "every alert has a severity: {out:?}"
    );
    out
}

/// The shipped Alertmanager example is a config Alertmanager accepts, and routes every
/// alert of the rules by its owner and severity: a team's critical alerts to its pager,
/// its warnings to its chat, and whatever names no owner (the warden's own alerts, and
/// vassals that name none) to the default receiver.
#[test]
fn the_alertmanager_example_routes_every_alert_by_owner_and_severity() {
    let (ok, said) = amtool(&["check-config", ALERTMANAGER]);
    assert!(ok, "amtool check-config refused the example: {said}");
    let config = format!("--config.file={ALERTMANAGER}");
    for (alert, severity) in severities() {
        for owner in [Some("team-shop"), Some("team-cart"), None] {
            let expected = match (owner, severity.as_str()) {
                (Some(team), "critical") => format!("{team}-pager"),
                (Some(team), _) => team.to_owned(),
                (None, _) => "ops".to_owned(),
            };
            let mut args = vec![
                "config".to_owned(),
                "routes".to_owned(),
                "test".to_owned(),
                config.clone(),
                format!("--verify.receivers={expected}"),
                format!("alertname={alert}"),
                format!("severity={severity}"),
                "vassal=shop.ini".to_owned(),
                "instance=web-17:9814".to_owned(),
            ];
            if let Some(team) = owner {
                args.push(format!("owner={team}"));
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (ok, said) = amtool(&args);
            assert!(
                ok,
                "{alert} ({severity}, owner {owner:?}) is not routed to {expected}: {said}"
            );
        }
    }
    // One leak across the fleet is one notification: grouped by vassal, not by host; and
    // a vassal's warnings are inhibited while its critical alert fires.
    let text = read(ALERTMANAGER);
    assert!(
        text.contains("group_by: [alertname, owner, vassal]"),
        "{text}"
    );
    assert!(
        text.contains("source_matchers: ['severity=\"critical\"']")
            && text.contains("target_matchers: ['severity=\"warning\"']")
            && text.contains("equal: [instance, vassal]"),
        "{text}"
    );
}
