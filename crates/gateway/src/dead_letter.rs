//! The dead-letter store: completions the router could not deliver, with the reason.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use process_registry::{CompletionQueue, Event};

use crate::Unroutable;

/// A completion the router could not deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The event, enriched with whatever route could be found.
    pub event: Event,
    /// Why it could not be delivered.
    pub reason: Unroutable,
    /// When the router gave up on it.
    pub at: SystemTime,
}

/// An inspectable store of undeliverable completions.
///
/// A cloneable handle (clones share one store). The router appends to it; an operator
/// or the embedding program inspects it ([`snapshot`](DeadLetterStore::snapshot)),
/// empties it ([`take_all`](DeadLetterStore::take_all)) or retries everything after
/// fixing the cause ([`requeue_all`](DeadLetterStore::requeue_all)). It is unbounded:
/// nothing in it is ever dropped by the gateway.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterStore {
    letters: Arc<Mutex<Vec<DeadLetter>>>,
}

impl DeadLetterStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a dead letter.
    pub fn record(&self, event: Event, reason: Unroutable) {
        self.lock().push(DeadLetter {
            event,
            reason,
            at: SystemTime::now(),
        });
    }

    /// Number of dead letters.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// `true` when there is none.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// A copy of every dead letter, oldest first.
    pub fn snapshot(&self) -> Vec<DeadLetter> {
        self.lock().clone()
    }

    /// Removes and returns every dead letter, oldest first.
    pub fn take_all(&self) -> Vec<DeadLetter> {
        std::mem::take(&mut *self.lock())
    }

    /// Puts every dead letter's event back on `queue` (oldest first) for another
    /// delivery attempt, empties the store and returns how many were re-queued.
    pub fn requeue_all(&self, queue: &CompletionQueue) -> usize {
        let letters = self.take_all();
        let count = letters.len();
        for letter in letters {
            queue.put(letter.event);
        }
        count
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<DeadLetter>> {
        self.letters.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
