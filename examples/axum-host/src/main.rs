//! Run with
//!
//! ```not_rust
//! cargo run -p example-axum-host
//! ```
//!
//! and chat at <http://127.0.0.1:8787/>. With no environment the server listens on
//! 127.0.0.1:8787, keeps conversations in files under `./lobu-data` and runs open (one org,
//! `default`). The environment it reads:
//!
//! | variable | meaning |
//! |---|---|
//! | `LOBU_ADDR` | listening address, default `127.0.0.1:8787` (port 0: any free port) |
//! | `LOBU_DATA_DIR` | the file store's directory, default `./lobu-data` |
//! | `DATABASE_URL` | a PostgreSQL URL: snapshot mode becomes the default |
//! | `LOBU_SESSION_STORE` | `snapshot` (needs `DATABASE_URL`) or `file` |
//! | `LOBU_API_KEYS` | `key1=org1,key2=org2`: require `Authorization: Bearer <key>`; the org comes from the key |
//! | `LOBU_CONCURRENCY`, `LOBU_MAX_ATTEMPTS`, `LOBU_RETRY_DELAY_MS`, `LOBU_TURN_TIMEOUT_SECS` | runtime knobs (8, 3, 2000, 300) |
//! | `LOBU_SHUTDOWN_GRACE_SECS` | how long SIGTERM/SIGINT lets turns finish (25) |
//! | `LOBU_RUN_RETENTION_SECS` | how long finished runs stay (604800, 7 days) |
//! | `LOBU_IDLE_RETENTION_SECS` | remove conversations idle this long (0: never, the default) |
//! | `LOBU_FAILED_RUN_RETENTION_SECS` | how long failed runs stay, at least as long as the others (0: as long, the default) |
//! | `LOBU_IDLE_RETENTION_BY_AGENT` | per-agent idle windows, `agent=seconds` or `agent=never`, comma-separated |
//! | `LOBU_FORENSIC_RETENTION_SECS` | how long forensic copies of failed attempts stay (604800, 7 days) |
//! | `LOBU_RETENTION_BATCH` | the most items one step of a retention pass removes (10000) |
//! | `LOBU_CLAIM_TTL_MS` | how long a turn's claim lasts unrenewed (30000): a crashed replica's turns run again after it |
//! | `LOBU_DEMO_WORD_DELAY_MS` | pause between the demo agent's streamed words (30) |
//! | `LOBU_PG_MAX_CONNECTIONS` | PostgreSQL pool size (10) |
//! | `LOBU_MAX_STREAMS_PER_ORG` | event streams one org may hold open on a replica (100); past it `429` |
//! | `LOBU_CORS_ORIGINS` | browser origins allowed to call the API, comma-separated (unset: CORS off) |
//! | `LOBU_HEADER_READ_TIMEOUT_SECS` | how long a client may take to send a request's headers before it is disconnected (30; 1 to 600) |
//! | `LOBU_WORKERS` | `0`: a gateway replica (takes messages, streams any run; others run the turns); default `1` |
//! | `LOBU_INTAKE` | `0`: a worker replica (runs turns, serves only `/health/*`); default `1` |
//! | `LOBU_LLM_BASE_URL`, `LOBU_LLM_MODEL`, `LOBU_LLM_API_KEY`, `LOBU_LLM_CA_FILE` | an OpenAI-compatible endpoint (`http://` or `https://`; the CA file: extra PEM roots) instead of the demo agent (feature `openai`) |
//! | `RUST_LOG` | log filter, default `info` |
//!
//! Several copies on different ports with the same `DATABASE_URL` serve the same
//! conversations safely. A bad configuration exits with status 2 before anything starts.

use std::process::ExitCode;

use example_axum_host::{Config, Error, Server, shutdown_signal};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    // Logs go to stderr; stdout only carries the address line.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let config = match Config::from_env() {
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
