//! [`Server`]: open the store, build the runtime, listen, serve, and shut down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lobu_core::Backend;
use lobu_runtime::{Agent, Runtime};
use lobu_store_file::FileStore;
use lobu_store_pg::PgStore;
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;

use crate::config::{Config, StoreChoice, redact_url};
use crate::demo_agent::DemoAgent;
use crate::error::Error;
use crate::routes::{AppState, app};

/// How long the HTTP server may take to finish its last responses once the worker stopped.
const HTTP_DRAIN: Duration = Duration::from_secs(5);

/// A bound, ready server: the store is open (and migrated), the runtime built and the socket
/// listening. [`run`](Self::run) serves until the shutdown future completes.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    state: AppState,
    header_read_timeout: Duration,
    /// Whether this replica runs the worker loop (`LOBU_WORKERS`).
    workers: bool,
}

impl Server {
    /// Open the store, build the runtime with the configured agent and bind the address.
    pub async fn bind(config: Config) -> Result<Server, Error> {
        // The metrics recorder goes in before the runtime records anything.
        crate::metrics::prometheus();
        let backend = open_backend(&config).await?;
        let agent = choose_agent(&config)?;
        let runtime = Runtime::builder(backend, agent)
            .settings(config.settings.clone())
            .build()
            .map_err(Error::Runtime)?;
        let listener = TcpListener::bind(config.addr)
            .await
            .map_err(|source| Error::Listen {
                addr: config.addr.to_string(),
                source,
            })?;
        if config.api_keys.is_open() {
            tracing::warn!(
                "LOBU_API_KEYS is not set: the server is OPEN, every request acts as org `default`"
            );
        } else {
            tracing::info!(keys = ?config.api_keys, "bearer keys required");
        }
        let mut state = AppState::new(runtime, config.api_keys)
            .max_streams_per_org(config.max_streams_per_org)
            .request_timeout(config.request_timeout)
            .reset_timeout(config.reset_timeout)
            .cors_origins(config.cors_origins.clone());
        if !config.cors_origins.is_empty() {
            tracing::info!(
                origins = config.cors_origins.len(),
                "CORS on for the configured origins"
            );
        }
        if !config.intake {
            tracing::info!("LOBU_INTAKE=0: worker only, serving the health probes alone");
            state = state.without_intake();
        }
        if !config.workers {
            tracing::info!("LOBU_WORKERS=0: gateway only, turns run on other replicas");
        }
        Ok(Server {
            listener,
            state,
            header_read_timeout: config.header_read_timeout,
            workers: config.workers,
        })
    }

    /// The address the server listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has an address")
    }

    /// The handlers' state (its runtime, for embedding and tests).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serve until `shutdown` completes, then shut down gracefully: stop accepting
    /// connections and report not ready, let in-flight turns finish within the grace period
    /// (then cancel them and hand their runs back to the queue), end the event streams, and
    /// give the last responses a few seconds.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let Server {
            listener,
            state,
            header_read_timeout,
            workers,
        } = self;
        let runtime = state.runtime().clone();
        let grace = runtime.settings().shutdown_grace;
        let addr = listener.local_addr().ok();
        let worker = tokio::spawn({
            let runtime = runtime.clone();
            async move { if workers { runtime.run().await } else { Ok(()) } }
        });

        let api = state.api().clone();
        let http = lobu_axum::serve(listener, app(state.clone()), header_read_timeout, {
            let api = api.clone();
            async move {
                tokio::select! {
                    () = shutdown => {}
                    () = api.drained() => {}
                }
                api.begin_drain();
            }
        });
        let mut http = tokio::spawn(http);
        tracing::info!(?addr, "serving");

        // Serve until shutdown begins; a panicking accept loop ends the server too.
        let served = tokio::select! {
            () = api.drained() => None,
            result = &mut http => Some(result),
        };
        api.begin_drain();
        tracing::info!(
            ?grace,
            "shutting down: no new connections; draining in-flight turns"
        );
        runtime.shutdown_within(grace).await;
        api.close_streams();
        let worker_result = worker.await;

        let http_result = match served {
            Some(result) => result,
            None => match tokio::time::timeout(HTTP_DRAIN, &mut http).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!(
                        "open connections did not finish in {HTTP_DRAIN:?}; closing them"
                    );
                    http.abort();
                    Ok(())
                }
            },
        };
        tracing::info!("stopped");
        match worker_result {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(Error::Runtime(error)),
            Err(join) => {
                return Err(Error::Runtime(
                    lobu_core::Error::new(lobu_core::ErrorKind::Other, "worker loop panicked")
                        .with_source(join),
                ));
            }
        }
        match http_result {
            Ok(()) => Ok(()),
            Err(join) => Err(Error::Listen {
                addr: addr.map(|a| a.to_string()).unwrap_or_default(),
                source: std::io::Error::other(join),
            }),
        }
    }
}

/// Bind with `config` and serve until `shutdown` completes (see [`Server::run`]).
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    Server::bind(config).await?.run(shutdown).await
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}

async fn open_backend(config: &Config) -> Result<Backend, Error> {
    match &config.store {
        StoreChoice::File { dir } => {
            tracing::info!(dir = %dir.display(), "file store");
            let store = FileStore::open(dir).await.map_err(|e| {
                Error::store(format!("opening the file store at {}", dir.display()), e)
            })?;
            Ok(store.into_backend())
        }
        StoreChoice::Snapshot { database_url } => {
            let shown = redact_url(database_url);
            tracing::info!(database = %shown, "snapshot mode on PostgreSQL");
            // No ping before every acquire: a broken connection fails its query (the turn
            // retries), and a ping would add a round trip to every statement of a turn.
            let pool = PgPoolOptions::new()
                .max_connections(config.pg_max_connections)
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(10))
                .connect(database_url)
                .await
                .map_err(|e| {
                    Error::store(
                        format!("connecting to {shown}"),
                        lobu_core::Error::unavailable("cannot connect to PostgreSQL")
                            .with_source(e),
                    )
                })?;
            let store = PgStore::with_config(pool, config.pg.clone())
                .map_err(|e| Error::store("the [pg] settings", e))?;
            store
                .migrate()
                .await
                .map_err(|e| Error::store(format!("migrating {shown}"), e))?;
            Ok(store.into_backend())
        }
    }
}

fn choose_agent(config: &Config) -> Result<Arc<dyn Agent>, Error> {
    match &config.llm {
        None => {
            tracing::info!("agent: the built-in demo agent (offline)");
            Ok(Arc::new(DemoAgent::new(config.demo_word_delay)))
        }
        #[cfg(feature = "openai")]
        Some(llm) => {
            tracing::info!(base_url = %redact_url(&llm.base_url), model = %llm.model, "agent: OpenAI-compatible endpoint");
            let mut builder = lobu_openai::OpenAiConfig::builder(&llm.base_url, &llm.model);
            if let Some(key) = &llm.api_key {
                builder = builder.api_key(key);
            }
            if let Some(pem) = &llm.ca_pem {
                builder = builder.extra_root_pem(pem.as_bytes());
            }
            let agent = builder
                .build()
                .and_then(lobu_openai::OpenAiAgent::new)
                .map_err(|e| {
                    // The config error is text: keep the sources' words (a PEM's fault).
                    let mut message = format!("LOBU_LLM_*: {e}");
                    let mut source = std::error::Error::source(&e);
                    while let Some(inner) = source {
                        message.push_str(&format!(": {inner}"));
                        source = inner.source();
                    }
                    Error::Config(message)
                })?;
            Ok(Arc::new(agent))
        }
        #[cfg(not(feature = "openai"))]
        Some(_) => Err(Error::Config(
            "LOBU_LLM_BASE_URL is set, but this binary was built without the `openai` feature \
             (cargo run -p example-axum-host --features openai)"
                .to_owned(),
        )),
    }
}
