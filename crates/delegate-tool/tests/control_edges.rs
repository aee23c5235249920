//! A child whose every new hook panics (`accepts_steering`, `reports_progress`,
//! `run_background`): the caller never sees a panic, scoping still holds, and the
//! delegation ends in one `error` completion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use async_delegation::{DelegationEngine, DelegationResult, RunnerError};
use delegate_tool::*;
use process_registry::{CompletionQueue, Event};
use serde_json::{json, Value};

/// Open once the test has looked at the running child.
static GATE: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
static OPENED: std::sync::Condvar = std::sync::Condvar::new();

struct Wild;
impl ChildAgent for Wild {
    fn run(&self, _: &ChildTask) -> Result<DelegationResult, RunnerError> {
        unreachable!()
    }
    fn interrupt(&self, _: &str) {}
    fn accepts_steering(&self) -> bool {
        panic!("accepts_steering boom")
    }
    fn reports_progress(&self) -> bool {
        panic!("reports_progress boom")
    }
    fn run_background(
        &self,
        _: &ChildTask,
        _: &BackgroundRun,
    ) -> Result<DelegationResult, RunnerError> {
        let mut open = GATE.lock().unwrap();
        while !*open {
            open = OPENED.wait(open).unwrap();
        }
        drop(open);
        panic!("run_background boom")
    }
}
struct WildBackend;
impl ChildBackend for WildBackend {
    type Credentials = ();
    type Child = Wild;
    fn resolve_credentials(
        &self,
        _: &dyn ParentAgent,
        _: &DelegationConfig,
    ) -> Result<(), BackendError> {
        Ok(())
    }
    fn build_child(
        &self,
        _: &ChildTask,
        _: &(),
        _: &dyn ParentAgent,
    ) -> Result<Arc<Wild>, BackendError> {
        Ok(Arc::new(Wild))
    }
}

/// Panicking accepts_steering / reports_progress / run_background never reach
/// the caller; the list says accepting_steer false; one completion.
#[test]
fn a_panicking_child_is_fenced_at_every_new_hook() {
    let queue = CompletionQueue::new();
    let ctx = DelegateContext::new(
        DelegationConfig::default(),
        DelegationEngine::new(queue.clone()),
        WildBackend,
    );
    let parent = Parent::new(0).with_session_key("s1");
    let out = delegate_task(
        &json!({"goal": "g", "background": true}).to_string(),
        &parent,
        &ctx,
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    let id = v["delegation_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{out}"))
        .to_owned();
    let listed = delegate_task(r#"{"action":"list"}"#, &parent, &ctx);
    assert!(listed.contains(r#""accepting_steer":false"#), "{listed}");
    // Another session sees nothing and may not stop or steer it.
    let other = Parent::new(0).with_session_key("s2");
    assert!(delegate_task(r#"{"action":"list"}"#, &other, &ctx).contains(r#""count":0"#));
    let stop = delegate_task(
        &json!({"action":"stop","subagent_id": id}).to_string(),
        &other,
        &ctx,
    );
    assert!(stop.contains("No live subagent"), "{stop}");
    let cli = Parent::new(0);
    let steer = delegate_task(
        &json!({"action":"steer","subagent_id": id, "message": "x"}).to_string(),
        &cli,
        &ctx,
    );
    assert!(steer.contains("No live subagent"), "{steer}");
    *GATE.lock().unwrap() = true;
    OPENED.notify_all();
    let Some(Event::AsyncDelegation(event)) = queue.take_timeout(Duration::from_secs(10)) else {
        panic!()
    };
    assert_eq!(event.status.as_deref(), Some("error"));
    assert!(
        event
            .error
            .as_deref()
            .unwrap()
            .contains("run_background boom"),
        "{event:?}"
    );
    assert!(queue.take_timeout(Duration::from_millis(200)).is_none());
}
