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
        .arg("status")
        .arg("-c")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(":2: unknown key `intreval`"), "{stderr}");
    assert!(stderr.contains("interval"), "{stderr}");
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
