//! `GET /metrics`: the runtime's `lobu_*` metrics in Prometheus' text format.
//!
//! The `metrics` facade has one recorder per process; the first server installs a Prometheus
//! recorder and every server in the process (tests start several) renders from it. A process
//! whose host installed another recorder first answers `503` here.

use std::sync::OnceLock;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Histogram buckets for the `*_seconds` metrics: 1 ms to 5 min.
const SECONDS_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 300.0,
];

/// The process's Prometheus recorder, installed on first use (`None`: another recorder was
/// installed first).
pub(crate) fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &SECONDS_BUCKETS)
                .expect("the buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    // Descriptions registered before the recorder existed went nowhere.
                    lobu_runtime::describe_metrics();
                    Some(handle)
                }
                Err(_) => {
                    tracing::warn!("a metrics recorder was installed already: /metrics is off");
                    None
                }
            }
        })
        .as_ref()
}

/// The metrics in Prometheus' text exposition format.
pub(crate) async fn render() -> Response {
    match prometheus() {
        Some(handle) => {
            // Histograms' old samples are dropped as the exporter rolls them up.
            handle.run_upkeep();
            (
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                handle.render(),
            )
                .into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics are recorded by another recorder in this process",
        )
            .into_response(),
    }
}
