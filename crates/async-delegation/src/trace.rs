//! The `tracing` spans of one delegation (see the crate docs for their names and fields).

use process_registry::{AsyncDelegationEvent, Text};
use tracing::field::Empty;
use tracing::Span;

use crate::DelegationSpec;

/// The dispatch's span, to enter while the dispatch is admitted. When a subscriber records
/// it and the spec carries no trace context, one is started for it (a fresh
/// `traceparent`), so the trace continues wherever the completion is handled.
#[inline]
pub(crate) fn dispatch(spec: &mut DelegationSpec) -> Span {
    // The whole cost without a subscriber: one load, no call.
    if !tracing::level_enabled!(tracing::Level::INFO) {
        return Span::none();
    }
    dispatch_recorded(spec)
}

#[cold]
#[inline(never)]
fn dispatch_recorded(spec: &mut DelegationSpec) -> Span {
    let span = tracing::info_span!(
        "delegation.dispatch",
        delegation_id = Empty,
        session_key = %spec.session_key,
        traceparent = Empty,
    );
    if !span.is_disabled() {
        let traceparent = spec.traceparent.get_or_insert_with(new_traceparent);
        span.record("traceparent", traceparent.as_str());
    }
    span
}

/// The run's span: a root of its own (the worker has no parent span), linked to the
/// dispatch with `follows_from` (`None`: no subscriber recorded the dispatch); entered
/// around the runner, so the runner's own spans nest inside it.
#[inline]
pub(crate) fn run(
    dispatch: Option<&Span>,
    delegation_id: &str,
    spec: &AsyncDelegationEvent,
) -> Span {
    if !tracing::level_enabled!(tracing::Level::INFO) {
        return Span::none();
    }
    run_recorded(dispatch, delegation_id, spec)
}

#[cold]
#[inline(never)]
fn run_recorded(dispatch: Option<&Span>, delegation_id: &str, spec: &AsyncDelegationEvent) -> Span {
    let span = tracing::info_span!(
        parent: None,
        "delegation.run",
        delegation_id,
        session_key = %spec.session_key,
        traceparent = spec.traceparent.as_deref(),
    );
    if let Some(dispatch) = dispatch {
        span.follows_from(dispatch);
    }
    span
}

/// What a worker keeps of the dispatch's span until the run links to it: the span itself
/// (open, so a subscriber can still look it up), boxed — or nothing when no subscriber
/// records it, so an untraced dispatch moves no more into its job than before.
#[inline]
pub(crate) fn link(dispatch: &Span) -> Option<Box<Span>> {
    (!dispatch.is_disabled()).then(|| Box::new(dispatch.clone()))
}

/// The completion's span (recording it in the ledger and offering it): inside the
/// current span (the run's), or a root of its own (`root`: the engine's own stalled
/// completion, written by the monitor).
#[inline]
pub(crate) fn completion(delegation_id: &str, status: &str, root: bool) -> Span {
    if !tracing::level_enabled!(tracing::Level::INFO) {
        return Span::none();
    }
    completion_recorded(delegation_id, status, root)
}

#[cold]
#[inline(never)]
fn completion_recorded(delegation_id: &str, status: &str, root: bool) -> Span {
    if root {
        tracing::info_span!(parent: None, "delegation.completion", delegation_id, status)
    } else {
        tracing::info_span!("delegation.completion", delegation_id, status)
    }
}

/// A fresh W3C trace context: version 00, a random 128-bit trace id, a random 64-bit
/// parent id, sampled.
pub(crate) fn new_traceparent() -> Text {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let trace: u128 = rand::random::<u128>().max(1);
    let parent: u64 = rand::random::<u64>().max(1);
    let mut text = String::with_capacity(55);
    text.push_str("00-");
    for shift in (0..32).rev() {
        text.push(char::from(HEX[(trace >> (shift * 4)) as usize & 0xf]));
    }
    text.push('-');
    for shift in (0..16).rev() {
        text.push(char::from(HEX[(parent >> (shift * 4)) as usize & 0xf]));
    }
    text.push_str("-01");
    Text::from(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_traceparent_is_w3c_shaped() {
        let text = new_traceparent();
        let parts: Vec<&str> = text.split('-').collect();
        assert_eq!(parts.len(), 4, "{text}");
        assert_eq!(parts[0], "00");
        assert_eq!(parts[1].len(), 32);
        assert_eq!(parts[2].len(), 16);
        assert_eq!(parts[3], "01");
        assert!(parts[1..3]
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit())));
        assert_ne!(new_traceparent(), text);
    }
}
