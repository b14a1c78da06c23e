//! A bad config file stops the warden with exit code 2 and names the file and line.

use std::process::Command;

use crate::bin;

#[test]
fn malformed_config_exits_2_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("warden.ini");
    std::fs::write(
        &cfg,
        "[warden]\ninterval = 2s\n\n[policy]\nreload-at = lots\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .arg("run")
        .arg("-c")
        .arg(&cfg)
        .arg("--once")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:5:", cfg.display())),
        "stderr does not name file:line: {stderr}"
    );
    assert!(stderr.contains("lots"), "{stderr}");
}

#[test]
fn unknown_key_exits_2_and_says_what_is_known() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("warden.ini");
    std::fs::write(&cfg, "[warden]\nintreval = 2s\n").unwrap();
    let out = Command::new(bin())
        .args(["run", "--once", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(":2: unknown key `intreval`"), "{stderr}");
    assert!(stderr.contains("interval"), "{stderr}");
}

/// The commands that only read go on over a bad warden.ini (the running daemon keeps
/// the config in force): they name each bad line, and use the default for it.
#[test]
fn read_only_commands_say_what_is_wrong_with_the_config_and_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("warden.ini");
    let log = dir.path().join("incidents.jsonl");
    std::fs::write(
        &cfg,
        format!(
            "[warden]\nvassals = {}\naudit-log = {}\n[policy]\nreload-at = banana\n",
            dir.path().join("vassals").display(),
            log.display()
        ),
    )
    .unwrap();
    std::fs::write(
        &log,
        r#"{"schema":1,"ts":"2026-11-26T22:10:00Z","incident":"i1","vassal":"a.ini","config":"/v/a.ini","event":"suppressed","reason":"alert_only"}"#.to_owned() + "\n",
    )
    .unwrap();
    let me = std::process::id().to_string();
    for args in [
        &["status", "--json"][..],
        &["incidents", "--json"][..],
        &["fds", &me][..],
    ] {
        let out = Command::new(bin())
            .args(args)
            .arg("-c")
            .arg(&cfg)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}{stdout}");
        assert!(
            stderr.starts_with(&format!("vassal-warden: warning: {}:5: ", cfg.display()))
                && stderr.contains("banana")
                && stderr.contains("the default is used for it here"),
            "{args:?}: {stderr}"
        );
        // The good lines still apply: the incidents come from the log it names.
        if args[0] == "incidents" {
            assert!(stdout.contains("\"i1\""), "{stdout}");
        }
    }
}

#[test]
fn missing_named_config_exits_2() {
    let out = Command::new(bin())
        .args(["run", "-c", "/nonexistent/warden.ini", "--once"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/warden.ini"));
}

#[test]
fn usage_error_exits_2() {
    let out = Command::new(bin())
        .args(["run", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

fn check_t(args: &[&std::ffi::OsStr]) -> (Option<i32>, String, String) {
    let out = Command::new(bin())
        .arg("check")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `check -t` tests warden.ini alone, as `nginx -t` does: every bad line with its
/// file and line, exit 2; a good file, exit 0; the same flags spelled long.
#[test]
fn check_t_names_every_bad_line_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("warden.ini");
    std::fs::write(
        &cfg,
        "[warden]\nintreval = 2s\ninterval = 1s\n\n[policy]\nreload-at = banana\ncooldown = 5m\n",
    )
    .unwrap();
    let (code, out, err) = check_t(&["-t".as_ref(), "-c".as_ref(), cfg.as_os_str()]);
    assert_eq!(code, Some(2), "{out}{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with(&format!("vassal-warden: {}:2: ", cfg.display()))
            && lines[0].contains("intreval"),
        "{err}"
    );
    assert!(
        lines[1].starts_with(&format!("vassal-warden: {}:6: ", cfg.display()))
            && lines[1].contains("banana"),
        "{err}"
    );
    assert_eq!(out, "", "nothing on standard output for a bad file");

    std::fs::write(&cfg, "[warden]\ninterval = 1s\n[policy]\nreload-at = 80%\n").unwrap();
    let (code, out, err) = check_t(&[
        "--config-only".as_ref(),
        "--config".as_ref(),
        cfg.as_os_str(),
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        out.trim(),
        format!("{}: the configuration is valid", cfg.display())
    );

    // A file named that is not there is an error, as it is to the daemon.
    let gone = dir.path().join("gone.ini");
    let (code, _, err) = check_t(&["-t".as_ref(), "-c".as_ref(), gone.as_os_str()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&format!("{}: ", gone.display())), "{err}");
}
