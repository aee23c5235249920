//! Background dispatch of subagents: capacity, interrupts, retention and crash isolation.
//!
//! New to the crates? [The guide](../../docs/guide.md) in the repository (rendered by
//! `cargo doc` as the `gateway::guide` page) walks from "I have an agent" to "my agent
//! delegates in the background": plugging an agent in, registering the tool with OpenAI-
//! and Anthropic-style APIs, bringing results back as new turns, testing.
//!
//! A parent agent hands a long task to a subagent without blocking its turn.
//! [`DelegationEngine::dispatch`] answers at once with a handle (`deleg_` + 8 hex
//! digits) or a rejection, and runs the subagent's *runner* on a background worker.
//! When the runner ends — with a result, an error, a panic, or after an interrupt — the
//! engine puts exactly one [`process_registry::Event::AsyncDelegation`] on its
//! [`CompletionQueue`](process_registry::CompletionQueue). Whoever drives the parent
//! drains that queue and turns each event into a new turn.
//!
//! # Guarantees
//!
//! - **Capacity.** At most `max_async_children` delegations run at once. The check and
//!   the insert of the running record are one atomic step; at capacity a dispatch is
//!   rejected with [`DispatchError::CapacityReached`]'s text, never queued.
//! - **Exactly one completion** per accepted dispatch, none for a rejected one. The event
//!   restates the dispatch-time spec (`goal`, `context`, `toolsets`, `role`,
//!   `session_key`) and carries the outcome: the result's `status` (`completed` when
//!   unset), `summary`, `error`, `api_calls`, `exit_reason`, `truncated`; `model` is the
//!   result's, else the spec's; `duration_seconds` is the result's, else completed −
//!   dispatched rounded to 2 decimals. A runner error gives status `error` with its text;
//!   a panic gives status `error` with `panic: {message}`, frees its slot and leaves the
//!   engine fully usable.
//! - **Durable before visible.** The dispatch is recorded in the queue's completion
//!   ledger before [`dispatch`](DelegationEngine::dispatch) returns (a refused write
//!   rejects it with [`DispatchError::LedgerUnavailable`] and holds no slot); the
//!   completion is recorded before any consumer can see it.
//! - **Ordering.** Recording the completion and freeing the slot happen in one critical
//!   section. So when a consumer takes the event, the slot is already free
//!   (re-dispatching from a completion never hits a stale capacity limit), and once
//!   [`DelegationEngine::active_count`] no longer counts a delegation, its event is
//!   already on the queue.
//! - **Workers.** Runners run on threads named `async-delegate-N` from a small cached
//!   pool. Threads are started by the workers themselves, one spare ahead, so a
//!   dispatch never starts a thread (except an engine's very first one) even when every
//!   worker is busy; idle workers beyond the spare exit after a keep-alive. They are
//!   detached: exiting `main` or dropping the engine never waits for a running child.
//! - **Interrupts.** [`DelegationEngine::interrupt_all`], [`interrupt`](DelegationEngine::interrupt)
//!   and [`interrupt_session`](DelegationEngine::interrupt_session) call the hooks given
//!   at dispatch, outside every lock, isolating a panicking hook. The child still ends
//!   through its runner, so its completion is delivered.
//! - **Retention.** [`DelegationEngine::list`] shows running delegations and at most
//!   [`MAX_RETAINED_COMPLETED`] completed ones (oldest dropped first); memory stays flat.
//!
//! - **Shutdown.** [`DelegationEngine::shutdown`] (or
//!   [`shutdown_async`](DelegationEngine::shutdown_async)) refuses new dispatches
//!   ([`SHUT_DOWN_TEXT`]), interrupts every running delegation, and waits up to a grace
//!   period; a runner that outlives it still yields its one completion.
//! - **Handles.** [`DelegationEngine::dispatch_handle`] (and, with `tokio`,
//!   `dispatch_async`) returns a [`DelegationHandle`]: the id, the current status, the
//!   outcome — blocking ([`wait`](DelegationHandle::wait),
//!   [`wait_timeout`](DelegationHandle::wait_timeout)) or awaited on any executor
//!   ([`finished`](DelegationHandle::finished)) — and [`cancel`](DelegationHandle::cancel).
//!   The completion still goes to the queue and re-enters as a new turn.
//!
//! # Control and liveness
//!
//! [`DelegationEngine::try_dispatch_with`] takes the dispatch's [`Controls`]: its
//! interrupt hook, a [`Steering`] inbox, a [`Progress`] handle and a deadline.
//!
//! - **Steering.** [`DelegationEngine::steer`] queues text in a running delegation's
//!   inbox; its child [takes](Steering::take) it at each point where it can hand text to
//!   its model. When the runner returns, the completion that is recorded closes the inbox
//!   and takes what is still pending in one step: that text comes back as the event's
//!   `missed_steer`, and the summary ends with the [missed note](MISSED_STEER_NOTE). A
//!   steer is taken or reported, never lost and never both.
//! - **Stalls.** A delegation dispatched with a [`Progress`] (made by
//!   [`DelegationEngine::progress`], reported on by its child) or a deadline is watched by
//!   the engine's one monitor thread, `async-delegate-monitor` (started with the first
//!   watched dispatch, asleep until a check is due, gone with the engine). No progress for
//!   the [`StallPolicy`]'s threshold (450 s; 1200 s inside a tool call), or its deadline
//!   passed → its hook is called; still running after the grace (120 s) → the engine
//!   finalizes it itself: the slot is freed and its one completion is written, status
//!   `stalled` (`timeout` for a deadline) with the stall fields
//!   ([`StallReport`](process_registry::StallReport)) and the error text [`STALLED_ERROR`]. A
//!   runner that returns after that is logged and discarded: the one-completion check is
//!   made under the engine's lock, by whichever of the two gets there first. Thresholds
//!   and texts: [`DelegationEngine::builder`] with [`EngineBuilder::stall_policy`]; time:
//!   [`EngineBuilder::clock`] (tests move a [`ManualClock`](process_registry::ManualClock)
//!   and call [`DelegationEngine::sweep_stalls`]). A delegation without a `Progress` and
//!   a deadline is never judged stalled.
//! - **Async runners** get the same controls with `DelegationEngine::dispatch_async_with`
//!   (feature `tokio`): a stall cancels the runner's `Cancellation`, and a future still
//!   pending after the grace is finalized like a thread's runner.
//! - **Visibility.** [`DelegationEngine::list`] reports, for each running delegation,
//!   whether it takes steering (`accepting_steer`) and, for a reporting child, how long it
//!   has been quiet and whether it is inside a tool call.
//!
//! # Tracing
//!
//! Each delegation is a trace of `tracing` spans (all at `INFO`; free without a
//! subscriber):
//!
//! | span | fields | where |
//! | --- | --- | --- |
//! | `delegation.dispatch` | `delegation_id`, `session_key`, `traceparent` | around the dispatch call, in the caller's span |
//! | `delegation.run` | `delegation_id`, `session_key`, `traceparent` | a root linked to the dispatch with `follows_from`, entered around the runner (a thread's closure, or an async runner's future), so the runner's own spans nest inside it |
//! | `delegation.completion` | `delegation_id`, `status` | inside the run: recording the completion and offering it (a root of its own for the engine's `stalled` completion) |
//!
//! The gateway's router continues the trace with `delegation.claim` and
//! `delegation.delivery`. The completion event carries the W3C `traceparent` of the
//! dispatch (the spec's, [`DelegationSpec::with_traceparent`], or one started when a
//! subscriber records the dispatch), so the trace continues wherever the completion is
//! handled — another process, or after a restart, when the ledger's recovered `unknown`
//! completion keeps it.
//!
//! # Metrics
//!
//! Through the [`metrics`](https://docs.rs/metrics) facade: no-ops until the program
//! installs a recorder (this crate never does). Names are constants in [`metrics`](mod@metrics).
//!
//! | name | kind | unit | labels |
//! | --- | --- | --- | --- |
//! | `delegation_dispatched_total` | counter | dispatches | |
//! | `delegation_rejected_total` | counter | dispatches | `reason`: `capacity`, `shut_down`, `worker_unavailable`, `ledger_unavailable` |
//! | `delegation_completed_total` | counter | completions | `status` (the completion's) |
//! | `delegation_running` | gauge | delegations | |
//! | `delegation_run_seconds` | histogram | seconds, dispatch to completion | |
//!
//! The gateway's router adds the delivery side (`gateway::metrics`), and the completion
//! queue the number of completions waiting for delivery (`delegation_pending`, in
//! `process_registry::metrics`).
//!
//! # Async runners
//!
//! With the `tokio` feature, a runner may be a future: `DelegationEngine::dispatch_async`
//! spawns it on a runtime handle the caller passes in (either flavour; no worker thread)
//! and gives it a `Cancellation` — a `tokio_util` `CancellationToken` that the interrupt
//! functions cancel, with the first interrupt's reason kept. Sync and async delegations
//! count against one capacity, and the one-completion rule holds for futures too: a
//! future that returns gives its result, an error its text (status `error`), a panic —
//! while it is built, polled or dropped — `panic: {message}` (status `error`), and a
//! future dropped before it finished because its runtime shut down gives status
//! `interrupted` with error `runtime shut down before the subagent finished`
//! (`RUNTIME_SHUT_DOWN_ERROR`). Nothing on that path blocks the runtime: a store that
//! refuses the completion is retried on a thread of its own (`async-delegate-retry`).
//!
//! ```
//! # #[cfg(not(feature = "tokio"))] fn main() {}
//! # #[cfg(feature = "tokio")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use async_delegation::{DelegationEngine, DelegationResult, DelegationSpec};
//! use process_registry::CompletionQueue;
//!
//! let queue = CompletionQueue::new();
//! let engine = DelegationEngine::new(queue.clone());
//! let handle = engine.dispatch_async(
//!     DelegationSpec::new("Summarise the logs").with_session_key("agent:main:cli"),
//!     &tokio::runtime::Handle::current(),
//!     |cancel| async move {
//!         tokio::select! {
//!             // The subagent's model calls, awaited on this runtime.
//!             summary = async { "Three errors, all in the cache layer." } => {
//!                 Ok(DelegationResult::completed(summary))
//!             }
//!             () = cancel.cancelled() => Ok(DelegationResult::interrupted("stopped")),
//!         }
//!     },
//!     3,
//! )?;
//! // The parent goes on; later the completion is awaited (or re-enters as a new turn).
//! let event = queue.next_event().await?;
//! assert_eq!(event.type_name(), "async_delegation");
//! assert_eq!(handle.status(), "completed");
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! | feature | adds |
//! | --- | --- |
//! | `tokio` | `DelegationEngine::dispatch_async`, `Cancellation`, `RUNTIME_SHUT_DOWN_ERROR`: async runners on a tokio runtime |
//!
//! Engines are values: build one on the queue you want with [`DelegationEngine::new`].
//! [`global()`] is a lazily created default on [`process_registry::global()`]'s queue, used
//! by [`dispatch_async_delegation`], [`active_count`], [`list_async_delegations`] and
//! [`interrupt_all`].
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use async_delegation::{DelegationEngine, DelegationResult, DelegationSpec, DEFAULT_MAX_ASYNC_CHILDREN};
//! use process_registry::{CompletionQueue, Event};
//!
//! let queue = CompletionQueue::new();
//! let engine = DelegationEngine::new(queue.clone());
//!
//! let spec = DelegationSpec::new("Compute the meaning of life")
//!     .with_context("User is a philosopher.")
//!     .with_session_key("agent:main:telegram:dm:12345");
//! let outcome = engine.dispatch(
//!     spec,
//!     || Ok(DelegationResult::completed("The answer is 42.")),
//!     None,
//!     DEFAULT_MAX_ASYNC_CHILDREN,
//! );
//! let id = outcome.delegation_id().ok_or("rejected")?.to_owned();
//! assert_eq!(outcome.to_json()["status"], "dispatched");
//!
//! // Later, while the parent is idle: drain the completion.
//! let Some(Event::AsyncDelegation(event)) = queue.take_timeout(Duration::from_secs(10)) else {
//!     return Err("no completion".into());
//! };
//! assert_eq!(event.delegation_id.as_deref(), Some(id.as_ref()));
//! assert_eq!(event.status.as_deref(), Some("completed"));
//! assert_eq!(event.summary.as_deref(), Some("The answer is 42."));
//! assert_eq!(event.session_key, "agent:main:telegram:dm:12345");
//! assert_eq!(engine.active_count(), 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod engine;
mod error;
pub mod fence;
mod global;
mod handle;
mod liveness;
pub mod metrics;
mod pool;
mod steering;
#[cfg(feature = "tokio")]
mod tokio_runner;
mod trace;
mod types;

pub use engine::{round_seconds, DelegationEngine, EngineBuilder};
pub use error::{
    DispatchError, CAPACITY_REACHED_TEXT, LEDGER_UNAVAILABLE_TEXT, SHUT_DOWN_TEXT,
    WORKER_UNAVAILABLE_TEXT,
};
pub use fence::panic_message;
pub use global::{
    active_count, dispatch_async_delegation, global, interrupt_all, list_async_delegations,
};
pub use handle::{DelegationHandle, Finished};
pub use liveness::{
    Progress, StallPolicy, DEADLINE_ERROR, DEFAULT_IDLE_STALL, DEFAULT_STALL_GRACE,
    DEFAULT_TOOL_STALL, STALLED_ERROR,
};
pub use steering::{Controls, SteerOutcome, Steering, MISSED_STEER_NOTE};
#[cfg(feature = "tokio")]
pub use tokio_runner::{Cancellation, RUNTIME_SHUT_DOWN_ERROR};
pub use types::{
    DelegationRecord, DelegationResult, DelegationSpec, DispatchOutcome, InterruptHook,
    RunnerError, DEFAULT_MAX_ASYNC_CHILDREN, MAX_RETAINED_COMPLETED,
};
