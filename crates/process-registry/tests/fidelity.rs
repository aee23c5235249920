//! Wire fidelity: what a Python producer writes comes back and renders as it came —
//! absent versus empty ids, batch detection, integers of any size, key order, and no
//! event lost to a panicking consumer predicate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::panic::{catch_unwind, AssertUnwindSafe};

use jiff::{tz::TimeZone, Timestamp};
use process_registry::{format_process_notification_in, CompletionQueue, Event};

fn parse(text: &str) -> Event {
    serde_json::from_str(text).unwrap()
}

fn render(text: &str) -> String {
    format_process_notification_in(&parse(text), &TimeZone::UTC, Timestamp::UNIX_EPOCH).unwrap()
}

fn title(text: &str) -> String {
    render(text).lines().next().unwrap().to_owned()
}

#[test]
fn a_missing_delegation_id_renders_unknown_and_an_empty_one_renders_empty() {
    let cases = [
        (
            r#"{"type":"async_delegation","goal":"g"}"#,
            "[ASYNC DELEGATION COMPLETE — unknown]",
        ),
        (
            r#"{"type":"async_delegation","delegation_id":null,"goal":"g"}"#,
            "[ASYNC DELEGATION COMPLETE — unknown]",
        ),
        (
            r#"{"type":"async_delegation","delegation_id":"","goal":"g"}"#,
            "[ASYNC DELEGATION COMPLETE — ]",
        ),
        (
            r#"{"type":"async_delegation","is_batch":true}"#,
            "[ASYNC DELEGATION BATCH COMPLETE — unknown]",
        ),
        (
            r#"{"type":"async_delegation","delegation_id":null,"is_batch":true}"#,
            "[ASYNC DELEGATION BATCH COMPLETE — unknown]",
        ),
        (
            r#"{"type":"async_delegation","delegation_id":"","is_batch":true}"#,
            "[ASYNC DELEGATION BATCH COMPLETE — ]",
        ),
    ];
    for (wire, expected) in cases {
        assert_eq!(title(wire), expected, "{wire}");
    }
}

#[test]
fn absent_null_and_empty_delegation_ids_stay_apart_on_the_wire() {
    for (wire, back) in [
        (r#"{"type":"async_delegation"}"#, r#""delegation_id":null"#),
        (
            r#"{"type":"async_delegation","delegation_id":null}"#,
            r#""delegation_id":null"#,
        ),
        (
            r#"{"type":"async_delegation","delegation_id":""}"#,
            r#""delegation_id":"""#,
        ),
    ] {
        let text = serde_json::to_string(&parse(wire)).unwrap();
        assert!(text.contains(back), "{wire} came back as {text}");
    }
}

#[test]
fn a_results_list_makes_a_batch_even_without_is_batch() {
    let batch = r#"{"type":"async_delegation","delegation_id":"deleg_0badcafe","goals":["a","b"],
        "results":[{"task_index":0,"status":"completed","summary":"A"},
                   {"task_index":1,"status":"completed","summary":"B"}],
        "total_duration_seconds":3}"#;
    let text = render(batch);
    assert!(
        text.starts_with("[ASYNC DELEGATION BATCH COMPLETE — deleg_0badcafe]\nA background fan-out of 2 subagent(s)"),
        "{text}"
    );
    assert!(text.ends_with(
        "Role: leaf   Model: ?   Total duration: 3s\n\n--- ✓ TASK 1/2: a  (status=completed) ---\nA\n\n--- ✓ TASK 2/2: b  (status=completed) ---\nB"
    ), "{text}");

    // Even an empty list counts; `null` does not.
    let empty =
        render(r#"{"type":"async_delegation","delegation_id":"d","goals":["x"],"results":[]}"#);
    assert!(
        empty.starts_with(
            "[ASYNC DELEGATION BATCH COMPLETE — d]\nA background fan-out of 1 subagent(s)"
        ),
        "{empty}"
    );
    let null = title(r#"{"type":"async_delegation","delegation_id":"d","results":null}"#);
    assert_eq!(null, "[ASYNC DELEGATION COMPLETE — d]");
    let not_batch = title(r#"{"type":"async_delegation","delegation_id":"d","is_batch":false}"#);
    assert_eq!(not_batch, "[ASYNC DELEGATION COMPLETE — d]");
}

#[test]
fn integers_of_any_size_survive_a_round_trip_and_print_as_they_came() {
    let big = "18446744073709551616";
    let negative_big = "-92233720368547758080";
    let wire = format!(
        r#"{{"type":"async_delegation","delegation_id":"deleg_00000001","goal":"g","status":"completed","summary":"s","api_calls":{big},"duration_seconds":{negative_big},"seq":{big},"nested":{{"n":[{big},1.5,-0]}}}}"#
    );
    let event = parse(&wire);
    let back = serde_json::to_string(&event).unwrap();
    assert!(back.contains(&format!(r#""api_calls":{big}"#)), "{back}");
    assert!(
        back.contains(&format!(r#""duration_seconds":{negative_big}"#)),
        "{back}"
    );
    assert!(back.contains(&format!(r#""seq":{big}"#)), "{back}");
    assert!(
        back.contains(&format!(r#""nested":{{"n":[{big},1.5,-0]}}"#)),
        "{back}"
    );
    // Parsing what we wrote gives the same event again.
    assert_eq!(parse(&back), event);

    let text = render(&wire);
    assert!(
        text.contains(&format!("API calls: {big}   Duration: {negative_big}s")),
        "{text}"
    );

    let completion = render(&format!(
        r#"{{"type":"completion","session_id":"p","command":"c","exit_code":{big},"output":""}}"#
    ));
    assert!(
        completion.contains(&format!("(exit code {big})")),
        "{completion}"
    );

    let batch = render(&format!(
        r#"{{"type":"async_delegation","delegation_id":"d","is_batch":true,"total_duration_seconds":{big},
            "results":[{{"task_index":0,"status":"completed","summary":"s","api_calls":{big},"duration_seconds":{big}}}]}}"#
    ));
    assert!(
        batch.contains(&format!("Total duration: {big}s")),
        "{batch}"
    );
    assert!(
        batch.contains(&format!("(status=completed, api_calls={big}, {big}s)")),
        "{batch}"
    );
}

#[test]
fn unknown_events_round_trip_byte_for_byte() {
    let cases = [
        r#"{"type":"from_the_future","zeta":1,"alpha":{"y":2,"x":[3,{"b":1,"a":2}]},"mid":"m"}"#,
        // A Python producer's `json.dumps` spacing.
        r#"{"type": "from_the_future", "z": 18446744073709551616, "a": 1.0, "m": [1, 2]}"#,
        r#"{"type":7,"b":1,"a":2}"#,
    ];
    for wire in cases {
        let event = parse(wire);
        assert!(matches!(event, Event::Other(_)), "{wire}");
        assert_eq!(serde_json::to_string(&event).unwrap(), wire);
    }
}

#[test]
fn unknown_fields_of_known_events_keep_their_order_and_values() {
    let wire = r#"{"type":"completion","session_id":"p","session_key":null,"command":"c","exit_code":0,"completion_reason":"exited","termination_source":null,"output":"o","zeta":1,"alpha":{"y":2,"x":1},"mid":18446744073709551616}"#;
    assert_eq!(serde_json::to_string(&parse(wire)).unwrap(), wire);
}

#[test]
fn take_where_with_a_panicking_predicate_loses_no_event() {
    let queue = CompletionQueue::new();
    let other = queue.clone();
    for n in 0..6 {
        queue.put(parse(&format!(
            r#"{{"type":"watch_overflow_tripped","message":"m{n}"}}"#
        )));
    }
    let mut seen = 0;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        other.take_where(|_| {
            seen += 1;
            assert!(seen < 4, "predicate bug");
            seen % 2 == 0
        })
    }));
    assert!(outcome.is_err(), "the predicate's panic reaches its caller");
    let left: Vec<String> = queue
        .drain()
        .into_iter()
        .map(|event| match event {
            Event::WatchOverflowTripped(e) => e.message.unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        left,
        ["m0", "m1", "m2", "m3", "m4", "m5"],
        "all six, in order"
    );
}
