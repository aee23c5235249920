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
//! # The queue
//!
//! [`CompletionQueue`] is one unbounded FIFO shared by every producer and consumer, a
//! cheap cloneable handle that is safe from any thread. `put` never blocks and never
//! drops; consumers use `try_take` (never blocks), `take_timeout`, or `drain` (everything
//! waiting right now) or `take_where` (the waiting events a consumer owns, e.g. a CLI
//! loop's [`Event::is_cli_completion`] ones, leaving the rest in order), and may `put` an
//! event back: it goes to the tail. A
//! [`ProcessRegistry`] bundles the queue; [`global()`] is a lazily created process-wide
//! default for programs that want exactly one. Components take an explicit queue or
//! registry, so tests and embedders never need the global.
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
//! kept verbatim as [`Event::Other`]: nothing round-trips lossily.
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

#![cfg_attr(docsrs, feature(doc_cfg))]

mod event;
mod format;
mod ledger;
mod number;
mod queue;
mod raw;
mod registry;

pub use event::{
    json_kind, AsyncDelegationEvent, BatchTaskResult, Event, ProcessCompletion, Routing,
    WatchDisabled, WatchMatch, WatchOverflow,
};
pub use format::{format_process_notification, format_process_notification_in};
pub use ledger::backend::{
    Candidate, CandidateQuery, Capabilities, ClaimedRow, DeliveryState, Finish, Inserted,
    LedgerBackend, LedgerRow, NewClaim, NewPending, NewRunning, RowQuery, RunState, SessionMatch,
    Settle,
};
pub use ledger::claim::{Claim, ClaimFilter, Released};
pub use ledger::clock::{Clock, ManualClock, SystemClock};
pub use ledger::config::LedgerConfig;
pub use ledger::error::{LedgerError, SettleError};
pub use ledger::instance::{current_instance, Liveness, ProcessLiveness};
pub use ledger::memory::MemoryLedger;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use ledger::sqlite::{Durability, SqliteLedger, SqliteOptions};
pub use ledger::sweeper::SWEEP_THREAD_NAME;
pub use number::{ParseWireNumberError, WireNumber};
pub use queue::{
    Committed, CompletionQueue, CompletionQueueBuilder, DispatchRecord, QueueWait, Recorded,
    OWNER_EXITED_ERROR, RESTORE_HORIZON_REASON,
};
pub use raw::{ExtraFields, UnknownEvent};
pub use registry::{global, ProcessRegistry};
