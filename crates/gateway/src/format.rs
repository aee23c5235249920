//! The gateway formatter.

use process_registry::Event;

/// Renders the text a gateway injects for an event, or `None` for events the gateway
/// does not turn into a message.
///
/// - `watch_disabled`, `watch_overflow_tripped`, `watch_overflow_released` →
///   `[IMPORTANT: {message}]`;
/// - `watch_match` → the `[IMPORTANT: Background process … matched watch pattern …]`
///   block of `process-registry` (no attribution lines);
/// - `async_delegation` → the full `[ASYNC DELEGATION COMPLETE — …]` (or batch) block,
///   with the `Dispatched:` time in the system's local time zone;
/// - `completion` (process completions have their own path) and unknown events → `None`.
pub fn format_gateway_process_notification(event: &Event) -> Option<String> {
    match event {
        Event::Completion(_) | Event::Other(_) => None,
        _ => interim::format_process_notification(event),
    }
}

// INTERIM: a minimal stand-in for `process_registry::format_process_notification`, which
// another helper is adding; replaced by a call to it as soon as it lands.
mod interim {
    use process_registry::Event;
    pub(super) fn format_process_notification(event: &Event) -> Option<String> {
        match event {
            Event::AsyncDelegation(e) => Some(format!(
                "[ASYNC DELEGATION COMPLETE — {}]\nOriginal goal: {}\n--- RESULT ---\n{}",
                e.delegation_id,
                e.goal,
                e.summary.clone().unwrap_or_default()
            )),
            Event::WatchDisabled(e) => Some(format!(
                "[IMPORTANT: {}]",
                e.message.clone().unwrap_or_default()
            )),
            Event::WatchOverflowTripped(e) | Event::WatchOverflowReleased(e) => Some(format!(
                "[IMPORTANT: {}]",
                e.message.clone().unwrap_or_default()
            )),
            Event::WatchMatch(e) => Some(format!("[IMPORTANT: {:?}]", e.session_id)),
            _ => None,
        }
    }
}
