//! The gateway formatter.

use jiff::tz::TimeZone;
use jiff::Timestamp;
use process_registry::{format_process_notification, format_process_notification_in, Event};

/// Renders the text a gateway injects for an event, or `None` for events the gateway
/// does not turn into a message.
///
/// - `watch_disabled`, `watch_overflow_tripped`, `watch_overflow_released` →
///   `[IMPORTANT: {message}]`;
/// - `watch_match` → `process-registry`'s `[IMPORTANT: Background process … matched
///   watch pattern …]` block (no attribution lines);
/// - `async_delegation` → the full `[ASYNC DELEGATION COMPLETE — …]` (or batch) block,
///   with the `Dispatched:` time in the system's local time zone;
/// - `completion` and unknown events → `None`. (The delivery router renders a process
///   completion with the general
///   [`format_process_notification`](process_registry::format_process_notification).)
///
/// ```
/// use gateway::format_gateway_process_notification;
/// use process_registry::{Event, ProcessCompletion, WatchOverflow};
///
/// let tripped = Event::WatchOverflowTripped(WatchOverflow {
///     message: Some("Watch output is arriving too fast.".into()),
///     ..WatchOverflow::default()
/// });
/// assert_eq!(
///     format_gateway_process_notification(&tripped).as_deref(),
///     Some("[IMPORTANT: Watch output is arriving too fast.]")
/// );
/// assert_eq!(format_gateway_process_notification(&ProcessCompletion::default().into()), None);
/// ```
pub fn format_gateway_process_notification(event: &Event) -> Option<String> {
    if renders_in_gateway(event) {
        format_process_notification(event)
    } else {
        None
    }
}

/// [`format_gateway_process_notification`] with an explicit time zone for the
/// `Dispatched:` line and an explicit "now" (used for the age when an event has no
/// `completed_at`): a pure function of its arguments, for tests and embedders with their
/// own clock.
pub fn format_gateway_process_notification_in(
    event: &Event,
    time_zone: &TimeZone,
    now: Timestamp,
) -> Option<String> {
    if renders_in_gateway(event) {
        format_process_notification_in(event, time_zone, now)
    } else {
        None
    }
}

fn renders_in_gateway(event: &Event) -> bool {
    match event {
        Event::AsyncDelegation(_)
        | Event::WatchMatch(_)
        | Event::WatchDisabled(_)
        | Event::WatchOverflowTripped(_)
        | Event::WatchOverflowReleased(_) => true,
        Event::Completion(_) | Event::Other(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use process_registry::{
        AsyncDelegationEvent, ProcessCompletion, WatchDisabled, WatchMatch, WatchOverflow,
    };
    use serde_json::json;

    fn render(event: &Event) -> Option<String> {
        format_gateway_process_notification_in(event, &TimeZone::UTC, Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn watch_events_render_important_messages() {
        let disabled = Event::from(WatchDisabled {
            message: Some("Watching proc_1 was disabled.".into()),
            ..WatchDisabled::default()
        });
        assert_eq!(
            render(&disabled).as_deref(),
            Some("[IMPORTANT: Watching proc_1 was disabled.]")
        );
        let released = Event::WatchOverflowReleased(WatchOverflow {
            message: Some("Back to normal.".into()),
            suppressed: Some(process_registry::WireNumber::from(3)),
            ..WatchOverflow::default()
        });
        assert_eq!(
            render(&released).as_deref(),
            Some("[IMPORTANT: Back to normal.]")
        );
        let tripped = Event::WatchOverflowTripped(WatchOverflow {
            message: Some("Too fast.".into()),
            ..WatchOverflow::default()
        });
        assert_eq!(render(&tripped).as_deref(), Some("[IMPORTANT: Too fast.]"));
    }

    #[test]
    fn watch_match_renders_the_registry_block() {
        let event = Event::from(WatchMatch {
            session_id: Some("proc_1".into()),
            command: Some("pytest".into()),
            pattern: Some("READY".into()),
            output: Some("READY".into()),
            suppressed: Some(process_registry::WireNumber::from(2)),
            ..WatchMatch::default()
        });
        assert_eq!(
            render(&event).as_deref(),
            Some(
                "[IMPORTANT: Background process proc_1 matched watch pattern \"READY\".\n\
                 Command: pytest\n\
                 Matched output:\n\
                 READY\n\
                 (2 earlier matches were suppressed by rate limit)]"
            )
        );
    }

    #[test]
    fn process_completions_and_unknown_events_render_nothing() {
        let completion = Event::from(ProcessCompletion {
            session_id: Some("proc_1".into()),
            exit_code: Some(0.into()),
            ..ProcessCompletion::default()
        });
        assert_eq!(render(&completion), None);
        assert_eq!(format_gateway_process_notification(&completion), None);
        let unknown = Event::from_value(json!({"type": "from_the_future", "x": 1})).unwrap();
        assert_eq!(render(&unknown), None);
    }

    #[test]
    fn async_delegation_renders_the_full_block() {
        // The Python harness's test fixture `_make_async_evt` values.
        let event = Event::from(AsyncDelegationEvent {
            delegation_id: Some("deleg_x1".into()),
            session_key: "agent:main:telegram:dm:12345:678".into(),
            goal: "Investigate flaky test".into(),
            context: Some("repo /tmp/p".into()),
            toolsets: Some(["terminal".into()].into()),
            role: Some("leaf".into()),
            model: Some("m".into()),
            status: Some("completed".into()),
            summary: Some("Found the bug in test_foo".into()),
            api_calls: Some(4.into()),
            duration_seconds: process_registry::WireNumber::from_f64(12.0),
            dispatched_at: process_registry::WireNumber::from_f64(1000.0),
            completed_at: process_registry::WireNumber::from_f64(1012.0),
            ..AsyncDelegationEvent::default()
        });
        assert_eq!(
            render(&event).as_deref(),
            Some(
                "[ASYNC DELEGATION COMPLETE — deleg_x1]\n\
                 A background subagent you dispatched earlier has finished. You may have moved on since dispatching it; the full task source is below so you can act on the result or re-dispatch if things have changed.\n\
                 \n\
                 Dispatched: 1970-01-01 00:16:40 (12s ago)\n\
                 Original goal: Investigate flaky test\n\
                 Context you provided: repo /tmp/p\n\
                 Toolsets: terminal\n\
                 Role: leaf   Model: m\n\
                 Status: completed   API calls: 4   Duration: 12.0s\n\
                 --- RESULT ---\n\
                 Found the bug in test_foo"
            )
        );
        assert_eq!(
            format_gateway_process_notification(&event).map(|t| t.lines().count()),
            render(&event).map(|t| t.lines().count())
        );
    }
}
