//! Integration tests: a real uWSGI Emperor, real vassals that leak on purpose, and the
//! real `vassal-warden` binary. One binary, a module per area.
#![allow(clippy::unwrap_used)]
// A test binary: its `pub` items are for its own modules.
#![allow(unreachable_pub)]

mod harness;

mod alert_hook;
mod alerts;
mod bounded;
mod capture;
mod careful;
mod commands;
mod config_errors;
mod daemon_loop;
mod discovery;
mod forensics;
mod hostile;
mod ini_oracle;
mod layers;
mod ledger;
mod metrics;
mod packaging;
mod pause;
mod remediation;
mod site_up;
mod stacks;
mod systemd;

/// The generator of the package's manual pages and completions, as `scripts/build-deb`
/// runs it (its `main` is not used here).
#[allow(dead_code)]
#[path = "../../examples/gen_assets.rs"]
mod gen_assets;

use std::path::PathBuf;

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vassal-warden"))
}
