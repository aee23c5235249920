//! `delegate_task_async`'s background path with children that report progress and wedge,
//! or panic in their capability questions: every child closed once, one completion each.
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_delegation::{Cancellation, DelegationEngine, DelegationResult};
use delegate_tool::{
    delegate_task_async, AsyncChildAgent, AsyncChildBackend, BackendError, BackgroundRun,
    CallContext, ChildBuild, ChildRun, ChildTask, DelegateContext, DelegationConfig, ToolOutcome,
};
use process_registry::{CompletionQueue, ManualClock};

const GUARD: Duration = Duration::from_secs(20);

struct Kid {
    goal: String,
    closed: Arc<AtomicUsize>,
}

impl AsyncChildAgent for Kid {
    fn run(self: Arc<Self>, _: ChildTask, _: Cancellation) -> ChildRun {
        Box::pin(async { Ok(DelegationResult::completed("plain run")) })
    }
    fn close(&self) {
        self.closed.fetch_add(1, Ordering::SeqCst);
    }
    fn accepts_steering(&self) -> bool {
        if self.goal == "panicky questions" {
            panic!("accepts_steering exploded");
        }
        false
    }
    fn reports_progress(&self) -> bool {
        match self.goal.as_str() {
            "panicky questions" => panic!("reports_progress exploded"),
            "wedge" => true,
            _ => false,
        }
    }
    fn run_background(
        self: Arc<Self>,
        _: ChildTask,
        _: Cancellation,
        run: BackgroundRun,
    ) -> ChildRun {
        match self.goal.as_str() {
            "panicky run" => panic!("run_background exploded"),
            "wedge" => Box::pin(async move {
                run.progress().unwrap().touch();
                // Wedged: ignores its cancellation (the case the monitor exists for).
                std::future::pending::<()>().await;
                Ok(DelegationResult::completed("never"))
            }),
            _ => Box::pin(async { Ok(DelegationResult::completed("background run")) }),
        }
    }
}

#[derive(Default)]
struct Kids {
    closed: Arc<AtomicUsize>,
}

impl AsyncChildBackend for Kids {
    type Credentials = ();
    type Child = Kid;
    fn resolve_credentials(
        &self,
        _: &CallContext,
        _: &DelegationConfig,
    ) -> Result<(), BackendError> {
        Ok(())
    }
    fn build_child(&self, task: &ChildTask, _: &(), _: &CallContext) -> ChildBuild<Kid> {
        let kid = Kid {
            goal: task.goal.clone(),
            closed: Arc::clone(&self.closed),
        };
        Box::pin(async move { Ok(Arc::new(kid)) })
    }
}

async fn spawn(goal: &str, tools: &DelegateContext<Kids>) -> async_delegation::DelegationHandle {
    let call = CallContext::new("agent:main:cli");
    let out = tokio::time::timeout(
        GUARD,
        delegate_task_async(
            &format!(r#"{{"goal": "{goal}", "background": true}}"#),
            &call,
            tools,
        ),
    )
    .await
    .unwrap();
    let ToolOutcome::Dispatched(handle) = out.outcome else {
        panic!("{}", out.text)
    };
    handle
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_capability_questions_and_run_background_stay_inside() {
    let queue = CompletionQueue::new();
    let tools = DelegateContext::new_async(
        DelegationConfig::default(),
        DelegationEngine::new(queue.clone()),
        Kids::default(),
    );
    let h = spawn("panicky questions", &tools).await;
    let e = tokio::time::timeout(GUARD, h.finished()).await.unwrap();
    assert_eq!(e.summary.as_deref(), Some("background run"));
    let h = spawn("panicky run", &tools).await;
    let e = tokio::time::timeout(GUARD, h.finished()).await.unwrap();
    assert_eq!(e.status.as_deref(), Some("error"));
    assert!(
        e.error
            .as_deref()
            .unwrap()
            .contains("run_background exploded"),
        "{e:?}"
    );
    assert_eq!(
        tools.backend.closed.load(Ordering::SeqCst),
        2,
        "each closed once"
    );
    assert_eq!(queue.drain().len(), 2);
}

/// A wedged async child finalized `stalled` by the monitor is never closed (its future
/// stays pending on the runtime, holding it), though the tool promises every child built
/// is closed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_async_child_is_closed() {
    let queue = CompletionQueue::new();
    let clock = Arc::new(ManualClock::new(1_000.0));
    let engine = DelegationEngine::builder(queue.clone())
        .clock(clock.clone())
        .build();
    let tools = DelegateContext::new_async(DelegationConfig::default(), engine, Kids::default());
    let h = spawn("wedge", &tools).await;
    // Once the child has made its one report (the list shows it), time moves on.
    wait_for(|| {
        tools
            .engine
            .list()
            .first()
            .and_then(|record| record.seconds_since_progress)
            .is_some()
    })
    .await;
    clock.advance(Duration::from_secs(451));
    assert_eq!(tools.engine.sweep_stalls(), 1);
    clock.advance(Duration::from_secs(121));
    assert_eq!(tools.engine.sweep_stalls(), 1);
    let e = tokio::time::timeout(GUARD, h.finished()).await.unwrap();
    assert_eq!(e.status.as_deref(), Some("stalled"));
    assert_eq!(tools.engine.active_count(), 0);
    // The engine aborts the wedged future: dropping it closes the child.
    wait_for(|| tools.backend.closed.load(Ordering::SeqCst) == 1).await;
    assert_eq!(
        tools.backend.closed.load(Ordering::SeqCst),
        1,
        "closed once"
    );
}

/// Waits (at most the guard) until `condition` holds.
async fn wait_for(mut condition: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(GUARD, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "the condition never held within the guard");
}
