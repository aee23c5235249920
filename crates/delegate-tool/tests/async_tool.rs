//! `delegate_task_async` (feature `tokio`): children that are futures, on both runtime
//! flavours — a single task, a batch whose children depend on each other (they must run
//! concurrently on the calling task), background dispatch routed by the per-call context —
//! plus cancellation, typed rejections with the sync tool's texts, and fenced panics with
//! every child closed once. Waits are bounded by a generous timeout; nothing measures time.
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_delegation::{Cancellation, DelegationEngine, DelegationResult};
use delegate_tool::{
    delegate_task, delegate_task_async, AsyncChildAgent, AsyncChildBackend, BackendError,
    CallContext, ChildBuild, ChildRun, ChildTask, DelegateContext, DelegationConfig, Parent,
    ToolError, ToolOutcome,
};
use process_registry::{CompletionQueue, Event};
use tokio::sync::Notify;

const HANG_GUARD: Duration = Duration::from_secs(20);

/// What a scripted child does, chosen by its goal.
struct Child {
    goal: String,
    meeting: Arc<Notify>,
    closed: Arc<AtomicUsize>,
}

impl AsyncChildAgent for Child {
    fn run(self: Arc<Self>, task: ChildTask, cancel: Cancellation) -> ChildRun {
        Box::pin(async move {
            match self.goal.as_str() {
                // Waits for "arrive": only a concurrent run of both can finish.
                "wait" => {
                    self.meeting.notified().await;
                    Ok(DelegationResult::completed("met"))
                }
                "arrive" => {
                    self.meeting.notify_one();
                    Ok(DelegationResult::completed("arrived"))
                }
                "until cancelled" => {
                    cancel.cancelled().await;
                    Ok(DelegationResult::interrupted("cancelled by the caller"))
                }
                "explode" => panic!("the child exploded"),
                "fail" => Err("the model refused".into()),
                _ => {
                    tokio::task::yield_now().await;
                    Ok(DelegationResult::completed(format!("done: {}", task.goal)))
                }
            }
        })
    }

    fn close(&self) {
        self.closed.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Default)]
struct Backend {
    meeting: Arc<Notify>,
    built: AtomicUsize,
    closed: Arc<AtomicUsize>,
}

impl AsyncChildBackend for Backend {
    type Credentials = ();
    type Child = Child;

    fn resolve_credentials(
        &self,
        _: &CallContext,
        _: &DelegationConfig,
    ) -> Result<(), BackendError> {
        Ok(())
    }

    fn build_child(&self, task: &ChildTask, _: &(), _: &CallContext) -> ChildBuild<Child> {
        if task.goal == "unbuildable" {
            panic!("no client for this model");
        }
        self.built.fetch_add(1, Ordering::SeqCst);
        let child = Child {
            goal: task.goal.clone(),
            meeting: Arc::clone(&self.meeting),
            closed: Arc::clone(&self.closed),
        };
        Box::pin(async move {
            tokio::task::yield_now().await;
            Ok(Arc::new(child))
        })
    }
}

fn tools() -> (DelegateContext<Backend>, CompletionQueue) {
    let queue = CompletionQueue::new();
    let config = DelegationConfig::default();
    let tools = DelegateContext::new_async(
        config,
        DelegationEngine::new(queue.clone()),
        Backend::default(),
    );
    (tools, queue)
}

async fn call<B: AsyncChildBackend>(
    arguments: &str,
    context: &CallContext,
    tools: &DelegateContext<B>,
) -> delegate_tool::ToolOutput {
    tokio::time::timeout(HANG_GUARD, delegate_task_async(arguments, context, tools))
        .await
        .expect("the call ended")
}

#[tokio::test(flavor = "current_thread")]
async fn a_single_task_awaits_its_child_on_a_current_thread_runtime() {
    let (tools, _queue) = tools();
    let out = call(r#"{"goal": "summarise"}"#, &CallContext::new(""), &tools).await;
    let ToolOutcome::Ran(reports) = &out.outcome else {
        panic!("{out:?}")
    };
    assert_eq!(
        reports[0].result.as_ref().unwrap().summary.as_deref(),
        Some("done: summarise")
    );
    let text: serde_json::Value = serde_json::from_str(&out.text).unwrap();
    assert_eq!(text["results"][0]["summary"], "done: summarise");
    assert_eq!(text["results"][0]["status"], "completed");
    assert_eq!(tools.backend.closed.load(Ordering::SeqCst), 1);
}

/// Child 0 waits for child 1: a batch run one child after another would never end.
async fn a_batch_runs_its_children_concurrently() {
    let (tools, _queue) = tools();
    let out = call(
        r#"{"tasks": [{"goal": "wait"}, {"goal": "arrive"}, {"goal": "fail"}]}"#,
        &CallContext::new(""),
        &tools,
    )
    .await;
    let ToolOutcome::Ran(reports) = &out.outcome else {
        panic!("{out:?}")
    };
    let summaries: Vec<_> = reports
        .iter()
        .map(|r| {
            r.result
                .as_ref()
                .map(|r| r.summary.as_deref().unwrap_or_default().to_owned())
                .map_err(Clone::clone)
        })
        .collect();
    assert_eq!(
        summaries,
        vec![
            Ok("met".to_owned()),
            Ok("arrived".to_owned()),
            Err("the model refused".to_owned())
        ]
    );
    let text: serde_json::Value = serde_json::from_str(&out.text).unwrap();
    assert_eq!(text["results"][2]["status"], "error");
    assert_eq!(tools.backend.closed.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "current_thread")]
async fn a_batch_runs_its_children_concurrently_on_a_current_thread_runtime() {
    a_batch_runs_its_children_concurrently().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_runs_its_children_concurrently_on_a_multi_thread_runtime() {
    a_batch_runs_its_children_concurrently().await;
}

/// Two concurrent calls from two sessions: each background completion carries its own
/// call's session key (no state on a shared parent to race on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_calls_route_by_their_own_call_context() {
    let (tools, queue) = tools();
    let telegram = CallContext::new("agent:main:telegram:dm:1");
    let discord = CallContext::new("agent:main:discord:dm:2");
    let (a, b) = tokio::join!(
        call(r#"{"goal": "one", "background": true}"#, &telegram, &tools),
        call(r#"{"goal": "two", "background": true}"#, &discord, &tools),
    );
    let mut expected = Vec::new();
    for (out, key) in [
        (a, "agent:main:telegram:dm:1"),
        (b, "agent:main:discord:dm:2"),
    ] {
        let ToolOutcome::Dispatched(handle) = out.outcome else {
            panic!("{}", out.text)
        };
        assert_eq!(
            out.text,
            format!(
                r#"{{"status":"dispatched","delegation_id":"{}","goal":"{}","mode":"background","note":"{}"}}"#,
                handle.id(),
                if key.contains("telegram") {
                    "one"
                } else {
                    "two"
                },
                delegate_tool::BACKGROUND_NOTE
            )
        );
        tokio::time::timeout(HANG_GUARD, handle.finished())
            .await
            .unwrap();
        expected.push((handle.id().to_owned(), key.to_owned()));
    }
    let mut got: Vec<(String, String)> = queue
        .drain()
        .into_iter()
        .map(|event| match event {
            Event::AsyncDelegation(e) => (e.delegation_id.unwrap().into(), e.session_key.into()),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
    assert_eq!(tools.backend.closed.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn cancelling_the_call_cancels_its_children() {
    let (tools, _queue) = tools();
    let context = CallContext::new("");
    let cancel = context.cancel.clone();
    let running = tokio::spawn({
        let tools = Arc::new(tools);
        let context = context.clone();
        async move {
            let out = delegate_task_async(r#"{"goal": "until cancelled"}"#, &context, &tools).await;
            (out, tools)
        }
    });
    tokio::task::yield_now().await;
    cancel.cancel();
    let (out, tools) = tokio::time::timeout(HANG_GUARD, running)
        .await
        .unwrap()
        .unwrap();
    let ToolOutcome::Ran(reports) = &out.outcome else {
        panic!("{out:?}")
    };
    let result = reports[0].result.as_ref().unwrap();
    assert_eq!(result.status.as_deref(), Some("interrupted"));
    assert_eq!(tools.backend.closed.load(Ordering::SeqCst), 1);
}

/// Rejections are typed and read exactly as the sync tool's.
#[tokio::test(flavor = "current_thread")]
async fn rejections_are_typed_and_read_as_the_sync_tool_reads_them() {
    let (tools, _queue) = tools();
    let too_deep = CallContext::new("").with_depth(tools.config.max_spawn_depth);
    let out = call(r#"{"goal": "x"}"#, &too_deep, &tools).await;
    assert!(
        matches!(
            out.outcome,
            ToolOutcome::Rejected(ToolError::DepthLimit { .. })
        ),
        "{out:?}"
    );

    struct NoBackend;
    impl delegate_tool::ChildBackend for NoBackend {
        type Credentials = ();
        type Child = NoChild;
        fn resolve_credentials(
            &self,
            _: &dyn delegate_tool::ParentAgent,
            _: &DelegationConfig,
        ) -> Result<(), BackendError> {
            Ok(())
        }
        fn build_child(
            &self,
            _: &ChildTask,
            _: &(),
            _: &dyn delegate_tool::ParentAgent,
        ) -> Result<Arc<NoChild>, BackendError> {
            Err("unused".into())
        }
    }
    struct NoChild;
    impl delegate_tool::ChildAgent for NoChild {
        fn run(&self, _: &ChildTask) -> Result<DelegationResult, async_delegation::RunnerError> {
            Ok(DelegationResult::default())
        }
        fn interrupt(&self, _: &str) {}
    }
    let sync_tools = DelegateContext::new(
        DelegationConfig::default(),
        DelegationEngine::new(CompletionQueue::new()),
        NoBackend,
    );
    let deep_parent = Parent::new(tools.config.max_spawn_depth);
    assert_eq!(
        out.text,
        delegate_task(r#"{"goal": "x"}"#, &deep_parent, &sync_tools)
    );

    for bad in [
        "not json",
        r#"{"tasks": [{"goal": "a"}, {"goal": "b"}], "background": true}"#,
        "{}",
    ] {
        let out = call(bad, &CallContext::new(""), &tools).await;
        assert!(
            matches!(out.outcome, ToolOutcome::Rejected(_)),
            "{bad}: {out:?}"
        );
        assert_eq!(
            out.text,
            delegate_task(bad, &Parent::new(0), &sync_tools),
            "{bad}"
        );
    }
}

/// A panic while building or running a child is that task's error text; every child that
/// was built is closed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_are_error_results_and_every_built_child_is_closed_once() {
    let (tools, queue) = tools();
    let out = call(
        r#"{"tasks": [{"goal": "unbuildable"}, {"goal": "explode"}, {"goal": "fine"}]}"#,
        &CallContext::new(""),
        &tools,
    )
    .await;
    let text: serde_json::Value = serde_json::from_str(&out.text).unwrap();
    assert_eq!(
        text["results"][0]["error"],
        "Failed to build the subagent: panic: no client for this model"
    );
    assert_eq!(text["results"][1]["error"], "panic: the child exploded");
    assert_eq!(text["results"][2]["summary"], "done: fine");
    assert_eq!(tools.backend.built.load(Ordering::SeqCst), 2);
    assert_eq!(tools.backend.closed.load(Ordering::SeqCst), 2);

    let out = call(
        r#"{"goal": "explode", "background": true}"#,
        &CallContext::new(""),
        &tools,
    )
    .await;
    let ToolOutcome::Dispatched(handle) = out.outcome else {
        panic!("{}", out.text)
    };
    let outcome = tokio::time::timeout(HANG_GUARD, handle.finished())
        .await
        .unwrap();
    assert_eq!(outcome.error.as_deref(), Some("panic: the child exploded"));
    assert_eq!(queue.len(), 1);
    assert_eq!(tools.backend.closed.load(Ordering::SeqCst), 3);
}

#[test]
fn the_call_is_a_send_future() {
    fn send<T: Send>(_: &T) {}
    let (tools, _queue) = tools();
    let context = CallContext::new("");
    send(&delegate_task_async("{}", &context, &tools));
}

/// A call dropped while its child runs (the caller's task was aborted) still closes the
/// child, once.
#[tokio::test(flavor = "current_thread")]
async fn a_call_dropped_mid_run_closes_its_child_once() {
    let (tools, _queue) = tools();
    let tools = Arc::new(tools);
    let running = tokio::spawn({
        let tools = Arc::clone(&tools);
        async move {
            let context = CallContext::new("");
            delegate_task_async(r#"{"goal": "until cancelled"}"#, &context, &tools).await
        }
    });
    while tools.backend.built.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    tokio::task::yield_now().await;
    running.abort();
    assert!(running.await.unwrap_err().is_cancelled());
    assert_eq!(tools.backend.closed.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_actions_answer_at_once_for_async_agents_too() {
    let (tools, queue) = tools();
    let session = CallContext::new("agent:main:telegram:dm:1");
    let out = call(
        r#"{"goal": "until cancelled", "background": true}"#,
        &session,
        &tools,
    )
    .await;
    let ToolOutcome::Dispatched(handle) = out.outcome else {
        panic!("{}", out.text)
    };
    let listed = call(r#"{"action": "list"}"#, &session, &tools).await;
    assert!(matches!(listed.outcome, ToolOutcome::Answered));
    let value: serde_json::Value = serde_json::from_str(&listed.text).unwrap();
    assert_eq!(value["count"], 1);
    assert_eq!(value["subagents"][0]["subagent_id"], handle.id());
    assert_eq!(value["subagents"][0]["accepting_steer"], false);
    // Another session sees none of it.
    let other = CallContext::new("agent:main:discord:dm:2");
    let stop = format!(r#"{{"action": "stop", "subagent_id": "{}"}}"#, handle.id());
    let refused = call(&stop, &other, &tools).await;
    assert!(
        matches!(
            &refused.outcome,
            ToolOutcome::Rejected(ToolError::NoLiveSubagent { .. })
        ),
        "{}",
        refused.text
    );
    let stopped = call(&stop, &session, &tools).await;
    assert!(matches!(stopped.outcome, ToolOutcome::Answered));
    assert!(
        stopped.text.contains(r#""status":"interrupt_requested""#),
        "{}",
        stopped.text
    );
    let event = tokio::time::timeout(HANG_GUARD, handle.finished())
        .await
        .unwrap();
    assert_eq!(event.status.as_deref(), Some("interrupted"));
    assert_eq!(queue.drain().len(), 1);
}

/// Children for the control tests: one that takes its steering, one that reports a tool
/// call and then never comes back (it ignores its cancellation).
struct Controlled {
    goal: String,
}

impl AsyncChildAgent for Controlled {
    fn run(self: Arc<Self>, _: ChildTask, _: Cancellation) -> ChildRun {
        Box::pin(async { Err("only runs in the background".into()) })
    }

    fn accepts_steering(&self) -> bool {
        self.goal == "steer me"
    }

    fn reports_progress(&self) -> bool {
        self.goal == "wedge"
    }

    fn run_background(
        self: Arc<Self>,
        _: ChildTask,
        _: Cancellation,
        run: delegate_tool::BackgroundRun,
    ) -> ChildRun {
        Box::pin(async move {
            if let Some(progress) = run.progress() {
                progress.enter_tool();
                std::future::pending::<()>().await;
            }
            loop {
                let steered = run.take_steering();
                if !steered.is_empty() {
                    let steered: Vec<String> = steered.iter().map(|t| t.to_string()).collect();
                    return Ok(DelegationResult::completed(format!(
                        "steered: {}",
                        steered.join(" ")
                    )));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    }
}

struct ControlledBackend;

impl AsyncChildBackend for ControlledBackend {
    type Credentials = ();
    type Child = Controlled;

    fn resolve_credentials(
        &self,
        _: &CallContext,
        _: &DelegationConfig,
    ) -> Result<(), BackendError> {
        Ok(())
    }

    fn build_child(&self, task: &ChildTask, _: &(), _: &CallContext) -> ChildBuild<Controlled> {
        let goal = task.goal.clone();
        Box::pin(async move { Ok(Arc::new(Controlled { goal })) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_children_take_steering_and_are_watched_for_stalls() {
    let queue = CompletionQueue::new();
    let clock = Arc::new(process_registry::ManualClock::new(1_000.0));
    let engine = DelegationEngine::builder(queue.clone())
        .clock(clock.clone())
        .build();
    let tools = DelegateContext::new_async(DelegationConfig::default(), engine, ControlledBackend);
    let session = CallContext::new("agent:main:telegram:dm:1");

    let out = call(
        r#"{"goal": "steer me", "background": true}"#,
        &session,
        &tools,
    )
    .await;
    let ToolOutcome::Dispatched(steered) = out.outcome else {
        panic!("{}", out.text)
    };
    let listed: serde_json::Value =
        serde_json::from_str(&call(r#"{"action": "list"}"#, &session, &tools).await.text).unwrap();
    assert_eq!(listed["subagents"][0]["accepting_steer"], true);
    let steer = format!(
        r#"{{"action": "steer", "subagent_id": "{}", "message": "only errors"}}"#,
        steered.id()
    );
    let answer = call(&steer, &session, &tools).await;
    assert!(
        answer.text.contains(r#""status":"queued""#),
        "{}",
        answer.text
    );
    let event = tokio::time::timeout(HANG_GUARD, steered.finished())
        .await
        .unwrap();
    assert_eq!(event.summary.as_deref(), Some("steered: only errors"));
    assert_eq!(event.missed_steer, None);

    let out = call(r#"{"goal": "wedge", "background": true}"#, &session, &tools).await;
    let ToolOutcome::Dispatched(wedged) = out.outcome else {
        panic!("{}", out.text)
    };
    // Once its tool call has begun (the list says so), time moves past the in-tool
    // threshold, then past the grace.
    let in_tool = async {
        loop {
            let listed = call(r#"{"action": "list"}"#, &session, &tools).await.text;
            if listed.contains(r#""in_tool":true"#) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(HANG_GUARD, in_tool).await.unwrap();
    clock.advance(Duration::from_secs(1201));
    assert_eq!(tools.engine.sweep_stalls(), 1);
    clock.advance(Duration::from_secs(121));
    assert_eq!(tools.engine.sweep_stalls(), 1);
    let event = tokio::time::timeout(HANG_GUARD, wedged.finished())
        .await
        .unwrap();
    assert_eq!(event.status.as_deref(), Some("stalled"));
    assert_eq!(
        event.stall.as_ref().and_then(|s| s.stall_phase.as_deref()),
        Some("in_tool")
    );
    assert_eq!(tools.engine.active_count(), 0);
    assert_eq!(queue.drain().len(), 2, "one completion each");
}
