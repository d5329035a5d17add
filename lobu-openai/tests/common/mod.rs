//! The tests' https stand-in for an OpenAI-compatible endpoint, its certificates, and a
//! runtime on the memory backend to drive the agent with.

use std::sync::Arc;

use axum::Router;
use futures::StreamExt;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use lobu_core::memory::MemoryBackend;
use lobu_core::{Backend, ConversationKey, RunRecord};
use lobu_openai::OpenAiAgent;
use lobu_runtime::{RunEvent, Runtime, Settings};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde_json::Value;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A test CA and a server certificate it signed for `localhost` and `127.0.0.1`.
pub(crate) struct TestPki {
    /// The CA's certificate, PEM: what a client trusts.
    pub(crate) ca_pem: String,
    server_cert: CertificateDer<'static>,
    server_key: PrivateKeyDer<'static>,
}

impl TestPki {
    /// A fresh CA named `name` and its server certificate.
    pub(crate) fn new(name: &str) -> TestPki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, name);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        TestPki {
            ca_pem: ca.pem(),
            server_cert: cert.der().clone(),
            server_key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        }
    }
}

/// Serve `app` over https on a free port of 127.0.0.1 with `pki`'s server certificate; the
/// base URL (`https://localhost:<port>/v1`).
pub(crate) async fn https_stand_in(app: Router, pki: &TestPki) -> String {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let tls = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pki.server_cert.clone()], pki.server_key.clone_key())
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake: nothing to serve.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    format!("https://localhost:{port}/v1")
}

/// A runtime on a fresh memory backend running `agent`, one attempt per run.
pub(crate) fn runtime(agent: OpenAiAgent) -> Runtime {
    let backend = Backend::from_shared(Arc::new(MemoryBackend::new()));
    let mut settings = Settings::default();
    settings.max_attempts = 1;
    let runtime = Runtime::builder(backend, Arc::new(agent))
        .settings(settings)
        .build()
        .unwrap();
    tokio::spawn({
        let runtime = runtime.clone();
        async move { runtime.run().await }
    });
    runtime
}

/// What one turn did: its final record and the text it streamed.
pub(crate) struct Outcome {
    pub(crate) record: RunRecord,
    pub(crate) streamed: String,
}

/// Submit `text` to `key`'s conversation and follow the run to its end.
pub(crate) async fn turn(runtime: &Runtime, key: &ConversationKey, text: &str) -> Outcome {
    let run = runtime.submit(key.clone(), text, None).await.unwrap().run;
    let mut events = runtime.subscribe(&key.org, &run).await.unwrap();
    let mut streamed = String::new();
    while let Some(numbered) = events.next().await {
        if let RunEvent::Output { text, .. } = &numbered.event {
            streamed.push_str(text);
        }
        if numbered.event.is_terminal() {
            break;
        }
    }
    let record = runtime.wait(&key.org, &run).await.unwrap();
    Outcome { record, streamed }
}

/// The conversation's messages as `role: text` lines.
pub(crate) async fn lines(runtime: &Runtime, key: &ConversationKey) -> Vec<String> {
    let page = runtime.messages(key, None, Some(200)).await.unwrap();
    page.messages
        .iter()
        .filter_map(|m| {
            let role = m.role.as_deref()?;
            let text = match m.content.as_ref()? {
                Value::String(text) => text.clone(),
                Value::Array(blocks) => blocks
                    .iter()
                    .filter_map(|b| b["text"].as_str())
                    .collect::<Vec<_>>()
                    .join(""),
                _ => return None,
            };
            Some(format!("{role}: {text}"))
        })
        .collect()
}
