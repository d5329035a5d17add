//! The HTTP client: reqwest over rustls, verifying servers against the operating system's
//! roots (Mozilla's when the system has none) plus the config's extra roots.

use reqwest::Certificate;

use crate::config::OpenAiConfig;
use crate::error::OpenAiError;

/// A client for `config`'s endpoint.
pub(crate) fn http_client(config: &OpenAiConfig) -> Result<reqwest::Client, OpenAiError> {
    let extra = certificates(config.extra_roots().iter().map(|c| c.as_ref()))?;
    let platform = reqwest::Client::builder()
        .connect_timeout(config.connect_timeout())
        .tls_certs_merge(extra.clone())
        .build();
    match platform {
        Ok(client) => Ok(client),
        // The platform verifier refuses to start on a system with no CA store at all (and
        // no extra roots): Mozilla's roots stand in for the system's then.
        Err(_) => {
            let mozilla = certificates(
                webpki_root_certs::TLS_SERVER_ROOT_CERTS
                    .iter()
                    .map(|c| c.as_ref()),
            )?;
            reqwest::Client::builder()
                .connect_timeout(config.connect_timeout())
                .tls_certs_only(mozilla.into_iter().chain(extra))
                .build()
                .map_err(OpenAiError::Client)
        }
    }
}

fn certificates<'a>(ders: impl Iterator<Item = &'a [u8]>) -> Result<Vec<Certificate>, OpenAiError> {
    ders.map(|der| Certificate::from_der(der).map_err(OpenAiError::Client))
        .collect()
}
