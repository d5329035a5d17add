//! Run with
//!
//! ```not_rust
//! cargo run -p example-axum-host
//! ```
//!
//! and chat at <http://127.0.0.1:8787/>. With no environment the server listens on
//! 127.0.0.1:8787, keeps conversations in files under `./lobu-data` and runs open (one org,
//! `default`). Settings come from the environment (`LOBU_*`, `DATABASE_URL`) and an optional
//! TOML file (`--config FILE` or `LOBU_CONFIG`), which the environment overrides; `--help`
//! lists every environment variable and config-file key with its default.
//!
//! Several copies on different ports with the same `DATABASE_URL` serve the same
//! conversations safely. A bad configuration exits with status 2 before anything starts.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use example_axum_host::{Config, Error, Server, settings_help, shutdown_signal};
use tracing_subscriber::EnvFilter;

/// lobu's example HTTP host: durable AI-agent conversations over HTTP, with a chat page.
#[derive(Debug, Parser)]
#[command(name = "example-axum-host", version, after_help = settings_help())]
struct Args {
    /// A TOML file of settings (the environment overrides it; also `LOBU_CONFIG`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    // `--help` and usage errors exit here (0 and 2), before anything starts.
    let args = Args::parse();
    // Logs go to stderr; stdout only carries the address line.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let config = match Config::load(args.config.as_deref(), |name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(error) => return fail(&error, 2),
    };
    let server = match Server::bind(config).await {
        Ok(server) => server,
        Err(error @ Error::Config(_)) => return fail(&error, 2),
        Err(error) => return fail(&error, 1),
    };
    // Printed on stdout so scripts (and the tests) can find a port chosen with port 0.
    println!(
        "lobu example host listening on http://{}",
        server.local_addr()
    );
    match server.run(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error, 1),
    }
}

fn fail(error: &Error, code: u8) -> ExitCode {
    // The whole chain, so "store: connecting to …" also says why.
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    eprintln!("example-axum-host: {message}");
    ExitCode::from(code)
}
