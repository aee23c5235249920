//! `docs/wire-format.md` is pinned to the code: every `json event` example parses as the
//! event type its heading names and serializes back to the same JSON; the answers and
//! session keys it shows are the ones the crates produce.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use async_delegation::DispatchError;
use delegate_tool::{ToolError, BACKGROUND_NOTE};
use gateway::{Platform, SessionKey, SessionKeyOptions, SessionSource};
use process_registry::Event;
use serde_json::Value;

fn doc() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/wire-format.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `(heading, info string, body)` of every fenced block.
fn blocks(doc: &str) -> Vec<(String, String, String)> {
    let mut found = Vec::new();
    let mut heading = String::new();
    let mut open: Option<(String, String)> = None;
    for line in doc.lines() {
        match &mut open {
            Some((info, body)) => {
                if line.starts_with("```") {
                    found.push((heading.clone(), info.clone(), body.clone()));
                    open = None;
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
            }
            None => {
                if line.starts_with('#') {
                    heading = line.to_owned();
                } else if let Some(info) = line.strip_prefix("```") {
                    open = Some((info.trim().to_owned(), String::new()));
                }
            }
        }
    }
    found
}

#[test]
fn every_event_example_round_trips_as_the_type_its_heading_names() {
    let doc = doc();
    let events: Vec<_> = blocks(&doc)
        .into_iter()
        .filter(|(_, info, _)| info == "json event")
        .collect();
    assert!(events.len() >= 9, "only {} event examples", events.len());
    let mut seen = Vec::new();
    for (heading, _, body) in events {
        let value: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{heading}: {e}\n{body}"));
        let event =
            Event::from_value(value.clone()).unwrap_or_else(|e| panic!("{heading}: {e}\n{body}"));
        assert_eq!(
            event.to_value(),
            value,
            "{heading}: not written back unchanged"
        );
        let reparsed: Event =
            serde_json::from_str(&serde_json::to_string(&event).unwrap()).unwrap();
        assert_eq!(reparsed, event, "{heading}");
        if let Event::Other(_) = event {
            // The doc promises byte for byte: the block's own text comes back.
            let from_text: Event = serde_json::from_str(body.trim()).unwrap();
            assert_eq!(
                serde_json::to_string(&from_text).unwrap(),
                body.trim(),
                "{heading}"
            );
            assert!(
                heading.contains("unknown"),
                "{heading}: an unknown type under a known heading"
            );
        } else {
            assert!(
                heading.contains(&format!("`{}`", event.type_name())),
                "{heading}: holds a {}",
                event.type_name()
            );
        }
        seen.push(event.type_name().to_owned());
    }
    for kind in [
        "async_delegation",
        "completion",
        "watch_match",
        "watch_disabled",
        "watch_overflow_tripped",
        "watch_overflow_released",
    ] {
        assert!(seen.iter().any(|s| s == kind), "no example of {kind}");
    }
}

#[test]
fn an_untyped_object_is_a_completion_as_documented() {
    let event =
        Event::from_value(serde_json::json!({"session_id": "proc_1", "exit_code": 0})).unwrap();
    assert!(matches!(event, Event::Completion(_)));
    assert_eq!(event.to_value()["type"], "completion");
    assert!(doc().contains("An object with **no** `\"type\"`"));
}

#[test]
fn the_documented_answers_are_the_texts_the_crates_produce() {
    let doc = doc();
    let capacity = DispatchError::CapacityReached { max: 3 }.to_string();
    let json_blocks: Vec<Value> = blocks(&doc)
        .into_iter()
        .filter(|(_, info, _)| info == "json")
        .map(|(heading, _, body)| {
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{heading}: {e}"))
        })
        .collect();
    let has = |wanted: &Value| json_blocks.iter().any(|v| v == wanted);
    assert!(has(
        &serde_json::json!({"status": "rejected", "error": capacity})
    ));
    assert!(has(&serde_json::json!({"error": capacity})));
    assert!(has(
        &serde_json::json!({"error": ToolError::BackgroundBatch.to_string()})
    ));
    assert!(has(&serde_json::json!({
        "status": "dispatched", "delegation_id": "deleg_1a2b3c4d", "goal": "the real task",
        "mode": "background", "note": BACKGROUND_NOTE,
    })));
}

#[test]
fn the_documented_session_keys_are_the_keys_the_gateway_builds() {
    let doc = doc();
    let options = SessionKeyOptions::default();
    for (source, key) in [
        (
            SessionSource::new(Platform::Telegram, "12345").with_thread_id("678"),
            "agent:main:telegram:dm:12345:678",
        ),
        (
            SessionSource::new(Platform::Discord, "881")
                .with_chat_type("thread")
                .with_thread_id("t-42")
                .with_user_id("2002"),
            "agent:main:discord:thread:881:t-42",
        ),
        (
            SessionSource::new(Platform::Slack, "C1")
                .with_chat_type("channel")
                .with_user_id("U1"),
            "agent:main:slack:channel:C1:U1",
        ),
        (
            SessionSource::new(Platform::Telegram, "12345").with_profile("work"),
            "agent:work:telegram:dm:12345",
        ),
    ] {
        assert_eq!(SessionKey::build(&source, &options).as_str(), key);
        assert!(doc.contains(&format!("`{key}`")), "{key} is not in the doc");
    }
    let parsed = SessionKey::parse("agent:main:telegram:group:chat1:user99").unwrap();
    assert_eq!((parsed.chat_id.as_str(), parsed.thread_id), ("chat1", None));
    for bad in ["agent:main:telegram", "", "cron:main:telegram:dm:123"] {
        assert!(SessionKey::parse(bad).is_err(), "{bad:?} parsed");
    }
}
