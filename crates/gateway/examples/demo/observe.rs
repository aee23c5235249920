//! What the demo shows of observability: an in-process metrics recorder and a span
//! capture (both the example's, never the libraries'), printed at the end — the metrics it
//! recorded and one delegation's trace as a tree.

#[path = "../../../async-delegation/tests/support/capture.rs"]
mod capture;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// Installs the recorder and the span capture (before the engine and router are built:
/// their metric handles are registered then).
pub(crate) fn install() -> Snapshotter {
    capture::install();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // A second install (the crash part's child runs this same `main`) is refused: harmless.
    let _ = recorder.install();
    snapshotter
}

/// Prints every metric the run moved, by name.
pub(crate) fn print_metrics(snapshotter: &Snapshotter) {
    let mut lines: Vec<String> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| {
            let labels: Vec<String> = key
                .key()
                .labels()
                .map(|label| format!("{}={}", label.key(), label.value()))
                .collect();
            let name = match labels.is_empty() {
                true => key.key().name().to_owned(),
                false => format!("{}{{{}}}", key.key().name(), labels.join(",")),
            };
            let value = match value {
                DebugValue::Counter(0) => return None,
                DebugValue::Counter(n) => n.to_string(),
                DebugValue::Gauge(v) => format!("{}", v.into_inner()),
                DebugValue::Histogram(samples) if samples.is_empty() => return None,
                DebugValue::Histogram(samples) => {
                    let max = samples.iter().map(|s| s.into_inner()).fold(0.0, f64::max);
                    format!("{} samples, max {max:.3}s", samples.len())
                }
            };
            Some(format!("  {name:<58} {value}"))
        })
        .collect();
    lines.sort();
    for line in lines {
        println!("{line}");
    }
}

/// The five spans one delivered delegation leaves.
const SPANS: [&str; 5] = [
    "delegation.dispatch",
    "delegation.run",
    "delegation.completion",
    "delegation.claim",
    "delegation.delivery",
];

/// Prints the spans of delegation `id` as a tree: the dispatch, the run it led to, the
/// completion, then the gateway's claim and delivery. Fails unless all five are there.
pub(crate) fn print_trace(id: &str) -> Result<(), String> {
    let spans = capture::with_field("delegation_id", id);
    let all = capture::spans();
    let children = |parent: u64| -> Vec<capture::Seen> {
        let mut found: Vec<capture::Seen> = all
            .iter()
            .filter(|span| span.parent == Some(parent))
            .cloned()
            .collect();
        found.sort_by_key(|span| span.order);
        found
    };
    let shown = |span: &capture::Seen| {
        let fields: Vec<String> = span
            .fields
            .iter()
            .filter(|(name, _)| !matches!(name.as_str(), "delegation_id" | "traceparent"))
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        format!("{} {}", span.name, fields.join(" "))
    };
    if let Some(traceparent) = spans.iter().find_map(|span| span.field("traceparent")) {
        println!("  trace {traceparent}");
    }
    let mut seen = Vec::new();
    for root in spans.iter().filter(|span| span.parent.is_none()) {
        let linked = if root.follows_from.is_empty() {
            ""
        } else {
            "   (follows from the dispatch)"
        };
        println!("  {}{linked}", shown(root));
        seen.push(root.name);
        for child in children(root.id) {
            println!("    └ {}", shown(&child));
            seen.push(child.name);
        }
    }
    match SPANS.iter().find(|name| !seen.contains(name)) {
        Some(missing) => Err(format!("the trace of {id} has no `{missing}` span")),
        None => Ok(()),
    }
}
