//! The completion ledger under the queue: one backend trait, the rules above it.
//!
//! A row per completion records two independent axes — what the run did
//! ([`RunState`]: running, then the completion's status, or `unknown`) and whether anyone
//! accepted the result ([`DeliveryState`]: pending → claimed → delivered, or dead) —
//! with the completion's exact wire JSON, its owner, attempts and times.

pub(crate) mod backend;
pub(crate) mod claim;
pub(crate) mod clock;
pub(crate) mod config;
pub(crate) mod error;
pub(crate) mod fifo;
pub(crate) mod instance;
pub(crate) mod memory;
pub(crate) mod ownership;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod sql;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;
pub(crate) mod sweeper;

use crate::{AsyncDelegationEvent, Event, WireNumber};

/// The completion recorded for a delegation whose owner died while it ran: the
/// dispatch-time restatement with status `unknown` and [`OWNER_EXITED_ERROR`](crate::OWNER_EXITED_ERROR).
/// The child is never re-run: its side effects cannot be proven either way.
pub(crate) fn unknown_completion(skeleton: &Event, now: f64) -> Event {
    let mut event = match skeleton {
        Event::AsyncDelegation(event) => event.clone(),
        _ => AsyncDelegationEvent::default(),
    };
    event.status = Some("unknown".into());
    event.error = Some(crate::OWNER_EXITED_ERROR.into());
    event.api_calls = Some(WireNumber::from(0_u8));
    event.duration_seconds = None;
    event.completed_at = WireNumber::from_f64(now);
    Event::AsyncDelegation(event)
}
