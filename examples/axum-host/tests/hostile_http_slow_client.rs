//! Slow clients: a connection that trickles its request headers, or sends nothing, is closed
//! once the header-read timeout runs out; it cannot hold a connection and its task forever.
//! Other clients are served meanwhile.

mod common;

use std::time::{Duration, Instant};

use common::raw::{self, closed_within};
use common::{Data, Host, Store, test_config};
use reqwest::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The timeout the tests configure (the default is 30 s).
const TIMEOUT: Duration = Duration::from_secs(2);
/// Well past the timeout: a server that never closes is caught by this.
const GIVE_UP: Duration = Duration::from_secs(12);
/// Clock slack between the server's timer (started at accept) and the test's.
const SLACK: Duration = Duration::from_millis(250);

async fn host(store: Store) -> (Host, Data) {
    let data = Data::new(store).await;
    let mut config = test_config(&data, None);
    config.header_read_timeout = TIMEOUT;
    (Host::start(config).await, data)
}

async fn a_client_sending_one_header_byte_every_second_is_disconnected(store: Store) {
    let (host, data) = host(store).await;
    let started = Instant::now();
    let mut slow = TcpStream::connect(raw::addr(&host.base)).await.unwrap();
    let request = b"GET /health/live HTTP/1.1\r\nhost: test\r\nx-padding: ";
    let mut sent = 0;
    let mut closed = false;
    // One byte a second, for longer than the timeout: the server must hang up meanwhile.
    while started.elapsed() < GIVE_UP {
        let byte = request.get(sent).copied().unwrap_or(b'a');
        if slow.write_all(&[byte]).await.is_err() {
            closed = true;
            break;
        }
        sent += 1;
        if closed_within(&mut slow, Duration::from_secs(1)).await {
            closed = true;
            break;
        }
    }
    let lasted = started.elapsed();
    assert!(closed, "still open after {lasted:?} and {sent} bytes");
    assert!(sent >= 2, "the client did trickle ({sent} bytes)");
    assert!(
        lasted + SLACK >= TIMEOUT,
        "closed after {lasted:?}, before the timeout"
    );
    assert!(
        lasted < TIMEOUT + Duration::from_secs(3),
        "closed only after {lasted:?}"
    );
    host.api().get("/health/live").await;
    host.stop().await;
    data.cleanup().await;
}

async fn a_client_that_connects_and_sends_nothing_is_disconnected(store: Store) {
    let (host, data) = host(store).await;
    let started = Instant::now();
    let mut idle = TcpStream::connect(raw::addr(&host.base)).await.unwrap();
    // Meanwhile a normal client is served at once.
    let live = host.api().get("/health/live").await;
    assert_eq!(live.status, StatusCode::OK);
    assert!(
        closed_within(&mut idle, GIVE_UP).await,
        "idle connection kept open"
    );
    let lasted = started.elapsed();
    assert!(
        lasted + SLACK >= TIMEOUT,
        "closed after {lasted:?}, before the timeout"
    );
    host.stop().await;
    data.cleanup().await;
}

async fn a_client_that_sends_its_headers_in_time_is_answered(store: Store) {
    let (host, data) = host(store).await;
    let mut stream = TcpStream::connect(raw::addr(&host.base)).await.unwrap();
    // Slowly, but within the timeout.
    for part in [
        &b"GET /health/live HTTP/1.1\r\n"[..],
        b"host: test\r\n",
        b"connection: close\r\n\r\n",
    ] {
        stream.write_all(part).await.unwrap();
        tokio::time::sleep(TIMEOUT / 5).await;
    }
    let reply = raw::read_reply(&mut stream).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json()["status"], "ok");
    host.stop().await;
    data.cleanup().await;
}

on_both_stores!(
    a_client_sending_one_header_byte_every_second_is_disconnected,
    a_client_that_connects_and_sends_nothing_is_disconnected,
    a_client_that_sends_its_headers_in_time_is_answered,
);

#[test]
fn the_default_header_read_timeout_is_thirty_seconds() {
    let config = example_axum_host::Config::defaults();
    assert_eq!(config.header_read_timeout, Duration::from_secs(30));
    assert_eq!(
        example_axum_host::DEFAULT_HEADER_READ_TIMEOUT,
        Duration::from_secs(30)
    );
}
