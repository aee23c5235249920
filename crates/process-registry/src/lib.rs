//! Completion queue, event model and notification formatter for background agent work.
//!
//! New to the crates? [The guide](../../docs/guide.md) in the repository (rendered by
//! `cargo doc` as the `gateway::guide` page) walks from "I have an agent" to "my agent
//! delegates in the background": plugging an agent in, registering the tool with OpenAI-
//! and Anthropic-style APIs, bringing results back as new turns, testing.
//!
//! When background work finishes (a delegated subagent, a background process, a watch
//! on a process's output), an [`Event`] lands on a [`CompletionQueue`]. Whoever drives
//! the parent agent (a CLI loop or a chat gateway) takes events off the queue while the
//! parent is idle and turns each into a new turn with [`format_process_notification`].
//!
//! # The queue and its ledger
//!
//! [`CompletionQueue`] is one FIFO shared by every producer and consumer, a cheap
//! cloneable handle that is safe from any thread, on a **completion ledger**: one row per
//! completion with two independent axes — what the run did ([`RunState`]: running, then
//! the completion's status, or `unknown`) and whether anyone accepted the result
//! ([`DeliveryState`]: pending → claimed → delivered, or dead) — behind one
//! [`LedgerBackend`] trait. [`CompletionQueue::new`] keeps it in memory
//! ([`MemoryLedger`]: today's behaviour, nothing survives the process); with the `sqlite`
//! feature, `SqliteLedger` keeps it in one file that survives `kill -9` of any process
//! using it; with the `postgres` feature, `PostgresLedger` keeps it in a PostgreSQL
//! schema shared by processes on many machines (a fleet), where one process's completion
//! wakes a consumer waiting in another.
//!
//! Consumers **claim** what they own ([`CompletionQueue::claim`] with a
//! [`ClaimFilter`]: the CLI loop its CLI-origin completions, a gateway its chats'), under
//! a lease, and then [`ack`](Claim::ack) (delivered), [`defer`](Claim::defer) (not now,
//! no attempt spent), [`release`](Claim::release) (a failed attempt: retried with a
//! capped exponential backoff, dead after the last) or mark it [`dead`](Claim::dead).
//! A waiting consumer ([`CompletionQueue::claim_timeout`], [`CompletionQueue::listen`])
//! is woken by the completion itself: nothing polls (before it parks it spins and yields
//! its core for a few microseconds, so a completion that comes at once costs no kernel
//! wake-up). The plain queue API — `put`,
//! `try_take`, `take_timeout`, `drain`, `take_where` — takes a completion for good: a
//! claim and its acknowledgement in one step.
//!
//! **Async consumers await** the same waits, on any executor (no tokio needed):
//! [`CompletionQueue::next_event`] and [`CompletionQueue::next_claim`] are futures, and
//! [`CompletionQueue::events`] and [`CompletionQueue::claims`] are `Stream`s of them;
//! each is woken by the completion (or by a timer when a held-back row comes due) and is
//! cancel-safe. See [Awaiting the queue](#awaiting-the-queue) below.
//!
//! When a queue opens a durable ledger it **recovers** the rows of instances that died
//! (an instance is a pid, its start time and the boot id; on a fleet's ledger, an
//! instance whose heartbeat lease ran out): their running delegations
//! become `unknown` ([`OWNER_EXITED_ERROR`]; never re-run), their pending completions are
//! *restored* (offered only to a consumer that owns their session) and what they had
//! claimed comes back as a possible redelivery. A `ledger-sweep` thread repeats this every
//! 30 s, and prunes delivered rows after 7 days ([`LedgerConfig`]).
//!
//! **Consumers of a fleet own scopes.** An [`Ownership`] holds leases on the scopes a
//! consumer serves (a gateway's platforms), renewed by its own thread; a
//! [`ClaimFilter::fenced`] filter claims a scoped completion only under a held lease, and
//! once the scope has changed hands — its holder's lease ran out and another took it
//! over, with a greater epoch — the ledger refuses the old holder's ack, and offers what
//! it had claimed to the new one at once.
//!
//! **The delivery promise: at-least-once delivery with a stable idempotency key
//! ([`Claim::key`], the `delegation_id`) — exactly once unless a process dies between
//! delivering and acking**, in which case the repeat is flagged
//! ([`Claim::is_possible_redelivery`]) so the receiving end can drop it.
//!
//! A [`ProcessRegistry`] bundles the queue; [`global()`] is a lazily created process-wide
//! default (in memory) for programs that want exactly one. Components take an explicit
//! queue or registry, so tests and embedders never need the global.
//!
//! # Metrics
//!
//! Through the [`metrics`](https://docs.rs/metrics) facade: a no-op until the program
//! installs a recorder (this crate never does; install it before opening the queue). The
//! name is a constant in [`metrics`](mod@metrics).
//!
//! | name | kind | unit |
//! | --- | --- | --- |
//! | `delegation_pending` | gauge | completions recorded and not yet delivered or dead (waiting, or claimed and being delivered) |
//!
//! A durable queue's figure includes what its ledger held when it opened, and what other
//! processes wrote or delivered from the next sweep on.
//!
//! # Features
//!
//! | feature | adds |
//! | --- | --- |
//! | `sqlite` | `SqliteLedger`, `SqliteOptions`, `Durability`: the embedded durable ledger on a bundled SQLite (nothing to install) |
//! | `postgres` | `PostgresLedger`, `PostgresOptions`: the ledger on a PostgreSQL server, shared by processes on many machines; other processes' completions wake waiting consumers through `LISTEN`/`NOTIFY` |
//!
//! # Events
//!
//! [`Event`] is the wire format, a JSON object tagged by `"type"` whose field names are those
//! of the Python agent harness this workspace reimplements, so Rust and Python components
//! can share events:
//! [`AsyncDelegationEvent`] (single task or batch, with [`BatchTaskResult`]s),
//! [`ProcessCompletion`] (also what an untyped object is), [`WatchMatch`],
//! [`WatchDisabled`] and [`WatchOverflow`]. Fields this crate does not know are kept in
//! each struct's `extra`, routing fields in [`Routing`], and an event of unknown type is
//! kept byte for byte as [`Event::Other`]; numbers are [`WireNumber`]s: nothing
//! round-trips lossily.
//!
//! # The formatter
//!
//! [`format_process_notification`] renders the exact text that re-enters the
//! conversation, or `None` for an unknown event. It reads the system time zone
//! and the clock; [`format_process_notification_in`] takes both as arguments and is a
//! pure function of its inputs.
//!
//! # Example
//!
//! ```
//! use jiff::{tz::TimeZone, Timestamp};
//! use process_registry::{format_process_notification_in, CompletionQueue, Event};
//!
//! let queue = CompletionQueue::new();
//! let producer = queue.clone();
//! std::thread::Builder::new()
//!     .name("background-job".into())
//!     .spawn(move || -> Result<(), serde_json::Error> {
//!         // An event as a Python producer would write it.
//!         producer.put(serde_json::from_str::<Event>(
//!             r#"{"type":"completion","session_id":"proc_1","command":"make test",
//!                 "exit_code":0,"completion_reason":"exited","output":"ok"}"#,
//!         )?);
//!         Ok(())
//!     })?
//!     .join()
//!     .map_err(|_| "producer panicked")??;
//!
//! let event = queue.take_timeout(std::time::Duration::from_secs(5)).ok_or("no event")?;
//! let text = format_process_notification_in(&event, &TimeZone::UTC, Timestamp::now());
//! assert_eq!(
//!     text.as_deref(),
//!     Some(
//!         "[IMPORTANT: Background process proc_1 completed normally (exit code 0).\n\
//!          Command: make test\nOutput:\nok]"
//!     ),
//! );
//! assert!(queue.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Awaiting the queue
//!
//! An async consumer awaits instead of blocking its thread. On a tokio runtime (any
//! flavour, the current-thread one of `#[tokio::test]` too), a CLI loop that brings CLI
//! completions back as turns:
//!
//! ```
//! use process_registry::{AsyncDelegationEvent, ClaimFilter, CompletionQueue};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let queue = CompletionQueue::new();
//! let producer = queue.clone();
//! tokio::spawn(async move {
//!     // A delegation dispatched from the CLI (no session key) finished.
//!     producer.put(AsyncDelegationEvent {
//!         goal: "Summarise the logs".into(),
//!         status: Some("completed".into()),
//!         summary: Some("Three errors, all from the cache layer.".into()),
//!         ..AsyncDelegationEvent::default()
//!     });
//! });
//! // Waits without holding the thread: the producer task runs meanwhile.
//! let claim = queue.next_claim(&ClaimFilter::cli_completions()).await?;
//! let turn = process_registry::format_process_notification(claim.event());
//! assert!(turn.is_some_and(|text| text.contains("all from the cache layer")));
//! claim.ack()?;
//! # Ok(())
//! # }
//! ```
//!
//! The waits never hold the polling thread on the store either: on a ledger whose calls
//! may block (SQLite, PostgreSQL: [`Capabilities::may_block`]), each look runs on the
//! queue's own `ledger-offload` threads ([`OFFLOAD_THREAD_NAME`]) and is awaited. The
//! settles (`ack`, `defer`, `release`) and `put` are plain calls: on such a ledger, an
//! async program makes them where it may block (tokio's `spawn_blocking`), as the
//! gateway's router does.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod event;
mod format;
mod ledger;
pub mod metrics;
mod number;
mod queue;
mod raw;
mod registry;
mod status;
mod text;

pub use event::{
    json_kind, AsyncDelegationEvent, BatchTaskResult, Event, ProcessCompletion, Routing,
    StallReport, WatchDisabled, WatchMatch, WatchOverflow,
};
pub use format::{format_process_notification, format_process_notification_in};
pub use ledger::backend::{
    Candidate, CandidateQuery, Capabilities, ClaimToken, ClaimedRow, DeliveryState, Fence, Finish,
    Inserted, LedgerBackend, LedgerRow, NewClaim, NewPending, NewRunning, PendingRefused, RowQuery,
    RunState, ScopeLease, SessionMatch, Settle, TakenRow,
};
pub use ledger::claim::{Claim, ClaimFilter, Released};
pub use ledger::clock::{Clock, ManualClock, SystemClock};
pub use ledger::config::LedgerConfig;
pub use ledger::error::{LedgerError, SettleError};
pub use ledger::instance::{current_instance, Liveness, ProcessLiveness};
pub use ledger::memory::MemoryLedger;
pub use ledger::ownership::{Ownership, OWNERSHIP_THREAD_NAME};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use ledger::postgres::{
    PostgresLedger, PostgresOptions, POSTGRES_CONNECTION_THREAD_NAME,
    POSTGRES_HEARTBEAT_THREAD_NAME, POSTGRES_LISTENER_THREAD_NAME,
};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use ledger::sqlite::{Durability, SqliteLedger, SqliteOptions};
pub use ledger::sweeper::SWEEP_THREAD_NAME;
pub use number::{ParseWireNumberError, WireNumber};
pub use queue::{spin_then_yield, OFFLOAD_THREAD_NAME};
pub use queue::{
    Claims, Committed, CompletionQueue, CompletionQueueBuilder, DispatchRecord, Events, QueueWait,
    Recorded, OWNER_EXITED_ERROR, RESTORE_HORIZON_REASON,
};
pub use raw::{ExtraFields, UnknownEvent};
pub use registry::{global, ProcessRegistry};
pub use status::Status;
pub use text::Text;
