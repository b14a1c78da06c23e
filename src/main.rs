//! The binary only dispatches: parse flags, set up logging, run the command, map the
//! result to an exit code (0 ok, 1 runtime error, 2 usage or config error).

use clap::Parser;

fn main() {
    let cli = vassal_warden::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VASSAL_WARDEN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if let Err(e) = vassal_warden::cli::main(cli) {
        let msg = e.to_string();
        if !msg.is_empty() {
            eprintln!("vassal-warden: {}", vassal_warden::cli::for_terminal(&msg));
        }
        std::process::exit(e.exit_code());
    }
}
