//! The queue's metric, through the `metrics` facade: a no-op until the program installs a
//! recorder (the library never does).
//!
//! The handle is registered once, when the queue is opened (so install the recorder
//! before opening the queues it should see): a put then pays an increment on a handle,
//! not a key's construction and lookup — nothing at all without a recorder.

use std::sync::atomic::{AtomicI64, Ordering};

use metrics::Gauge;

/// Completions recorded and not yet delivered or dead: waiting for their consumer, or
/// claimed and being delivered (gauge).
///
/// Every change a queue makes is counted as it happens, and a queue opened on a memory
/// ledger nobody else holds first counts the rows already in it. A queue on a durable or
/// shared ledger also sets its share to the ledger's own count when it opens and at every
/// sweep, so the completions of earlier runs count from the start and those other
/// processes write or deliver show by the next sweep. Queues on different ledgers in one
/// process add up; processes sharing one ledger each report all of it (aggregate them
/// with `max`, not `sum`), and so do two queues of one process on one durable ledger (the
/// figure doubles: open one queue per ledger).
///
/// Known imprecisions, each until the next sweep of a durable or shared queue: a change
/// made while a sweep counts the ledger may be counted twice; a memory ledger shared
/// between queues ([`CompletionQueue::builder_shared`](crate::CompletionQueue::builder_shared))
/// that outlives its last queue keeps its rows in the figure, and rows written to it
/// through the backend directly, not through a queue, are not counted.
pub const PENDING: &str = "delegation_pending";

/// A queue's share of [`PENDING`].
pub(crate) struct PendingGauge {
    gauge: Gauge,
    /// What this queue has added to the gauge, for a ledger that a sweep counts again;
    /// `None` where every change goes through this queue (a memory ledger), so nothing
    /// is counted twice and a put touches no shared counter.
    share: Option<AtomicI64>,
}

impl PendingGauge {
    /// Registers the gauge; `recounted`: a sweep will set this queue's share to the
    /// ledger's count.
    pub(crate) fn register(recounted: bool) -> Self {
        PendingGauge {
            gauge: metrics::gauge!(PENDING),
            share: recounted.then(|| AtomicI64::new(0)),
        }
    }

    /// `change` more completions wait (fewer, when negative).
    pub(crate) fn add(&self, change: i64) {
        if change == 0 {
            return;
        }
        if let Some(share) = &self.share {
            share.fetch_add(change, Ordering::Relaxed);
        }
        self.gauge.increment(change as f64);
    }

    /// The ledger holds `count` undelivered completions: this queue's share becomes that
    /// (a memory ledger's share is already exact, and is left alone).
    pub(crate) fn recount(&self, count: u64) {
        let Some(share) = &self.share else {
            return;
        };
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        let before = share.swap(count, Ordering::Relaxed);
        self.gauge.increment((count - before) as f64);
    }

    /// `rows` more completions wait.
    pub(crate) fn add_rows(&self, rows: u64) {
        self.add(i64::try_from(rows).unwrap_or(i64::MAX));
    }

    /// `rows` fewer completions wait.
    pub(crate) fn remove_rows(&self, rows: u64) {
        self.add(-i64::try_from(rows).unwrap_or(i64::MAX));
    }

    /// `true` when a sweep should count the ledger for [`recount`](Self::recount).
    pub(crate) fn is_recounted(&self) -> bool {
        self.share.is_some()
    }

    /// The queue is closed: its share leaves the gauge. A durable ledger keeps its rows,
    /// but this queue no longer reports them; a memory ledger's rows are gone with it —
    /// `left` of them, counted by the caller (0 when the ledger lives on in another
    /// queue).
    pub(crate) fn close(&self, left: u64) {
        let share = match &self.share {
            Some(share) => share.load(Ordering::Relaxed),
            None => i64::try_from(left).unwrap_or(i64::MAX),
        };
        self.gauge.decrement(share as f64);
    }
}
