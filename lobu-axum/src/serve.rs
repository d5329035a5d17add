//! The accept loop: HTTP/1.1 connections served by hyper with a header-read deadline.
//!
//! `axum::serve` builds its hyper connections without a timer, so hyper's header-read
//! timeout never applies there: a client that sends one header byte every few seconds holds
//! a connection and its task for as long as it likes (slowloris). This loop serves the same
//! router with the timeout on: a connection that has not delivered a whole request head
//! within the header-read timeout of the server starting to read it is closed (an idle
//! kept-alive connection too).

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// How long the loop pauses after an accept error that is not about one connection (out of
/// file descriptors, say), as `axum::serve` does, instead of spinning.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// How long a client may take to send a request's headers by default (hyper's own default,
/// which `axum::serve` never applies).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serve `app` on `listener` until `shutdown` completes; then stop accepting, let every open
/// connection finish its in-flight request (idle ones close at once) and return when all
/// have closed.
///
/// `header_read_timeout` bounds how long a client may take to send a request's head (use
/// [`DEFAULT_HEADER_READ_TIMEOUT`] unless you know better): use this instead of `axum::serve`,
/// which sets none.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    accept_error(&error).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                // A header-read timeout lands here: the client was too slow, not the server.
                tracing::debug!(%error, timeout = error.is_timeout(), "connection closed");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

async fn accept_error(error: &std::io::Error) {
    use std::io::ErrorKind;
    // Errors of one connection (it was reset before we took it) say nothing about the
    // listener: take the next one.
    if matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accepting a connection failed; pausing");
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}
