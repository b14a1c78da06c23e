//! The metrics endpoint with the real tools: Debian's `prometheus` scrapes a warden that
//! heals a real leaking vassal, and a query sees the counters move; `promtool check
//! metrics` accepts the exposition; a client that hangs on the endpoint never delays a
//! pass; a port in use leaves the warden running, and the textfile is written anyway.

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rustix::process::Signal;
use serde_json::Value;

use crate::bin;
use crate::harness::{Emperor, Group, VassalSpec, Warden, scrape, wait_for, write_config};

/// One HTTP/1.0 GET; the status code and the body.
fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let (head, body) = buf
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no HTTP head in {buf:?}")))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
    Ok((status, body.to_owned()))
}

/// `promtool check metrics` on `text`: its verdict and what it said.
fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/ensure-prometheus installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// A port free on loopback now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Prometheus server scraping `target` every second, in `dir`, killed on drop.
struct Prometheus {
    addr: String,
    log: std::path::PathBuf,
    _group: Group,
}

impl Prometheus {
    fn start(dir: &Path, target: &str) -> Prometheus {
        let config = dir.join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: vassal-warden\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let log = dir.join("prometheus.log");
        let logf = fs::File::create(&log).unwrap();
        let group = Group::spawn(
            Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("tsdb").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .stdin(Stdio::null())
                .stdout(logf.try_clone().unwrap())
                .stderr(logf),
        );
        Prometheus {
            addr,
            log,
            _group: group,
        }
    }

    /// The value of an instant query with one result, as Prometheus writes it, if it has
    /// one yet.
    fn query(&self, promql: &str) -> Option<String> {
        let mut path = String::from("/api/v1/query?query=");
        for b in promql.bytes() {
            if b.is_ascii_alphanumeric() || b"_.-~".contains(&b) {
                path.push(b as char);
            } else {
                write!(path, "%{b:02X}").unwrap();
            }
        }
        let (status, body) = http_get(&self.addr, &path).ok()?;
        if status != 200 {
            return None;
        }
        let v: Value = serde_json::from_str(&body).ok()?;
        let result = v["data"]["result"].as_array()?;
        assert!(result.len() <= 1, "{promql}: {body}");
        Some(result.first()?["value"][1].as_str()?.to_owned())
    }

    /// Waits until `promql` has a value that `ok` accepts.
    fn wait(&self, promql: &str, ok: impl Fn(f64) -> bool) {
        wait_for(Duration::from_secs(60), promql, || {
            self.query(promql)
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| ok(*v))
        });
    }

    /// Waits until `promql` is exactly `value` (counts and flags are whole numbers).
    fn wait_is(&self, promql: &str, value: &str) {
        wait_for(
            Duration::from_secs(60),
            &format!("{promql} == {value}"),
            || (self.query(promql)?.as_str() == value).then_some(()),
        );
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- prometheus log ---\n{}",
                fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// A vassal leaks past its line while Prometheus scrapes the warden every second: after
/// the touch heals it, a query shows the incident, the action and the outcome counted
/// (and increased over the window), and the gauges show the vassal running and its fds
/// back down. What Prometheus scraped is what the incident log says.
#[test]
fn prometheus_scrapes_a_healed_leak_and_promtool_accepts_the_exposition() {
    let emp = Emperor::start();
    emp.add_vassal("leaky.ini", &VassalSpec::default());
    emp.wait_running("leaky.ini", 1);
    let warden = Warden::start(
        &bin(),
        &emp,
        "reload-at = 40\nfor = 2\naction = touch\ncooldown = 10m\nverify = 30s\n",
        &[],
    );
    let target = warden.metrics_addr();
    let prom = Prometheus::start(emp.root(), &target);
    let leaky = "vassal=\"leaky.ini\"";
    // Scraped before the leak: every counter is there, at 0.
    prom.wait_is(&format!("vassal_warden_incidents_total{{{leaky}}}"), "0");
    prom.wait_is(
        &format!("vassal_warden_vassal_state{{{leaky},state=\"running\"}}"),
        "1",
    );
    prom.wait_is("vassal_warden_build_info", "1");

    emp.leak("leaky.ini", 45);
    let outcome = warden.wait_record("outcome", 0);
    assert_eq!(outcome["result"], "recovered", "{outcome}");

    prom.wait_is(&format!("vassal_warden_incidents_total{{{leaky}}}"), "1");
    prom.wait_is(
        &format!("vassal_warden_actions_total{{{leaky},action=\"touch\"}}"),
        "1",
    );
    prom.wait_is(
        &format!("vassal_warden_outcomes_total{{{leaky},result=\"recovered\"}}"),
        "1",
    );
    // The counters moved within what Prometheus holds, not just exist at 1.
    prom.wait(
        &format!("increase(vassal_warden_actions_total{{{leaky},action=\"touch\"}}[5m])"),
        |v| v > 0.0,
    );
    prom.wait(
        &format!("increase(vassal_warden_incidents_total{{{leaky}}}[5m])"),
        |v| v > 0.0,
    );
    prom.wait(
        &format!("vassal_warden_last_action_timestamp_seconds{{{leaky}}}"),
        |v| v > 1.7e9,
    );
    // Healed: the worker is far below its line again.
    prom.wait(
        &format!("vassal_warden_open_fds{{{leaky},role=\"worker\"}} < vassal_warden_line_fds{{{leaky},role=\"worker\"}}"),
        |_| true,
    );
    assert_eq!(
        prom.query(&format!("vassal_warden_max_fds{{{leaky},role=\"worker\"}}"))
            .as_deref(),
        Some("64")
    );
    prom.wait("vassal_warden_pass_duration_seconds_count", |v| v > 1.0);

    // The log and the counters agree.
    let records = warden.records();
    let text = scrape(&target);
    let n = |event: &str| records.iter().filter(|r| r["event"] == event).count();
    let has = |line: String| assert!(text.lines().any(|l| l == line), "no `{line}`:\n{text}");
    has(format!(
        "vassal_warden_incidents_total{{{leaky}}} {}",
        n("detected")
    ));
    has(format!(
        "vassal_warden_actions_total{{{leaky},action=\"touch\"}} {}",
        n("action")
    ));

    let (ok, said) = promtool_check(&text);
    assert!(ok, "promtool check metrics refused it: {said}\n{text}");
    assert!(said.trim().is_empty(), "promtool: {said}");
}

/// Clients that connect and never send a request hold the endpoint, never the loop:
/// passes go on at their interval meanwhile, and once they are dropped the endpoint
/// answers again with a fresh pass.
#[test]
fn a_client_that_never_sends_a_request_does_not_delay_passes() {
    let emp = Emperor::start();
    emp.add_vassal("quiet.ini", &VassalSpec::default());
    emp.wait_running("quiet.ini", 1);
    let warden = Warden::start(&bin(), &emp, "reload-at = 40\n", &[]);
    let addr = warden.metrics_addr();
    let before = warden.passes();
    // Several silent clients: each holds the one-at-a-time endpoint for its deadline.
    let silent: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    std::thread::sleep(Duration::from_secs(3));
    let during = warden.passes() - before;
    // At a 200 ms interval, 3 s is about 15 passes; a loop waiting on the clients would
    // show none.
    assert!(
        during >= 5,
        "only {during} passes in 3 s with silent clients"
    );
    drop(silent);
    let text = wait_for(
        Duration::from_secs(20),
        "a scrape after the silent clients",
        || {
            http_get(&addr, "/metrics")
                .ok()
                .filter(|(s, _)| *s == 200)
                .map(|(_, b)| b)
        },
    );
    assert!(
        text.contains("vassal_warden_vassal_state{vassal=\"quiet.ini\",state=\"running\"} 1"),
        "{text}"
    );
    let (status, _) = http_get(&addr, "/").unwrap();
    assert_eq!(status, 404);
}

/// The port is taken: the warden says which and what to set, goes on with its passes,
/// and still writes the textfile (atomically: no temporary file is left beside it).
#[test]
fn a_port_in_use_is_a_warning_and_the_textfile_is_written_anyway() {
    let emp = Emperor::start();
    emp.add_vassal("app.ini", &VassalSpec::default());
    emp.wait_running("app.ini", 1);
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let textfile = emp.root().join("textfile/vassal-warden.prom");
    fs::create_dir_all(textfile.parent().unwrap()).unwrap();
    let config = write_config(
        emp.root(),
        "warden.ini",
        &[emp.vassals.display().to_string()],
        &format!(
            "interval = 200ms\nmetrics = 127.0.0.1:{port}\nmetrics-textfile = {}\n",
            textfile.display()
        ),
    );
    let warden =
        Warden::start_with_config(&bin(), &config, &emp.root().join("incidents.jsonl"), &[]);
    let log = warden.log();
    assert!(
        log.contains(&format!(
            "cannot serve metrics on 127.0.0.1:{port}: port {port} is in use"
        )),
        "{log}"
    );
    assert!(log.contains("`metrics = ADDRESS:PORT`"), "{log}");
    assert!(log.contains(&config.display().to_string()), "{log}");
    let before = warden.passes();
    let text = wait_for(Duration::from_secs(20), "the textfile", || {
        fs::read_to_string(&textfile).ok().filter(|t| {
            t.contains("vassal_warden_vassal_state{vassal=\"app.ini\",state=\"running\"} 1")
        })
    });
    wait_for(Duration::from_secs(20), "passes after the warning", || {
        (warden.passes() > before + 3).then_some(())
    });
    let (ok, said) = promtool_check(&text);
    assert!(
        ok,
        "promtool check metrics refused the textfile: {said}\n{text}"
    );
    let names: Vec<String> = fs::read_dir(textfile.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n == "vassal-warden.prom" || n == "vassal-warden.prom.tmp"),
        "{names:?}"
    );
    drop(taken);
}

/// A warden stopped on purpose withdraws its textfile, so that `node_exporter` serves no
/// series of a host nothing guards; one that dies leaves it, whose age is the alert.
#[test]
fn the_textfile_goes_with_a_clean_stop_and_stays_after_a_crash() {
    let emp = Emperor::start();
    emp.add_vassal("app.ini", &VassalSpec::default());
    emp.wait_running("app.ini", 1);
    let textfile = emp.root().join("textfile/vassal-warden.prom");
    fs::create_dir_all(textfile.parent().unwrap()).unwrap();
    let config = write_config(
        emp.root(),
        "warden.ini",
        &[emp.vassals.display().to_string()],
        &format!(
            "interval = 200ms\nmetrics = off\nmetrics-textfile = {}\n",
            textfile.display()
        ),
    );
    let log = emp.root().join("incidents.jsonl");
    for (signal, stays) in [(Signal::KILL, true), (Signal::TERM, false)] {
        // Each warden's own log: the next one is waited for by its own first pass.
        let _ = fs::remove_file(emp.root().join("warden.log"));
        let mut warden = Warden::start_with_config(&bin(), &config, &log, &[]);
        wait_for(Duration::from_secs(20), "the textfile", || {
            fs::metadata(&textfile).ok()
        });
        warden.kill(signal);
        let status = wait_for(Duration::from_secs(20), "the warden to stop", || {
            warden.try_wait()
        });
        assert_eq!(status.success(), signal == Signal::TERM, "{status:?}");
        assert_eq!(
            textfile.exists(),
            stays,
            "after {signal:?}: {}",
            warden.log()
        );
    }
}

/// Two hundred clients hold connections to the endpoint: a hundred silent, a hundred
/// sending their request a byte at a time, and one asking for the page and never reading
/// it. A scrape is answered while they all hold on (one at a time, each would hold it
/// for its deadline: minutes in all), and the silent ones are closed at their deadline.
#[test]
fn a_scrape_is_answered_while_two_hundred_slow_or_idle_clients_hold_connections() {
    let emp = Emperor::start();
    emp.add_vassal("quiet.ini", &VassalSpec::default());
    emp.wait_running("quiet.ini", 1);
    let warden = Warden::start(&bin(), &emp, "reload-at = 40\n", &[]);
    let addr = warden.metrics_addr();
    let mut silent: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    let mut slow: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    let mut reader = TcpStream::connect(&addr).unwrap();
    write!(reader, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    for s in &mut slow {
        s.write_all(b"G").unwrap();
    }
    // Within the clients' deadline (2 s), with a read timeout well under what a queue of
    // two hundred would take.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .expect("no answer while slow clients hold connections");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        answer.contains("vassal_warden_vassal_state{vassal=\"quiet.ini\",state=\"running\"} 1"),
        "{answer}"
    );
    // The slow ones are still connected: one more byte each is taken.
    for s in &mut slow {
        s.write_all(b"E").unwrap();
    }
    // A silent one is closed once its deadline passes: it reads the end of its stream.
    silent[0]
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(silent[0].read(&mut buf).unwrap(), 0);
    // The reader that never read its answer has it waiting.
    reader
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut page = String::new();
    reader.read_to_string(&mut page).unwrap();
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
}
