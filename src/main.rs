//! The binary only dispatches: parse flags, set up logging, run the command, map the
//! result to an exit code (0 ok, 1 runtime error, 2 usage or config error).

use clap::Parser;

fn main() {
    let cli = vassal_warden::cli::Cli::parse();
    init_logging();
    if let Err(e) = vassal_warden::cli::main(cli) {
        let msg = e.to_string();
        if !msg.is_empty() {
            eprintln!("vassal-warden: {}", vassal_warden::cli::for_terminal(&msg));
        }
        std::process::exit(e.exit_code());
    }
}

/// Logs to journald's native protocol when stderr is the journal (`JOURNAL_STREAM` names
/// it), so that each line has its priority (an incident is a warning, a remediation that
/// failed or was given up an error) and its fields (`VASSAL=`, `INCIDENT=`, `PID=`);
/// plain lines on stderr otherwise.
fn init_logging() {
    use tracing_subscriber::prelude::*;
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("VASSAL_WARDEN_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    if stderr_is_journal()
        && let Ok(journal) = tracing_journald::layer()
    {
        let journal = journal
            .with_field_prefix(None)
            .with_syslog_identifier("vassal-warden".to_owned());
        tracing_subscriber::registry()
            .with(filter())
            .with(journal)
            .init();
        return;
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter())
        .init();
}

/// True when stderr is the journal stream systemd connected (`JOURNAL_STREAM=DEV:INO`).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some((dev, ino)) = std::env::var("JOURNAL_STREAM")
        .ok()
        .and_then(|v| {
            v.split_once(':')
                .map(|(d, i)| (d.parse::<u64>(), i.parse::<u64>()))
        })
        .and_then(|(d, i)| Some((d.ok()?, i.ok()?)))
    else {
        return false;
    };
    std::fs::metadata("/proc/self/fd/2").is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}
