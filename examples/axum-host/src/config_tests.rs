use std::collections::HashMap;

use super::*;

fn config(vars: &[(&str, &str)]) -> Result<Config, Error> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::from_lookup(|name| vars.get(name).cloned())
}

fn config_error(vars: &[(&str, &str)]) -> String {
    match config(vars) {
        Ok(config) => panic!("expected an error for {vars:?}, got {config:?}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn no_environment_means_file_store_on_8787_and_open() {
    let config = config(&[]).unwrap();
    assert_eq!(config.addr.to_string(), "127.0.0.1:8787");
    assert_eq!(
        config.store,
        StoreChoice::File {
            dir: PathBuf::from("./lobu-data")
        }
    );
    assert!(config.api_keys.is_open());
    assert!(config.llm.is_none());
    assert_eq!(config.settings.shutdown_grace, Duration::from_secs(25));
    assert_eq!(config.header_read_timeout, DEFAULT_HEADER_READ_TIMEOUT);
}

#[test]
fn the_header_read_timeout_is_read_and_bounded() {
    let five = config(&[("LOBU_HEADER_READ_TIMEOUT_SECS", "5")]).unwrap();
    assert_eq!(five.header_read_timeout, Duration::from_secs(5));
    let longest = config(&[("LOBU_HEADER_READ_TIMEOUT_SECS", "600")]).unwrap();
    assert_eq!(longest.header_read_timeout, MAX_HEADER_READ_TIMEOUT);
    for bad in ["0", "601"] {
        let error = config_error(&[("LOBU_HEADER_READ_TIMEOUT_SECS", bad)]);
        assert!(
            error.contains("LOBU_HEADER_READ_TIMEOUT_SECS must be from 1 to 600 seconds"),
            "{bad}: {error}"
        );
    }
    let error = config_error(&[("LOBU_HEADER_READ_TIMEOUT_SECS", "1.5")]);
    assert!(error.contains("must be a whole number"), "{error}");
}

#[test]
fn a_database_url_makes_snapshot_mode_the_default() {
    let url = "postgres://postgres@127.0.0.1:5432/app";
    let config = config(&[("DATABASE_URL", url)]).unwrap();
    assert_eq!(
        config.store,
        StoreChoice::Snapshot {
            database_url: url.to_owned()
        }
    );
}

#[test]
fn file_mode_is_the_opt_out_even_with_a_database() {
    let config = config(&[
        ("DATABASE_URL", "postgres://db/app"),
        ("LOBU_SESSION_STORE", "file"),
        ("LOBU_DATA_DIR", "/var/lib/lobu"),
    ])
    .unwrap();
    assert_eq!(
        config.store,
        StoreChoice::File {
            dir: PathBuf::from("/var/lib/lobu")
        }
    );
}

#[test]
fn snapshot_without_a_database_is_a_clear_startup_error() {
    let error = config_error(&[("LOBU_SESSION_STORE", "snapshot")]);
    assert!(
        error.contains("LOBU_SESSION_STORE=snapshot needs DATABASE_URL"),
        "{error}"
    );
}

#[test]
fn unknown_store_modes_are_refused_case_sensitively() {
    for mode in ["FILE", "Snapshot", "pg", "files"] {
        let error = config_error(&[("LOBU_SESSION_STORE", mode)]);
        assert!(error.contains("must be `snapshot` or `file`"), "{error}");
    }
}

#[test]
fn bad_api_keys_stop_the_start() {
    let error = config_error(&[("LOBU_API_KEYS", "k1=acme,oops")]);
    assert!(error.contains("entry 2"), "{error}");
    let error = config_error(&[("LOBU_API_KEYS", "")]);
    assert!(error.contains("set but empty"), "{error}");
}

#[test]
fn api_keys_turn_auth_on() {
    let config = config(&[("LOBU_API_KEYS", "k1=acme,k2=globex")]).unwrap();
    assert!(!config.api_keys.is_open());
    assert_eq!(
        config.api_keys.org_for(Some("k2")).unwrap().as_str(),
        "globex"
    );
}

#[test]
fn bad_addresses_and_numbers_name_their_variable() {
    let error = config_error(&[("LOBU_ADDR", "localhost")]);
    assert!(error.contains("LOBU_ADDR"), "{error}");
    let error = config_error(&[("LOBU_CONCURRENCY", "many")]);
    assert!(
        error.contains("LOBU_CONCURRENCY must be a whole number"),
        "{error}"
    );
    let error = config_error(&[("LOBU_CONCURRENCY", "0")]);
    assert!(error.contains("concurrency"), "{error}");
    let error = config_error(&[("LOBU_MAX_ATTEMPTS", "-1")]);
    assert!(error.contains("LOBU_MAX_ATTEMPTS"), "{error}");
    let error = config_error(&[("LOBU_RUN_RETENTION_SECS", "0")]);
    assert!(error.contains("run_retention"), "{error}");
    let error = config_error(&[("LOBU_IDLE_RETENTION_SECS", "99999999999")]);
    assert!(error.contains("idle_retention"), "{error}");
    for bad in ["bot", "bot=soon", "no spaces=60"] {
        let error = config_error(&[("LOBU_IDLE_RETENTION_BY_AGENT", bad)]);
        assert!(error.contains("LOBU_IDLE_RETENTION_BY_AGENT"), "{error}");
    }
    let error = config_error(&[
        ("LOBU_RUN_RETENTION_SECS", "7200"),
        ("LOBU_FAILED_RUN_RETENTION_SECS", "3600"),
    ]);
    assert!(error.contains("failed_run_retention"), "{error}");
    let error = config_error(&[("LOBU_RETENTION_BATCH", "0")]);
    assert!(error.contains("retention_batch"), "{error}");
}

#[test]
fn tiered_retention_is_read() {
    let config = config(&[
        ("LOBU_FAILED_RUN_RETENTION_SECS", "2592000"),
        ("LOBU_IDLE_RETENTION_SECS", "7776000"),
        (
            "LOBU_IDLE_RETENTION_BY_AGENT",
            "automation=86400, concierge=never",
        ),
        ("LOBU_FORENSIC_RETENTION_SECS", "3600"),
        ("LOBU_RETENTION_BATCH", "500"),
    ])
    .unwrap();
    let settings = &config.settings;
    assert_eq!(
        settings.failed_run_retention,
        Some(Duration::from_secs(2_592_000))
    );
    assert_eq!(
        settings.idle_retention,
        Some(Duration::from_secs(7_776_000))
    );
    let by_agent: Vec<(String, Option<Duration>)> = settings
        .idle_retention_by_agent
        .iter()
        .map(|(agent, window)| (agent.to_string(), *window))
        .collect();
    assert_eq!(
        by_agent,
        [
            ("automation".to_owned(), Some(Duration::from_secs(86_400))),
            ("concierge".to_owned(), None)
        ]
    );
    assert_eq!(settings.forensic_retention, Duration::from_secs(3600));
    assert_eq!(settings.retention_batch, 500);
}

#[test]
fn runtime_knobs_are_read() {
    let config = config(&[
        ("LOBU_ADDR", "0.0.0.0:0"),
        ("LOBU_CONCURRENCY", "16"),
        ("LOBU_MAX_ATTEMPTS", "1"),
        ("LOBU_RETRY_DELAY_MS", "50"),
        ("LOBU_SHUTDOWN_GRACE_SECS", "3"),
        ("LOBU_DEMO_WORD_DELAY_MS", "0"),
        ("LOBU_CLAIM_TTL_MS", "6000"),
        ("LOBU_RUN_RETENTION_SECS", "3600"),
        ("LOBU_IDLE_RETENTION_SECS", "86400"),
    ])
    .unwrap();
    assert_eq!(config.addr.port(), 0);
    assert_eq!(config.settings.concurrency, 16);
    assert_eq!(config.settings.max_attempts, 1);
    assert_eq!(config.settings.retry_delay, Duration::from_millis(50));
    assert_eq!(config.settings.shutdown_grace, Duration::from_secs(3));
    assert_eq!(config.demo_word_delay, Duration::ZERO);
    assert_eq!(config.settings.claim_ttl, Duration::from_secs(6));
    assert_eq!(config.settings.heartbeat_interval, Duration::from_secs(2));
    assert_eq!(config.settings.run_retention, Duration::from_secs(3600));
    assert_eq!(
        config.settings.idle_retention,
        Some(Duration::from_secs(86400))
    );
    let defaults = Config::defaults().settings;
    assert_eq!(defaults.run_retention, Duration::from_secs(7 * 24 * 3600));
    assert_eq!(defaults.idle_retention, None);
    assert_eq!(defaults.claim_ttl, Duration::from_secs(30));
    assert_eq!(defaults.heartbeat_interval, Duration::from_secs(10));
}

#[test]
fn an_llm_endpoint_needs_a_model_and_an_http_or_https_url() {
    let error = config_error(&[("LOBU_LLM_BASE_URL", "http://127.0.0.1:11434/v1")]);
    assert!(error.contains("LOBU_LLM_MODEL"), "{error}");
    for url in ["ftp://x", "api.example.com/v1"] {
        let error = config_error(&[("LOBU_LLM_BASE_URL", url), ("LOBU_LLM_MODEL", "m")]);
        assert!(error.contains("http:// or https:// URL"), "{error}");
    }
    let https = config(&[
        ("LOBU_LLM_BASE_URL", "https://api.example.com/v1"),
        ("LOBU_LLM_MODEL", "m"),
    ])
    .unwrap();
    assert_eq!(https.llm.unwrap().base_url, "https://api.example.com/v1");
    let missing = "/nonexistent/lobu-ca.pem";
    let error = config_error(&[
        ("LOBU_LLM_BASE_URL", "https://api.example.com/v1"),
        ("LOBU_LLM_MODEL", "m"),
        ("LOBU_LLM_CA_FILE", missing),
    ]);
    assert!(
        error.contains("LOBU_LLM_CA_FILE") && error.contains(missing),
        "{error}"
    );
    let config = config(&[
        ("LOBU_LLM_BASE_URL", "http://127.0.0.1:11434/v1/"),
        ("LOBU_LLM_MODEL", "llama3"),
        ("LOBU_LLM_API_KEY", "sk-secret"),
    ])
    .unwrap();
    let llm = config.llm.unwrap();
    assert_eq!(llm.base_url, "http://127.0.0.1:11434/v1");
    assert!(!format!("{llm:?}").contains("sk-secret"));
}

#[test]
fn passwords_never_reach_the_logs() {
    assert_eq!(
        redact_url("postgres://app:hunter2@db.internal:5432/app?sslmode=require"),
        "postgres://app:***@db.internal:5432/app?sslmode=require"
    );
    assert_eq!(
        redact_url("postgres://postgres@127.0.0.1/x"),
        "postgres://postgres@127.0.0.1/x"
    );
    assert_eq!(
        redact_url("postgres://u@h/db?password=hunter2&sslmode=require&sslpassword=s3"),
        "postgres://u@h/db?password=***&sslmode=require&sslpassword=***"
    );
    assert_eq!(
        redact_url("http://h/v1/runs/r/events?key=secret-key&after=3"),
        "http://h/v1/runs/r/events?key=***&after=3"
    );
    assert_eq!(redact_url("not a url with hunter2"), "<not a URL>");
    assert_eq!(
        redact_url("postgres://u:hunter2@[::1"),
        "postgres://<not a URL>"
    );
    let store = StoreChoice::Snapshot {
        database_url: "postgres://u:p%40ss@h/d".to_owned(),
    };
    assert!(!format!("{store:?}").contains("p%40ss"));
}

#[test]
fn stream_bounds_and_cors_origins_are_read_and_checked() {
    let defaults = config(&[]).unwrap();
    assert_eq!(defaults.max_streams_per_org, 100);
    assert!(defaults.cors_origins.is_empty(), "CORS is off by default");
    let set = config(&[
        ("LOBU_MAX_STREAMS_PER_ORG", "7"),
        (
            "LOBU_CORS_ORIGINS",
            "https://app.example.com, http://localhost:5173",
        ),
    ])
    .unwrap();
    assert_eq!(set.max_streams_per_org, 7);
    assert_eq!(set.cors_origins.len(), 2);
    for (name, value) in [
        ("LOBU_MAX_STREAMS_PER_ORG", "0"),
        ("LOBU_CORS_ORIGINS", "https://app.example.com/"),
        ("LOBU_CORS_ORIGINS", "app.example.com"),
        ("LOBU_CORS_ORIGINS", "https://app.example.com/path"),
    ] {
        let error = config_error(&[(name, value)]);
        assert!(error.contains(name), "{name}={value}: {error}");
    }
}

fn file_config(text: &str, vars: &[(&str, &str)]) -> Result<Config, Error> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lobu.toml");
    std::fs::write(&path, text).unwrap();
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::load(Some(&path), |name| vars.get(name).cloned())
}

#[test]
fn a_config_file_sets_settings_in_human_form_and_the_environment_overrides_it() {
    let text = r#"
        addr = "127.0.0.1:9999"
        request_timeout = "45s"
        api_keys = ["file-key=acme"]
        [runtime]
        turn_timeout = "90s"
        max_event_bytes = 4096
        [runtime.idle_retention_by_agent]
        bot = "never"
        [pg]
        schema = "agents_eu"
    "#;
    let config = file_config(text, &[]).unwrap();
    assert_eq!(config.addr.to_string(), "127.0.0.1:9999");
    assert_eq!(config.request_timeout, Duration::from_secs(45));
    assert_eq!(config.settings.turn_timeout, Duration::from_secs(90));
    assert_eq!(config.settings.max_event_bytes, 4096);
    // A runtime key the file leaves out keeps the host's default, not the library's.
    assert_eq!(config.settings.concurrency, 8);
    assert_eq!(config.settings.shutdown_grace, Duration::from_secs(25));
    assert_eq!(config.pg.schema_name(), "agents_eu");
    assert_eq!(
        config.api_keys.org_for(Some("file-key")).unwrap().as_str(),
        "acme"
    );

    let config = file_config(
        text,
        &[
            ("LOBU_ADDR", "127.0.0.1:7777"),
            ("LOBU_TURN_TIMEOUT_SECS", "30"),
        ],
    )
    .unwrap();
    assert_eq!(config.addr.to_string(), "127.0.0.1:7777");
    assert_eq!(config.settings.turn_timeout, Duration::from_secs(30));
    assert_eq!(config.request_timeout, Duration::from_secs(45));
}

#[test]
fn the_config_file_is_found_through_lobu_config_and_its_store_keys_meet_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lobu.toml");
    std::fs::write(
        &path,
        "session_store = \"file\"\ndata_dir = \"/srv/lobu\"\n",
    )
    .unwrap();
    let path_text = path.to_str().unwrap();
    let config = config(&[("LOBU_CONFIG", path_text)]);
    // `Config::from_lookup` reads the environment only; `load` follows LOBU_CONFIG.
    assert_eq!(
        config.unwrap().store,
        StoreChoice::File {
            dir: "./lobu-data".into()
        }
    );
    let loaded = Config::load(None, |name| {
        (name == "LOBU_CONFIG").then(|| path_text.to_owned())
    })
    .unwrap();
    assert_eq!(
        loaded.store,
        StoreChoice::File {
            dir: "/srv/lobu".into()
        }
    );
    let url = "postgres://postgres@127.0.0.1:5432/app";
    let snapshot = Config::load(None, |name| match name {
        "LOBU_CONFIG" => Some(path_text.to_owned()),
        "DATABASE_URL" => Some(url.to_owned()),
        "LOBU_SESSION_STORE" => Some("snapshot".to_owned()),
        _ => None,
    })
    .unwrap();
    assert_eq!(
        snapshot.store,
        StoreChoice::Snapshot {
            database_url: url.to_owned()
        }
    );
}

#[test]
fn a_bad_config_file_names_the_file_and_the_key() {
    for (text, named) in [
        ("adress = \"x\"", "unknown field `adress`"),
        ("request_timeout = \"soon\"", "request_timeout"),
        (
            "request_timeout = \"2h\"",
            "request_timeout must be from 1 to 3600 seconds",
        ),
        (
            "max_streams_per_org = 0",
            "max_streams_per_org must be between 1 and 100000",
        ),
        (
            "cors_origins = [\"https://a.example/path\"]",
            "cors_origins",
        ),
        (
            "api_keys = [\"no-org\"]",
            "api_keys: entry 1 is not of the form key=org",
        ),
        (
            "[runtime]\nconcurency = 1",
            "[runtime] unknown field `concurency`",
        ),
        ("[runtime]\nconcurrency = 0", "[runtime] concurrency"),
        ("[pg]\nshema = \"x\"", "unknown field `shema`"),
        (
            "[llm]\nbase_url = \"http://127.0.0.1:1/v1\"",
            "LOBU_LLM_MODEL",
        ),
        ("not toml at all", "config file"),
    ] {
        let error = file_config(text, &[]).expect_err(text).to_string();
        assert!(error.contains("lobu.toml"), "{text}: {error}");
        assert!(error.contains(named), "{text}: {error}");
    }
    let missing = Config::load(Some(Path::new("/nonexistent/lobu.toml")), |_| None);
    let error = missing.unwrap_err().to_string();
    assert!(
        error.contains("cannot read the config file /nonexistent/lobu.toml"),
        "{error}"
    );
}

#[test]
fn the_default_config_file_of_help_loads_back_to_the_defaults() {
    let text = crate::default_config_file();
    let loaded = file_config(&text, &[]).unwrap();
    let defaults = Config::defaults();
    assert_eq!(loaded.settings, defaults.settings);
    assert_eq!(loaded.addr, defaults.addr);
    assert_eq!(loaded.store, defaults.store);
    assert_eq!(loaded.request_timeout, defaults.request_timeout);
    assert_eq!(loaded.max_streams_per_org, defaults.max_streams_per_org);
    let help = crate::settings_help();
    for name in [
        "LOBU_REQUEST_TIMEOUT_SECS",
        "turn_timeout = \"5m\"",
        "[runtime]",
    ] {
        assert!(help.contains(name), "--help lacks {name}");
    }
}
