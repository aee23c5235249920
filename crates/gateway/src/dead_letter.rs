//! Dead letters: completions a router gave up on, kept in the completion ledger with
//! their reason.

use process_registry::{
    AsyncDelegationEvent, CompletionQueue, DeliveryState, Event, LedgerError, ProcessCompletion,
    RowQuery,
};

/// A completion a router could not deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Its row in the ledger (what [`DeadLetterStore::requeue`] takes).
    pub seq: u64,
    /// Its idempotency key (the `delegation_id` of a delegation's completion).
    pub key: String,
    /// The completion.
    pub event: Event,
    /// Why it could not be delivered: an [`Unroutable`](crate::Unroutable)'s text, or
    /// `gave up after {n} attempts: {last failure}`.
    pub reason: String,
    /// Delivery attempts made.
    pub attempts: u32,
}

/// The dead letters of one queue: routed completions (an `async_delegation` or process
/// `completion` with a session key) in the dead state of the queue's completion ledger.
///
/// A cheap handle; the ledger is the store, so dead letters survive a restart with a
/// durable ledger, and every router on that ledger sees the same ones. An operator lists
/// them ([`snapshot`](Self::snapshot)) and, after fixing the cause, retries one
/// ([`requeue`](Self::requeue)) or all ([`requeue_all`](Self::requeue_all)): they go
/// back to pending with no attempts, and the router delivers them.
#[derive(Debug, Clone)]
pub struct DeadLetterStore {
    queue: CompletionQueue,
}

impl DeadLetterStore {
    /// The dead letters of `queue`.
    pub fn new(queue: CompletionQueue) -> Self {
        DeadLetterStore { queue }
    }

    /// Every dead letter, oldest first.
    ///
    /// # Errors
    /// When the ledger cannot be read.
    pub fn snapshot(&self) -> Result<Vec<DeadLetter>, LedgerError> {
        let rows = self.queue.rows(&RowQuery {
            delivery: Some(DeliveryState::Dead),
            ..RowQuery::default()
        })?;
        Ok(rows
            .into_iter()
            .filter(|row| {
                !row.session_key.is_empty()
                    && (row.kind == AsyncDelegationEvent::TYPE
                        || row.kind == ProcessCompletion::TYPE)
            })
            .map(|row| DeadLetter {
                seq: row.seq,
                key: row.key,
                event: (*row.event).clone(),
                reason: row.reason.unwrap_or_default(),
                attempts: row.attempts,
            })
            .collect())
    }

    /// How many dead letters there are (0 when the ledger cannot be read).
    pub fn len(&self) -> usize {
        self.snapshot().map_or(0, |letters| letters.len())
    }

    /// `true` when there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Puts one dead letter back to pending for another delivery; `false` when it is no
    /// longer dead.
    ///
    /// # Errors
    /// When the ledger cannot be written.
    pub fn requeue(&self, letter: &DeadLetter) -> Result<bool, LedgerError> {
        self.queue.requeue(letter.seq)
    }

    /// Puts every dead letter back to pending; returns how many.
    ///
    /// # Errors
    /// When the ledger cannot be read or written.
    pub fn requeue_all(&self) -> Result<usize, LedgerError> {
        let mut requeued = 0;
        for letter in self.snapshot()? {
            requeued += usize::from(self.queue.requeue(letter.seq)?);
        }
        Ok(requeued)
    }
}
