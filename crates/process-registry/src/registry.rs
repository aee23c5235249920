//! The registry handle and the process-wide default.

use once_cell::sync::Lazy;

use crate::CompletionQueue;

/// Shared state of background work in one agent process: today, its completion queue.
///
/// Build one with [`ProcessRegistry::new`] and pass it (or its queue) to every component;
/// [`global`] is a convenience default for programs that want exactly one.
#[derive(Debug, Clone, Default)]
pub struct ProcessRegistry {
    completion_queue: CompletionQueue,
}

impl ProcessRegistry {
    /// A registry with a new, empty completion queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry around an existing queue.
    pub fn with_queue(completion_queue: CompletionQueue) -> Self {
        ProcessRegistry { completion_queue }
    }

    /// The completion queue every producer puts on and every consumer drains.
    pub fn completion_queue(&self) -> &CompletionQueue {
        &self.completion_queue
    }
}

static GLOBAL: Lazy<ProcessRegistry> = Lazy::new(ProcessRegistry::new);

/// The process-wide default registry, created on first use.
///
/// Libraries in this workspace never reach for it on their own: they take a queue or
/// registry handle. The `global`-flavoured convenience functions of the crates above
/// (for example `async_delegation::dispatch_async_delegation`) use this one.
///
/// ```
/// let queue = process_registry::global().completion_queue();
/// assert!(queue.same_queue(process_registry::global().completion_queue()));
/// ```
pub fn global() -> &'static ProcessRegistry {
    &GLOBAL
}
