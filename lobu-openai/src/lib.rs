//! # lobu-openai: a lobu agent for OpenAI-compatible endpoints, over HTTPS
//!
//! [`OpenAiAgent`] runs a conversation's turns on any OpenAI-compatible chat completions
//! endpoint (OpenAI, vLLM, Ollama, llama.cpp, LiteLLM, a company gateway): it sends the
//! conversation's history, streams the answer's pieces as the run's output, records the
//! model (a `model_change` when it differs) and the token usage in the transcript, and
//! answers messages steered into the running turn within the same turn.
//!
//! ## Configure
//!
//! [`OpenAiConfig::builder`] takes the API base (requests go to `<base>/chat/completions`)
//! and the model; [`build`](OpenAiConfigBuilder::build) checks them and returns an
//! [`OpenAiError`] for a base that is not `http://` or `https://`, an empty model or an
//! extra root CA that is not PEM certificates.
//!
//! ```no_run
//! use std::sync::Arc;
//! use lobu_core::memory::MemoryBackend;
//! use lobu_core::{Backend, ConversationKey};
//! use lobu_openai::{OpenAiAgent, OpenAiConfig};
//! use lobu_runtime::Runtime;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = OpenAiConfig::builder("https://api.openai.com/v1", "gpt-4o-mini")
//!     .api_key(std::env::var("OPENAI_API_KEY")?)
//!     .build()?;
//! let agent = OpenAiAgent::new(config)?;
//!
//! let backend = Backend::from_shared(Arc::new(MemoryBackend::new()));
//! let runtime = Runtime::builder(backend, Arc::new(agent)).build()?;
//! tokio::spawn({ let r = runtime.clone(); async move { r.run().await } });
//! let key = ConversationKey::parse("acme", "support-bot", "c1")?;
//! let run = runtime.submit(key.clone(), "Hello!", None).await?;
//! println!("{:?}", runtime.wait(&key.org, &run.run).await?.status);
//! # Ok(()) }
//! ```
//!
//! ## TLS
//!
//! HTTPS runs on [rustls](https://docs.rs/rustls) (through reqwest): no system OpenSSL.
//! Servers are verified against the operating system's root certificates (through
//! `rustls-platform-verifier`; Mozilla's roots when the system has no CA store). The crypto
//! provider is reqwest's, aws-lc-rs (built from source by `cc`; no cmake needed on common
//! targets). An endpoint behind a private CA is trusted with
//! [`extra_root_pem`](OpenAiConfigBuilder::extra_root_pem):
//!
//! ```no_run
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let ca = std::fs::read("/etc/llm-gateway/ca.pem")?;
//! let config = lobu_openai::OpenAiConfig::builder("https://llm.internal:8443/v1", "llama3")
//!     .extra_root_pem(ca)
//!     .build()?;
//! # let _ = config; Ok(()) }
//! ```
//!
//! A server whose certificate does not verify fails the turn with
//! [`OpenAiError::Request`]; its source chain names the problem (for example
//! `invalid peer certificate: UnknownIssuer`). Plain `http://` bases are accepted for local
//! servers.
//!
//! ## Errors
//!
//! Every failure is an [`OpenAiError`], which converts into [`lobu_core::Error`] with a
//! kind ([`OpenAiError::kind`]): a turn that fails leaves nothing in the transcript and is
//! retried by the runtime like any agent error.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod agent;
mod client;
mod completion;
mod config;
mod error;

pub use agent::{API, MAX_STEER_ROUNDS, OpenAiAgent, PROVIDER};
pub use config::{DEFAULT_CONNECT_TIMEOUT, OpenAiConfig, OpenAiConfigBuilder};
pub use error::OpenAiError;
