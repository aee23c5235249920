//! The gateway contract of the Python harness's test file, across the real crates:
//! completions produced by the real engine (through `delegate_task`) are enriched from
//! their session key, rendered by the gateway formatter, left on the queue by the watch
//! drain, turned into a routable source — and left unrouted when they come from the CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_delegation::{DelegationEngine, DelegationResult};
use delegate_tool::{delegate_task, DelegateContext, DelegationConfig, Parent};
use gateway::{
    build_process_event_source, drain_gateway_watch_events, enrich_async_delegation_routing,
    format_gateway_process_notification, NoOrigins, Platform, PlatformRegistry,
};
use integration_tests::{make_async_event, take_delegation, ScriptedBackend};
use process_registry::{format_process_notification, AsyncDelegationEvent, CompletionQueue, Event};
use serde_json::{json, Value};

/// Dispatches `goal` with `delegate_task(background=true)` from a parent serving
/// `session_key`, and returns its completion as the engine produced it.
fn completion_from(session_key: &str, goal: &str) -> AsyncDelegationEvent {
    let queue = CompletionQueue::new();
    let backend = ScriptedBackend::new(|_, task| {
        Ok(DelegationResult {
            api_calls: Some(4),
            duration_seconds: Some(12.0),
            ..DelegationResult::completed(format!("Found the bug in {}", task.goal))
        })
    });
    let ctx = DelegateContext::new(
        DelegationConfig::default(),
        DelegationEngine::new(queue.clone()),
        backend,
    );
    let parent = Parent::new(0)
        .with_session_id("sess")
        .with_session_key(session_key);
    let args = json!({"goal": goal, "context": "repo /tmp/p", "toolsets": ["terminal"], "background": true});
    let out: Value =
        serde_json::from_str(&delegate_task(&args.to_string(), &parent, &ctx)).unwrap();
    assert_eq!(out["status"], "dispatched", "{out}");
    let event = take_delegation(&queue).expect("a completion");
    assert_eq!(
        event.delegation_id.as_deref(),
        out["delegation_id"].as_str()
    );
    event
}

#[test]
fn test_gateway_enriches_routing_from_session_key() {
    let mut evt = completion_from("agent:main:telegram:dm:12345:678", "test_foo");
    assert!(enrich_async_delegation_routing(&mut evt));
    let wire = Event::from(evt).to_value();
    assert_eq!(wire["platform"], "telegram");
    assert_eq!(wire["chat_type"], "dm");
    assert_eq!(wire["chat_id"], "12345");
    assert_eq!(wire["thread_id"], "678");

    // A group key's fifth part is a user, not a thread.
    let mut evt = completion_from("agent:main:telegram:group:chat1:user99", "x");
    enrich_async_delegation_routing(&mut evt);
    let wire = Event::from(evt).to_value();
    assert_eq!(
        (wire["platform"].as_str(), wire["chat_id"].as_str()),
        (Some("telegram"), Some("chat1"))
    );
    assert!(wire.get("thread_id").is_none(), "{wire}");
}

#[test]
fn test_gateway_formatter_renders_async_block() {
    let txt = format_gateway_process_notification(&Event::AsyncDelegation(make_async_event()))
        .expect("an async block");
    assert!(txt.contains("ASYNC DELEGATION COMPLETE"), "{txt}");
    assert!(txt.contains("Found the bug in test_foo"), "{txt}");
    assert!(txt.contains("Investigate flaky test"), "{txt}");
    assert!(
        txt.starts_with("[ASYNC DELEGATION COMPLETE — deleg_x1]\n"),
        "{txt}"
    );
    assert!(
        txt.contains(" (12s ago)\nOriginal goal: Investigate flaky test\n"),
        "{txt}"
    );
    assert!(
        txt.ends_with(
            "Context you provided: repo /tmp/p\n\
         Toolsets: terminal\n\
         Role: leaf   Model: m\n\
         Status: completed   API calls: 4   Duration: 12.0s\n\
         --- RESULT ---\n\
         Found the bug in test_foo"
        ),
        "{txt}"
    );

    // On an engine-made event the gateway renders exactly the process-registry block.
    let evt = Event::AsyncDelegation(completion_from(
        "agent:main:discord:thread:g1:t9",
        "test_bar",
    ));
    let gateway_text = format_gateway_process_notification(&evt).expect("an async block");
    assert_eq!(
        Some(gateway_text.clone()),
        format_process_notification(&evt)
    );
    assert!(
        gateway_text.contains("Found the bug in test_bar"),
        "{gateway_text}"
    );
}

#[test]
fn test_gateway_watch_drain_requeues_async_without_looping() {
    let q = CompletionQueue::new();
    let async_evt =
        Event::AsyncDelegation(completion_from("agent:main:telegram:dm:12345:678", "t"));
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
    let mut evt = completion_from("agent:main:telegram:dm:12345:678", "t");
    enrich_async_delegation_routing(&mut evt);
    let src = build_process_event_source(
        &Event::AsyncDelegation(evt),
        &NoOrigins,
        &PlatformRegistry::new(),
    )
    .expect("a routable source");
    assert_eq!(src.platform, Platform::Telegram);
    assert_eq!(src.platform.as_str(), "telegram");
    assert_eq!(src.chat_id, "12345");
    assert_eq!(src.chat_type, "dm");
    assert_eq!(src.thread_id.as_deref(), Some("678"));
}

#[test]
fn test_gateway_cli_origin_event_left_unrouted() {
    let mut evt = completion_from("", "t");
    assert_eq!(evt.session_key, "");
    assert!(!enrich_async_delegation_routing(&mut evt));
    assert!(evt.routing().is_empty());
    let wire = Event::from(evt).to_value();
    assert!(wire.get("platform").is_none(), "{wire}");
    assert!(wire.get("chat_id").is_none(), "{wire}");
}
