//! Every Debian people run, and a uWSGI from `pip`: the whole loop on each, in a root of
//! its own.
//!
//! Each stack is a minimal Debian root (`scripts/debian-root`: built by `mmdebstrap` from
//! Debian's registry, cached under the target directory) with its own uWSGI, CPython and
//! Bottle, and the one portable warden binary (`scripts/build-portable`, built against
//! Debian 11's glibc). The Emperor and the warden are started in it with `chroot`, each
//! in a mount namespace of its own whose root is a mount point (the root bound onto
//! itself, as container runtimes do), with the host's `/proc`, `/dev`, `/sys` and
//! `/tmp` bound in: the Emperor's files live in a directory of `/tmp` at the same path
//! inside and out, so the harness drives it as it drives one on the host.
//!
//! On each stack, one walk checks: discovery with no vassals in the config (the
//! Emperor is found running), the mapping of every process's role (worker, mule,
//! spooler, gateway, attached daemon, sub-Emperor: measured on this uWSGI), a leaking
//! worker recycled while the mule, the spooler, the gateway, the daemon and the
//! sub-Emperor keep running (none was signalled), a leaking master cured by a touch,
//! and a capture whose incident names the helper that leaks and its callers (function,
//! file, line) through a Bottle app mounted with `mount()` — and the interpreter's own
//! frames, walked from outside, on that CPython.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Emperor, EmperorOptions, Root, Warden, debian_root, run_ok, wait_for};
use crate::hostile::{BUSY_ROLES, add_busy_vassal, roles_in, start_time};

/// What every stack's root holds besides `minbase`.
const PACKAGES: &str = "uwsgi-core,uwsgi-plugin-python3,python3-bottle";
/// The pip stack's: a compiler and Python's headers, to build uWSGI.
const PIP_PACKAGES: &str =
    "python3-venv,python3-dev,python3-setuptools,python3-bottle,gcc,libc6-dev";
/// The warden inside each root.
const WARDEN: &str = "/usr/local/bin/vassal-warden";
/// Where `pip install uwsgi` puts uWSGI in the pip stack.
const VENV_UWSGI: &str = "/opt/venv/bin/uwsgi";
const SHOP_APP: &str = include_str!("../apps/shop.py");
/// Recycle or reload at 40 fds, on one sample over the line.
const POLICY: &str = "reload-at = 40\nfor = 1\ncooldown = 10m\nverify = 30s\n";

#[test]
fn debian_11_bullseye_uwsgi_2_0_19_cpython_3_9() {
    Stack::debian("bullseye", "3.9").walk();
}

#[test]
fn debian_12_bookworm_uwsgi_2_0_21_cpython_3_11() {
    Stack::debian("bookworm", "3.11").walk();
}

#[test]
fn debian_13_trixie_uwsgi_2_0_28_cpython_3_13() {
    Stack::debian("trixie", "3.13").walk();
}

#[test]
fn debian_unstable_uwsgi_2_0_31_cpython_3_14() {
    Stack::debian("sid", "3.14").walk();
}

#[test]
fn pip_installed_uwsgi_in_a_virtualenv_on_trixie() {
    Stack::pip().walk();
}

/// In a bare chroot (its root not a mount point, so that no line of `mountinfo` is the
/// root itself), the warden and the Emperor both inside: the incident still names the
/// code that leaks, and the leak is healed as anywhere else.
#[test]
fn in_a_chroot_whose_root_is_not_a_mount_point_the_code_is_still_named() {
    let stack = Stack::debian("bookworm", "3.11");
    let bare = stack.root.within_bare_chroot();
    let emp = Emperor::start_with(&EmperorOptions {
        within: bare.clone(),
        ..EmperorOptions::default()
    });
    add_shop(&emp);
    emp.wait_running("shop.ini", 1);
    let cfg = emp.config(&format!("interval = 500ms\n\n[policy]\n{POLICY}"));
    let warden = Warden::start_under(
        &bare.iter().map(String::as_str).collect::<Vec<_>>(),
        Path::new(WARDEN),
        Path::new(&cfg),
        &emp.root().join("incidents.jsonl"),
        &[],
    );
    warden.leak_paced(&emp, "shop.ini", "/shop/receipt", || {
        !warden.records().is_empty()
    });
    let detected = record(&warden, "shop.ini", "detected");
    let sites = crate::capture::sites_of(&warden, &detected);
    let first = sites
        .first()
        .and_then(|s| s["frames"][0]["function"].as_str());
    assert_eq!(first, Some("open_receipt"), "{detected:#}");
    assert_eq!(
        record(&warden, "shop.ini", "outcome")["result"],
        "recovered"
    );
}

/// One stack: a root of its own, with the portable warden in it.
struct Stack {
    root: Root,
    /// The CPython it runs, `3.X`.
    python: &'static str,
    pip: bool,
}

impl Stack {
    fn debian(suite: &str, python: &'static str) -> Stack {
        Stack::extract(&debian_root(suite, PACKAGES, &target_dir()), python, false)
    }

    fn pip() -> Stack {
        Stack::extract(&pip_root(), "3.13", true)
    }

    fn extract(tar: &Path, python: &'static str, pip: bool) -> Stack {
        let root = Root::extract(tar, Path::new(env!("CARGO_TARGET_TMPDIR")));
        let bin = root.path.join(WARDEN.trim_start_matches('/'));
        fs::create_dir_all(bin.parent().unwrap()).unwrap();
        fs::copy(portable_bin(), &bin).unwrap();
        Stack { root, python, pip }
    }

    fn within(&self) -> Vec<String> {
        self.root.within()
    }

    /// `vassal-warden ARGS` inside the root.
    fn warden(&self, args: &[&str]) -> Output {
        let within = self.within();
        Command::new(&within[0])
            .args(&within[1..])
            .arg(WARDEN)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn emperor(&self) -> Emperor {
        Emperor::start_with(&EmperorOptions {
            within: self.within(),
            uwsgi: self.pip.then(|| VENV_UWSGI.to_owned()),
            builtin_python: self.pip,
            ..EmperorOptions::default()
        })
    }

    fn walk(&self) {
        let emp = self.emperor();
        add_busy_vassal(&emp);
        add_cart(&emp);
        add_shop(&emp);
        // busy.ini's master has more children than workers: its roles are waited for.
        for (name, workers) in [("cart.ini", 2), ("shop.ini", 1)] {
            emp.wait_running(name, workers);
        }
        let roles = self.roles_found_with_no_config(&emp);
        let cfg = emp.config(&format!("interval = 500ms\n\n[policy]\n{POLICY}"));
        let warden = Warden::start_under(
            &self.within().iter().map(String::as_str).collect::<Vec<_>>(),
            Path::new(WARDEN),
            Path::new(&cfg),
            &emp.root().join("incidents.jsonl"),
            &[],
        );
        self.walks_the_interpreters_own_frames();
        self.names_the_code_that_leaks(&emp, &warden);
        recycles_only_the_leaking_workers(&emp, &warden, &roles);
        cures_a_leaking_master_by_a_touch(&emp, &warden);
    }

    /// `status --json`, with no vassals in its config, finds the Emperor and maps
    /// `busy.ini`'s processes to their roles; the master and workers match the
    /// Emperor's own.
    fn roles_found_with_no_config(
        &self,
        emp: &Emperor,
    ) -> std::collections::BTreeMap<String, Vec<i64>> {
        let cfg = crate::harness::write_config(emp.root(), "empty.ini", &[], "");
        let want: Vec<(&str, usize)> = std::iter::once(("master", 1)).chain(BUSY_ROLES).collect();
        let mut last = Value::Null;
        let roles = wait_for(Duration::from_secs(60), "every role of busy.ini", || {
            let out = self.warden(&["status", "--json", "-c", cfg.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "status failed in the root: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            last = serde_json::from_slice(&out.stdout).unwrap();
            let r = roles_in(&last, "busy.ini");
            want.iter()
                .all(|(role, n)| r.get(*role).map(Vec::len) == Some(*n))
                .then_some(r)
        });
        let emperors: Vec<i64> = last["emperors"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_i64)
            .collect();
        assert!(
            emperors.contains(&i64::from(emp.emperor_pid())),
            "the Emperor {} was not found: {last:#}",
            emp.emperor_pid()
        );
        let master = emp.master_of("busy.ini").expect("busy.ini's master");
        assert_eq!(roles["master"], [i64::from(master)], "{last:#}");
        // Every worker the warden names is a child of that master.
        let kids: Vec<i64> = crate::harness::children(master)
            .into_iter()
            .map(i64::from)
            .collect();
        assert!(roles["worker"].iter().all(|w| kids.contains(w)), "{last:#}");
        roles
    }

    /// The root's own `python3` waits three calls deep; its frames, read from outside
    /// as a capture reads them, are those three, with their lines.
    fn walks_the_interpreters_own_frames(&self) {
        use std::io::{BufRead, BufReader};
        const NESTED: &str = "import sys, time\n\
            def inner():\n    sys.stdout.write('ready\\n'); sys.stdout.flush()\n    \
            time.sleep(60)  # inner waits\n\
            def outer():\n    inner()  # outer calls\n\
            outer()  # module calls\n";
        let line = |marker: &str| {
            u32::try_from(NESTED.lines().position(|l| l.ends_with(marker)).unwrap() + 1).ok()
        };
        let dir = tempfile::Builder::new()
            .prefix("vw-nested-")
            .tempdir()
            .unwrap();
        let script = dir.path().join("nested.py");
        fs::write(&script, NESTED).unwrap();
        let within = self.within();
        let mut child = crate::harness::Group::spawn(
            Command::new(&within[0])
                .args(&within[1..])
                .arg("python3")
                .arg(&script)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped()),
        );
        let (_stdin, stdout) = child.pipes();
        let mut ready = String::new();
        BufReader::new(stdout).read_line(&mut ready).unwrap();
        assert_eq!(ready, "ready\n");
        std::thread::sleep(Duration::from_millis(200));
        let stacks = vassal_warden::capture::python_stacks(child.pid())
            .unwrap_or_else(|e| panic!("CPython {}: {e}", self.python));
        let main: Vec<(String, Option<u32>)> = stacks
            .last()
            .expect("a thread state")
            .iter()
            .filter(|f| f.file == script.to_str().unwrap())
            .map(|f| (f.function.clone(), f.line))
            .collect();
        assert_eq!(
            main,
            [
                ("inner".to_owned(), line("# inner waits")),
                ("outer".to_owned(), line("# outer calls")),
                ("<module>".to_owned(), line("# module calls")),
            ],
            "CPython {}",
            self.python
        );
    }

    /// The shop leaks from `open_receipt`, under `load_receipt`, under the route of a
    /// Bottle app mounted at `/shop/`: the incident names all three, with their lines;
    /// and the interpreter's frames read from outside are the same code.
    fn names_the_code_that_leaks(&self, emp: &Emperor, warden: &Warden) {
        // Slowly enough for a pass to see it halfway to its line (and arm), then on.
        warden.leak_paced(emp, "shop.ini", "/shop/receipt", || {
            warden.log().contains("shop.ini: capture armed")
        });
        for _ in 0..20 {
            if emp.try_request("shop.ini", "/shop/receipt").is_err() {
                break;
            }
        }
        let detected = record(warden, "shop.ini", "detected");
        let capture = &detected["capture"];
        let sites = capture["sites"]
            .as_array()
            .unwrap_or_else(|| panic!("CPython {}: no sites: {capture:#}", self.python));
        let shop_py = emp.root().join("shop.py");
        let site = sites
            .first()
            .unwrap_or_else(|| panic!("CPython {}: no sites: {capture:#}", self.python));
        let app: Vec<(u64, String)> = site["frames"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["file"] == shop_py.to_str().unwrap())
            .map(|f| {
                (
                    f["line"].as_u64().unwrap_or(0),
                    f["function"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            app,
            [
                (shop_line("# leak site"), "open_receipt".to_owned()),
                (
                    shop_line("return open_receipt()"),
                    "load_receipt".to_owned()
                ),
                (shop_line("    load_receipt()"), "receipt".to_owned()),
            ],
            "CPython {}: {capture:#}",
            self.python
        );
        let bottle = site["frames"].as_array().unwrap().iter().any(|f| {
            f["file"]
                .as_str()
                .is_some_and(|p| p.ends_with("/bottle.py"))
                && f["origin"] == "framework"
        });
        assert!(bottle, "Bottle's own frames, marked: {capture:#}");
        assert!(
            capture["notes"].as_array().is_none_or(Vec::is_empty),
            "nothing unread: {capture:#}"
        );
    }
}

/// `busy.ini`'s worker 1 leaks: only workers are recycled, and every other child of
/// its master keeps running (none was sent SIGHUP, which would end a mule).
fn recycles_only_the_leaking_workers(
    emp: &Emperor,
    warden: &Warden,
    roles: &std::collections::BTreeMap<String, Vec<i64>>,
) {
    let others: Vec<(i64, String)> = ["mule", "spooler", "gateway", "emperor", "attached"]
        .iter()
        .map(|r| roles[*r][0])
        .map(|pid| (pid, start_time(pid).unwrap()))
        .collect();
    for _ in 0..2000 {
        if emp.request("busy.ini", "/leak").1 >= 45 {
            break;
        }
    }
    let action = record(warden, "busy.ini", "action");
    assert_eq!(action["action"], "recycle-worker", "{action}");
    for pid in action["pids"].as_array().unwrap() {
        assert!(roles["worker"].contains(&pid.as_i64().unwrap()), "{action}");
    }
    let outcome = record(warden, "busy.ini", "outcome");
    assert_eq!(outcome["result"], "recovered", "{outcome}");
    for (pid, st) in &others {
        assert_eq!(
            start_time(*pid).as_ref(),
            Some(st),
            "PID {pid} (not a worker) was replaced"
        );
    }
}

/// `cart.ini`'s master leaks 40 files once: the warden touches its ini, the Emperor
/// reloads it, and the new master is below the line.
fn cures_a_leaking_master_by_a_touch(emp: &Emperor, warden: &Warden) {
    let action = record(warden, "cart.ini", "action");
    assert_eq!(action["action"], "touch", "{action}");
    let outcome = record(warden, "cart.ini", "outcome");
    assert_eq!(outcome["result"], "recovered", "{outcome}");
    assert!(emp.reloads("cart.ini") >= 1, "{}", emp.log_text());
}

/// The first record of `vassal` with `event`, waited for.
fn record(warden: &Warden, vassal: &str, event: &str) -> Value {
    wait_for(
        Duration::from_secs(90),
        &format!("{vassal}'s {event}"),
        || {
            warden
                .records()
                .into_iter()
                .find(|r| r["vassal"] == vassal && r["event"] == event)
        },
    )
}

/// A vassal whose master leaks 40 files in its first life (a reload cures it).
fn add_cart(emp: &Emperor) {
    let once = emp.root().join("run/cart-leaked");
    emp.add_vassal(
        "cart.ini",
        &crate::harness::VassalSpec {
            processes: 2,
            extra: vec![
                "enable-threads = true".into(),
                "env = MASTER_LEAK_PER_SEC=20".into(),
                "env = MASTER_LEAK_UPTO=40".into(),
                format!("env = MASTER_LEAK_ONCE={}", once.display()),
            ],
            ..crate::harness::VassalSpec::default()
        },
    );
}

/// The Bottle shop (`tests/apps/shop.py`, a sub-app mounted at `/shop/`).
fn add_shop(emp: &Emperor) {
    fs::write(emp.root().join("shop.py"), SHOP_APP).unwrap();
    let spec = crate::harness::VassalSpec::default();
    let text = emp.ini_text(&spec).replace("/app.py", "/shop.py");
    fs::write(emp.ini_path("shop.ini"), text).unwrap();
}

fn shop_line(marker: &str) -> u64 {
    let n = SHOP_APP
        .lines()
        .position(|l| l.trim_end().ends_with(marker))
        .expect("marker in shop.py");
    n as u64 + 1
}

/// Trixie with a virtualenv at /opt/venv in which `pip install uwsgi` built uWSGI from
/// its source (fetched once from the Python package index): cached as a tarball of its own.
fn pip_root() -> PathBuf {
    let base = debian_root("trixie", PIP_PACKAGES, &target_dir());
    let cache = base.parent().unwrap();
    let sdist_dir = cache.join("pip");
    let lock = fs::File::create(cache.join("pip.lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let tar = cache.join(format!(
        "{}-venv-uwsgi.tar",
        base.file_stem().unwrap().to_string_lossy()
    ));
    if tar.exists() {
        return tar;
    }
    if !sdist_dir.is_dir() {
        run_ok(
            Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "download",
                    "--no-binary",
                    ":all:",
                    "--no-deps",
                    "-d",
                ])
                .arg(sdist_dir.with_extension("partial"))
                .arg("uwsgi"),
        );
        fs::rename(sdist_dir.with_extension("partial"), &sdist_dir).unwrap();
    }
    let sdist = fs::read_dir(&sdist_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .expect("uWSGI's source");
    let root = Root::extract(&base, cache);
    fs::copy(&sdist, root.path.join("root/uwsgi.tar.gz")).unwrap();
    let stack = Stack {
        root,
        python: "3.13",
        pip: true,
    };
    let within = stack.within();
    run_ok(
        Command::new(&within[0])
            .args(&within[1..])
            .args(["sh", "-euc"])
            .arg(
                "python3 -m venv --system-site-packages /opt/venv && \
                 /opt/venv/bin/pip install --no-index --no-build-isolation /root/uwsgi.tar.gz && \
                 rm /root/uwsgi.tar.gz",
            ),
    );
    let partial = tar.with_extension("partial");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&stack.root.path)
            .arg("-cf")
            .arg(&partial)
            .arg("."),
    );
    fs::rename(&partial, &tar).unwrap();
    tar
}

/// The warden built to start on every Debian release: `$VASSAL_WARDEN_PORTABLE`, else
/// what `scripts/build-portable` builds (it prints the path).
fn portable_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("VASSAL_WARDEN_PORTABLE") {
        return PathBuf::from(p);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = run_ok(
        Command::new(manifest.join("scripts/build-portable"))
            .env("CARGO_TARGET_DIR", target_dir())
            .current_dir(manifest),
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The cargo target directory (the parent of `CARGO_TARGET_TMPDIR`).
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_owned()
}
