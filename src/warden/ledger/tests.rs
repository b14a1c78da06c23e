use std::fs;
use std::os::unix::fs::MetadataExt;

use super::*;
use crate::audit::{Event, Outcome, SCHEMA};
use crate::vocab::OutcomeResult;

fn record(incident: &str) -> Record {
    Record {
        owner: None,
        schema: SCHEMA,
        ts: "2026-01-01T00:00:00Z".into(),
        incident: incident.into(),
        vassal: "a.ini".into(),
        config: "/v/a.ini".into(),
        event: Event::Outcome(Outcome {
            result: OutcomeResult::Recovered,
            fds_after: Some(10),
            seconds: 1.0,
            detail: None,
        }),
    }
}

/// A ledger whose log cannot be written until `fix` is called: its directory is a
/// regular file, which not even root can create a file in.
struct Blocked {
    _dir: tempfile::TempDir,
    blocker: PathBuf,
    log: PathBuf,
}

impl Blocked {
    fn new() -> Blocked {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("logs");
        fs::write(&blocker, "not a directory").unwrap();
        let log = blocker.join("incidents.jsonl");
        Blocked {
            _dir: dir,
            blocker,
            log,
        }
    }

    fn fix(&self) {
        fs::remove_file(&self.blocker).unwrap();
        fs::create_dir(&self.blocker).unwrap();
    }

    fn incidents(&self) -> Vec<String> {
        audit::read_log(&self.log)
            .unwrap()
            .records
            .into_iter()
            .map(|r| r.incident)
            .collect()
    }
}

#[test]
fn records_owed_are_written_oldest_first_before_anything_new() {
    let b = Blocked::new();
    let mut l = Ledger::new(b.log.clone(), Duration::from_secs(3600));
    l.write(record("1"));
    l.write(record("2"));
    assert_eq!(l.owed(), 2);
    // A new incident's first record is not written while older ones are owed.
    assert!(l.write_first(&record("3")).is_err());
    // It is counted as owed, and its incident keeps its id, though it is not queued: the
    // next pass decides it again.
    assert_eq!(l.owed(), 3, "a first record that fails is owed too");
    assert_eq!(l.unwritten(&record("3").config).as_deref(), Some("3"));
    b.fix();
    l.write_first(&record("3")).unwrap();
    assert_eq!(l.owed(), 0);
    assert_eq!(b.incidents(), ["1", "2", "3"]);
}

#[test]
fn an_unwritten_incident_of_a_vassal_no_longer_watched_is_owed_no_longer() {
    let b = Blocked::new();
    let mut l = Ledger::new(b.log.clone(), Duration::from_secs(3600));
    assert!(l.write_first(&record("1")).is_err());
    let config = record("1").config;
    assert_eq!(l.owed(), 1);
    l.retain_unwritten(|p| p != config);
    assert_eq!(l.owed(), 0);
    assert_eq!(l.unwritten(&config), None);
}

#[test]
fn an_unwritten_incident_outlives_a_restart_but_not_a_vassal_stopped_for_good() {
    let b = Blocked::new();
    let mut l = Ledger::new(b.log.clone(), Duration::from_secs(3600));
    assert!(l.write_first(&record("1")).is_err());
    let config = record("1").config;
    let t0 = Instant::now();
    // A master respawning, an Emperor restarting: absent for a while, then back.
    l.absent(&config, "v", t0);
    l.absent(
        &config,
        "v",
        t0 + ABSENT_GRACE.saturating_sub(Duration::from_secs(1)),
    );
    assert_eq!(
        l.unwritten(&config).as_deref(),
        Some("1"),
        "owed through a restart"
    );
    l.present(&config);
    // Absence counts again from its start after the vassal was seen running.
    let t1 = t0 + ABSENT_GRACE * 2;
    l.absent(&config, "v", t1);
    l.absent(
        &config,
        "v",
        t1 + ABSENT_GRACE.saturating_sub(Duration::from_secs(1)),
    );
    assert_eq!(l.owed(), 1);
    l.absent(&config, "v", t1 + ABSENT_GRACE);
    assert_eq!(l.owed(), 0, "a vassal stopped for good owes nothing");
    assert_eq!(l.unwritten(&config), None);
}

#[test]
fn at_most_max_owed_records_are_kept_and_the_oldest_go_first() {
    let b = Blocked::new();
    let mut l = Ledger::new(b.log.clone(), Duration::from_secs(3600));
    for i in 0..MAX_OWED + 3 {
        l.write(record(&i.to_string()));
    }
    assert_eq!(l.owed(), MAX_OWED);
    b.fix();
    l.retry_owed("-");
    let written = b.incidents();
    assert_eq!(written.len(), MAX_OWED);
    assert_eq!(written.first().map(String::as_str), Some("3"));
    assert_eq!(written.last(), Some(&(MAX_OWED + 2).to_string()));
}

#[test]
fn room_to_act_is_refused_while_a_record_is_owed_and_reserved_once_paid() {
    let b = Blocked::new();
    let mut l = Ledger::new(b.log.clone(), Duration::from_secs(3600));
    l.write(record("owed"));
    assert!(l.room_to_act("a.ini", 1 << 20).is_err());
    b.fix();
    l.room_to_act("a.ini", 1 << 20).unwrap();
    assert_eq!(b.incidents(), ["owed"], "what was owed is written first");
    let meta = fs::metadata(&b.log).unwrap();
    // The size is the records' own; the blocks behind it are allocated ahead.
    assert_eq!(meta.len(), audit::line_len(&record("owed")));
    assert!(
        meta.blocks() * 512 >= (1 << 20) + meta.len(),
        "{} bytes allocated",
        meta.blocks() * 512
    );
}

#[test]
fn a_record_is_counted_only_once_it_is_on_disk() {
    let b = Blocked::new();
    let mut l = Ledger::new(b.log.clone(), Duration::from_secs(3600));
    l.write(record("1"));
    let outcomes = |l: &mut Ledger, keep: &dyn Fn(&str) -> bool| {
        l.counts(keep).of("a.ini").map(|c| c.outcomes)
    };
    assert_eq!(outcomes(&mut l, &|_| true), None);
    b.fix();
    l.retry_owed("-");
    assert_eq!(outcomes(&mut l, &|_| true), Some([1, 0, 0]));
    assert_eq!(outcomes(&mut l, &|n| n != "a.ini"), None);
}

#[test]
fn something_said_once_is_said_again_only_when_it_changes_or_was_over() {
    let mut s = SaidOnce::default();
    let t = Topic::Source(42);
    assert!(s.is_news(t.clone(), "stats server trickles"));
    assert!(!s.is_news(t.clone(), "stats server trickles"));
    assert!(s.is_news(t.clone(), "stats server lies"));
    // Another topic is its own.
    assert!(s.is_news(Topic::ChainFile("/v/a.ini".into()), "stats server lies"));
    s.forget(&t);
    assert!(s.is_news(t, "stats server lies"));
    let bad = Topic::BadLine("/var/log/x".into(), 10);
    assert!(s.is_news(bad.clone(), "not JSON"));
    assert!(!s.is_news(bad, "not JSON"));
}
