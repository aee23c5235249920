//! [`Ownership`]: the leases a consumer holds on what it serves, renewed by a thread, and
//! the fences its claims are made under.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::{CompletionQueue, LedgerError};

/// The name of an [`Ownership`]'s renewal thread.
pub const OWNERSHIP_THREAD_NAME: &str = "ledger-ownership";

/// The shortest lease an [`Ownership`] holds: a shorter one is taken as this.
const SHORTEST_LEASE: Duration = Duration::from_millis(30);

/// The longest lease an [`Ownership`] holds: a longer one is taken as this (a lease is
/// how long a standby waits after its owner's death).
const LONGEST_LEASE: Duration = Duration::from_secs(24 * 60 * 60);

/// The leases one consumer holds on the *scopes* it serves — say a gateway's platforms,
/// `platform:telegram` — on a ledger shared by many processes, so that each completion
/// is claimed by the one process that owns its scope.
///
/// Say which scopes you can serve with [`want`](Self::want): a `ledger-ownership` thread
/// takes each lease that is free (or whose holder's lease ran out: a takeover), renews
/// the ones it holds every third of the lease, and wakes the queue's consumers whenever
/// what it holds changes. Two processes that want the same scope are an active owner and
/// a standby: the standby takes over within a lease of the owner's death. A claim filter
/// made [`fenced`](crate::ClaimFilter::fenced) by it claims a scoped completion only under
/// a lease it holds, and the ledger refuses that claim's ack once the scope has changed
/// hands ([`LedgerBackend::claim_fenced`](crate::LedgerBackend::claim_fenced)): a stale
/// owner — paused, partitioned — can never ack what its successor now owns.
///
/// The holder is the queue's [`instance`](CompletionQueue::instance). Dropping the last
/// handle ends the thread, which first releases every lease it holds, so a clean shutdown
/// hands over at once. The backend must keep leases (the memory and PostgreSQL ledgers
/// do).
///
/// ```
/// use std::time::Duration;
/// use process_registry::{CompletionQueue, Ownership};
///
/// let queue = CompletionQueue::new();
/// let ownership = Ownership::start(&queue, Duration::from_secs(30))?;
/// ownership.want("platform:telegram");
/// ownership.renew_now()?; // the thread does this too, at once and then every 10 s
/// assert_eq!(ownership.epoch("platform:telegram"), Some(1));
/// assert_eq!(ownership.epoch("platform:slack"), None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Ownership {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Ownership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ownership")
            .field("holder", &self.handle.shared.queue.instance())
            .field("held", &self.held())
            .finish_non_exhaustive()
    }
}

/// Ends the thread when the last handle goes.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_all();
    }
}

/// What the handles and the thread share.
struct Shared {
    queue: CompletionQueue,
    lease: Duration,
    state: Mutex<State>,
    /// Wakes the thread: a scope wanted or given up, or the last handle gone.
    wake: Condvar,
}

#[derive(Default)]
struct State {
    wanted: BTreeSet<String>,
    held: BTreeMap<String, Held>,
    /// Given up while held: released by the next round.
    given_up: Vec<(String, u64)>,
    /// Every scope the store keeps a lease on (any holder's, run out or released less
    /// than a day ago included), as of the last round that could read them.
    leased: BTreeSet<String>,
    /// A round has read the store's leases (`leased` is an answer, not a blank).
    leases_read: bool,
    /// A round is due now (something was wanted or given up).
    dirty: bool,
    stopping: bool,
}

/// A lease this process holds, as far as it can tell: until `valid_until` on its own
/// clock, counted from before the request that granted it (so never later than the
/// store's).
#[derive(Clone, Copy)]
struct Held {
    epoch: u64,
    valid_until: Instant,
}

impl Ownership {
    /// Starts holding leases of `lease` each on `queue`'s ledger, as its instance. A
    /// lease is taken as at least 30 ms and at most a day.
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`] when the thread cannot be started.
    pub fn start(queue: &CompletionQueue, lease: Duration) -> Result<Ownership, LedgerError> {
        let shared = Arc::new(Shared {
            queue: queue.clone(),
            lease: lease.clamp(SHORTEST_LEASE, LONGEST_LEASE),
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let renewing = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(OWNERSHIP_THREAD_NAME.to_owned())
            .spawn(move || renewing.run())
            .map_err(|error| LedgerError::Unavailable {
                reason: format!("the {OWNERSHIP_THREAD_NAME} thread could not be started: {error}"),
            })?;
        Ok(Ownership {
            handle: Arc::new(Handle { shared }),
        })
    }

    /// Wants `scope`: the thread tries to take its lease at once, and again every round
    /// while another process holds it.
    pub fn want(&self, scope: impl Into<String>) {
        let shared = &self.handle.shared;
        let mut state = shared.lock();
        if state.wanted.insert(scope.into()) {
            state.dirty = true;
            shared.wake.notify_all();
        }
    }

    /// No longer wants `scope`: a lease held on it is released (its claims go back to
    /// pending, for the next holder at once).
    pub fn give_up(&self, scope: &str) {
        let shared = &self.handle.shared;
        let mut state = shared.lock();
        state.wanted.remove(scope);
        if let Some(held) = state.held.remove(scope) {
            state.given_up.push((scope.to_owned(), held.epoch));
        }
        state.dirty = true;
        shared.wake.notify_all();
    }

    /// The epoch of the lease held on `scope`, while it is held and has not run out by
    /// this process's clock; `None` otherwise. What a fenced claim is made under.
    pub fn epoch(&self, scope: &str) -> Option<u64> {
        let state = self.handle.shared.lock();
        let held = state.held.get(scope)?;
        (Instant::now() < held.valid_until).then_some(held.epoch)
    }

    /// Every scope held now, with its epoch.
    pub fn held(&self) -> Vec<(String, u64)> {
        let now = Instant::now();
        self.handle
            .shared
            .lock()
            .held
            .iter()
            .filter(|(_, held)| now < held.valid_until)
            .map(|(scope, held)| (scope.clone(), held.epoch))
            .collect()
    }

    /// `true` when the store keeps a lease on `scope`, held by any instance, this one
    /// included — run out or released less than a day ago too: some consumer of the
    /// ledger serves `scope`, or did lately (a lease over for a day is taken as a scope
    /// retired). As of the thread's last round (at most a third of the lease ago), so a
    /// scope first leased elsewhere since is not seen yet; `false` for every scope until
    /// a round has read the leases ([`leases_read`](Self::leases_read)). What tells a
    /// completion that waits for its owner from one nobody serves. The queue's consumers
    /// are woken whenever the answer changes.
    pub fn is_leased(&self, scope: &str) -> bool {
        self.handle.shared.lock().leased.contains(scope)
    }

    /// `true` once a round has read the store's leases: before,
    /// [`is_leased`](Self::is_leased) knows nothing yet, and a consumer that judges by
    /// it should wait (it is woken when the first read lands).
    pub fn leases_read(&self) -> bool {
        self.handle.shared.lock().leases_read
    }

    /// The queue whose ledger holds the leases.
    pub fn queue(&self) -> &CompletionQueue {
        &self.handle.shared.queue
    }

    /// One round on the caller's thread, as the thread runs them: releases what was
    /// given up, takes or renews every wanted lease. Blocks for the store's round trips.
    ///
    /// # Errors
    /// The first error of the store (the other scopes are still tried).
    pub fn renew_now(&self) -> Result<(), LedgerError> {
        self.handle.shared.round()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing under this lock calls user code or the store.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(self: Arc<Self>) {
        let every = self.lease / 3;
        loop {
            if let Err(error) = self.round() {
                tracing::warn!(%error, "renewing ownership leases failed; retrying");
            }
            let mut state = self.lock();
            let due = Instant::now() + every;
            while !state.dirty && !state.stopping {
                let left = due.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                state = self
                    .wake
                    .wait_timeout(state, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            if state.stopping {
                // Held, and given up since the last round (granted to a round that
                // raced the give-up included): every lease this process still has.
                let held = std::mem::take(&mut state.held);
                let given_up = std::mem::take(&mut state.given_up);
                drop(state);
                let held = held.into_iter().map(|(scope, held)| (scope, held.epoch));
                self.release(given_up.into_iter().chain(held));
                return;
            }
        }
    }

    fn release(&self, scopes: impl IntoIterator<Item = (String, u64)>) {
        let backend = self.queue.backend();
        let holder = self.queue.instance();
        for (scope, epoch) in scopes {
            if let Err(error) = backend.release_scope(&scope, holder, epoch) {
                tracing::warn!(%error, scope, "releasing an ownership lease failed; it runs out instead");
            }
        }
    }

    fn round(&self) -> Result<(), LedgerError> {
        let (wanted, given_up) = {
            let mut state = self.lock();
            state.dirty = false;
            (
                state.wanted.iter().cloned().collect::<Vec<_>>(),
                std::mem::take(&mut state.given_up),
            )
        };
        self.release(given_up);
        let backend = self.queue.backend();
        let holder = self.queue.instance();
        let mut first_error = None;
        let mut changed = false;
        for scope in wanted {
            let asked = Instant::now();
            let granted = backend.acquire_scope(&scope, holder, self.lease.as_secs_f64());
            let mut state = self.lock();
            if !state.wanted.contains(&scope) {
                // Given up meanwhile: a lease granted now is released by the next round.
                if let Ok(Some(epoch)) = granted {
                    state.given_up.push((scope, epoch));
                    state.dirty = true;
                }
                continue;
            }
            match granted {
                Ok(Some(epoch)) => {
                    let held = Held {
                        epoch,
                        valid_until: asked + self.lease,
                    };
                    let before = state.held.insert(scope.clone(), held);
                    // Changed too when it had run out by this clock (renewals failed, or
                    // this one's answer was slow): `epoch` answered `None` meanwhile, and
                    // a consumer may have passed the scope's completions over and gone to
                    // sleep. Judged now, under the lock `epoch` reads it by, not by when
                    // it was asked.
                    let lapsed = before.is_some_and(|before| before.valid_until <= Instant::now());
                    if before.is_none_or(|before| before.epoch != epoch) {
                        tracing::info!(scope, epoch, holder, "took an ownership lease");
                        changed = true;
                    } else if lapsed {
                        tracing::info!(
                            scope,
                            epoch,
                            holder,
                            "renewed an ownership lease that had run out"
                        );
                        changed = true;
                    }
                }
                Ok(None) => {
                    if state.held.remove(&scope).is_some() {
                        tracing::warn!(scope, holder, "lost an ownership lease to another holder");
                        changed = true;
                    }
                }
                // Kept as it was: a lease not renewed runs out by its own time.
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        match backend.scope_leases() {
            Ok(leases) => {
                // A lease over (run out or released) for longer than the longest lease is
                // forgotten: nobody serves its scope any more.
                let horizon = backend.now() - LONGEST_LEASE.as_secs_f64();
                let leased: BTreeSet<String> = leases
                    .into_iter()
                    // (-infinity: released by a build that did not record when.)
                    .filter(|lease| {
                        lease.lease_until > horizon || lease.lease_until == f64::NEG_INFINITY
                    })
                    .map(|lease| lease.scope)
                    .collect();
                let mut state = self.lock();
                if state.leased != leased || !state.leases_read {
                    // What waited for another consumer (or for this first read) may be
                    // anyone's now: look again.
                    state.leased = leased;
                    state.leases_read = true;
                    changed = true;
                }
            }
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
        if changed {
            // What this consumer may claim changed: its waiting claims look again.
            self.queue.wake_consumers();
        }
        first_error.map_or(Ok(()), Err)
    }
}
