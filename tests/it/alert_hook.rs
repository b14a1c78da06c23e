//! One record per episode, and the `on-event` alert hook, against a real Emperor: a
//! vassal whose leak comes back after every reload is one flapping episode (started,
//! reminded, ended), the hook hears exactly the records that need a human, and a hook that
//! hangs does not keep the warden from healing another vassal.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::process::Signal;
use serde_json::Value;

use crate::bin;
use crate::harness::{
    Emperor, HookGroups, VassalSpec, Warden, count, read_records, wait_for, write_config,
};

/// A hook script in the Emperor's root: `body` runs with `$d` its directory.
fn hook_script(root: &Path, body: &str) -> PathBuf {
    let path = root.join("hook.sh");
    fs::write(&path, format!("#!/bin/sh\nd=$(dirname \"$0\")\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn alive(pid: i32) -> bool {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty()
        && !stat
            .rsplit(')')
            .next()
            .unwrap()
            .trim_start()
            .starts_with('Z')
}

const FLAPPY: &str = "reload-at = 40\nfor = 1\npredict = off\ncooldown = 1s\n\
                      max-reloads = 1 per 1h\naction = touch\nverify = 30s\n";

#[test]
fn a_flapping_vassal_is_one_episode_and_the_hook_hears_exactly_what_needs_a_human() {
    let emp = Emperor::start();
    let ini = emp.add_vassal("flappy.ini", &VassalSpec::default());
    let (_, workers) = emp.wait_running("flappy.ini", 1);
    let root = emp.root();
    let hook = hook_script(
        root,
        "cat >> $d/heard.jsonl\necho \"$WARDEN_SUMMARY\" >> $d/summaries",
    );
    let extra = format!(
        "interval = 200ms\nremind = 2s\non-event = {}\n\n[policy]\n{FLAPPY}",
        hook.display()
    );
    let vassals = [emp.vassals.display().to_string()];
    let config = write_config(root, "warden.ini", &vassals, &extra);
    let warden = Warden::start_with_config(&bin(), &config, &root.join("incidents.jsonl"), &[]);
    emp.leak("flappy.ini", 40);
    assert_eq!(warden.wait_record("outcome", 0)["result"], "recovered");
    emp.wait_replaced("flappy.ini", &workers);
    // The leak comes back at once: a reload is not allowed for an hour.
    emp.leak("flappy.ini", 40);
    let started = warden.wait_record("suppressed", 0);
    assert_eq!(started["reason"], "flapping", "{started}");
    // Over the line on every pass (200 ms) for seconds: reminded every 2 s, nothing more.
    let second = warden.wait_record("reminder", 1);
    assert_eq!(second["incident"], started["incident"]);
    assert_eq!(second["since"], started["ts"]);
    assert!(second["seconds"].as_f64().unwrap() >= 3.9, "{second}");
    fs::remove_file(&ini).unwrap();
    let ended = warden.wait_record("ended", 0);
    assert_eq!(ended["incident"], started["incident"]);
    assert_eq!(ended["detail"], "the vassal file was removed");
    let records = warden.records();
    assert_eq!(count(&records, "detected"), 2, "{records:#?}");
    assert_eq!(count(&records, "suppressed"), 1, "{records:#?}");
    // The hook heard the episode (start, reminders, end) and not the healed incident.
    let expected: Vec<Value> = records
        .into_iter()
        .filter(|r| r["reason"] == "flapping")
        .collect();
    assert!(expected.len() >= 4, "{expected:#?}");
    let heard_file = root.join("heard.jsonl");
    let heard = wait_for(Duration::from_secs(20), "the hook's runs", || {
        let heard = read_records(&heard_file);
        (heard.len() >= expected.len()).then_some(heard)
    });
    assert_eq!(heard, expected);
    let summaries = fs::read_to_string(root.join("summaries")).unwrap();
    assert!(
        summaries.starts_with("flappy.ini: suppressed flapping: "),
        "{summaries}"
    );
}

#[test]
fn a_hook_that_hangs_does_not_keep_the_warden_from_healing_another_vassal() {
    let emp = Emperor::start();
    emp.add_vassal("first.ini", &VassalSpec::default());
    emp.add_vassal("second.ini", &VassalSpec::default());
    emp.wait_running("first.ini", 1);
    let (_, second_workers) = emp.wait_running("second.ini", 1);
    let root = emp.root();
    // Every record runs the hook, and its first run never ends.
    let hook = hook_script(root, "echo $$ >> $d/pids\nexec sleep 3600");
    let _groups = HookGroups(root.join("pids"));
    let extra = format!(
        "interval = 200ms\non-event = {}\non-event-for = all\non-event-timeout = 10m\n\n\
         [policy]\nreload-at = 40\nfor = 1\npredict = off\naction = touch\nverify = 30s\n",
        hook.display()
    );
    let vassals = [emp.vassals.display().to_string()];
    let config = write_config(root, "warden.ini", &vassals, &extra);
    let mut warden = Warden::start_with_config(&bin(), &config, &root.join("incidents.jsonl"), &[]);
    emp.leak("first.ini", 40);
    assert_eq!(warden.wait_record("outcome", 0)["result"], "recovered");
    let hung: i32 = wait_for(Duration::from_secs(10), "the hook's first run", || {
        fs::read_to_string(root.join("pids"))
            .ok()?
            .trim()
            .parse()
            .ok()
    });
    assert!(alive(hung));
    // The hook hangs on the first record; the second vassal is healed all the same.
    emp.leak("second.ini", 40);
    let healed = warden.wait_record("outcome", 1);
    assert_eq!(
        (healed["vassal"].as_str(), healed["result"].as_str()),
        (Some("second.ini"), Some("recovered"))
    );
    emp.wait_replaced("second.ini", &second_workers);
    assert!(alive(hung), "the hook was not hanging all along");
    // Stopping does not wait out the hook: the run still going is killed with its group.
    warden.kill(Signal::TERM);
    let status = wait_for(Duration::from_secs(20), "the warden to stop", || {
        warden.try_wait()
    });
    assert!(status.success(), "{status:?}");
    assert!(!alive(hung), "the hook {hung} outlived the warden");
    assert_eq!(
        fs::read_to_string(root.join("pids"))
            .unwrap()
            .lines()
            .count(),
        1,
        "the queued runs were started after the stop"
    );
}

#[test]
fn an_episode_left_open_for_a_file_removed_while_no_warden_ran_is_ended_at_start() {
    let emp = Emperor::start();
    let ini = emp.add_vassal("alerting.ini", &VassalSpec::default());
    emp.add_vassal("other.ini", &VassalSpec::default());
    emp.wait_running("alerting.ini", 1);
    let policy = "reload-at = 40\nfor = 1\npredict = off\naction = alert\n";
    let mut first = crate::harness::Warden::start(&bin(), &emp, policy, &[]);
    emp.leak("alerting.ini", 40);
    let started = first.wait_record("suppressed", 0);
    assert_eq!(started["reason"], "alert_only");
    first.kill(Signal::KILL);
    fs::remove_file(&ini).unwrap();
    let second =
        crate::harness::Warden::start_with_config(&bin(), &first.config, &first.audit_log, &[]);
    let ended = second.wait_record("ended", 0);
    assert_eq!(ended["incident"], started["incident"]);
    assert_eq!(ended["vassal"], "alerting.ini");
    assert_eq!(ended["detail"], "the vassal file is gone");
}

#[test]
fn a_hook_changed_by_sighup_hears_the_records_from_then_on() {
    let emp = Emperor::start();
    emp.add_vassal("leaky.ini", &VassalSpec::default());
    let (_, workers) = emp.wait_running("leaky.ini", 1);
    let root = emp.root();
    let first = hook_script(root, "cat >> $d/first.jsonl");
    let second = root.join("second.sh");
    fs::write(
        &second,
        "#!/bin/sh\ncat >> $(dirname \"$0\")/second.jsonl\n",
    )
    .unwrap();
    fs::set_permissions(&second, fs::Permissions::from_mode(0o755)).unwrap();
    let config = |hook: &Path| {
        format!(
            "interval = 200ms\non-event = {}\non-event-for = all\n\n[policy]\n\
             reload-at = 40\nfor = 1\npredict = off\naction = touch\ncooldown = 1s\nverify = 30s\n",
            hook.display()
        )
    };
    let vassals = [emp.vassals.display().to_string()];
    let cfg = write_config(root, "warden.ini", &vassals, &config(&first));
    let mut warden = Warden::start_with_config(&bin(), &cfg, &root.join("incidents.jsonl"), &[]);
    emp.leak("leaky.ini", 40);
    warden.wait_record("outcome", 0);
    let workers = emp.wait_replaced("leaky.ini", &workers).1;
    let heard_first = wait_for(Duration::from_secs(20), "the first hook's runs", || {
        let heard = read_records(&root.join("first.jsonl"));
        (heard.len() == 3).then_some(heard)
    });
    write_config(root, "warden.ini", &vassals, &config(&second));
    warden.kill(Signal::HUP);
    wait_for(Duration::from_secs(20), "the re-read", || {
        warden.log().contains("configuration re-read").then_some(())
    });
    emp.leak("leaky.ini", 40);
    let outcome = warden.wait_record("outcome", 1);
    emp.wait_replaced("leaky.ini", &workers);
    // The second hook hears the second healing, its outcome last.
    let heard_second = wait_for(Duration::from_secs(20), "the second hook's runs", || {
        let heard = read_records(&root.join("second.jsonl"));
        heard.contains(&outcome).then_some(heard)
    });
    assert_eq!(heard_second.last(), Some(&outcome));
    assert_eq!(count(&heard_second, "detected"), 1, "{heard_second:#?}");
    // The first hook heard nothing more after the re-read.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(read_records(&root.join("first.jsonl")), heard_first);
}

/// A vassal that names its owner (`owner =` in its own `[vassal-warden]` section) has it
/// on its incident's records, in the hook's environment and as a label on its series, for
/// Alertmanager to route on; one that names none has none of it.
#[test]
fn the_owner_a_vassal_names_is_on_its_records_its_series_and_the_hooks_environment() {
    let emp = Emperor::start();
    emp.add_vassal(
        "shop.ini",
        &VassalSpec {
            extra: vec!["[vassal-warden]".into(), "owner = team-shop".into()],
            ..VassalSpec::default()
        },
    );
    emp.add_vassal("cart.ini", &VassalSpec::default());
    emp.wait_running("shop.ini", 1);
    emp.wait_running("cart.ini", 1);
    let root = emp.root();
    let hook = hook_script(
        root,
        "echo \"$WARDEN_EVENT $WARDEN_VASSAL owner=$WARDEN_OWNER\" >> $d/owners",
    );
    let extra = format!(
        "interval = 200ms\nmetrics = 127.0.0.1:0\non-event = {}\non-event-for = all\n\n[policy]\nreload-at = 40\nfor = 1\npredict = off\ncooldown = 10m\nverify = 30s\n",
        hook.display()
    );
    let vassals = [emp.vassals.display().to_string()];
    let config = write_config(root, "warden.ini", &vassals, &extra);
    let warden = Warden::start_with_config(&bin(), &config, &root.join("incidents.jsonl"), &[]);
    emp.leak("shop.ini", 45);
    emp.leak("cart.ini", 45);
    wait_for(Duration::from_secs(60), "both outcomes", || {
        (count(&warden.records(), "outcome") == 2).then_some(())
    });
    for r in warden.records() {
        let want = if r["vassal"] == "shop.ini" {
            "team-shop".into()
        } else {
            serde_json::Value::Null
        };
        assert_eq!(r["owner"], want, "{r}");
    }
    let heard = wait_for(Duration::from_secs(30), "the hook's runs", || {
        let text = fs::read_to_string(root.join("owners")).ok()?;
        (text.lines().filter(|l| l.starts_with("outcome ")).count() == 2).then_some(text)
    });
    assert!(
        heard.contains("detected shop.ini owner=team-shop\n"),
        "{heard}"
    );
    assert!(heard.contains("detected cart.ini owner=\n"), "{heard}");
    let page = crate::harness::scrape(&warden.metrics_addr());
    assert!(
        page.contains("vassal_warden_incidents_total{vassal=\"shop.ini\",owner=\"team-shop\"} "),
        "{page}"
    );
    assert!(
        page.contains("vassal_warden_incidents_total{vassal=\"cart.ini\"} "),
        "{page}"
    );
}
