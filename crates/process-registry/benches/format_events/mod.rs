//! The two events the formatter is measured on — one single-delegation block and one
//! 3-task batch block — with the fixed time zone and "now" they are rendered with. Shared
//! by the criterion bench (`benches/format.rs`) and the instruction-count example
//! (`examples/format_blocks.rs`), so both measure the same texts.

use jiff::tz::TimeZone;
use jiff::Timestamp;
use process_registry::Event;
use serde_json::json;

/// The Python harness's `_make_async_evt` fixture: a completed single delegation.
pub(crate) fn single() -> Event {
    Event::from_value(json!({
        "type": "async_delegation",
        "delegation_id": "deleg_x1",
        "session_key": "agent:main:telegram:dm:12345:678",
        "goal": "Investigate flaky test",
        "context": "repo /tmp/p",
        "toolsets": ["terminal"],
        "role": "leaf",
        "model": "m",
        "status": "completed",
        "summary": "Found the bug in test_foo",
        "api_calls": 4,
        "duration_seconds": 12.0,
        "dispatched_at": 1000.0,
        "completed_at": 1012.0,
    }))
    .expect("a valid event")
}

/// A batch of three tasks, out of order: one truncated, one clean, one failed.
pub(crate) fn batch() -> Event {
    Event::from_value(json!({
        "type": "async_delegation",
        "delegation_id": "deleg_ba7c0001",
        "session_key": "",
        "goal": "",
        "context": "monorepo at /src",
        "toolsets": ["terminal", "file"],
        "role": "orchestrator",
        "model": "big-model",
        "status": "completed",
        "dispatched_at": 1000.0,
        "completed_at": 1125.0,
        "is_batch": true,
        "goals": ["Fix lint", "Run tests", "Write docs"],
        "results": [
            {"task_index": 2, "status": "completed", "summary": "Docs written.", "api_calls": 0,
             "duration_seconds": 0.25, "exit_reason": "max_iterations", "truncated": true},
            {"task_index": 0, "status": "completed", "summary": "Lint clean.", "api_calls": 3,
             "duration_seconds": 12.0, "exit_reason": "completed", "truncated": false},
            {"task_index": 1, "status": "failed", "summary": "", "error": "tests hung",
             "api_calls": 9, "duration_seconds": 120, "exit_reason": null, "truncated": false},
        ],
        "total_duration_seconds": 125.5,
    }))
    .expect("a valid event")
}

/// The `Dispatched:` line's time zone: a fixed UTC+2.
pub(crate) fn time_zone() -> TimeZone {
    TimeZone::fixed(jiff::tz::offset(2))
}

/// "Now" (unused by these two events, which both have a `completed_at`).
pub(crate) fn now() -> Timestamp {
    Timestamp::from_second(2000).expect("in range")
}
