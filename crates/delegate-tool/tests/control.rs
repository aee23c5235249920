//! The control actions of `delegate_task` (`list`, `steer`, `stop`): every text whole,
//! scoped to the caller's session, and each delegation still ending in exactly one
//! completion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_delegation::{DelegationResult, DelegationSpec};
use common::{context, error_of, parse, take_delegation, wait_until, FakeBackend, Gate};
use delegate_tool::{delegate_task, DelegationConfig, Parent, ASYNC_CANCEL_REASON};
use serde_json::json;

const SESSION: &str = "agent:main:telegram:dm:12345";
const OTHER: &str = "agent:main:discord:group:999";

const STOP_NOTE: &str = "The subagent stops at its next iteration boundary (in-flight tool calls are asked to cancel). Its partial result still re-enters the conversation as a completion message — do not wait or poll.";
const STEER_NOTE: &str = "Steering text queued. The subagent sees it appended to its next tool result — the current tool call is never cut. If the child finishes before a delivery boundary remains, the text is reported back as missed_steer in its completion entry.";
const EMPTY_NOTE: &str = "No live subagents right now. Children that already finished have delivered (or will deliver) their results as normal completion messages — there is nothing to steer or stop.";

fn parent(session_key: &str) -> Parent {
    Parent::new(0).with_session_key(session_key)
}

fn spawn(
    ctx: &delegate_tool::DelegateContext<FakeBackend>,
    session_key: &str,
    goal: &str,
) -> String {
    let arguments = json!({"goal": goal, "background": true}).to_string();
    let out = delegate_task(&arguments, &parent(session_key), ctx);
    parse(&out)["delegation_id"]
        .as_str()
        .unwrap_or_else(|| panic!("not dispatched: {out}"))
        .to_owned()
}

fn call(
    ctx: &delegate_tool::DelegateContext<FakeBackend>,
    session_key: &str,
    arguments: serde_json::Value,
) -> String {
    delegate_task(&arguments.to_string(), &parent(session_key), ctx)
}

#[test]
fn list_shows_only_the_callers_running_children_with_every_field_in_order() {
    let gate = Gate::new();
    let (ctx, queue) = context(FakeBackend::gated(&gate), DelegationConfig::default());
    let first = spawn(&ctx, SESSION, "first task");
    let second = spawn(&ctx, SESSION, "second task");
    let foreign = spawn(&ctx, OTHER, "their task");

    let out = call(&ctx, SESSION, json!({"action": "list"}));
    assert!(
        out.starts_with(r#"{"action":"list","count":2,"subagents":[{"subagent_id":"#),
        "{out}"
    );
    let listed = parse(&out);
    assert_eq!(
        listed.as_object().unwrap().len(),
        3,
        "no note when some run: {out}"
    );
    let entries = listed["subagents"].as_array().unwrap();
    let ids: Vec<&str> = entries
        .iter()
        .map(|e| e["subagent_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [first.as_str(), second.as_str()]);
    for (entry, goal) in entries.iter().zip(["first task", "second task"]) {
        let keys: Vec<&str> = entry
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = vec![
            "accepting_steer",
            "goal",
            "model",
            "running_seconds",
            "status",
            "subagent_id",
        ];
        expected.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(entry["goal"], goal);
        assert_eq!(entry["model"], "m");
        assert_eq!(entry["status"], "running");
        assert_eq!(entry["accepting_steer"], false);
        let seconds = entry["running_seconds"].as_f64().unwrap();
        assert!((0.0..60.0).contains(&seconds), "{seconds}");
    }
    // The entry's own key order, as written.
    let raw_entry = format!(
        r#"{{"subagent_id":"{first}","goal":"first task","model":"m","status":"running","running_seconds":"#
    );
    assert!(out.contains(&raw_entry), "{out}");

    let theirs = parse(&call(&ctx, OTHER, json!({"action": "list"})));
    assert_eq!(theirs["count"], 1);
    assert_eq!(theirs["subagents"][0]["subagent_id"], foreign.as_str());

    // A session with none: the note, whole.
    assert_eq!(
        call(&ctx, "agent:main:slack:dm:1", json!({"action": " LIST "})),
        format!(
            r#"{{"action":"list","count":0,"subagents":[],"note":{}}}"#,
            json!(EMPTY_NOTE)
        )
    );

    gate.open();
    for _ in 0..3 {
        take_delegation(&queue);
    }
    wait_until(|| ctx.engine.active_count() == 0);
    // Finished children are not live.
    assert_eq!(
        parse(&call(&ctx, SESSION, json!({"action": "list"})))["count"],
        0
    );
}

#[test]
fn stop_interrupts_that_one_child_and_its_partial_result_is_its_one_completion() {
    let gate = Gate::new();
    let (ctx, queue) = context(FakeBackend::gated(&gate), DelegationConfig::default());
    let stopped = spawn(&ctx, SESSION, "stop me");
    let kept = spawn(&ctx, SESSION, "keep me");

    let out = call(
        &ctx,
        SESSION,
        json!({"action": "stop", "subagent_id": stopped}),
    );
    assert_eq!(
        out,
        format!(
            r#"{{"action":"stop","subagent_id":"{stopped}","status":"interrupt_requested","note":{}}}"#,
            json!(STOP_NOTE)
        )
    );
    let event = take_delegation(&queue);
    assert_eq!(event.delegation_id.as_deref(), Some(stopped.as_str()));
    assert_eq!(event.status.as_deref(), Some("interrupted"));
    assert_eq!(event.error.as_deref(), Some(ASYNC_CANCEL_REASON));
    let built = ctx.backend.built();
    let interrupted: Vec<bool> = built.iter().map(|child| child.is_interrupted()).collect();
    assert_eq!(
        interrupted,
        [true, false],
        "only the stopped child is interrupted"
    );

    // The other still runs; stopping the finished one is the unknown-id text.
    let listed = parse(&call(&ctx, SESSION, json!({"action": "list"})));
    assert_eq!(listed["count"], 1);
    assert_eq!(listed["subagents"][0]["subagent_id"], kept.as_str());
    wait_until(|| ctx.engine.active_count() == 1);
    assert_eq!(
        error_of(&call(&ctx, SESSION, json!({"action": "stop", "subagent_id": stopped}))),
        format!("No live subagent '{stopped}' in this conversation's spawn tree. It may have already finished (its result arrives as a normal completion message). Use action='list' to see live children.")
    );
    gate.open();
    assert_eq!(
        take_delegation(&queue).delegation_id.as_deref(),
        Some(kept.as_str())
    );
    wait_until(|| ctx.engine.active_count() == 0);
    assert!(queue.is_empty(), "exactly one completion each");
}

#[test]
fn another_sessions_id_is_not_authority() {
    let gate = Gate::new();
    let mut backend = FakeBackend::gated(&gate);
    backend.steerable = true;
    let (ctx, queue) = context(backend, DelegationConfig::default());
    let theirs = spawn(&ctx, OTHER, "their task");
    let unknown = |sid: &str| {
        format!("No live subagent '{sid}' in this conversation's spawn tree. It may have already finished (its result arrives as a normal completion message). Use action='list' to see live children.")
    };
    for arguments in [
        json!({"action": "stop", "subagent_id": theirs}),
        json!({"action": "steer", "subagent_id": theirs, "message": "hijack"}),
    ] {
        assert_eq!(error_of(&call(&ctx, SESSION, arguments)), unknown(&theirs));
    }
    assert_eq!(
        error_of(&call(
            &ctx,
            SESSION,
            json!({"action": "stop", "subagent_id": "deleg_00000000"})
        )),
        unknown("deleg_00000000")
    );
    // Nothing reached the child: it is neither interrupted nor steered.
    let child = ctx.backend.only_child();
    assert!(!child.is_interrupted());
    assert!(child.take_steer().is_empty());
    gate.open();
    let event = take_delegation(&queue);
    assert_eq!(event.status.as_deref(), Some("completed"));
    assert_eq!(event.missed_steer, None);
}

#[test]
fn control_refusals_read_the_texts_whole() {
    let (ctx, _queue) = context(FakeBackend::instant(), DelegationConfig::default());
    let cases = [
        (json!({"action": "kill"}), "Unknown action 'kill'. Use spawn, list, steer, or stop.".to_owned()),
        (json!({"action": 7}), "Unknown action '7'. Use spawn, list, steer, or stop.".to_owned()),
        (json!({"action": "stop"}), "action='stop' requires subagent_id (from the spawn dispatch response or action='list').".to_owned()),
        (json!({"action": "STEER", "subagent_id": "  "}), "action='steer' requires subagent_id (from the spawn dispatch response or action='list').".to_owned()),
        (json!({"action": "steer", "subagent_id": "deleg_1"}), "action='steer' requires a non-empty 'message' describing the course correction.".to_owned()),
        (json!({"action": "steer", "subagent_id": "deleg_1", "message": " \n"}), "action='steer' requires a non-empty 'message' describing the course correction.".to_owned()),
        (json!({"action": "steer", "subagent_id": "deleg_1", "message": ["x"]}), "action='steer' requires a non-empty 'message' describing the course correction.".to_owned()),
    ];
    for (arguments, text) in cases {
        assert_eq!(
            error_of(&call(&ctx, SESSION, arguments.clone())),
            text,
            "{arguments}"
        );
    }
    // Answered at once: no child was built, no credentials asked for.
    assert!(ctx.backend.built().is_empty());
    assert_eq!(ctx.backend.credential_calls.load(Ordering::SeqCst), 0);
    // `spawn`, given or blank, is the usual call.
    let out = call(
        &ctx,
        SESSION,
        json!({"action": " Spawn ", "goal": "g", "background": true}),
    );
    assert_eq!(parse(&out)["status"], "dispatched");
}

#[test]
fn a_stop_that_comes_too_late_says_so() {
    // A delegation of this session the tool cannot interrupt: one dispatched without a
    // hook, so the engine reports it could not reach the child (as when it finished in
    // the last moment).
    let (ctx, queue) = context(FakeBackend::instant(), DelegationConfig::default());
    let released = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&released);
    let id = ctx
        .engine
        .try_dispatch(
            DelegationSpec::new("hookless").with_session_key(SESSION),
            move || {
                wait_until(|| seen.load(Ordering::SeqCst));
                Ok(DelegationResult::completed("done"))
            },
            None,
            4,
        )
        .unwrap();
    assert_eq!(
        error_of(&call(&ctx, SESSION, json!({"action": "stop", "subagent_id": id}))),
        format!("Could not interrupt '{id}' — it likely finished in the last moment. Its result arrives as a normal completion message.")
    );
    released.store(true, Ordering::SeqCst);
    assert_eq!(take_delegation(&queue).status.as_deref(), Some("completed"));
}

#[test]
fn a_steer_the_child_takes_is_delivered_and_not_reported_back() {
    let gate = Gate::new();
    let held = Arc::clone(&gate);
    let mut backend = FakeBackend::new(move |child, _task| {
        // One delivery boundary, after the gate: whatever was queued by then.
        held.wait(child);
        let steered = child.take_steer().join(" | ");
        Ok(DelegationResult::completed(format!("steered: {steered}")))
    });
    backend.steerable = true;
    let (ctx, queue) = context(backend, DelegationConfig::default());
    let id = spawn(&ctx, SESSION, "steer me");
    assert_eq!(
        parse(&call(&ctx, SESSION, json!({"action": "list"})))["subagents"][0]["accepting_steer"],
        true
    );

    let out = call(
        &ctx,
        SESSION,
        json!({"action": "steer", "subagent_id": id, "message": "Only the last hour"}),
    );
    assert_eq!(
        out,
        format!(
            r#"{{"action":"steer","subagent_id":"{id}","status":"queued","note":{}}}"#,
            json!(STEER_NOTE)
        )
    );
    gate.open();
    let event = take_delegation(&queue);
    assert_eq!(
        event.summary.as_deref(),
        Some("steered: Only the last hour")
    );
    assert_eq!(event.missed_steer, None);
    // After it finished, steering is closed; the id is no longer live.
    wait_until(|| ctx.engine.active_count() == 0);
    assert!(error_of(&call(
        &ctx,
        SESSION,
        json!({"action": "steer", "subagent_id": id, "message": "more"})
    ))
    .starts_with("No live subagent"));
}

#[test]
fn a_steer_the_child_never_took_comes_back_as_missed_steer() {
    let gate = Gate::new();
    let mut backend = FakeBackend::gated(&gate);
    backend.steerable = true;
    let (ctx, queue) = context(backend, DelegationConfig::default());
    let id = spawn(&ctx, SESSION, "ignore steering");
    for message in ["first", "second"] {
        let out = call(
            &ctx,
            SESSION,
            json!({"action": "steer", "subagent_id": id, "message": message}),
        );
        assert_eq!(parse(&out)["status"], "queued", "{out}");
    }
    gate.open();
    let event = take_delegation(&queue);
    assert_eq!(event.missed_steer.as_deref(), Some("first\nsecond"));
    assert_eq!(
        event.summary.as_deref(),
        Some("done: ignore steering\n\n[steer did not land — the subagent finished before it could be delivered: first\nsecond]")
    );
    let wire = serde_json::to_value(process_registry::Event::AsyncDelegation(event)).unwrap();
    assert_eq!(wire["missed_steer"], "first\nsecond");
}

#[test]
fn a_child_without_steering_refuses_a_steer() {
    let gate = Gate::new();
    let (ctx, queue) = context(FakeBackend::gated(&gate), DelegationConfig::default());
    let id = spawn(&ctx, SESSION, "not steerable");
    assert_eq!(
        error_of(&call(&ctx, SESSION, json!({"action": "steer", "subagent_id": id, "message": "hello"}))),
        format!("Subagent '{id}' is no longer accepting steering (finishing or already finished). Its result arrives as a normal completion message; re-delegate a follow-up task if more work is needed.")
    );
    gate.open();
    let event = take_delegation(&queue);
    assert_eq!(event.missed_steer, None);
    assert_eq!(event.summary.as_deref(), Some("done: not steerable"));
}

#[test]
fn control_texts_are_the_contexts() {
    let mut texts = delegate_tool::ToolTexts::default();
    texts.unknown_action = "no {action}".into();
    texts.list_empty_note = "nothing".into();
    texts.no_live_subagent = "who is {sid}?".into();
    let (ctx, _queue) = context(FakeBackend::instant(), DelegationConfig::default());
    let ctx = ctx.with_texts(texts);
    assert_eq!(
        error_of(&call(&ctx, SESSION, json!({"action": "x"}))),
        "no x"
    );
    assert_eq!(
        call(&ctx, SESSION, json!({"action": "list"})),
        r#"{"action":"list","count":0,"subagents":[],"note":"nothing"}"#
    );
    assert_eq!(
        error_of(&call(
            &ctx,
            SESSION,
            json!({"action": "stop", "subagent_id": "d"})
        )),
        "who is d?"
    );
}

#[test]
fn a_child_that_reports_progress_is_watched_listed_and_finalized_when_wedged() {
    let queue = process_registry::CompletionQueue::new();
    let clock = Arc::new(process_registry::ManualClock::new(1_000.0));
    let engine = async_delegation::DelegationEngine::builder(queue.clone())
        .clock(clock.clone())
        .build();
    let (release, held) = std::sync::mpsc::channel::<()>();
    let held = std::sync::Mutex::new(held);
    // Reports one tool call, then wedges: it ignores its interrupt.
    let mut backend = FakeBackend::new(move |child, _task| {
        let progress = child.progress.lock().unwrap().clone().unwrap();
        progress.enter_tool();
        held.lock().unwrap().recv().ok();
        Ok(DelegationResult::completed("too late"))
    });
    backend.reports_progress = true;
    let ctx = delegate_tool::DelegateContext::new(DelegationConfig::default(), engine, backend);
    let id = spawn(&ctx, SESSION, "wedged child");
    wait_until(|| {
        ctx.backend.built().first().is_some_and(|child| {
            child
                .progress
                .lock()
                .unwrap()
                .as_ref()
                .is_some_and(|p| p.in_tool())
        })
    });
    clock.advance(std::time::Duration::from_secs(30));
    let listed = call(&ctx, SESSION, json!({"action": "list"}));
    let entry = &parse(&listed)["subagents"][0];
    assert_eq!(entry["seconds_since_progress"], 30.0, "{listed}");
    assert_eq!(entry["in_tool"], true);
    assert!(
        listed.contains(r#""accepting_steer":false,"seconds_since_progress":30.0,"in_tool":true}"#),
        "{listed}"
    );

    clock.advance(std::time::Duration::from_secs(1200));
    assert_eq!(ctx.engine.sweep_stalls(), 1);
    assert_eq!(
        ctx.backend.only_child().interrupt_reasons(),
        [ASYNC_CANCEL_REASON]
    );
    clock.advance(std::time::Duration::from_secs(121));
    assert_eq!(ctx.engine.sweep_stalls(), 1);
    let event = take_delegation(&queue);
    assert_eq!(event.delegation_id.as_deref(), Some(id.as_str()));
    assert_eq!(event.status.as_deref(), Some("stalled"));
    assert_eq!(
        event.stall.as_ref().and_then(|s| s.stall_phase.as_deref()),
        Some("in_tool")
    );
    assert_eq!(
        parse(&call(&ctx, SESSION, json!({"action": "list"})))["count"],
        0
    );
    release.send(()).unwrap();
    assert!(queue
        .take_timeout(std::time::Duration::from_millis(300))
        .is_none());
}

#[test]
fn list_shows_this_sessions_delegations_that_another_process_runs() {
    // Two "processes" on one ledger: their own queue and engine each, their own instance.
    let ledger = Arc::new(process_registry::MemoryLedger::new());
    let open = |instance: &str| {
        process_registry::CompletionQueue::builder_shared(ledger.clone())
            .instance(instance)
            .open()
            .unwrap()
    };
    let (theirs, ours) = (open("worker-a"), open("gateway-b"));
    let gate = Gate::new();
    let (their_ctx, _) = context(FakeBackend::gated(&gate), DelegationConfig::default());
    let their_ctx = delegate_tool::DelegateContext::new(
        DelegationConfig::default(),
        async_delegation::DelegationEngine::new(theirs.clone()),
        their_ctx.backend,
    );
    let remote = spawn(&their_ctx, SESSION, "runs elsewhere");
    let hidden = spawn(&their_ctx, OTHER, "another session, elsewhere");
    let (ctx, _) = context(FakeBackend::gated(&gate), DelegationConfig::default());
    let ctx = delegate_tool::DelegateContext::new(
        DelegationConfig::default(),
        async_delegation::DelegationEngine::new(ours.clone()),
        ctx.backend,
    );
    let local = spawn(&ctx, SESSION, "runs here");

    let listed = parse(&call(&ctx, SESSION, json!({"action": "list"})));
    assert_eq!(listed["count"], 2, "{listed}");
    assert_eq!(listed["subagents"][0]["subagent_id"], local.as_str());
    assert_eq!(listed["subagents"][1]["subagent_id"], remote.as_str());
    assert_eq!(listed["subagents"][1]["goal"], "runs elsewhere");
    assert_eq!(listed["subagents"][1]["status"], "running");
    assert_eq!(listed["subagents"][1]["accepting_steer"], false);
    assert!(!listed.to_string().contains(&hidden));
    // Out of this process's reach: stop and steer say so, as for a child that ended.
    assert_eq!(
        error_of(&call(&ctx, SESSION, json!({"action": "stop", "subagent_id": remote}))),
        format!("Could not interrupt '{remote}' — it likely finished in the last moment. Its result arrives as a normal completion message.")
    );
    assert!(error_of(&call(
        &ctx,
        SESSION,
        json!({"action": "steer", "subagent_id": remote, "message": "m"})
    ))
    .starts_with(&format!(
        "Subagent '{remote}' is no longer accepting steering"
    )));
    gate.open();
}

#[test]
fn a_stopped_child_reports_its_partial_work_in_its_one_completion() {
    let gate = Gate::new();
    let held = Arc::clone(&gate);
    let (ctx, queue) = context(
        FakeBackend::new(move |child, _task| {
            // Works until told to stop, then reports what it had.
            held.wait(child);
            Ok(DelegationResult {
                summary: Some("read 3 of 7 files".into()),
                ..DelegationResult::interrupted(child.interrupt_reasons().join(", "))
            })
        }),
        DelegationConfig::default(),
    );
    let id = spawn(&ctx, SESSION, "read seven files");
    let out = call(&ctx, SESSION, json!({"action": "stop", "subagent_id": id}));
    assert_eq!(parse(&out)["status"], "interrupt_requested");
    let event = take_delegation(&queue);
    assert_eq!(event.status.as_deref(), Some("interrupted"));
    assert_eq!(event.summary.as_deref(), Some("read 3 of 7 files"));
    let text = process_registry::format_process_notification(
        &process_registry::Event::AsyncDelegation(event),
    )
    .unwrap();
    assert!(text.contains("read 3 of 7 files"), "{text}");
    wait_until(|| ctx.engine.active_count() == 0);
    assert!(queue.is_empty());
    drop(gate);
}
