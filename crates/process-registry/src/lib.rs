//! Completion queue, event model and notification formatter for background agent work.
//!
//! (Guide to be written with the formatter.)

mod event;
mod format;
mod queue;
mod registry;

pub use event::{
    json_kind, AsyncDelegationEvent, BatchTaskResult, Event, JsonObject, ProcessCompletion,
    Routing, WatchDisabled, WatchMatch, WatchOverflow,
};
pub use format::{format_process_notification, format_process_notification_in};
pub use queue::CompletionQueue;
pub use registry::{global, ProcessRegistry};
