//! Finding every vassal and every process of it, the way real hosts run the Emperor:
//! Debian's two-process layout, rewritten process titles, symlinks, globs, several
//! Emperors, files and directories replaced while the warden watches.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::bin;
use crate::harness;
use crate::harness::{Emperor, EmperorOptions, VassalSpec, Warden, children, mtime, wait_for};

const POLICY: &str = "reload-at = 40\nfor = 2\ncooldown = 10m\nverify = 30s\n";

fn json(args: &[&str]) -> Value {
    let out = Command::new(bin()).args(args).output().unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stderr)))
}

fn write_config(emp: &Emperor, vassals: &[String]) -> String {
    harness::write_config(emp.root(), "check.ini", vassals, "")
        .display()
        .to_string()
}

fn vassal<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["vassals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["vassal"] == name)
        .unwrap_or_else(|| panic!("no vassal {name} in {doc:#}"))
}

fn pids(v: &Value) -> (i64, Vec<i64>) {
    let procs = v["processes"].as_array().unwrap();
    let mut workers: Vec<i64> = procs[1..]
        .iter()
        .map(|p| p["pid"].as_i64().unwrap())
        .collect();
    workers.sort_unstable();
    (procs[0]["pid"].as_i64().unwrap(), workers)
}

fn as_i64(v: &[i32]) -> Vec<i64> {
    v.iter().map(|x| i64::from(*x)).collect()
}

#[test]
fn debian_layout_is_one_emperor_and_its_vassals_are_mapped() {
    let emp = Emperor::start_with(&EmperorOptions {
        debian: true,
        ..EmperorOptions::default()
    });
    emp.add_vassal(
        "shop.ini",
        &VassalSpec {
            processes: 2,
            ..VassalSpec::default()
        },
    );
    let (master, workers) = emp.wait_running("shop.ini", 2);
    assert_ne!(
        emp.emperor_pid(),
        emp.pid(),
        "the Emperor's master should have forked the Emperor"
    );

    let cfg = write_config(&emp, &[emp.vassals.display().to_string()]);
    let doc = json(&["check", "-c", &cfg, "--json"]);
    let ours: Vec<&Value> = doc["emperors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["pid"] == emp.emperor_pid() || e["pid"] == emp.pid())
        .collect();
    assert_eq!(ours.len(), 1, "{doc:#}");
    assert_eq!(ours[0]["pid"], emp.emperor_pid());
    assert_eq!(ours[0]["master_pid"], emp.pid());
    assert_eq!(
        ours[0]["config_file"],
        emp.root().join("emperor.ini").to_str().unwrap()
    );
    assert_eq!(ours[0]["sources"][0], emp.vassals.to_str().unwrap());
    let v = vassal(&doc, "shop.ini");
    assert_eq!(v["method"], "process-tree");
    assert_eq!(pids(v), (i64::from(master), as_i64(&workers)));

    // With no `vassals` configured, the running Emperors say where vassals are.
    let cfg = write_config(&emp, &[]);
    let doc = json(&["check", "-c", &cfg, "--json"]);
    assert_eq!(doc["sources_from"], "running Emperors");
    assert!(
        doc["sources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == emp.vassals.to_str().unwrap())
    );
}

fn rewritten_titles(stats: bool) {
    let emp = Emperor::start_with(&EmperorOptions {
        stats,
        ..EmperorOptions::default()
    });
    let titles = vec![
        "procname-prefix-spaced = %n".to_owned(),
        "auto-procname = true".to_owned(),
    ];
    emp.add_vassal(
        "bysock.ini",
        &VassalSpec {
            extra: titles.clone(),
            ..VassalSpec::default()
        },
    );
    let mut with_pidfile = titles;
    with_pidfile.push(format!(
        "safe-pidfile = {}/run/%n.pid",
        emp.root().display()
    ));
    emp.add_vassal(
        "bypid.ini",
        &VassalSpec {
            extra: with_pidfile,
            ..VassalSpec::default()
        },
    );
    // Wait for both to serve, then find their masters by their sockets' owners.
    for n in ["bysock.ini", "bypid.ini"] {
        wait_for(Duration::from_secs(60), n, || emp.try_request(n, "/").ok());
    }
    let masters = wait_for(Duration::from_secs(30), "two vassal masters", || {
        let m = children(emp.emperor_pid());
        (m.len() == 2).then_some(m)
    });
    for m in &masters {
        let cmdline = std::fs::read_to_string(format!("/proc/{m}/cmdline")).unwrap();
        assert!(
            !cmdline.contains("--ini"),
            "title not rewritten: {cmdline:?}"
        );
    }
    let cfg = write_config(&emp, &[emp.vassals.display().to_string()]);
    let doc = json(&["status", "-c", &cfg, "--json"]);
    for (name, method) in [
        (
            "bysock.ini",
            if stats { "emperor-stats" } else { "sockets" },
        ),
        ("bypid.ini", if stats { "emperor-stats" } else { "pidfile" }),
    ] {
        let v = vassal(&doc, name);
        assert_eq!(v["state"], "running", "{v:#}");
        assert_eq!(v["method"], method, "{v:#}");
        let (master, workers) = pids(v);
        // The worker that answers requests is a child of the master found.
        let (worker, _) = emp.request(name, "/");
        assert_eq!(workers, vec![i64::from(worker)]);
        assert!(masters.iter().any(|m| i64::from(*m) == master));
    }
    let (a, _) = pids(vassal(&doc, "bysock.ini"));
    let (b, _) = pids(vassal(&doc, "bypid.ini"));
    assert_ne!(a, b);
}

#[test]
fn rewritten_process_titles_are_mapped_by_sockets_and_pidfile() {
    rewritten_titles(false);
}

#[test]
fn rewritten_process_titles_are_mapped_by_emperor_stats() {
    rewritten_titles(true);
}

fn symlinked(nofollow: bool) {
    let emp = Emperor::start_with(&EmperorOptions {
        nofollow,
        ..EmperorOptions::default()
    });
    let outside = emp.root().join("configs");
    std::fs::create_dir_all(&outside).unwrap();
    let target = outside.join("link.ini");
    std::fs::write(&target, emp.ini_text(&VassalSpec::default())).unwrap();
    let link = emp.ini_path("link.ini");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let (_, workers) = emp.wait_running("link.ini", 1);
    let lmtime = |p: &Path| std::fs::symlink_metadata(p).unwrap().modified().unwrap();
    let (target_before, link_before) = (mtime(&target), lmtime(&link));

    let cfg = write_config(&emp, &[emp.vassals.display().to_string()]);
    let doc = json(&["check", "-c", &cfg, "--json"]);
    assert_eq!(
        vassal(&doc, "link.ini")["link_target"],
        target.to_str().unwrap()
    );

    let warden = Warden::start(&bin(), &emp, POLICY, &[]);
    emp.leak("link.ini", 40);
    let outcome = warden.wait_record("outcome", 0);
    assert_eq!(outcome["result"], "recovered", "{outcome}");
    // The record names the file whose mtime changed.
    let touched = if nofollow { &link } else { &target };
    let action = warden.wait_record("action", 0);
    assert_eq!(action["path"], touched.to_str().unwrap(), "{action}");
    assert_eq!(emp.reloads("link.ini"), 1);
    emp.wait_replaced("link.ini", &workers);
    if nofollow {
        assert!(
            lmtime(&link) > link_before,
            "the link itself was not touched"
        );
        assert_eq!(
            mtime(&target),
            target_before,
            "the target was touched under emperor-nofollow"
        );
    } else {
        assert!(mtime(&target) > target_before, "the target was not touched");
        assert_eq!(
            lmtime(&link),
            link_before,
            "the link was touched, not its target"
        );
    }
}

#[test]
fn symlinked_vassal_is_reloaded_by_touching_its_target() {
    symlinked(false);
}

#[test]
fn symlinked_vassal_under_emperor_nofollow_is_reloaded_by_touching_the_link() {
    symlinked(true);
}

#[test]
fn glob_emperor_names_vassals_by_path_and_reloads_them() {
    let emp = Emperor::start_with(&EmperorOptions {
        glob: true,
        ..EmperorOptions::default()
    });
    let path = emp.add_vassal("g.ini", &VassalSpec::default());
    let name = path.display().to_string();
    emp.add_vassal("ignored.xml.off", &VassalSpec::default());
    let (_, workers) = emp.wait_running(&name, 1);
    let glob = format!("{}/*.ini", emp.vassals.display());
    let warden = Warden::start_watching(&bin(), emp.root(), &[glob], POLICY, &[]);
    emp.leak(&name, 40);
    let outcome = warden.wait_record("outcome", 0);
    assert_eq!(outcome["result"], "recovered");
    let records = warden.records();
    assert!(
        records.iter().all(|r| r["vassal"] == name.as_str()),
        "{records:#?}"
    );
    assert_eq!(emp.reloads(&name), 1);
    emp.wait_replaced(&name, &workers);
}

#[test]
fn two_emperors_each_vassal_is_mapped_to_its_own_and_only_the_leaker_reloads() {
    let one = Emperor::start();
    let two = Emperor::start();
    one.add_vassal("calm.ini", &VassalSpec::default());
    two.add_vassal("leaky.ini", &VassalSpec::default());
    let (calm_master, _) = one.wait_running("calm.ini", 1);
    let (leaky_master, workers) = two.wait_running("leaky.ini", 1);
    let dirs = [
        one.vassals.display().to_string(),
        two.vassals.display().to_string(),
    ];
    let cfg = write_config(&one, &dirs);
    let doc = json(&["status", "-c", &cfg, "--json"]);
    assert_eq!(vassal(&doc, "calm.ini")["emperor"], one.emperor_pid());
    assert_eq!(vassal(&doc, "leaky.ini")["emperor"], two.emperor_pid());
    assert_eq!(pids(vassal(&doc, "calm.ini")).0, i64::from(calm_master));
    assert_eq!(pids(vassal(&doc, "leaky.ini")).0, i64::from(leaky_master));

    let warden = Warden::start_watching(&bin(), one.root(), &dirs, POLICY, &[]);
    two.leak("leaky.ini", 40);
    assert_eq!(warden.wait_record("outcome", 0)["result"], "recovered");
    two.wait_replaced("leaky.ini", &workers);
    assert_eq!(two.reloads("leaky.ini"), 1);
    assert_eq!(one.reloads("calm.ini"), 0);
}

#[test]
fn vassals_added_and_removed_while_running_are_followed() {
    let emp = Emperor::start();
    emp.add_vassal("first.ini", &VassalSpec::default());
    emp.wait_running("first.ini", 1);
    let warden = Warden::start(&bin(), &emp, POLICY, &[]);

    let added = emp.add_vassal("added.ini", &VassalSpec::default());
    let (_, workers) = emp.wait_running("added.ini", 1);
    wait_for(
        Duration::from_secs(30),
        "the warden to watch added.ini",
        || {
            warden
                .log()
                .contains("vassal=added.ini config=")
                .then_some(())
        },
    );
    std::fs::remove_file(emp.ini_path("first.ini")).unwrap();
    wait_for(
        Duration::from_secs(30),
        "the warden to drop first.ini",
        || {
            warden
                .log()
                .lines()
                .any(|l| l.contains("vassal file removed") && l.contains("first.ini"))
                .then_some(())
        },
    );

    emp.leak("added.ini", 40);
    let action = warden.wait_record("action", 0);
    assert_eq!(action["path"], added.to_str().unwrap());
    assert_eq!(warden.wait_record("outcome", 0)["result"], "recovered");
    emp.wait_replaced("added.ini", &workers);
}

#[test]
fn ini_replaced_by_rename_and_directory_recreated_are_followed() {
    let emp = Emperor::start();
    let ini = emp.add_vassal("leaky.ini", &VassalSpec::default());
    let (_, first) = emp.wait_running("leaky.ini", 1);
    let warden = Warden::start(
        &bin(),
        &emp,
        "reload-at = 40\nfor = 2\ncooldown = 1s\nverify = 30s\n",
        &[],
    );

    // A deploy writes a new file beside it and renames it over the old one.
    let tmp = emp.vassals.join(".leaky.ini.new");
    std::fs::write(&tmp, emp.ini_text(&VassalSpec::default()) + "# deployed\n").unwrap();
    // A second later than the old file, or the Emperor (whole seconds) would not see it.
    let later = mtime(&ini) + Duration::from_secs(1);
    std::fs::File::options()
        .write(true)
        .open(&tmp)
        .unwrap()
        .set_modified(later)
        .unwrap();
    std::fs::rename(&tmp, &ini).unwrap();
    let (_, second) = emp.wait_replaced("leaky.ini", &first);
    emp.leak("leaky.ini", 40);
    assert_eq!(warden.wait_record("outcome", 0)["result"], "recovered");
    let (_, third) = emp.wait_replaced("leaky.ini", &second);

    // The whole directory goes away and comes back with a new vassal.
    std::fs::remove_dir_all(&emp.vassals).unwrap();
    wait_for(
        Duration::from_secs(30),
        "the warden to drop leaky.ini",
        || {
            warden
                .log()
                .lines()
                .any(|l| l.contains("vassal file removed") && l.contains("leaky.ini"))
                .then_some(())
        },
    );
    std::fs::create_dir_all(&emp.vassals).unwrap();
    let fresh = emp.add_vassal("fresh.ini", &VassalSpec::default());
    let (_, fresh_workers) = emp.wait_running("fresh.ini", 1);
    wait_for(
        Duration::from_secs(30),
        "the warden to watch fresh.ini",
        || {
            warden
                .log()
                .contains("vassal=fresh.ini config=")
                .then_some(())
        },
    );
    emp.leak("fresh.ini", 40);
    let action = warden.wait_record("action", 1);
    assert_eq!(action["path"], fresh.to_str().unwrap());
    assert_eq!(warden.wait_record("outcome", 1)["result"], "recovered");
    emp.wait_replaced("fresh.ini", &fresh_workers);
    assert!(!third.is_empty());
}

#[test]
fn hundreds_of_files_added_at_once_are_all_watched_and_removed_ones_dropped() {
    // A directory no Emperor watches (so none of these start): the warden still follows
    // the set of files.
    let dir = tempfile::Builder::new()
        .prefix("vw-test-")
        .tempdir()
        .unwrap();
    let vassals = dir.path().join("vassals");
    std::fs::create_dir_all(&vassals).unwrap();
    std::fs::write(vassals.join("first.ini"), "[uwsgi]\nmaster = true\n").unwrap();
    let warden = Warden::start_watching(
        &bin(),
        dir.path(),
        &[vassals.display().to_string()],
        "",
        &[],
    );
    for i in 0..300 {
        std::fs::write(
            vassals.join(format!("app{i:03}.ini")),
            "[uwsgi]\nmaster = true\n",
        )
        .unwrap();
    }
    let watched = |log: &str| {
        log.lines()
            .filter(|l| l.contains("watching vassal"))
            .count()
    };
    wait_for(
        Duration::from_secs(30),
        "all 301 vassals to be watched",
        || (watched(&warden.log()) == 301).then_some(()),
    );
    for i in 0..150 {
        std::fs::remove_file(vassals.join(format!("app{i:03}.ini"))).unwrap();
    }
    wait_for(Duration::from_secs(30), "150 vassals to be dropped", || {
        let removed = warden
            .log()
            .lines()
            .filter(|l| l.contains("vassal file removed"))
            .count();
        (removed == 150).then_some(())
    });
}

#[test]
fn tyrant_vassals_run_as_their_owners_and_are_mapped_and_reloaded() {
    let emp = Emperor::start_with(&EmperorOptions {
        tyrant: true,
        ..EmperorOptions::default()
    });
    // Written first under another name, so the Emperor never sees it owned by root.
    let staged = emp.root().join("staged.ini");
    std::fs::write(&staged, emp.ini_text(&VassalSpec::default())).unwrap();
    std::os::unix::fs::chown(&staged, Some(65534), Some(65534)).unwrap();
    let ini = emp.ini_path("owned.ini");
    std::fs::rename(&staged, &ini).unwrap();
    let (master, workers) = emp.wait_running("owned.ini", 1);
    let uid = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
            .unwrap()
    };
    assert_eq!(uid(master), "65534", "tyrant mode did not apply");

    let cfg = write_config(&emp, &[emp.vassals.display().to_string()]);
    let doc = json(&["check", "-c", &cfg, "--json"]);
    let ours = doc["emperors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["pid"] == emp.emperor_pid())
        .unwrap();
    assert_eq!(ours["tyrant"], true);
    assert_eq!(
        pids(vassal(&doc, "owned.ini")),
        (i64::from(master), as_i64(&workers))
    );

    let warden = Warden::start(&bin(), &emp, POLICY, &[]);
    emp.leak("owned.ini", 40);
    assert_eq!(warden.wait_record("outcome", 0)["result"], "recovered");
    emp.wait_replaced("owned.ini", &workers);
    assert_eq!(emp.reloads("owned.ini"), 1);
    // The touch kept the file's owner, so it still runs as that user.
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&ini).unwrap()),
        65534
    );
}

/// An Emperor root starts outside systemd (as a container's entrypoint, supervisord or
/// an init script would) that drops to `www-data` once started, as Debian's
/// `emperor.ini` has it: it is still root's, so its directory (root's) is watched and
/// its vassals mapped.
#[test]
fn a_root_started_emperor_that_dropped_privileges_is_watched_however_it_was_started() {
    let emp = Emperor::start_with(&EmperorOptions {
        debian: true,
        drop_to: Some("www-data".into()),
        ..EmperorOptions::default()
    });
    emp.add_vassal("shop.ini", &VassalSpec::default());
    let (master, _) = emp.wait_running("shop.ini", 1);
    let cfg = crate::harness::write_config(emp.root(), "found.ini", &[], "");
    let check = json(&["check", "--json", "-c", cfg.to_str().unwrap()]);
    let ours = check["emperors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["pid"] == emp.emperor_pid())
        .cloned()
        .unwrap_or_else(|| panic!("the Emperor was not found: {check:#}"));
    let dir = std::fs::canonicalize(&emp.vassals).unwrap();
    assert_eq!(
        ours["sources"],
        serde_json::json!([dir.to_str().unwrap()]),
        "{check:#}"
    );
    let status = json(&["status", "--json", "-c", cfg.to_str().unwrap()]);
    // Other tests' Emperors may run vassals of the same name: this one's, by its path.
    let shop = status["vassals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["config"] == emp.ini_path("shop.ini").to_str().unwrap())
        .unwrap_or_else(|| panic!("shop.ini is not watched: {status:#}"));
    assert_eq!(shop["state"], "running", "{status:#}");
    assert_eq!(pids(shop).0, i64::from(master), "{status:#}");
}
