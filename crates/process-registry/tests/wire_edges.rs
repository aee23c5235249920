//! Inputs a Python producer can write that must come back and print as they came:
//! integers beyond 64 bits in every numeric field, floats beyond the `f64` range, and
//! unknown events byte for byte; and a doc that points at files that exist.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::panic::{catch_unwind, AssertUnwindSafe};

use jiff::{tz::TimeZone, Timestamp};
use process_registry::{format_process_notification_in, CompletionQueue, Event};

const BIG: &str = "18446744073709551616"; // 2^64: one past u64::MAX

fn render(event: &Event) -> String {
    format_process_notification_in(event, &TimeZone::UTC, Timestamp::UNIX_EPOCH).unwrap()
}

/// Issue 9 item 7 / docs/wire-format.md: "an integer stays an integer of any size". A
/// Python watcher that counts suppressed matches in a Python `int` can send 2^64; the
/// event must parse, round-trip and print the digits. Today `suppressed` is a `u64`, so
/// the whole event is a parse error (the event is lost to any consumer reading the wire).
#[test]
fn suppressed_beyond_64_bits_survives_and_renders() {
    let wire = format!(
        r#"{{"type":"watch_match","session_id":"proc_1","command":"tail -f log","pattern":"ERROR","output":"ERROR x","suppressed":{BIG}}}"#
    );
    let event = Event::from_json(&wire)
        .unwrap_or_else(|e| panic!("a Python int of 65 bits lost the whole event: {e}"));
    assert!(serde_json::to_string(&event)
        .unwrap()
        .contains(&format!(r#""suppressed":{BIG}"#)));
    assert!(render(&event).contains(&format!("({BIG} earlier matches were suppressed")));
}

/// The same for the overflow events and `watch_disabled`.
#[test]
fn every_watch_event_reads_suppressed_beyond_64_bits() {
    for kind in ["watch_disabled", "watch_overflow_released"] {
        let wire = format!(r#"{{"type":"{kind}","message":"m","suppressed":{BIG}}}"#);
        assert!(
            Event::from_json(&wire).is_ok(),
            "{kind}: {:?}",
            Event::from_json(&wire).err()
        );
    }
}

/// A batch result's `task_index` beyond 64 bits (or negative: Python sorts and prints
/// it, `TASK {i+1}`) is a parse error: the whole batch completion is unreadable.
#[test]
fn a_task_index_beyond_64_bits_survives() {
    let wire = format!(
        r#"{{"type":"async_delegation","delegation_id":"d","is_batch":true,"goals":["a"],
            "results":[{{"task_index":{BIG},"status":"completed","summary":"S"}}]}}"#
    );
    let event =
        Event::from_json(&wire).unwrap_or_else(|e| panic!("the batch completion is lost: {e}"));
    let back = serde_json::to_string(&event).unwrap();
    assert!(back.contains(&format!(r#""task_index":{BIG}"#)), "{back}");
}

/// `1e400` is a JSON number (Python's `json` reads it as `inf`). A known numeric field
/// holding it makes the whole event a parse error whose message claims it is not a
/// number: "invalid type: 1e400, expected a number". The number should be kept as its
/// text (as big integers are), or at least the error should not lie.
#[test]
fn a_float_beyond_the_f64_range_keeps_its_text() {
    let wire =
        r#"{"type":"async_delegation","delegation_id":"d","goal":"g","duration_seconds":1e400}"#;
    match Event::from_json(wire) {
        Ok(event) => {
            let back = serde_json::to_string(&event).unwrap();
            assert!(back.contains("1e400"), "{back}");
        }
        Err(error) => panic!("a JSON number lost the event: {error}"),
    }
}

/// docs/wire-format.md points readers at `crates/process-registry/src/event.rs`; the file
/// was split into `src/event/{mod,delegation,process}.rs` by this issue.
#[test]
fn the_wire_format_doc_cites_files_that_exist() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let doc = std::fs::read_to_string(root.join("docs/wire-format.md")).unwrap();
    for word in doc.split(|c: char| c.is_whitespace() || "`()[],".contains(c)) {
        if word.starts_with("crates/") && word.ends_with(".rs") {
            assert!(root.join(word).exists(), "docs/wire-format.md cites {word}");
        }
    }
}

/// Coverage: a `-0` integer and `-0.0` float keep their kinds through text and render
/// as Python does (`0`, `-0.0`), also in an exit code (`completed normally`).
#[test]
fn negative_zero_keeps_its_kind() {
    let int = Event::from_json(
        r#"{"type":"completion","session_id":"p","command":"c","exit_code":-0,"output":""}"#,
    )
    .unwrap();
    assert!(render(&int).contains("completed normally (exit code 0)"));
    let float = Event::from_json(
        r#"{"type":"completion","session_id":"p","command":"c","exit_code":-0.0,"output":""}"#,
    )
    .unwrap();
    assert!(render(&float).contains("completed normally (exit code -0.0)"));
    assert!(serde_json::to_string(&float)
        .unwrap()
        .contains(r#""exit_code":-0.0"#));
}

/// Coverage: an unknown event keeps duplicate keys, escapes and odd spacing byte for
/// byte, and a `Vec<Event>` read from text keeps each element's bytes.
#[test]
fn unknown_events_keep_duplicates_escapes_and_spacing_inside_a_list() {
    let one = r#"{"type":"x","a":1,"a":2,"k\u0041":"\u00e9","n":1.50}"#;
    let two = "{ \"type\" : \"y\" ,\n \"z\":[ 1 , 2 ] }";
    let list = format!("[{one},  {two}]");
    let events: Vec<Event> = serde_json::from_str(&list).unwrap();
    assert_eq!(serde_json::to_string(&events[0]).unwrap(), one);
    assert_eq!(serde_json::to_string(&events[1]).unwrap(), two);
    assert_eq!(
        serde_json::to_string(&events).unwrap(),
        format!("[{one},{two}]")
    );
}

/// Coverage: a nested `take_where` from inside the predicate (a consumer that drains a
/// second time while deciding) and a panic after it lose nothing.
#[test]
fn reentrant_take_where_then_panic_loses_nothing() {
    let queue = CompletionQueue::new();
    for n in 0..4 {
        queue.put(
            Event::from_json(&format!(
                r#"{{"type":"watch_overflow_tripped","message":"m{n}"}}"#
            ))
            .unwrap(),
        );
    }
    let inner = queue.clone();
    let mut inner_taken = Vec::new();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        queue.take_where(|_| {
            // Puts one event and takes everything the inner call sees.
            inner.put(
                Event::from_json(r#"{"type":"watch_overflow_released","message":"late"}"#).unwrap(),
            );
            inner_taken.extend(inner.take_where(|_| true));
            panic!("predicate bug")
        })
    }));
    assert!(outcome.is_err());
    let left = queue.drain().len() + inner_taken.len();
    assert_eq!(left, 5, "4 original + 1 put during the call, none lost");
}
