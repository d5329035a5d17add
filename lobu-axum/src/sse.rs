//! A run's events as Server-Sent Events: one SSE event per [`RunEvent`], named by its type
//! (`accepted`, `started`, `output`, `entry`, `retrying`, `requeued`, `completed`, `failed`,
//! `timeout`, `cancelled`), with the event's seq as its `id:` and the event's JSON (plus
//! `seq` and `attempt`) as data. The stream ends after the terminal event, or when the
//! server shuts down: a client then reconnects, to any replica, with `Last-Event-ID` and
//! gets only what came after.

use crate::streams::StreamSlot;
use std::convert::Infallible;
use std::time::Duration;

use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use lobu_runtime::{NumberedEvent, RunEvents};
use tokio_util::sync::CancellationToken;

/// How often an idle stream sends a comment, so proxies keep the connection open.
const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(15);

/// Whether the request's `Accept` header asks for `text/event-stream`.
pub(crate) fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|range| {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim();
            // `q=0` means "not acceptable".
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("text/event-stream") && !refused
        })
}

/// The SSE response for `events`, ending early when `closing` fires; it holds `slot` (one
/// of its org's stream slots) until the client goes away or the stream ends.
pub(crate) fn event_stream(
    events: RunEvents,
    closing: CancellationToken,
    slot: StreamSlot,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = events
        .take_until(closing.cancelled_owned())
        .map(move |event| {
            let _held = &slot;
            Ok(to_sse(&event))
        });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE_EVERY))
}

fn to_sse(numbered: &NumberedEvent) -> Event {
    let name = numbered.event.name();
    let data = serde_json::to_string(numbered).unwrap_or_else(|error| {
        // Events are plain data; if one ever fails to serialise, say so instead of dropping it.
        serde_json::json!({ "type": name, "error": error.to_string() }).to_string()
    });
    Event::default()
        .id(numbered.seq.to_string())
        .event(name)
        .data(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn accept(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn event_stream_is_recognised_among_other_media_ranges() {
        assert!(wants_event_stream(&accept("text/event-stream")));
        assert!(wants_event_stream(&accept(
            "application/json, Text/Event-Stream;q=0.9"
        )));
        assert!(!wants_event_stream(&accept("application/json")));
        assert!(!wants_event_stream(&accept("*/*")));
        assert!(!wants_event_stream(&accept("text/event-stream;q=0")));
        assert!(!wants_event_stream(&HeaderMap::new()));
    }
}
