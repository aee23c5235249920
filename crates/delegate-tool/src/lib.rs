//! The `delegate_task` tool an LLM calls to hand work to subagents.
//!
//! New to the crates? [The guide](../../docs/guide.md) in the repository (rendered by
//! `cargo doc` as the `gateway::guide` page) walks from "I have an agent" to "my agent
//! delegates in the background": plugging an agent in, registering the tool with OpenAI-
//! and Anthropic-style APIs, bringing results back as new turns, testing.
//!
//! A model calls `delegate_task` with JSON arguments — `goal`/`context`/`toolsets` for
//! one task or `tasks` for a batch, a `role`, and a `background` flag. [`delegate_task`]
//! (raw argument text) or [`delegate_task_value`] (parsed) checks them in a fixed order
//! ([`ToolError`] lists it), then either
//!
//! - runs the children **synchronously** — a batch in parallel on scoped
//!   `delegate-task-{i}` threads — and returns `{"results":[…],"total_duration_seconds":…}`,
//!   or
//! - (`background=true`, one task) builds the child on the calling thread, detaches it
//!   from the parent and **dispatches** it on an [`async_delegation::DelegationEngine`],
//!   returning `{"status":"dispatched","delegation_id":…,…}` at once; the completion
//!   lands on the engine's queue later.
//!
//! The tool result is always JSON text, and the tool never panics:
//!
//! - **Any input.** Arguments nested deeper than [`MAX_ARGUMENT_NESTING`] levels are
//!   refused first, by a walk that does not recurse, so nothing later can overflow the
//!   stack (the limit is the one `serde_json` applies to text, so text and parsed values
//!   are refused alike).
//! - **Any agent implementation.** Every call into the [`ChildBackend`], a
//!   [`ChildAgent`] and the [`ParentAgent`] is fenced, and so are the `Display` and
//!   `Drop` of the errors they return and the `Drop` of the credentials and children the
//!   tool owns. A panic becomes an error text (`panic: …`, or `panic while formatting
//!   the error: …`); the traits' docs say what each failure yields. Every child a call
//!   built is closed exactly once: by its run, or by the tool when the call fails or is
//!   refused after the build.
//!
//! # Control actions
//!
//! `action` (default `spawn`) also takes `list`, `steer` and `stop`, answered at once in
//! the caller's turn and only for the background delegations of the caller's own session
//! (an id from another session gets the same answer as an unknown one):
//!
//! - `list` → `{"action":"list","count":N,"subagents":[…]}`, each entry with
//!   `subagent_id`, `goal`, `model`, `status`, `running_seconds`, `accepting_steer` (and
//!   `seconds_since_progress`, `in_tool` for a child that reports progress), with a `note`
//!   when there are none. Delegations of the session that another process runs on a
//!   shared completion ledger are listed too (out of this process's reach: they take no
//!   steering and cannot be stopped from here).
//! - `stop` (`subagent_id`) interrupts that one child; its partial result still arrives
//!   as its one completion.
//! - `steer` (`subagent_id`, `message`) queues a course correction for a child that
//!   [accepts steering](ChildAgent::accepts_steering); it reads it at its next delivery
//!   point ([`ChildAgent::run_background`]), or the text comes back in its completion as
//!   `missed_steer`.
//!
//! A background child that [reports progress](ChildAgent::reports_progress) is watched by
//! the engine's stall monitor ([`async_delegation::StallPolicy`]): wedged, it is
//! interrupted and then finalized `stalled` by the engine itself. Every text of these
//! actions is a [`ToolTexts`] field; the defaults are the reference harness's texts.
//!
//! # Texts
//!
//! Every text the model reads — the tool's description and every parameter's in its
//! schema, each refusal, the per-task failure texts, the background `note`, the
//! interrupt reasons children pass on — is a field of [`ToolTexts`], carried by the
//! [`DelegateContext`] ([`DelegateContext::with_texts`]). The defaults are the
//! texts of the Python agent harness this tool reimplements, byte for byte; some name
//! that harness's `config.yaml` settings, and each field's docs say which
//! [`DelegationConfig`] setting the default refers to.
//!
//! # Plugging in an agent
//!
//! - [`ChildBackend`] resolves credentials and builds children; [`ChildAgent`] runs,
//!   interrupts and closes one. Any agent implementation plugs in; tests use fakes.
//! - [`ParentAgent`] is the calling agent: depth, session id and key, interrupt flag and
//!   active children. [`Parent`] is a ready-made handle whose
//!   [`interrupt`](Parent::interrupt) reaches running synchronous children.
//! - [`DelegateContext`] bundles the [`DelegationConfig`] (the `delegation:` settings), the
//!   engine, the backend and the texts.
//! - [`DelegateContext::tool_schema`] is the definition to hand a function-calling API,
//!   rendered from the context's texts and settings; [`DelegateContext::openai_tool`] and
//!   [`DelegateContext::anthropic_tool`] wrap it in the shapes OpenAI-style and
//!   Anthropic-style APIs take. [`tool_schema`], [`openai_tool`] and [`anthropic_tool`]
//!   are the same with the default texts and settings ([`tool_schema_with`] takes any).
//!
//! # Async agents
//!
//! With the `tokio` feature, `delegate_task_async` is the same tool for agents whose
//! children are futures (`AsyncChildBackend` builds them, `AsyncChildAgent` runs them):
//! the same arguments, checks, texts and JSON results, and it never blocks the runtime —
//! a synchronous call awaits its child (a batch's children concurrently, on the calling
//! task), a background call dispatches the child onto the runtime. Who is calling is a
//! per-call `CallContext` (session key, depth, a cancellation token) rather than state on
//! a shared parent, and the result is a `ToolOutput`: the text the model reads beside a
//! typed `ToolOutcome` (the dispatched `DelegationHandle`, the per-task reports, or the
//! rejection's `ToolError`).
//!
//! ```
//! # #[cfg(feature = "tokio")]
//! # mod example {
//! use std::sync::Arc;
//!
//! use async_delegation::{Cancellation, DelegationEngine, DelegationResult};
//! use delegate_tool::{
//!     delegate_task_async, AsyncChildAgent, AsyncChildBackend, BackendError, CallContext,
//!     ChildBuild, ChildRun, ChildTask, DelegateContext, DelegationConfig, ToolOutcome,
//! };
//! use process_registry::CompletionQueue;
//!
//! struct Child;
//! impl AsyncChildAgent for Child {
//!     fn run(self: Arc<Self>, task: ChildTask, _cancel: Cancellation) -> ChildRun {
//!         // … the child's model calls, awaited …
//!         Box::pin(async move { Ok(DelegationResult::completed(format!("done: {}", task.goal))) })
//!     }
//! }
//! struct Backend;
//! impl AsyncChildBackend for Backend {
//!     type Credentials = ();
//!     type Child = Child;
//!     fn resolve_credentials(&self, _: &CallContext, _: &DelegationConfig) -> Result<(), BackendError> {
//!         Ok(())
//!     }
//!     fn build_child(&self, _: &ChildTask, _: &(), _: &CallContext) -> ChildBuild<Child> {
//!         Box::pin(async { Ok(Arc::new(Child)) })
//!     }
//! }
//!
//! # pub(crate) async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let queue = CompletionQueue::new();
//! let tools = DelegateContext::new_async(DelegationConfig::default(), DelegationEngine::new(queue.clone()), Backend);
//! let call = CallContext::new("agent:main:telegram:dm:42");
//!
//! let out = delegate_task_async(r#"{"goal": "summarise the logs", "background": true}"#, &call, &tools).await;
//! assert!(out.text.contains(r#""status":"dispatched""#));
//! let ToolOutcome::Dispatched(handle) = out.outcome else { return Err("not dispatched".into()) };
//! assert_eq!(handle.finished().await.summary.as_deref(), Some("done: summarise the logs"));
//!
//! let out = delegate_task_async(r#"{"tasks": [{"goal": "a"}, {"goal": "b"}]}"#, &call, &tools).await;
//! let ToolOutcome::Ran(reports) = out.outcome else { return Err("did not run".into()) };
//! assert_eq!(reports.len(), 2);
//! # Ok(())
//! # }
//! # }
//! # #[cfg(feature = "tokio")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> { example::run().await }
//! # #[cfg(not(feature = "tokio"))] fn main() {}
//! ```
//!
//! # Features
//!
//! | feature | adds |
//! | --- | --- |
//! | `tokio` | `delegate_task_async`, `AsyncChildBackend`, `AsyncChildAgent`, `CallContext`, `ToolOutput`: the tool for async agents |
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use async_delegation::{DelegationEngine, DelegationResult, RunnerError};
//! use delegate_tool::{
//!     delegate_task, BackendError, ChildAgent, ChildBackend, ChildTask, DelegateContext,
//!     DelegationConfig, Parent, ParentAgent,
//! };
//! use process_registry::{CompletionQueue, Event};
//!
//! /// A subagent that "solves" its goal at once.
//! struct EchoChild;
//! impl ChildAgent for EchoChild {
//!     fn run(&self, task: &ChildTask) -> Result<DelegationResult, RunnerError> {
//!         Ok(DelegationResult::completed(format!("done: {}", task.goal)))
//!     }
//!     fn interrupt(&self, _reason: &str) {}
//! }
//!
//! struct EchoBackend;
//! impl ChildBackend for EchoBackend {
//!     type Credentials = ();
//!     type Child = EchoChild;
//!     fn resolve_credentials(&self, _: &dyn ParentAgent, _: &DelegationConfig) -> Result<(), BackendError> {
//!         Ok(())
//!     }
//!     fn build_child(&self, _: &ChildTask, _: &(), _: &dyn ParentAgent) -> Result<Arc<EchoChild>, BackendError> {
//!         Ok(Arc::new(EchoChild))
//!     }
//! }
//!
//! let queue = CompletionQueue::new();
//! let context = DelegateContext::new(
//!     DelegationConfig::default(),
//!     DelegationEngine::new(queue.clone()),
//!     EchoBackend,
//! );
//! let parent = Parent::new(0).with_session_key("agent:main:telegram:dm:42");
//!
//! // Synchronous batch: results sorted by task index.
//! let out: serde_json::Value = serde_json::from_str(&delegate_task(
//!     r#"{"tasks": [{"goal": "a"}, {"goal": "b"}]}"#, &parent, &context,
//! ))?;
//! assert_eq!(out["results"][1]["summary"], "done: b");
//!
//! // Background: a handle now, the completion on the queue later.
//! let out: serde_json::Value = serde_json::from_str(&delegate_task(
//!     r#"{"goal": "scan the repo", "background": true}"#, &parent, &context,
//! ))?;
//! assert_eq!(out["status"], "dispatched");
//! let Some(Event::AsyncDelegation(event)) = queue.take_timeout(Duration::from_secs(10)) else {
//!     return Err("no completion".into());
//! };
//! assert_eq!(event.summary.as_deref(), Some("done: scan the repo"));
//! assert_eq!(event.session_key, "agent:main:telegram:dm:42");
//!
//! // Refusals are JSON too, with the exact texts.
//! let out = delegate_task(r#"{"context": "no goal"}"#, &parent, &context);
//! assert_eq!(out, r#"{"error":"Provide either 'goal' (single task) or 'tasks' (batch)."}"#);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod args;
#[cfg(feature = "tokio")]
mod async_tool;
mod backend;
mod background;
mod config;
mod control;
mod error;
mod fence;
mod nesting;
mod parent;
mod schema;
mod sync;
mod texts;
mod tool;

pub use args::{parse_background, validate_arguments, DelegateCall, Role};
#[cfg(feature = "tokio")]
pub use async_tool::{
    delegate_task_async, AsyncChildAgent, AsyncChildBackend, CallContext, ChildBuild, ChildRun,
    TaskReport, ToolOutcome, ToolOutput,
};
pub use backend::{BackendError, BackgroundRun, ChildAgent, ChildBackend, ChildTask};
pub use config::DelegationConfig;
pub use error::{ConfigError, ToolError};
pub use nesting::MAX_ARGUMENT_NESTING;
pub use parent::{Parent, ParentAgent};
pub use schema::{
    anthropic_tool, openai_tool, tool_schema, tool_schema_with, TOOL_DESCRIPTION, TOOL_NAME,
};
pub use texts::{ToolTexts, ASYNC_CANCEL_REASON, BACKGROUND_NOTE, PARENT_INTERRUPTED_REASON};
pub use tool::{delegate_task, delegate_task_value, DelegateContext};
