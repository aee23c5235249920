//! Every text the formatter renders, pinned by exact equality on the whole rendered string.
//!
//! Events are built from wire JSON (as a Python producer would send them) and rendered
//! with an explicit time zone and "now", so the output is deterministic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use jiff::tz::{self, TimeZone};
use jiff::Timestamp;
use process_registry::{format_process_notification_in, Event};
use serde_json::{json, Value};

const SINGLE_INTRO: &str = "A background subagent you dispatched earlier has finished. You may have moved on since dispatching it; the full task source is below so you can act on the result or re-dispatch if things have changed.";

/// 1970-01-01 00:33:20 UTC: "now" for events without `completed_at`.
fn now() -> Timestamp {
    Timestamp::from_second(2000).unwrap()
}

fn event(value: Value) -> Event {
    Event::from_value(value).unwrap()
}

fn render_in(value: Value, time_zone: &TimeZone) -> String {
    format_process_notification_in(&event(value), time_zone, now()).expect("a text")
}

fn render(value: Value) -> String {
    render_in(value, &TimeZone::UTC)
}

/// The Python harness's gateway test fixture `_make_async_evt`, with overrides.
fn make_async_evt(overrides: Value) -> Value {
    let mut evt = json!({
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
    });
    let object = evt.as_object_mut().unwrap();
    for (key, value) in overrides.as_object().unwrap() {
        object.insert(key.clone(), value.clone());
    }
    evt
}

/// The block of `make_async_evt` up to `--- RESULT ---\n`, for the given Status line.
fn fixture_head(status_line: &str) -> String {
    format!(
        "[ASYNC DELEGATION COMPLETE — deleg_x1]\n{SINGLE_INTRO}\n\n\
         Dispatched: 1970-01-01 00:16:40 (12s ago)\n\
         Original goal: Investigate flaky test\n\
         Context you provided: repo /tmp/p\n\
         Toolsets: terminal\n\
         Role: leaf   Model: m\n\
         {status_line}\n\
         --- RESULT ---\n"
    )
}

// ---------------------------------------------------------------------------------------
// The Python harness's own expectations (test_async_delegation.py)
// ---------------------------------------------------------------------------------------

#[test]
fn test_gateway_formatter_renders_async_block() {
    let text = render(make_async_evt(json!({})));
    let expected = fixture_head("Status: completed   API calls: 4   Duration: 12.0s")
        + "Found the bug in test_foo";
    assert_eq!(text, expected);
    for needle in [
        "ASYNC DELEGATION COMPLETE",
        "Found the bug in test_foo",
        "Investigate flaky test",
    ] {
        assert!(text.contains(needle), "missing {needle:?}");
    }
}

#[test]
fn test_rich_reinjection_block_is_self_contained() {
    let text = render(json!({
        "type": "async_delegation",
        "delegation_id": "deleg_0a1b2c3d",
        "session_key": "",
        "goal": "Compute the meaning of life",
        "context": "User is a philosopher. Respond tersely.",
        "toolsets": ["web"],
        "role": "leaf",
        "model": "test-model",
        "status": "completed",
        "summary": "The answer is 42.",
        "error": null,
        "api_calls": 7,
        "duration_seconds": 3.5,
        "dispatched_at": 1700000000.25,
        "completed_at": 1700000003.75,
        "exit_reason": null,
    }));
    let expected = format!(
        "[ASYNC DELEGATION COMPLETE — deleg_0a1b2c3d]\n{SINGLE_INTRO}\n\n\
         Dispatched: 2023-11-14 22:13:20 (3s ago)\n\
         Original goal: Compute the meaning of life\n\
         Context you provided: User is a philosopher. Respond tersely.\n\
         Toolsets: web\n\
         Role: leaf   Model: test-model\n\
         Status: completed   API calls: 7   Duration: 3.5s\n\
         --- RESULT ---\n\
         The answer is 42."
    );
    assert_eq!(text, expected);
    for needle in [
        "ASYNC DELEGATION COMPLETE",
        "Compute the meaning of life",
        "User is a philosopher",
        "Toolsets: web",
        "The answer is 42.",
        "Status: completed",
        "API calls: 7",
    ] {
        assert!(text.contains(needle), "missing {needle:?}");
    }
}

#[test]
fn test_crashed_runner_produces_error_completion() {
    let text = render(make_async_evt(json!({
        "status": "error",
        "summary": null,
        "error": "panic: subagent exploded",
        "api_calls": 0,
        "duration_seconds": 0.01,
    })));
    let expected = fixture_head("Status: error   API calls: 0   Duration: 0.01s")
        + "The subagent did not complete successfully (status=error).\npanic: subagent exploded";
    assert_eq!(text, expected);
    assert!(text.contains("did not complete successfully"));
    assert!(text.contains("subagent exploded"));
}

// ---------------------------------------------------------------------------------------
// Single delegation
// ---------------------------------------------------------------------------------------

#[test]
fn single_success_status_shows_the_summary() {
    let text = render(make_async_evt(json!({"status": "success"})));
    assert_eq!(
        text,
        fixture_head("Status: success   API calls: 4   Duration: 12.0s")
            + "Found the bug in test_foo"
    );
}

#[test]
fn single_error_without_message() {
    let text = render(make_async_evt(json!({"status": "failed", "summary": ""})));
    assert_eq!(
        text,
        fixture_head("Status: failed   API calls: 4   Duration: 12.0s")
            + "The subagent did not complete successfully (status=failed)."
    );
}

#[test]
fn single_error_with_partial_output() {
    let text = render(make_async_evt(json!({
        "status": "timeout",
        "error": "Timed out after 600s",
        "summary": "Half of the answer",
    })));
    assert_eq!(
        text,
        fixture_head("Status: timeout   API calls: 4   Duration: 12.0s")
            + "The subagent did not complete successfully (status=timeout).\nTimed out after 600s\nPartial output:\nHalf of the answer"
    );
}

#[test]
fn single_interrupted_with_error() {
    let text = render(make_async_evt(json!({
        "status": "interrupted",
        "summary": null,
        "error": "Async delegation cancelled",
    })));
    assert_eq!(
        text,
        fixture_head("Status: interrupted   API calls: 4   Duration: 12.0s")
            + "The subagent was interrupted before completing: Async delegation cancelled"
    );
}

#[test]
fn single_interrupted_without_error() {
    let text = render(make_async_evt(
        json!({"status": "interrupted", "summary": null}),
    ));
    assert_eq!(
        text,
        fixture_head("Status: interrupted   API calls: 4   Duration: 12.0s")
            + "The subagent was interrupted before completing."
    );
}

#[test]
fn single_interrupted_with_partial_output() {
    let text = render(make_async_evt(
        json!({"status": "interrupted", "error": ""}),
    ));
    assert_eq!(
        text,
        fixture_head("Status: interrupted   API calls: 4   Duration: 12.0s")
            + "The subagent was interrupted before completing.\nPartial output:\nFound the bug in test_foo"
    );
}

#[test]
fn single_completed_with_empty_summary_is_not_a_success() {
    let text = render(make_async_evt(json!({"summary": ""})));
    assert_eq!(
        text,
        fixture_head("Status: completed   API calls: 4   Duration: 12.0s")
            + "The subagent did not complete successfully (status=completed)."
    );
}

#[test]
fn single_truncated_by_max_iterations() {
    let text = render(make_async_evt(json!({"exit_reason": "max_iterations"})));
    assert_eq!(
        text,
        fixture_head(
            "Status: completed   API calls: 4   Duration: 12.0s [TRUNCATED: hit max_iterations — work may be incomplete]"
        ) + "[TRUNCATED — subagent hit its iteration cap; the summary below may be incomplete. Verify before relying on it, or re-dispatch the unfinished part.]\nFound the bug in test_foo"
    );
}

#[test]
fn single_truncated_flag() {
    let text = render(make_async_evt(
        json!({"truncated": true, "exit_reason": "completed"}),
    ));
    assert_eq!(
        text,
        fixture_head(
            "Status: completed   API calls: 4   Duration: 12.0s [TRUNCATED: hit max_iterations — work may be incomplete]"
        ) + "[TRUNCATED — subagent hit its iteration cap; the summary below may be incomplete. Verify before relying on it, or re-dispatch the unfinished part.]\nFound the bug in test_foo"
    );
}

#[test]
fn single_truncated_failure_marks_only_the_status_line() {
    // The TRUNCATED summary line belongs to the success body only.
    let text = render(make_async_evt(json!({
        "status": "failed",
        "error": "boom",
        "exit_reason": "max_iterations",
    })));
    assert_eq!(
        text,
        fixture_head(
            "Status: failed   API calls: 4   Duration: 12.0s [TRUNCATED: hit max_iterations — work may be incomplete]"
        ) + "The subagent did not complete successfully (status=failed).\nboom\nPartial output:\nFound the bug in test_foo"
    );
}

#[test]
fn single_defaults_when_fields_are_absent() {
    // `{role or leaf}`, `{model or ?}`, `{status or completed}` treat "" like absent;
    // `{api_calls, default 0}` and `{duration_seconds, default ?}` only absent/null.
    let text = render(json!({
        "type": "async_delegation",
        "delegation_id": "deleg_00000000",
        "goal": "g",
        "summary": "s",
    }));
    let expected = format!(
        "[ASYNC DELEGATION COMPLETE — deleg_00000000]\n{SINGLE_INTRO}\n\n\
         Original goal: g\n\
         Role: leaf   Model: ?\n\
         Status: completed   API calls: 0   Duration: ?s\n\
         --- RESULT ---\n\
         s"
    );
    assert_eq!(text, expected);

    let with_nulls_and_empties = render(json!({
        "type": "async_delegation",
        "delegation_id": "deleg_00000000",
        "goal": "g",
        "context": "",
        "toolsets": [],
        "role": "",
        "model": null,
        "status": "",
        "summary": "s",
        "api_calls": null,
        "duration_seconds": null,
        "dispatched_at": null,
        "completed_at": null,
    }));
    assert_eq!(with_nulls_and_empties, expected);
    assert!(!expected.contains("None") && !expected.contains("null"));
}

#[test]
fn single_numbers_print_as_on_the_wire() {
    let head = |status_line: &str| fixture_head(status_line) + "Found the bug in test_foo";
    let cases = [
        (
            json!({"duration_seconds": 17}),
            "Status: completed   API calls: 4   Duration: 17s",
        ),
        (
            json!({"duration_seconds": 0}),
            "Status: completed   API calls: 4   Duration: 0s",
        ),
        (
            json!({"duration_seconds": 0.25}),
            "Status: completed   API calls: 4   Duration: 0.25s",
        ),
        (
            json!({"duration_seconds": 3.5}),
            "Status: completed   API calls: 4   Duration: 3.5s",
        ),
        (
            json!({"api_calls": 0}),
            "Status: completed   API calls: 0   Duration: 12.0s",
        ),
        (
            json!({"api_calls": 12.0}),
            "Status: completed   API calls: 12.0   Duration: 12.0s",
        ),
    ];
    for (overrides, status_line) in cases {
        assert_eq!(render(make_async_evt(overrides)), head(status_line));
    }
}

#[test]
fn single_context_and_toolsets_lines() {
    let text = render(make_async_evt(json!({
        "context": null,
        "toolsets": ["web", "file", "terminal"],
    })));
    let expected = format!(
        "[ASYNC DELEGATION COMPLETE — deleg_x1]\n{SINGLE_INTRO}\n\n\
         Dispatched: 1970-01-01 00:16:40 (12s ago)\n\
         Original goal: Investigate flaky test\n\
         Toolsets: web, file, terminal\n\
         Role: leaf   Model: m\n\
         Status: completed   API calls: 4   Duration: 12.0s\n\
         --- RESULT ---\n\
         Found the bug in test_foo"
    );
    assert_eq!(text, expected);
}

fn dispatched_line(text: &str) -> &str {
    text.lines()
        .find(|line| line.starts_with("Dispatched: "))
        .expect("a Dispatched line")
}

#[test]
fn dispatched_age_ranges() {
    let cases = [
        (1000.0, 1045.9, "Dispatched: 1970-01-01 00:16:40 (45s ago)"),
        (1000.0, 1059.99, "Dispatched: 1970-01-01 00:16:40 (59s ago)"),
        (1000.0, 1060.0, "Dispatched: 1970-01-01 00:16:40 (1m ago)"),
        (1000.0, 2080.0, "Dispatched: 1970-01-01 00:16:40 (18m ago)"),
        (
            1000.0,
            2085.0,
            "Dispatched: 1970-01-01 00:16:40 (18m5s ago)",
        ),
        (1000.0, 8200.0, "Dispatched: 1970-01-01 00:16:40 (2h ago)"),
        (1000.0, 8380.0, "Dispatched: 1970-01-01 00:16:40 (2h3m ago)"),
        (1000.0, 8385.0, "Dispatched: 1970-01-01 00:16:40 (2h3m ago)"),
        // Clock skew: a completion before its dispatch reads 0s, never a negative age.
        (1000.0, 990.0, "Dispatched: 1970-01-01 00:16:40 (0s ago)"),
    ];
    for (dispatched_at, completed_at, expected) in cases {
        let text = render(make_async_evt(json!({
            "dispatched_at": dispatched_at,
            "completed_at": completed_at,
        })));
        assert_eq!(dispatched_line(&text), expected);
    }
}

#[test]
fn dispatched_age_without_completed_at_uses_now() {
    // now() is 2000 s after the epoch.
    let text = render(make_async_evt(
        json!({"dispatched_at": 1000.0, "completed_at": null}),
    ));
    assert_eq!(
        dispatched_line(&text),
        "Dispatched: 1970-01-01 00:16:40 (16m40s ago)"
    );
    let missing = make_async_evt(json!({"dispatched_at": 1875.5}));
    let mut missing = missing.as_object().unwrap().clone();
    missing.remove("completed_at");
    let text = render(Value::Object(missing));
    assert_eq!(
        dispatched_line(&text),
        "Dispatched: 1970-01-01 00:31:15 (2m4s ago)"
    );
}

#[test]
fn dispatched_line_only_when_dispatched_at_is_known() {
    // The Python harness tests `if dispatched_at:`, so 0 is "unknown" as well as null.
    for dispatched_at in [json!(null), json!(0.0)] {
        let text = render(make_async_evt(json!({"dispatched_at": dispatched_at})));
        let expected = format!(
            "[ASYNC DELEGATION COMPLETE — deleg_x1]\n{SINGLE_INTRO}\n\n\
             Original goal: Investigate flaky test\n\
             Context you provided: repo /tmp/p\n\
             Toolsets: terminal\n\
             Role: leaf   Model: m\n\
             Status: completed   API calls: 4   Duration: 12.0s\n\
             --- RESULT ---\n\
             Found the bug in test_foo"
        );
        assert_eq!(text, expected);
    }
    // Beyond the range of representable times: the line is left out, nothing panics.
    let text = render(make_async_evt(json!({"dispatched_at": 1e300})));
    assert!(!text.contains("Dispatched:"));
}

#[test]
fn dispatched_time_uses_the_given_time_zone() {
    let event =
        make_async_evt(json!({"dispatched_at": 1700000000.0, "completed_at": 1700000060.0}));
    let plus_two = TimeZone::fixed(tz::offset(2));
    assert_eq!(
        dispatched_line(&render_in(event.clone(), &plus_two)),
        "Dispatched: 2023-11-15 00:13:20 (1m ago)"
    );
    // A zone with daylight saving time, from a POSIX rule (no time zone database needed).
    let new_york = TimeZone::posix("EST5EDT,M3.2.0,M11.1.0").unwrap();
    assert_eq!(
        dispatched_line(&render_in(event, &new_york)),
        "Dispatched: 2023-11-14 17:13:20 (1m ago)"
    );
    let summer =
        make_async_evt(json!({"dispatched_at": 1690000000.0, "completed_at": 1690000000.0}));
    assert_eq!(
        dispatched_line(&render_in(summer, &new_york)),
        "Dispatched: 2023-07-22 00:26:40 (0s ago)"
    );
}

#[test]
fn dispatched_time_drops_the_fraction_like_python() {
    // datetime.fromtimestamp rounds to microseconds, then %S drops the fraction.
    let cases = [(1000.9, "00:16:40"), (1000.9999996, "00:16:41")];
    for (dispatched_at, clock) in cases {
        let text = render(make_async_evt(json!({
            "dispatched_at": dispatched_at,
            "completed_at": 1012.0,
        })));
        assert!(
            dispatched_line(&text).starts_with(&format!("Dispatched: 1970-01-01 {clock} (")),
            "{text}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Batch
// ---------------------------------------------------------------------------------------

fn batch_intro(n: usize) -> String {
    format!(
        "A background fan-out of {n} subagent(s) you dispatched earlier has finished. All ran in parallel and waited on each other; their consolidated results are below. You may have moved on since dispatching — act on these or re-dispatch if things have changed."
    )
}

#[test]
fn batch_with_every_icon_sorted_by_task_index() {
    // Results arrive out of order; the block lists them by task_index.
    let text = render(json!({
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
    }));
    let expected = format!(
        "[ASYNC DELEGATION BATCH COMPLETE — deleg_ba7c0001]\n{}\n\n\
         Dispatched: 1970-01-01 00:16:40 (2m5s ago)\n\
         Context you provided: monorepo at /src\n\
         Toolsets: terminal, file\n\
         Role: orchestrator   Model: big-model   Total duration: 125.5s\n\
         \n\
         --- ✓ TASK 1/3: Fix lint  (status=completed, api_calls=3, 12.0s) ---\n\
         Lint clean.\n\
         \n\
         --- ✗ TASK 2/3: Run tests  (status=failed, api_calls=9, 120s) ---\n\
         (no summary — status=failed: tests hung)\n\
         \n\
         --- ⚠ TASK 3/3: Write docs  (status=completed, 0.25s, TRUNCATED: hit max_iterations — work may be incomplete) ---\n\
         [TRUNCATED — subagent hit its iteration cap; the summary below may be incomplete. Verify before relying on it, or re-dispatch the unfinished part.]\n\
         Docs written.",
        batch_intro(3)
    );
    assert_eq!(text, expected);
}

#[test]
fn batch_failure_bodies() {
    let text = render(json!({
        "type": "async_delegation",
        "delegation_id": "deleg_ba7c0002",
        "is_batch": true,
        "goals": ["A", "B", "C", "D"],
        "results": [
            {"task_index": 0, "status": "error", "summary": "got halfway", "error": "boom"},
            {"task_index": 1, "status": "interrupted", "summary": "a little"},
            {"task_index": 2, "status": "timeout"},
            {"task_index": 3, "summary": "no status given"},
        ],
    }));
    // `Total duration` falls back to duration_seconds, then `?`; a result's status
    // defaults to `?`, and `?` is not a success.
    let expected = format!(
        "[ASYNC DELEGATION BATCH COMPLETE — deleg_ba7c0002]\n{}\n\n\
         Role: leaf   Model: ?   Total duration: ?s\n\
         \n\
         --- ✗ TASK 1/4: A  (status=error) ---\n\
         (error: boom)\n\
         Partial output:\n\
         got halfway\n\
         \n\
         --- ✗ TASK 2/4: B  (status=interrupted) ---\n\
         Partial output:\n\
         a little\n\
         \n\
         --- ✗ TASK 3/4: C  (status=timeout) ---\n\
         (no summary — status=timeout)\n\
         \n\
         --- ✗ TASK 4/4: D  (status=?) ---\n\
         Partial output:\n\
         no status given",
        batch_intro(4)
    );
    assert_eq!(text, expected);
}

#[test]
fn batch_goal_fallbacks() {
    // goals[task_index] first; else the result's own goal; else no `: {goal}` at all.
    let text = render(json!({
        "type": "async_delegation",
        "delegation_id": "deleg_ba7c0003",
        "is_batch": true,
        "duration_seconds": 4,
        "goals": ["From goals"],
        "results": [
            {"task_index": 0, "goal": "ignored", "status": "success", "summary": "one"},
            {"task_index": 1, "goal": "Own goal", "status": "success", "summary": "two"},
            {"task_index": 2, "status": "success", "summary": "three"},
        ],
    }));
    let expected = format!(
        "[ASYNC DELEGATION BATCH COMPLETE — deleg_ba7c0003]\n{}\n\n\
         Role: leaf   Model: ?   Total duration: 4s\n\
         \n\
         --- ✓ TASK 1/3: From goals  (status=success) ---\n\
         one\n\
         \n\
         --- ✓ TASK 2/3: Own goal  (status=success) ---\n\
         two\n\
         \n\
         --- ✓ TASK 3/3  (status=success) ---\n\
         three",
        batch_intro(3)
    );
    assert_eq!(text, expected);
}

#[test]
fn batch_error_without_results() {
    let text = render(json!({
        "type": "async_delegation",
        "delegation_id": "deleg_ba7c0004",
        "role": "leaf",
        "model": "m",
        "is_batch": true,
        "status": "error",
        "error": "panic: pool exploded",
        "goals": ["x", "y"],
        "results": [],
        "total_duration_seconds": 0.5,
    }));
    // n comes from goals when there are no results.
    let expected = format!(
        "[ASYNC DELEGATION BATCH COMPLETE — deleg_ba7c0004]\n{}\n\n\
         Role: leaf   Model: m   Total duration: 0.5s\n\
         --- ERROR ---\n\
         The batch did not complete successfully: panic: pool exploded",
        batch_intro(2)
    );
    assert_eq!(text, expected);
}

#[test]
fn batch_without_results_or_error_ends_after_the_role_line() {
    let text = render(json!({
        "type": "async_delegation",
        "delegation_id": "deleg_ba7c0005",
        "is_batch": true,
        "goals": ["x"],
        "dispatched_at": 1000.0,
        "completed_at": 1000.0,
    }));
    let expected = format!(
        "[ASYNC DELEGATION BATCH COMPLETE — deleg_ba7c0005]\n{}\n\n\
         Dispatched: 1970-01-01 00:16:40 (0s ago)\n\
         Role: leaf   Model: ?   Total duration: ?s",
        batch_intro(1)
    );
    assert_eq!(text, expected);
}

#[test]
fn batch_with_results_ignores_the_batch_error() {
    let text = render(json!({
        "type": "async_delegation",
        "delegation_id": "deleg_ba7c0006",
        "is_batch": true,
        "error": "one task failed",
        "results": [{"task_index": 0, "status": "completed", "summary": "ok", "api_calls": 1, "duration_seconds": 1.0}],
    }));
    // n = the number of results (goals is absent).
    let expected = format!(
        "[ASYNC DELEGATION BATCH COMPLETE — deleg_ba7c0006]\n{}\n\n\
         Role: leaf   Model: ?   Total duration: ?s\n\
         \n\
         --- ✓ TASK 1/1  (status=completed, api_calls=1, 1.0s) ---\n\
         ok",
        batch_intro(1)
    );
    assert_eq!(text, expected);
}

// ---------------------------------------------------------------------------------------
// Process completions
// ---------------------------------------------------------------------------------------

fn completion(reason: Value, exit_code: Value, source: Value) -> Value {
    json!({
        "type": "completion",
        "session_id": "proc_1",
        "session_key": "",
        "command": "pytest -q",
        "exit_code": exit_code,
        "completion_reason": reason,
        "termination_source": source,
        "output": "3 passed",
    })
}

#[test]
fn completion_phrases() {
    let cases = [
        (
            json!("exited"),
            json!(0),
            json!(null),
            "completed normally (exit code 0)",
        ),
        (
            json!("exited"),
            json!(1),
            json!(null),
            "exited (exit code 1)",
        ),
        (json!(null), json!(2), json!(null), "exited (exit code 2)"),
        (
            json!("killed"),
            json!(-9),
            json!("the user"),
            "terminated by the user (exit code -9)",
        ),
        (
            json!("killed"),
            json!(-9),
            json!(null),
            "terminated by the agent (exit code -9)",
        ),
        (
            json!("killed"),
            json!(-9),
            json!(""),
            "terminated by the agent (exit code -9)",
        ),
        (
            json!("killed"),
            json!(-15),
            json!("the watchdog"),
            "terminated by the watchdog (exit code -15, SIGTERM)",
        ),
        (
            json!("exited"),
            json!(143),
            json!(null),
            "exited (exit code 143, SIGTERM)",
        ),
        (
            json!("exited"),
            json!(143.0),
            json!(null),
            "exited (exit code 143.0, SIGTERM)",
        ),
        (
            json!("lost"),
            json!(null),
            json!(null),
            "marked lost because the process backend disappeared (exit code ?)",
        ),
        (
            json!("failed_start"),
            json!(127),
            json!(null),
            "failed to start (exit code 127)",
        ),
        (
            json!("exited"),
            json!(null),
            json!(null),
            "exited (exit code ?)",
        ),
    ];
    for (reason, exit_code, source, middle) in cases {
        assert_eq!(
            render(completion(reason, exit_code, source)),
            format!(
                "[IMPORTANT: Background process proc_1 {middle}.\nCommand: pytest -q\nOutput:\n3 passed]"
            )
        );
    }
}

#[test]
fn legacy_untyped_event_is_a_completion() {
    let text = render(json!({
        "session_id": "proc_7",
        "command": "make",
        "exit_code": 0,
        "output": "done\n",
    }));
    assert_eq!(
        text,
        "[IMPORTANT: Background process proc_7 completed normally (exit code 0).\nCommand: make\nOutput:\ndone\n]"
    );
}

#[test]
fn completion_missing_fields_render_defaults() {
    // Like watch_match: a missing session_id/command renders `unknown`; missing output is empty.
    let text = render(json!({"type": "completion"}));
    assert_eq!(
        text,
        "[IMPORTANT: Background process unknown exited (exit code ?).\nCommand: unknown\nOutput:\n]"
    );
}

// ---------------------------------------------------------------------------------------
// Watch events
// ---------------------------------------------------------------------------------------

#[test]
fn watch_match_with_suppressed() {
    let text = render(json!({
        "type": "watch_match",
        "session_id": "proc_1",
        "session_key": "agent:main:telegram:dm:1",
        "command": "tail -f log",
        "pattern": "ERROR",
        "output": "ERROR disk full\nERROR again",
        "suppressed": 3,
        "platform": "telegram",
        "chat_id": "1",
    }));
    assert_eq!(
        text,
        "[IMPORTANT: Background process proc_1 matched watch pattern \"ERROR\".\nCommand: tail -f log\nMatched output:\nERROR disk full\nERROR again\n(3 earlier matches were suppressed by rate limit)]"
    );
}

#[test]
fn watch_match_without_suppressed() {
    let expected = "[IMPORTANT: Background process proc_1 matched watch pattern \"READY\".\nCommand: pytest\nMatched output:\nREADY]";
    for suppressed in [json!(0), json!(null)] {
        let text = render(json!({
            "type": "watch_match", "session_id": "proc_1", "command": "pytest",
            "pattern": "READY", "output": "READY", "suppressed": suppressed,
        }));
        assert_eq!(text, expected);
    }
    let text = render(json!({
        "type": "watch_match", "session_id": "proc_1", "command": "pytest",
        "pattern": "READY", "output": "READY",
    }));
    assert_eq!(text, expected);
}

#[test]
fn watch_match_missing_fields() {
    let text = render(json!({"type": "watch_match"}));
    assert_eq!(
        text,
        "[IMPORTANT: Background process unknown matched watch pattern \"?\".\nCommand: unknown\nMatched output:\n]"
    );
}

#[test]
fn watch_disabled_and_overflow_events() {
    let cases = [
        json!({"type": "watch_disabled", "session_id": "proc_1", "command": "x", "suppressed": 9,
               "message": "Watch on proc_1 disabled after 9 suppressed matches."}),
        json!({"type": "watch_overflow_tripped",
               "message": "Watch on proc_1 disabled after 9 suppressed matches."}),
        json!({"type": "watch_overflow_released", "suppressed": 9,
               "message": "Watch on proc_1 disabled after 9 suppressed matches."}),
    ];
    for case in cases {
        assert_eq!(
            render(case),
            "[IMPORTANT: Watch on proc_1 disabled after 9 suppressed matches.]"
        );
    }
    assert_eq!(
        render(json!({"type": "watch_overflow_tripped"})),
        "[IMPORTANT: ]"
    );
}

#[test]
fn unknown_events_render_nothing() {
    for value in [
        json!({"type": "from_the_future", "message": "hi"}),
        json!({"type": 7, "session_id": "proc_1"}),
    ] {
        assert_eq!(
            format_process_notification_in(&event(value), &TimeZone::UTC, now()),
            None
        );
    }
}

#[test]
fn batch_sections_follow_task_index_stably_on_and_off_the_stack() {
    // 16 results are ordered on the stack, more in a `Vec`: the same order either way.
    for count in [1_usize, 3, 16, 17, 40] {
        // Indices out of wire order, most of them twice: wire position p has index
        // (7p mod count) / 2 (7 is prime to every count here).
        let indices: Vec<usize> = (0..count).map(|p| (7 * p % count) / 2).collect();
        let results: Vec<Value> = indices
            .iter()
            .enumerate()
            .map(|(p, index)| {
                json!({"task_index": index, "status": "completed", "summary": format!("wire {p}")})
            })
            .collect();
        let text = render(json!({
            "type": "async_delegation", "delegation_id": "deleg_many", "is_batch": true,
            "results": results,
        }));
        let mut expected: Vec<usize> = (0..count).collect();
        expected.sort_by_key(|&p| indices[p]);
        let shown: Vec<usize> = text
            .split("wire ")
            .skip(1)
            .map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next().unwrap())
            .map(|digits| digits.parse().unwrap())
            .collect();
        assert_eq!(shown, expected, "{count} results");
    }
}
