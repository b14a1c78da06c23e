use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::*;
use crate::audit::{Episode, Outcome, SCHEMA, Suppressed};
use crate::vocab::{OutcomeResult, Reason, RecordKind};

fn record(event: Event) -> Record {
    Record {
        owner: None,
        schema: SCHEMA,
        ts: "2026-01-01T00:00:00Z".into(),
        incident: "i-1".into(),
        vassal: "shop.ini".into(),
        config: "/etc/uwsgi/vassals/shop.ini".into(),
        event,
    }
}

fn outcome(result: OutcomeResult) -> Record {
    record(Event::Outcome(Outcome {
        result,
        fds_after: Some(900),
        seconds: 60.0,
        detail: Some("fd counts are still over the line".into()),
    }))
}

fn suppressed(reason: Reason) -> Record {
    record(Event::Suppressed(Suppressed {
        reason,
        action: None,
        detail: Some("why".into()),
        manual: false,
    }))
}

fn episode(reason: Reason) -> Episode {
    Episode {
        reason,
        since: "2026-01-01T00:00:00Z".into(),
        seconds: 3600.0,
        fds: Some(50),
        detail: None,
    }
}

fn defaults() -> Events {
    Events::Only(HookEvent::defaults())
}

#[test]
fn by_default_only_what_needs_a_human_runs_the_hook() {
    let d = defaults();
    assert!(matches(&d, &outcome(OutcomeResult::NotRecovered)));
    assert!(!matches(&d, &outcome(OutcomeResult::Recovered)));
    assert!(matches(&d, &suppressed(Reason::Flapping)));
    assert!(matches(&d, &suppressed(Reason::LadderExhausted)));
    assert!(matches(&d, &suppressed(Reason::ActionFailed)));
    assert!(matches(&d, &suppressed(Reason::NoEmperor)));
    assert!(!matches(&d, &suppressed(Reason::Cooldown)));
    assert!(!matches(&d, &suppressed(Reason::Busy)));
    // The reminders and the end of an episode that needs a human, by its reason.
    assert!(matches(
        &d,
        &record(Event::Reminder(episode(Reason::Flapping)))
    ));
    assert!(matches(
        &d,
        &record(Event::Ended(episode(Reason::Flapping)))
    ));
    assert!(!matches(
        &d,
        &record(Event::Ended(episode(Reason::Cooldown)))
    ));
    let all = Events::All;
    assert!(matches(&all, &outcome(OutcomeResult::Recovered)));
    let events = Events::Only(vec![HookEvent::Record(RecordKind::Outcome)]);
    assert!(matches(&events, &outcome(OutcomeResult::Recovered)));
    assert!(!matches(&events, &suppressed(Reason::Flapping)));
}

#[test]
fn a_job_carries_the_record_as_json_and_its_main_fields_in_the_environment() {
    let r = outcome(OutcomeResult::NotRecovered);
    let job = Job::of(&r);
    let back: Record = serde_json::from_str(&job.json).unwrap();
    assert_eq!(back, r);
    let env: BTreeMap<&str, &str> = job.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(env["WARDEN_EVENT"], "outcome");
    assert_eq!(env["WARDEN_RESULT"], "not_recovered");
    assert_eq!(env["WARDEN_VASSAL"], "shop.ini");
    assert_eq!(env["WARDEN_CONFIG"], "/etc/uwsgi/vassals/shop.ini");
    assert_eq!(env["WARDEN_INCIDENT"], "i-1");
    assert_eq!(env["WARDEN_DETAIL"], "fd counts are still over the line");
    assert_eq!(
        env["WARDEN_SUMMARY"],
        "shop.ini: outcome not_recovered: fd counts are still over the line"
    );
    let job = Job::of(&record(Event::Reminder(episode(Reason::Flapping))));
    assert!(job.env.contains(&("WARDEN_REASON", "flapping".into())));
}

/// A private directory of root's, with a script in it.
fn script(body: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hook");
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    (dir, path)
}

fn hook(path: &Path, timeout: Duration) -> Hook {
    Hook {
        argv: vec![path.display().to_string(), "--flag".into()],
        events: defaults(),
        timeout,
    }
}

#[test]
fn a_hook_reads_the_record_on_stdin_with_a_clean_environment_and_its_arguments() {
    let (dir, path) =
        script(r#"d=$(dirname "$0"); cat > $d/stdin; env > $d/env; echo "$@" > $d/args"#);
    let job = Job::of(&outcome(OutcomeResult::NotRecovered));
    run(&hook(&path, Duration::from_secs(10)), &job).unwrap();
    let stdin = fs::read_to_string(dir.path().join("stdin")).unwrap();
    assert_eq!(stdin, format!("{}\n", job.json));
    let env = fs::read_to_string(dir.path().join("env")).unwrap();
    assert!(
        env.lines().any(|l| l == "WARDEN_RESULT=not_recovered"),
        "{env}"
    );
    assert!(
        env.lines().any(|l| l.starts_with("PATH=/usr/local/sbin:")),
        "{env}"
    );
    // Nothing of the warden's own environment leaks into it.
    assert!(
        !env.lines()
            .any(|l| l.starts_with("CARGO") || l.starts_with("HOME=")),
        "{env}"
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("args")).unwrap(),
        "--flag\n"
    );
}

#[test]
fn a_failing_hook_says_how_it_failed_and_what_it_wrote() {
    let (_dir, path) = script("echo 'smtp: connection refused' >&2; exit 3");
    let job = Job::of(&outcome(OutcomeResult::NotRecovered));
    let e = run(&hook(&path, Duration::from_secs(10)), &job).unwrap_err();
    assert_eq!(e, "exited with status 3: smtp: connection refused");
}

#[test]
fn a_hook_past_its_timeout_is_killed_with_what_it_started() {
    let (dir, path) = script(r#"sleep 300 & echo $! > $(dirname "$0")/child; sleep 300"#);
    let job = Job::of(&outcome(OutcomeResult::NotRecovered));
    let e = run(&hook(&path, Duration::from_secs(1)), &job).unwrap_err();
    assert!(e.contains("did not finish within 1s"), "{e}");
    let child: i32 = fs::read_to_string(dir.path().join("child"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The background child was in the hook's process group: it is gone too (reaped by
    // init, or a zombie until then).
    assert!(gone(child), "PID {child} still runs");
}

/// Gone, or a zombie until init reaps it.
fn gone(pid: i32) -> bool {
    for _ in 0..100 {
        let state = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if state.is_empty()
            || state
                .rsplit(')')
                .next()
                .unwrap()
                .trim_start()
                .starts_with('Z')
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn a_hook_others_than_root_could_change_is_not_run() {
    let (dir, path) = script(r#"touch $(dirname "$0")/ran"#);
    let job = Job::of(&outcome(OutcomeResult::NotRecovered));
    fs::set_permissions(&path, fs::Permissions::from_mode(0o775)).unwrap();
    let e = run(&hook(&path, Duration::from_secs(5)), &job).unwrap_err();
    assert!(e.contains("only root may own and write it"), "{e}");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let e = run(&hook(&path, Duration::from_secs(5)), &job).unwrap_err();
    assert!(e.contains("could be changed by others than root"), "{e}");
    assert!(!dir.path().join("ran").exists());
    // Sticky, as /tmp is: others cannot replace root's file in it.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
    run(&hook(&path, Duration::from_secs(5)), &job).unwrap();
    assert!(dir.path().join("ran").exists());
    let e = run(
        &hook(Path::new("/nonexistent/hook"), Duration::from_secs(5)),
        &job,
    )
    .unwrap_err();
    assert!(e.starts_with("cannot find it"), "{e}");
}

#[test]
fn a_hanging_hook_never_blocks_an_offer_and_dropped_runs_are_counted() {
    let (dir, path) = script(r#"echo $$ > $(dirname "$0")/pid; exec sleep 300"#);
    let mut hooks = Hooks::start(hook(&path, Duration::from_secs(30))).unwrap();
    let r = outcome(OutcomeResult::NotRecovered);
    // One run takes the hook; QUEUE wait; the rest are dropped, each counted.
    for _ in 0..QUEUE + 10 {
        hooks.offer(&r);
    }
    let failed = hooks.failures().get("shop.ini").copied().unwrap_or(0);
    assert!(failed >= 9, "{failed} counted");
    // A record the hook does not ask for is not queued, so not dropped either.
    hooks.offer(&outcome(OutcomeResult::Recovered));
    assert_eq!(hooks.failures()["shop.ini"], failed);
    // Stopping waits for the time given, then kills the run in progress.
    let pid = dir.path().join("pid");
    while !pid.exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
    hooks.stop(Duration::from_millis(100));
    let pid = fs::read_to_string(pid).unwrap();
    assert!(
        !Path::new(&format!("/proc/{}", pid.trim())).exists(),
        "the hook {pid} runs on"
    );
}

#[test]
fn what_others_named_reaches_a_hook_on_one_line() {
    let (dir, path) = script(r#"env > $(dirname "$0")/env"#);
    let mut r = outcome(OutcomeResult::NotRecovered);
    r.vassal = "a\nBcc: someone@example.org\n.ini".into();
    run(&hook(&path, Duration::from_secs(10)), &Job::of(&r)).unwrap();
    let env = fs::read_to_string(dir.path().join("env")).unwrap();
    assert!(!env.lines().any(|l| l.starts_with("Bcc:")), "{env}");
    assert!(
        env.lines()
            .any(|l| l == "WARDEN_VASSAL=a\\nBcc: someone@example.org\\n.ini"),
        "{env}"
    );
}

#[test]
fn a_stderr_past_its_bound_is_emptied_and_its_start_kept() {
    use std::io::Write as _;
    let f = memfd("test-stderr").unwrap();
    let mut kept = None;
    (&f).write_all(b"relay refused: 554\n").unwrap();
    bound_stderr(&f, &mut kept);
    assert_eq!((kept.as_deref(), f.metadata().unwrap().len()), (None, 19));
    let flood = vec![b'x'; 2 << 20];
    (&f).write_all(&flood).unwrap();
    bound_stderr(&f, &mut kept);
    assert_eq!(f.metadata().unwrap().len(), 0);
    assert!(
        kept.as_deref()
            .unwrap()
            .starts_with("relay refused: 554\\n"),
        "{kept:?}"
    );
    // Once kept, the start is not replaced by what came later.
    (&f).write_all(&flood).unwrap();
    bound_stderr(&f, &mut kept);
    assert!(
        kept.as_deref().unwrap().starts_with("relay refused"),
        "{kept:?}"
    );
}
