//! Process-wide capture of metrics and spans for this test binary. The runtime records from
//! the tasks it spawns, which a thread-local (`with_local_recorder`, a scoped subscriber)
//! would not see, so this binary installs a global recorder and a global subscriber once.
//! Tests run in parallel: each asserts on its own agent's or run's data only.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use metrics::Unit;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};
use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// A span's name and fields as recorded so far.
#[derive(Debug, Clone, Default)]
pub(crate) struct CapturedSpan {
    pub(crate) name: &'static str,
    pub(crate) fields: BTreeMap<String, String>,
}

/// One metric series: its kind, name and labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Series {
    pub(crate) kind: &'static str,
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
}

/// What a series recorded: counter increments summed, gauge last value, histogram samples.
#[derive(Debug, Clone, Default)]
pub(crate) struct Recorded {
    pub(crate) count: u64,
    pub(crate) samples: Vec<f64>,
    pub(crate) unit: Option<Unit>,
}

pub(crate) struct Capture {
    spans: Mutex<Vec<Arc<Mutex<CapturedSpan>>>>,
    snapshotter: Snapshotter,
    /// A snapshot drains the recorder, so every snapshot is added up here.
    metrics: Mutex<BTreeMap<Series, Recorded>>,
}

static CAPTURE: OnceLock<Arc<Capture>> = OnceLock::new();

/// The capture, installed on first use.
pub(crate) fn capture() -> &'static Capture {
    CAPTURE.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let capture = Arc::new(Capture {
            spans: Mutex::default(),
            snapshotter: recorder.snapshotter(),
            metrics: Mutex::default(),
        });
        recorder.install().expect("the only metrics recorder");
        let subscriber = tracing_subscriber::registry().with(SpanLayer(capture.clone()));
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        capture
    })
}

impl Capture {
    /// Every span named `name` whose fields include `field = value`.
    pub(crate) fn spans(&self, name: &str, field: &str, value: &str) -> Vec<CapturedSpan> {
        let spans = self.spans.lock().unwrap();
        spans
            .iter()
            .map(|span| span.lock().unwrap().clone())
            .filter(|span| {
                span.name == name && span.fields.get(field).map(String::as_str) == Some(value)
            })
            .collect()
    }

    /// Every series recorded so far whose labels include `label = value`.
    pub(crate) fn series(&self, label: &str, value: &str) -> BTreeMap<Series, Recorded> {
        let mut all = self.metrics.lock().unwrap();
        for (key, unit, _, value) in self.snapshotter.snapshot().into_vec() {
            let entry = all.entry(series(&key)).or_default();
            entry.unit = unit.or(entry.unit);
            match value {
                DebugValue::Counter(n) => entry.count += n,
                DebugValue::Gauge(g) => entry.samples = vec![g.into_inner()],
                DebugValue::Histogram(samples) => {
                    entry
                        .samples
                        .extend(samples.into_iter().map(|s| s.into_inner()));
                }
            }
        }
        all.iter()
            .filter(|(s, _)| s.labels.get(label).map(String::as_str) == Some(value))
            .map(|(s, r)| (s.clone(), r.clone()))
            .collect()
    }
}

fn series(key: &CompositeKey) -> Series {
    let kind = match key.kind() {
        MetricKind::Counter => "counter",
        MetricKind::Gauge => "gauge",
        MetricKind::Histogram => "histogram",
    };
    Series {
        kind,
        name: key.key().name().to_owned(),
        labels: key
            .key()
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect(),
    }
}

struct SpanLayer(Arc<Capture>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for SpanLayer {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut captured = CapturedSpan {
            name: attrs.metadata().name(),
            fields: BTreeMap::new(),
        };
        attrs.record(&mut Fields(&mut captured.fields));
        let captured = Arc::new(Mutex::new(captured));
        self.0.spans.lock().unwrap().push(captured.clone());
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(captured);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(captured) = span.extensions().get::<Arc<Mutex<CapturedSpan>>>()
        {
            values.record(&mut Fields(&mut captured.lock().unwrap().fields));
        }
    }
}
