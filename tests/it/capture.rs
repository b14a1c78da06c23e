//! Captures against a real Emperor: a bottle app (`tests/apps/shop.py`, mounted under
//! `/shop/`) leaks from helpers in its own module; the incident names them.

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::bin;
use crate::harness::{Emperor, VassalSpec, Warden, events, wait_for};

const SHOP_APP: &str = include_str!("../apps/shop.py");

/// The line 40 fds, armed halfway there; one sample over the line is enough.
const POLICY: &str = "reload-at = 40\nfor = 1\ncooldown = 10m\nverify = 30s\n";

/// A vassal running `shop.py`, with `extra` `[uwsgi]` lines.
fn shop(emp: &Emperor, name: &str, extra: &[&str]) -> i32 {
    shop_with(emp, name, extra, 64)
}

fn shop_with(emp: &Emperor, name: &str, extra: &[&str], max_fd: u32) -> i32 {
    fs::write(emp.root().join("shop.py"), SHOP_APP).unwrap();
    let spec = VassalSpec {
        extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        max_fd,
        ..VassalSpec::default()
    };
    let text = emp.ini_text(&spec).replace("/app.py", "/shop.py");
    fs::write(emp.ini_path(name), text).unwrap();
    let (_, workers) = emp.wait_running(name, 1);
    workers[0]
}

/// The line of `shop.py` that ends with `marker`.
fn line_of(marker: &str) -> u64 {
    let n = SHOP_APP
        .lines()
        .position(|l| l.trim_end().ends_with(marker))
        .expect("marker in shop.py");
    n as u64 + 1
}

/// Requests `path` until the warden arms a capture, then `after` more times.
fn leak_past_arming(emp: &Emperor, warden: &Warden, name: &str, path: &str, after: usize) {
    warden.leak_paced(emp, name, path, || warden.log().contains("capture armed"));
    wait_for(Duration::from_secs(10), "the capture to be armed", || {
        warden.log().contains("capture armed").then_some(())
    });
    // Armed late on a busy machine, the leak may already be near the limit: a request that
    // fails there (the app cannot open one more) is no failure of the capture.
    for _ in 0..after {
        let _ = emp.try_request(name, path);
    }
}

fn frames(site: &Value) -> Vec<(String, Option<u64>, String, String)> {
    site["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["file"].as_str().unwrap().to_owned(),
                f["line"].as_u64(),
                f["function"].as_str().unwrap().to_owned(),
                f["origin"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn app_frames(site: &Value, shop_py: &Path) -> Vec<(u64, String)> {
    frames(site)
        .into_iter()
        .filter(|(file, _, _, origin)| origin == "app" && file == shop_py.to_str().unwrap())
        .map(|(_, line, function, _)| (line.unwrap(), function))
        .collect()
}

#[test]
fn incident_names_the_helper_that_keeps_the_file_open_and_its_route() {
    let emp = Emperor::start();
    shop(&emp, "shop.ini", &["[vassal-warden]", "owner = team-shop"]);
    let warden = Warden::start(&bin(), &emp, POLICY, &[]);
    leak_past_arming(&emp, &warden, "shop.ini", "/shop/receipt", 30);

    let detected = warden.wait_record("detected", 0);
    let capture = &detected["capture"];
    let cat = emp.root().join("static/cat.jpg");
    assert_eq!(capture["target"], cat.to_str().unwrap(), "{capture:#}");
    let sites = capture["sites"].as_array().expect("sites");
    assert_eq!(sites.len(), 1, "one place keeps cat.jpg open: {capture:#}");
    let site = &sites[0];
    // Every open seen in the window is still open: none was closed.
    let open = site["open"].as_u64().unwrap();
    assert!(open >= 5, "{site:#}");
    assert_eq!(site["opened"], site["open"], "{site:#}");
    let shop_py = emp.root().join("shop.py");
    assert_eq!(
        app_frames(site, &shop_py),
        [
            (line_of("# leak site"), "open_receipt".to_owned()),
            (line_of("return open_receipt()"), "load_receipt".to_owned()),
            (line_of("    load_receipt()"), "receipt".to_owned()),
        ],
        "{site:#}"
    );
    // Innermost first: the helper is the first frame; bottle's own frames are marked as
    // the framework's, below the route.
    assert_eq!(frames(site)[0].2, "open_receipt", "{site:#}");
    assert!(
        frames(site)
            .iter()
            .any(|(file, _, _, origin)| file.ends_with("/bottle.py") && origin == "framework"),
        "{site:#}"
    );
    // The remediation is as it always was.
    let outcome = warden.wait_record("outcome", 0);
    assert_eq!(outcome["result"], "recovered", "{outcome}");
    assert_eq!(events(&warden.records()), ["detected", "action", "outcome"]);
    // The fleet sees the same site: one info series for the vassal, with its owner, its
    // innermost frame of the app.
    let page = crate::harness::scrape(&warden.metrics_addr());
    let info: Vec<&str> = page
        .lines()
        .filter(|l| l.starts_with("vassal_warden_leak_site_info{"))
        .collect();
    assert_eq!(
        info,
        [format!(
            "vassal_warden_leak_site_info{{vassal=\"shop.ini\",owner=\"team-shop\",function=\"open_receipt\",file=\"{}\",line=\"{}\"}} 1",
            shop_py.display(),
            line_of("# leak site")
        )],
        "{page}"
    );

    // `incidents` and `fds` show it as a traceback: outermost first, the helper last, the
    // app's own frames marked.
    let helper = format!(
        "> File \"{}\", line {}, in open_receipt",
        shop_py.display(),
        line_of("# leak site")
    );
    let route = format!(
        "> File \"{}\", line {}, in receipt",
        shop_py.display(),
        line_of("    load_receipt()")
    );
    for args in [&["incidents"][..], &["fds", "shop.ini"][..]] {
        let out = std::process::Command::new(bin())
            .args(args)
            .arg("-c")
            .arg(&warden.config)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}: {text}");
        let (Some(r), Some(h)) = (text.find(&route), text.find(&helper)) else {
            panic!("{args:?} shows no traceback:\n{text}");
        };
        assert!(r < h, "most recent call last:\n{text}");
        assert!(text.contains("still open of"), "{text}");
    }
}

#[test]
fn a_site_whose_files_are_closed_is_not_reported() {
    let emp = Emperor::start();
    shop(&emp, "shop.ini", &[]);
    let warden = Warden::start(&bin(), &emp, POLICY, &[]);
    leak_past_arming(&emp, &warden, "shop.ini", "/shop/mixed", 30);

    let detected = warden.wait_record("detected", 0);
    let capture = &detected["capture"];
    let sites = capture["sites"].as_array().expect("sites");
    assert_eq!(sites.len(), 1, "{capture:#}");
    let shop_py = emp.root().join("shop.py");
    let app = app_frames(&sites[0], &shop_py);
    assert_eq!(app[0], (line_of("# leak site"), "open_receipt".to_owned()));
    assert!(
        !app.iter().any(|(_, f)| f == "peek_cat"),
        "the site that closes what it opens is not a leak: {capture:#}"
    );
    // Both sites opened the file: twice the reports of the leaking site alone.
    let open = sites[0]["open"].as_u64().unwrap();
    assert!(
        capture["reports"].as_u64().unwrap() >= 2 * open,
        "{capture:#}"
    );
}

#[test]
fn the_capture_follows_what_grew_not_what_was_open_before() {
    let emp = Emperor::start();
    // 30 fds of config.db from the start: more than the leak has grown by when the
    // capture is armed, but none of them new.
    shop_with(&emp, "shop.ini", &["env = HOLD_AT_IMPORT=30"], 128);
    let policy = "reload-at = 90\nfor = 1\npredict = off\ncooldown = 10m\nverify = 30s\n";
    let warden = Warden::start(&bin(), &emp, policy, &[]);
    leak_past_arming(&emp, &warden, "shop.ini", "/shop/receipt", 40);

    let detected = warden.wait_record("detected", 0);
    let capture = &detected["capture"];
    let cat = emp.root().join("static/cat.jpg");
    assert_eq!(capture["target"], cat.to_str().unwrap(), "{capture:#}");
    let shop_py = emp.root().join("shop.py");
    assert_eq!(
        app_frames(&capture["sites"][0], &shop_py)[0],
        (line_of("# leak site"), "open_receipt".to_owned()),
        "{capture:#}"
    );
}

#[test]
fn a_python_thread_started_after_arming_is_read_too() {
    let emp = Emperor::start();
    shop_with(&emp, "shop.ini", &["enable-threads = true"], 128);
    // Armed near 30 fds, acted on at 80 and only there (a prediction from the leak before
    // arming could act before the pool's thread has leaked at all): however late the
    // capture is armed on a busy machine, the pool's thread leaks a few dozen first.
    let policy =
        "reload-at = 80\ncapture-at = 30%\nfor = 1\npredict = off\ncooldown = 10m\nverify = 30s\n";
    let warden = Warden::start(&bin(), &emp, policy, &[]);
    leak_past_arming(&emp, &warden, "shop.ini", "/shop/receipt", 0);
    // The pool's thread starts now, after the capture was armed; the warden reads the
    // interpreter's threads again on its next pass.
    emp.request("shop.ini", "/shop/pooled");
    std::thread::sleep(Duration::from_millis(600));
    for _ in 0..90 {
        if warden.records().iter().any(|r| r["event"] == "detected") {
            break;
        }
        emp.request("shop.ini", "/shop/pooled");
        std::thread::sleep(Duration::from_millis(20));
    }
    let detected = warden.wait_record("detected", 0);
    let capture = &detected["capture"];
    let sites = capture["sites"].as_array().expect("sites");
    let pooled = sites
        .iter()
        .find(|s| {
            frames(s)
                .iter()
                .any(|f| f.1.is_some() && f.0.ends_with("/thread.py"))
        })
        .unwrap_or_else(|| panic!("no site on the pool's thread: {capture:#}"));
    let shop_py = emp.root().join("shop.py");
    assert_eq!(
        app_frames(pooled, &shop_py),
        [(line_of("# leak site"), "open_receipt".to_owned())],
        "only the helper runs on the pool's thread: {capture:#}"
    );
    assert!(pooled["open"].as_u64().unwrap() >= 20, "{capture:#}");
}

#[test]
fn a_leak_of_connections_names_the_connect() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = listener.local_addr().unwrap();
    // Accepts and holds every connection, so that each stays established.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let emp = Emperor::start();
    shop(&emp, "shop.ini", &[&format!("env = PEER={peer}")]);
    let warden = Warden::start(&bin(), &emp, POLICY, &[]);
    leak_past_arming(&emp, &warden, "shop.ini", "/shop/connect", 30);

    let detected = warden.wait_record("detected", 0);
    let capture = &detected["capture"];
    assert_eq!(
        capture["target"],
        format!("connections to {peer}"),
        "{capture:#}"
    );
    let sites = capture["sites"].as_array().expect("sites");
    assert_eq!(sites.len(), 1, "{capture:#}");
    let shop_py = emp.root().join("shop.py");
    assert_eq!(
        app_frames(&sites[0], &shop_py)[0],
        (line_of("# connect site"), "connect_upstream".to_owned()),
        "{capture:#}"
    );
    // Inside the standard library's create_connection, innermost.
    let (file, _, function, origin) = &frames(&sites[0])[0];
    assert!(file.ends_with("/socket.py"), "{capture:#}");
    assert_eq!(function, "create_connection");
    assert_eq!(origin, "stdlib");
}

#[test]
fn without_the_capabilities_the_incident_says_why_and_the_remedy_is_unchanged() {
    let emp = Emperor::start();
    shop(&emp, "shop.ini", &[]);
    let config = crate::harness::write_config(
        emp.root(),
        "warden.ini",
        &[emp.vassals.display().to_string()],
        &format!("interval = 200ms\n\n[policy]\n{POLICY}\n"),
    );
    let drop = "-bpf,-perfmon,-sys_admin";
    let warden = Warden::start_under(
        &[
            "setpriv",
            &format!("--bounding-set={drop}"),
            &format!("--inh-caps={drop}"),
        ],
        &bin(),
        &config,
        &emp.root().join("incidents.jsonl"),
        &[],
    );
    for _ in 0..40 {
        emp.request("shop.ini", "/shop/receipt");
    }
    let detected = warden.wait_record("detected", 0);
    let why = detected["capture"]["unavailable"]
        .as_str()
        .unwrap_or_else(|| panic!("{detected:#}"));
    assert!(why.contains("CAP_BPF"), "{why}");
    assert!(!why.contains('\n'), "one line: {why}");
    let outcome = warden.wait_record("outcome", 0);
    assert_eq!(outcome["result"], "recovered", "{outcome}");
    assert_eq!(events(&warden.records()), ["detected", "action", "outcome"]);
}

/// A native program (no Python in it): the site is named by its own symbols.
#[test]
fn a_native_program_is_named_by_its_symbols() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    use vassal_warden::capture::Session;

    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("leaker");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/helpers/leaker.c");
    let cc = Command::new("cc")
        .args(["-O1", "-g", "-fno-omit-frame-pointer", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .unwrap();
    assert!(cc.success());
    let target = dir.path().join("kept.dat");
    fs::write(&target, b"data").unwrap();
    let mut child = crate::harness::Group::spawn(
        Command::new(&exe)
            .arg(&target)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    let (mut stdin, stdout) = child.pipes();
    let mut lines = BufReader::new(stdout).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");

    let mut session = Session::start(&[child.pid()], &target, 512).unwrap();
    for i in 1..=20 {
        writeln!(stdin, "go").unwrap();
        assert_eq!(lines.next().unwrap().unwrap(), i.to_string());
    }
    session.poll();
    let capture = session.finish();
    assert_eq!(capture.reports, 40, "two opens per line: {capture:#?}");
    assert_eq!(
        capture.sites.len(),
        1,
        "peek_one closes its own: {capture:#?}"
    );
    let site = &capture.sites[0];
    assert_eq!((site.open, site.opened), (20, 20), "{site:#?}");
    let first = &site.frames[0];
    assert_eq!(first.origin.as_str(), "native");
    assert!(first.function.starts_with("keep_one+"), "{site:#?}");
    assert_eq!(first.file, exe.to_str().unwrap());
    assert!(
        site.frames.iter().any(|f| f.function.starts_with("main+")),
        "{site:#?}"
    );
}

/// The sites of `incident`: in its `detected` record when the capture saw the target
/// opened before the incident, else in the `capture` record that follows, waited for.
pub(crate) fn sites_of(warden: &Warden, detected: &Value) -> Vec<Value> {
    let now = detected["capture"]["sites"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !now.is_empty() {
        return now;
    }
    assert_eq!(detected["capture"]["pending"], true, "{detected:#}");
    let later = wait_for(
        Duration::from_secs(60),
        "the incident's capture record",
        || {
            warden
                .records()
                .into_iter()
                .find(|r| r["event"] == "capture" && r["incident"] == detected["incident"])
        },
    );
    later["capture"]["sites"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A leak that reaches its line before any pass saw it on the way (here: captures are
/// armed only at 100% of the way, which no process below its line reaches). The
/// incident says why nothing saw it and that the capture goes on; the worker that
/// replaces the one recycled leaks the same file, and the site comes as a `capture`
/// record of the same incident, which `incidents` shows under it.
#[test]
fn a_leak_that_outruns_the_passes_gets_its_site_in_a_record_of_its_incident() {
    let emp = Emperor::start();
    shop(&emp, "shop.ini", &[]);
    let policy = format!("{POLICY}capture-at = 100%\n");
    let warden = Warden::start(&bin(), &emp, &policy, &[]);
    for _ in 0..45 {
        emp.request("shop.ini", "/shop/receipt");
    }
    let detected = warden.wait_record("detected", 0);
    let capture = &detected["capture"];
    assert_eq!(capture["pending"], true, "{detected:#}");
    assert!(capture.get("sites").is_none(), "{capture:#}");
    let cat = emp.root().join("static/cat.jpg");
    assert_eq!(capture["target"], cat.to_str().unwrap(), "{capture:#}");
    let why = capture["notes"][0].as_str().unwrap_or_default();
    assert!(
        why.starts_with("not armed before the incident: the process reached its line"),
        "{capture:#}"
    );
    // The leak goes on in the worker that replaces the one recycled.
    assert_eq!(warden.wait_record("outcome", 0)["result"], "recovered");
    emp.wait_running("shop.ini", 1);
    for _ in 0..12 {
        emp.request("shop.ini", "/shop/receipt");
    }
    let sites = sites_of(&warden, &detected);
    let shop_py = emp.root().join("shop.py");
    assert_eq!(
        app_frames(&sites[0], &shop_py),
        [
            (line_of("# leak site"), "open_receipt".to_owned()),
            (line_of("return open_receipt()"), "load_receipt".to_owned()),
            (line_of("    load_receipt()"), "receipt".to_owned()),
        ],
        "{sites:#?}"
    );
    let out = std::process::Command::new(bin())
        .args(["incidents", "-c"])
        .arg(&warden.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let helper = format!(
        "> File \"{}\", line {}, in open_receipt",
        shop_py.display(),
        line_of("# leak site")
    );
    let block = format!("{} shop.ini:", detected["incident"].as_str().unwrap());
    let Some((_, under)) = text.split_once(&block) else {
        panic!("no block for the incident:\n{text}");
    };
    assert!(under.contains(&helper), "{text}");
}

/// The demo's leak: a file a request, a request every 30 ms, reloaded at 75% after two
/// samples; `predict` may see it before any open was captured. Whichever way, a site is
/// recorded for its incident once the app leaks again after the reload.
#[test]
fn the_demos_fast_leak_gets_a_site_recorded_for_its_incident() {
    let emp = Emperor::start();
    emp.add_vassal("shop.ini", &VassalSpec::default());
    emp.wait_running("shop.ini", 1);
    let warden = Warden::start(
        &bin(),
        &emp,
        "reload-at = 75%\nfor = 2\ncooldown = 10m\nverify = 30s",
        &[],
    );
    let started = std::time::Instant::now();
    while warden.records().iter().all(|r| r["event"] != "action") {
        assert!(started.elapsed() < Duration::from_secs(60), "no action");
        let _ = emp.try_request("shop.ini", "/leak");
        std::thread::sleep(Duration::from_millis(30));
    }
    let detected = warden.wait_record("detected", 0);
    warden.wait_record("outcome", 0);
    emp.wait_running("shop.ini", 1);
    for _ in 0..20 {
        let _ = emp.try_request("shop.ini", "/leak");
        std::thread::sleep(Duration::from_millis(30));
    }
    let sites = sites_of(&warden, &detected);
    let app = emp.root().join("app.py");
    let leak_line = crate::harness::LEAKY_APP
        .lines()
        .position(|l| l.contains("LEAKED.append(open(TARGET"))
        .unwrap() as u64
        + 1;
    assert!(
        sites
            .iter()
            .any(|s| frames(s).iter().any(|f| f.0 == app.to_str().unwrap()
                && f.1 == Some(leak_line)
                && f.2 == "application")),
        "{sites:#?}"
    );
}
