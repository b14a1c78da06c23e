//! The daemon's loop under an operator's hands and a busy host: SIGHUP never stops it,
//! a directory that never stops changing never starves its passes.

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustix::process::Signal;

use crate::bin;
use crate::harness::{Emperor, VassalSpec, Warden, wait_for};

/// Times (seconds since the epoch) of the passes the warden's debug log shows.
fn pass_times(log: &str) -> Vec<f64> {
    log.lines()
        .filter(|l| l.contains("pass done"))
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|ts| humantime::parse_rfc3339_weak(ts).ok())
        .map(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64()
        })
        .collect()
}

/// Files in a watched directory rewritten every few milliseconds while SIGHUP arrives
/// every 100 ms: the warden keeps running, passes keep coming every `interval` (give or
/// take a rescan), and a vassal that leaks during the storm is healed.
#[test]
fn a_storm_of_file_events_and_sighups_neither_stops_nor_starves_the_loop() {
    let emp = Emperor::start();
    emp.add_vassal("leaky.ini", &VassalSpec::default());
    emp.wait_running("leaky.ini", 1);
    let busy = emp.root().join("busy");
    fs::create_dir_all(&busy).unwrap();
    let vassals = [
        emp.vassals.display().to_string(),
        busy.display().to_string(),
    ];
    let mut warden = Warden::start_watching(
        &bin(),
        emp.root(),
        &vassals,
        "reload-at = 40\nfor = 1\naction = touch\ncooldown = 10m\nverify = 30s\n",
        &[],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, busy) = (stop.clone(), busy.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let f = busy.join(format!("deploy-{}.ini", i % 20));
                fs::write(&f, format!("[uwsgi]\n; revision {i}\n")).unwrap();
                i += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            i
        })
    };
    let before = pass_times(&warden.log()).len();
    for round in 0..40 {
        warden.kill(Signal::HUP);
        if round == 10 {
            emp.leak("leaky.ini", 45);
        }
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            warden.try_wait().is_none(),
            "the warden stopped: {}",
            warden.log()
        );
    }
    let action = wait_for(Duration::from_secs(30), "leaky.ini healed", || {
        warden
            .records()
            .into_iter()
            .find(|r| r["vassal"] == "leaky.ini" && r["event"] == "action")
    });
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(written > 100, "only {written} files written");
    assert_eq!(action["action"], "touch", "{action}");
    assert_eq!(warden.wait_record("outcome", 0)["result"], "recovered");
    assert!(
        warden.try_wait().is_none(),
        "the warden stopped: {}",
        warden.log()
    );
    let log = warden.log();
    let times = pass_times(&log);
    let storm = &times[before..];
    // 4 s of storm at a 200 ms interval: about 20 passes; none far apart.
    assert!(storm.len() >= 10, "{} passes during the storm", storm.len());
    let worst = storm.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    assert!(worst < 2.0, "passes {worst:.2} s apart during the storm");
    assert!(
        log.contains("SIGHUP: re-reading the configuration"),
        "{log}"
    );
    // SIGTERM still stops it, with exit code 0 (a supervisor does not restart it).
    warden.kill(Signal::TERM);
    let status = wait_for(Duration::from_secs(10), "the warden to stop", || {
        warden.try_wait()
    });
    assert_eq!(status.code(), Some(0), "{log}");
}
