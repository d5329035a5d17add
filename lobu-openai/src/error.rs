//! [`OpenAiError`]: why a config was refused or a call to the endpoint failed.

use eventsource_stream::EventStreamError;
use lobu_core::ErrorKind;

/// Why the agent could not be configured, or why one call to the model endpoint failed.
///
/// A turn that fails with one of these leaves nothing in the transcript; the runtime retries
/// it like any agent error. [`kind`](Self::kind) (and the conversion into
/// [`lobu_core::Error`]) sorts them: a bad config is `InvalidInput`, an endpoint that cannot
/// be reached or answers badly `Unavailable`, a cancelled turn `Cancelled`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenAiError {
    /// The base URL does not parse.
    #[error("the base URL is not a URL")]
    BaseUrl(#[source] url::ParseError),
    /// The base URL is neither `http://` nor `https://`.
    #[error("the base URL must start with http:// or https://, not {scheme}://")]
    BaseUrlScheme {
        /// The scheme it has.
        scheme: String,
    },
    /// The model name is empty.
    #[error("the model name is empty")]
    EmptyModel,
    /// The extra root CA is not valid PEM.
    #[error("the extra root CA is not valid PEM")]
    RootPem(#[source] rustls_pki_types::pem::Error),
    /// The extra root CA's PEM holds no `CERTIFICATE` block.
    #[error("the extra root CA's PEM holds no CERTIFICATE block")]
    NoRootCertificate,
    /// The HTTP client could not be built (its TLS roots, or a root CA rustls refuses).
    #[error("building the HTTP client")]
    Client(#[source] reqwest::Error),
    /// The request did not get an answer: connection refused, DNS, a TLS handshake that
    /// failed (the source names the certificate problem), a timeout.
    #[error("sending the request to the model endpoint")]
    Request(#[source] reqwest::Error),
    /// The endpoint answered with a status other than 2xx.
    #[error("the model endpoint answered {status}: {excerpt}")]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The start of the answer's body (300 characters at most).
        excerpt: String,
    },
    /// The answer's body broke off.
    #[error("reading the model endpoint's stream")]
    Stream(#[source] reqwest::Error),
    /// The answer's body is not a valid event stream (not UTF-8, or unparseable).
    #[error("the model endpoint's stream is malformed")]
    MalformedStream(#[source] EventStreamError<reqwest::Error>),
    /// An event's `data` is not JSON.
    #[error("an event of the model endpoint's stream is not JSON")]
    EventJson(#[source] serde_json::Error),
    /// The endpoint sent an `error` object in the stream.
    #[error("the model endpoint reported an error: {0}")]
    Endpoint(serde_json::Value),
    /// The stream ended without `data: [DONE]`.
    #[error("the model endpoint closed the stream before [DONE]")]
    ClosedEarly,
    /// The turn was cancelled while the model answered.
    #[error("turn cancelled")]
    Cancelled,
}

impl OpenAiError {
    /// The [`ErrorKind`] this error maps to in [`lobu_core::Error`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            OpenAiError::BaseUrl(_)
            | OpenAiError::BaseUrlScheme { .. }
            | OpenAiError::EmptyModel
            | OpenAiError::RootPem(_)
            | OpenAiError::NoRootCertificate => ErrorKind::InvalidInput,
            OpenAiError::Cancelled => ErrorKind::Cancelled,
            OpenAiError::Client(_) => ErrorKind::Other,
            OpenAiError::Request(_)
            | OpenAiError::Status { .. }
            | OpenAiError::Stream(_)
            | OpenAiError::MalformedStream(_)
            | OpenAiError::EventJson(_)
            | OpenAiError::Endpoint(_)
            | OpenAiError::ClosedEarly => ErrorKind::Unavailable,
        }
    }
}

impl From<OpenAiError> for lobu_core::Error {
    fn from(error: OpenAiError) -> Self {
        lobu_core::Error::new(error.kind(), error.to_string()).with_source(error)
    }
}
