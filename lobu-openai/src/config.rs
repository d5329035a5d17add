//! [`OpenAiConfig`]: the endpoint, the model, the key and the TLS trust of an agent, checked
//! when built.

use std::fmt;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::error::OpenAiError;

/// How long to wait for the endpoint to accept a connection (TLS handshake included), by
/// default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The endpoint an [`OpenAiAgent`](crate::OpenAiAgent) talks to. Built with
/// [`OpenAiConfig::builder`], which checks every field; the API key never shows in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct OpenAiConfig {
    base_url: String,
    model: String,
    api_key: Option<String>,
    extra_roots: Vec<CertificateDer<'static>>,
    connect_timeout: Duration,
}

impl OpenAiConfig {
    /// A builder for the endpoint at `base_url` (requests go to `<base>/chat/completions`,
    /// e.g. `https://api.openai.com/v1` or `http://127.0.0.1:11434/v1`) asking for `model`.
    pub fn builder(base_url: impl Into<String>, model: impl Into<String>) -> OpenAiConfigBuilder {
        OpenAiConfigBuilder {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            extra_root_pem: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// The API base, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The model name sent with each request (and recorded in the transcript).
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Whether requests carry `Authorization: Bearer <key>`.
    pub fn has_api_key(&self) -> bool {
        self.api_key.is_some()
    }

    pub(crate) fn api_key(&self) -> Option<&str> {
        self.api_key.as_deref()
    }

    /// The root CAs trusted beyond the operating system's.
    pub(crate) fn extra_roots(&self) -> &[CertificateDer<'static>] {
        &self.extra_roots
    }

    /// How long a connection (TLS handshake included) may take.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }
}

impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("extra_roots", &self.extra_roots.len())
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// Builds an [`OpenAiConfig`]; [`build`](Self::build) checks it.
#[derive(Clone)]
pub struct OpenAiConfigBuilder {
    base_url: String,
    model: String,
    api_key: Option<String>,
    extra_root_pem: Option<Vec<u8>>,
    connect_timeout: Duration,
}

impl OpenAiConfigBuilder {
    /// Send `Authorization: Bearer <key>` with each request.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Trust the root CA certificates in `pem` (one or more `-----BEGIN CERTIFICATE-----`
    /// blocks) besides the operating system's roots: for an endpoint behind a private CA.
    pub fn extra_root_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.extra_root_pem = Some(pem.into());
        self
    }

    /// How long a connection (TLS handshake included) may take; default
    /// [`DEFAULT_CONNECT_TIMEOUT`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The config, or why not: a base URL that is not `http://` or `https://`, an empty
    /// model name, an extra root that is not PEM certificates.
    pub fn build(self) -> Result<OpenAiConfig, OpenAiError> {
        let base_url = self.base_url.trim().trim_end_matches('/').to_owned();
        let parsed = url::Url::parse(&base_url).map_err(OpenAiError::BaseUrl)?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(OpenAiError::BaseUrlScheme {
                scheme: parsed.scheme().to_owned(),
            });
        }
        if self.model.trim().is_empty() {
            return Err(OpenAiError::EmptyModel);
        }
        let extra_roots = match &self.extra_root_pem {
            None => Vec::new(),
            Some(pem) => root_certificates(pem)?,
        };
        Ok(OpenAiConfig {
            base_url,
            model: self.model,
            api_key: self.api_key,
            extra_roots,
            connect_timeout: self.connect_timeout,
        })
    }
}

impl fmt::Debug for OpenAiConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiConfigBuilder")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// Every `CERTIFICATE` block of `pem`; other blocks (a key pasted along) are skipped.
fn root_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, OpenAiError> {
    let roots = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(OpenAiError::RootPem)?;
    if roots.is_empty() {
        return Err(OpenAiError::NoRootCertificate);
    }
    Ok(roots)
}
