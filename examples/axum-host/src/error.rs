//! The host's error type: [`Error`] stops the server from starting (or serving). HTTP answers
//! are lobu-axum's [`ApiError`](lobu_axum::ApiError).

/// Why the server could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A bad or contradictory environment variable; the message names it.
    #[error("configuration: {0}")]
    Config(String),
    /// The store could not be opened, reached or migrated.
    #[error("store: {message}")]
    Store {
        /// What was being done.
        message: String,
        /// The store's error, kept with its kind and source.
        #[source]
        source: lobu_core::Error,
    },
    /// The runtime refused its settings or its worker loop failed.
    #[error("runtime: {0}")]
    Runtime(#[source] lobu_core::Error),
    /// The listening socket could not be bound or accepting failed.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn store(message: impl Into<String>, source: lobu_core::Error) -> Self {
        Error::Store {
            message: message.into(),
            source,
        }
    }
}
