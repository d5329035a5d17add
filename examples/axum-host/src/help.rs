//! What `--help` lists: every environment variable with its meaning and default, and a
//! config file holding every key with its default.

use crate::config_file::default_config_file;

/// Each variable (or group of variables) and what it sets, its default in parentheses.
const VARIABLES: &[(&str, &str)] = &[
    (
        "LOBU_ADDR",
        "listening address, default 127.0.0.1:8787 (port 0: any free port)",
    ),
    (
        "LOBU_DATA_DIR",
        "the file store's directory, default ./lobu-data",
    ),
    (
        "DATABASE_URL",
        "a PostgreSQL URL: snapshot mode becomes the default",
    ),
    (
        "LOBU_SESSION_STORE",
        "snapshot (needs DATABASE_URL) or file",
    ),
    (
        "LOBU_API_KEYS",
        "key1=org1,key2=org2: require Authorization: Bearer <key>; the org comes from the key",
    ),
    (
        "LOBU_CONCURRENCY, LOBU_MAX_ATTEMPTS, LOBU_RETRY_DELAY_MS, LOBU_TURN_TIMEOUT_SECS",
        "runtime knobs (8, 3, 2000, 300)",
    ),
    (
        "LOBU_SHUTDOWN_GRACE_SECS",
        "how long SIGTERM/SIGINT lets turns finish (25)",
    ),
    (
        "LOBU_RUN_RETENTION_SECS",
        "how long finished runs stay (604800, 7 days)",
    ),
    (
        "LOBU_IDLE_RETENTION_SECS",
        "remove conversations idle this long (0: never, the default)",
    ),
    (
        "LOBU_FAILED_RUN_RETENTION_SECS",
        "how long failed runs stay, at least as long as the others (0: as long, the default)",
    ),
    (
        "LOBU_IDLE_RETENTION_BY_AGENT",
        "per-agent idle windows, agent=seconds or agent=never, comma-separated",
    ),
    (
        "LOBU_FORENSIC_RETENTION_SECS",
        "how long forensic copies of failed attempts stay (604800, 7 days)",
    ),
    (
        "LOBU_RETENTION_BATCH",
        "the most items one step of a retention pass removes (10000)",
    ),
    (
        "LOBU_CLAIM_TTL_MS",
        "how long a turn's claim lasts unrenewed (30000): a crashed replica's turns run again after it",
    ),
    (
        "LOBU_DEMO_WORD_DELAY_MS",
        "pause between the demo agent's streamed words (30)",
    ),
    ("LOBU_PG_MAX_CONNECTIONS", "PostgreSQL pool size (10)"),
    (
        "LOBU_MAX_STREAMS_PER_ORG",
        "event streams one org may hold open on a replica (100); past it 429",
    ),
    (
        "LOBU_CORS_ORIGINS",
        "browser origins allowed to call the API, comma-separated (unset: CORS off)",
    ),
    (
        "LOBU_REQUEST_TIMEOUT_SECS",
        "how long a non-streaming request may take before it is answered 503 (30; 1 to 3600)",
    ),
    (
        "LOBU_RESET_TIMEOUT_SECS",
        "how long a reset request waits for its reset before answering 503 (120; 1 to 3600)",
    ),
    (
        "LOBU_HEADER_READ_TIMEOUT_SECS",
        "how long a client may take to send a request's headers before it is disconnected (30; 1 to 600)",
    ),
    (
        "LOBU_WORKERS",
        "0: a gateway replica (takes messages, streams any run; others run the turns); default 1",
    ),
    (
        "LOBU_INTAKE",
        "0: a worker replica (runs turns, serves only /health/*); default 1",
    ),
    (
        "LOBU_LLM_BASE_URL, LOBU_LLM_MODEL, LOBU_LLM_API_KEY, LOBU_LLM_CA_FILE",
        "an OpenAI-compatible endpoint (http:// or https://; the CA file: extra PEM roots) instead of the demo agent (feature openai)",
    ),
    ("RUST_LOG", "log filter, default info"),
];

/// The text `--help` prints after the options.
pub fn settings_help() -> String {
    let mut text = String::from("ENVIRONMENT (overrides the config file):\n");
    for (name, meaning) in VARIABLES {
        text.push_str(&format!("  {name}\n      {meaning}\n"));
    }
    text.push_str("\nCONFIG FILE (--config FILE or LOBU_CONFIG; TOML; every key optional), with the defaults:\n\n");
    text.push_str(&default_config_file());
    text
}
