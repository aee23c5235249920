//! The gateway tests of the Python harness's test file (`test_async_delegation.py`, "Gateway
//! routing"), one Rust test per Python test, same names, on its `_make_async_evt` fixture.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use gateway::{
    build_process_event_source, drain_gateway_watch_events, enrich_async_delegation_routing,
    enrich_event_routing, format_gateway_process_notification, NoOrigins, Platform,
    PlatformRegistry,
};
use process_registry::{AsyncDelegationEvent, CompletionQueue, Event};
use serde_json::{json, Value};

/// The Python test fixture `_make_async_evt(**over)`.
fn make_async_evt(over: Value) -> Value {
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
    if let (Value::Object(evt), Value::Object(over)) = (&mut evt, over) {
        evt.extend(over);
    }
    evt
}

fn async_evt(over: Value) -> AsyncDelegationEvent {
    match Event::from_value(make_async_evt(over)).unwrap() {
        Event::AsyncDelegation(event) => event,
        other => panic!("not an async_delegation event: {other:?}"),
    }
}

#[test]
fn test_gateway_enriches_routing_from_session_key() {
    let mut evt = async_evt(json!({}));
    enrich_async_delegation_routing(&mut evt);
    let wire = Event::from(evt).to_value();
    assert_eq!(wire["platform"], "telegram");
    assert_eq!(wire["chat_id"], "12345");
    assert_eq!(wire["thread_id"], "678");
    assert_eq!(wire["chat_type"], "dm");
}

#[test]
fn test_gateway_formatter_renders_async_block() {
    let evt = Event::from_value(make_async_evt(json!({}))).unwrap();
    let txt = format_gateway_process_notification(&evt).expect("an async block");
    assert!(txt.contains("ASYNC DELEGATION COMPLETE"), "{txt}");
    assert!(txt.contains("Found the bug in test_foo"), "{txt}");
    assert!(txt.contains("Investigate flaky test"), "{txt}");
}

#[test]
fn test_gateway_watch_drain_requeues_async_without_looping() {
    let q = CompletionQueue::new();
    let async_evt = Event::from_value(make_async_evt(json!({}))).unwrap();
    let watch_evt = Event::from_value(json!({
        "type": "watch_match", "session_id": "proc_1", "command": "pytest",
        "pattern": "READY", "output": "READY",
    }))
    .unwrap();
    q.put(async_evt.clone());
    q.put(watch_evt.clone());
    let watch_events = drain_gateway_watch_events(&q);
    assert_eq!(watch_events, vec![watch_evt]);
    assert_eq!(q.len(), 1);
    assert_eq!(q.try_take(), Some(async_evt));
}

#[test]
fn test_gateway_builds_routable_source_from_enriched_event() {
    let mut evt = Event::from_value(make_async_evt(json!({}))).unwrap();
    enrich_event_routing(&mut evt);
    let src = build_process_event_source(&evt, &NoOrigins, &PlatformRegistry::new())
        .expect("a routable source");
    assert_eq!(src.platform, Platform::Telegram);
    assert_eq!(src.platform.as_str(), "telegram");
    assert_eq!(src.chat_id, "12345");
    assert_eq!(src.thread_id.as_deref(), Some("678"));
}

#[test]
fn test_gateway_cli_origin_event_left_unrouted() {
    let mut evt = async_evt(json!({"session_key": ""}));
    enrich_async_delegation_routing(&mut evt);
    let wire = Event::from(evt).to_value();
    assert!(wire.get("platform").is_none(), "{wire}");
    assert!(wire.get("chat_id").is_none(), "{wire}");
}
