//! The router as tokio tasks (feature `tokio`): one task per platform with an adapter,
//! awaiting that platform's deliveries one at a time, and one task for the completions no
//! platform will take (made dead letters with their reason). A slow platform holds only
//! its own task: every other platform's completions go on being delivered.
//!
//! Each task waits with [`CompletionQueue::next_claim`](process_registry::CompletionQueue::next_claim)
//! (woken by a completion, a turn's end, a new adapter; nothing polls) beside the router's
//! stop signal. An async adapter's future is awaited to its end; a sync adapter runs on the
//! runtime's blocking threads, so neither holds a runtime thread. The ledger's calls (the
//! looks, the settles) run on the task when its store never blocks (the memory ledger),
//! and on the runtime's blocking threads when it may ([`Capabilities::may_block`]: SQLite
//! waits on its file's lock, PostgreSQL on the server), so no call holds a runtime thread
//! either.
//!
//! [`Capabilities::may_block`]: process_registry::Capabilities::may_block

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::Poll;

use async_delegation::fence;
use process_registry::{Claim, ClaimFilter};
use tokio::task::JoinHandle;

use super::worker::{
    judged_filter, look, retry_after, target, Look, Ready, Sent, Target, View, Worker,
};
use super::{Adapter, Shared};
use crate::routing::Known;
use crate::Platform;

/// The tasks of a router started on a runtime.
pub(super) struct TaskSet {
    runtime: tokio::runtime::Handle,
    /// Held by the tasks themselves; a new platform's task is started from it.
    worker: Weak<Worker>,
    /// Per platform (`None`: the task for what no platform takes).
    running: HashMap<Option<Platform>, JoinHandle<()>>,
}

/// Starts the router's tasks on `runtime`: one per platform with an adapter, and the one
/// for unroutable completions.
pub(super) fn start(runtime: &tokio::runtime::Handle, worker: Worker) {
    let worker = Arc::new(worker);
    let shared = Arc::clone(worker.shared());
    let platforms: Vec<Platform> = shared
        .adapters
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .keys()
        .cloned()
        .collect();
    let mut set = TaskSet {
        runtime: runtime.clone(),
        worker: Arc::downgrade(&worker),
        running: HashMap::new(),
    };
    let rest = runtime.spawn(serve_rest(Arc::clone(&worker)));
    set.running.insert(None, rest);
    for platform in platforms {
        let task = runtime.spawn(serve_platform(Arc::clone(&worker), platform.clone()));
        set.running.insert(Some(platform), task);
    }
    *shared.tasks.lock().unwrap_or_else(PoisonError::into_inner) = Some(set);
}

/// Gives `platform` a task of its own, if the router runs as tasks and it has none yet
/// (its adapter was registered after the start).
pub(super) fn serve(shared: &Shared, platform: &Platform) {
    let mut tasks = shared.tasks.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(set) = tasks.as_mut() else {
        return;
    };
    let key = Some(platform.clone());
    if set
        .running
        .get(&key)
        .is_some_and(|task| !task.is_finished())
    {
        return;
    }
    let Some(worker) = set.worker.upgrade() else {
        // Every task has ended: the router is stopping.
        return;
    };
    let task = set.runtime.spawn(serve_platform(worker, platform.clone()));
    set.running.insert(key, task);
}

/// The router's tasks, taken to be awaited by a stop — except the task the stop runs on
/// (an adapter that stops its own router), which cannot await itself and ends once the
/// adapter returns.
pub(super) fn take_all(shared: &Shared) -> Vec<JoinHandle<()>> {
    let current = tokio::task::try_id();
    let mut tasks = shared.tasks.lock().unwrap_or_else(PoisonError::into_inner);
    tasks
        .as_mut()
        .map(|set| {
            set.running
                .drain()
                .map(|(_, task)| task)
                .filter(|task| Some(task.id()) != current)
                .collect()
        })
        .unwrap_or_default()
}

/// Delivers `platform`'s completions, one at a time, until the router stops.
async fn serve_platform(worker: Arc<Worker>, platform: Platform) {
    let (filter, view) = judged_filter(worker.shared(), move |shared, view, event| {
        matches!(
            target(shared, event, |key| view.busy.contains(key)),
            Target::Platform(p) if p == platform && view.served.contains(&p)
        )
    });
    claim_and_deliver(&worker, filter, view).await;
}

/// Claims what no platform will take — completions with no route, or for a platform
/// nobody knows — to make each a dead letter with its reason.
async fn serve_rest(worker: Arc<Worker>) {
    let (filter, view) = judged_filter(worker.shared(), |shared, view, event| {
        match target(shared, event, |key| view.busy.contains(key)) {
            Target::Unroutable => true,
            Target::NotNow => false,
            Target::Platform(platform) => {
                if !view.served.contains(&platform) {
                    shared.warn_unserved(&platform);
                }
                false
            }
        }
    });
    claim_and_deliver(&worker, filter, view).await;
}

/// Runs `call` — ledger calls — where it cannot hold the runtime's thread: on the
/// runtime's blocking threads when the queue's store may block, else here. `None` when the
/// runtime is shutting down and the call did not run to its end.
async fn off_runtime<T: Send + 'static>(
    worker: &Arc<Worker>,
    call: impl FnOnce(&Worker) -> T + Send + 'static,
) -> Option<T> {
    if !worker.queue().backend().capabilities().may_block {
        return Some(call(worker));
    }
    let worker = Arc::clone(worker);
    tokio::task::spawn_blocking(move || call(&worker))
        .await
        .ok()
}

/// A claim — or what holds one — on its way between a task and the blocking thread that
/// runs its ledger call. Dropped unreceived (the task is gone: the runtime shut down while
/// the call ran, or before it started), its claim is deferred — pending again at once, its
/// attempt given back, as a dropped `next_claim` gives back its claim — instead of being
/// released by its drop as a failed attempt that nobody made.
struct ForTask<T: HoldsClaim>(Option<T>);

impl<T: HoldsClaim> ForTask<T> {
    fn new(held: T) -> Self {
        ForTask(Some(held))
    }

    /// What it holds, received by the task.
    fn received(mut self) -> Option<T> {
        self.0.take()
    }
}

impl<T: HoldsClaim> Drop for ForTask<T> {
    fn drop(&mut self) {
        let Some(claim) = self.0.take().and_then(HoldsClaim::into_claim) else {
            return;
        };
        let key = claim.key().into_owned();
        if let Err(error) = claim.defer() {
            // The lease brings it back anyway.
            tracing::warn!(%error, %key, "a claim made for a router task that is gone could not be given back");
        }
    }
}

/// What may hold an unsettled claim.
trait HoldsClaim {
    fn into_claim(self) -> Option<Claim>;
}

impl HoldsClaim for Claim {
    fn into_claim(self) -> Option<Claim> {
        Some(self)
    }
}

impl HoldsClaim for Look {
    fn into_claim(self) -> Option<Claim> {
        match self {
            Look::Claimed(claim) => Some(claim),
            Look::Nothing | Look::Failed => None,
        }
    }
}

impl HoldsClaim for Option<Ready> {
    fn into_claim(self) -> Option<Claim> {
        self.map(|ready| ready.claim)
    }
}

/// The thread router's loop as a task: arm the wait, look, look once more after reading
/// when a held-back row comes due, then wait — for a write, a turn's end, a new adapter,
/// that time, or the stop.
async fn claim_and_deliver(worker: &Arc<Worker>, filter: ClaimFilter, view: Arc<Mutex<View>>) {
    let shared = worker.shared();
    let queue = worker.queue();
    let mut failures = 0_u32;
    loop {
        let wait = queue.listen();
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let (filter, view) = (filter.clone(), Arc::clone(&view));
        let looked = off_runtime(worker, move |worker| {
            let (shared, queue) = (worker.shared(), worker.queue());
            let mut found = look(shared, queue, &filter, &view, &mut failures);
            let mut due = None;
            if matches!(found, Look::Nothing) {
                match queue.next_due(&filter) {
                    Ok(next) => {
                        due = next;
                        // A backoff that ran out between the look and `next_due` is in
                        // neither: look once more.
                        found = look(shared, queue, &filter, &view, &mut failures);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "the gateway could not read the ledger; retrying");
                        found = Look::Failed;
                        failures += 1;
                    }
                }
            }
            (ForTask::new(found), due, failures)
        });
        // The runtime is shutting down.
        let Some((found, mut due, failed)) = looked.await else {
            return;
        };
        failures = failed;
        let Some(found) = found.received() else {
            return;
        };
        match found {
            Look::Claimed(claim) => {
                drop(wait);
                deliver(worker, claim).await;
                continue;
            }
            Look::Failed => due = Some(std::time::Instant::now() + retry_after(failures)),
            Look::Nothing => {}
        }
        let mut wait = wait;
        let mut timer = due.map(|due| {
            futures_timer::Delay::new(due.saturating_duration_since(std::time::Instant::now()))
        });
        let woken = poll_fn(|cx| {
            if Pin::new(&mut wait).poll(cx).is_ready() {
                return Poll::Ready(());
            }
            match &mut timer {
                Some(timer) => Pin::new(timer).poll(cx),
                None => Poll::Pending,
            }
        });
        if until_stopped(shared, woken).await.is_none() {
            return;
        }
    }
}

/// Routes, renders and delivers one claimed completion, and settles the claim, in the
/// claim's span.
async fn deliver(worker: &Arc<Worker>, claim: Claim) {
    let span = super::worker::claim_span(worker.shared(), &claim);
    tracing::Instrument::instrument(deliver_claimed(worker, claim), span).await;
}

async fn deliver_claimed(worker: &Arc<Worker>, claim: Claim) {
    // Routing may settle the claim (a busy session defers it): a ledger call.
    let prepared = if worker.origins_are_async() {
        // Awaited here, so that routing (synchronous) reads the answer.
        let known = match worker.async_origin_lookup(&claim) {
            Some(lookup) => lookup.await,
            None => None,
        };
        let claim = ForTask::new(claim);
        off_runtime(worker, move |worker| {
            ForTask::new(
                claim
                    .received()
                    .and_then(|claim| worker.prepare_with(claim, &Known(known))),
            )
        })
        .await
    } else {
        let claim = ForTask::new(claim);
        off_runtime(worker, move |worker| {
            ForTask::new(claim.received().and_then(|claim| worker.prepare(claim)))
        })
        .await
    };
    let Some(Ready {
        claim,
        message,
        adapter,
    }) = prepared.and_then(ForTask::received).flatten()
    else {
        return;
    };
    match adapter {
        Adapter::Async(send) => {
            let sent = Sent::owned(&message);
            let span = super::worker::delivery_span(&message);
            let outcome = match span.in_scope(|| fence::call(|| send.deliver(message))) {
                Ok(delivery) => {
                    let delivering = fence::future(delivery, "an adapter's delivery");
                    tracing::Instrument::instrument(delivering, span).await
                }
                Err(panic) => Err(panic),
            };
            fence::drop_logged(send, "a replaced adapter");
            off_runtime(worker, move |worker| {
                worker.conclude(claim, &sent.view(), outcome);
            })
            .await;
        }
        Adapter::Sync(sync) => {
            let span = super::worker::delivery_span(&message);
            // On a store that may block, the settle follows the send on the same blocking
            // thread; on one that never blocks, it comes back to the task.
            let settles_there = worker
                .queue()
                .backend()
                .capabilities()
                .may_block
                .then(|| Arc::clone(worker));
            let sending = tokio::task::spawn_blocking(move || {
                let outcome = span.in_scope(|| fence::call(|| sync.deliver(&message)));
                fence::drop_logged(sync, "a replaced adapter");
                match settles_there {
                    Some(worker) => {
                        worker.conclude(claim, &Sent::borrowed(&message), outcome);
                        None
                    }
                    None => Some((claim, outcome, message)),
                }
            });
            match sending.await {
                Ok(Some((claim, outcome, message))) => {
                    worker.conclude(claim, &Sent::borrowed(&message), outcome);
                }
                Ok(None) => {}
                // The runtime is shutting down: the claim is dropped undecided, which
                // releases it (a failed attempt; it is offered again after its backoff).
                Err(error) => {
                    tracing::warn!(%error, "a delivery on a blocking thread did not finish");
                }
            }
        }
    }
}

/// `future`'s output, or `None` once the router is told to stop (checked before and
/// while it waits). The futures given here are cancel-safe.
async fn until_stopped<F: Future>(shared: &Shared, future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return None;
        }
        let mut stop = shared.stopped.listen();
        if shared.stopping.load(Ordering::SeqCst) {
            return None;
        }
        let done = poll_fn(|cx| {
            if let Poll::Ready(output) = future.as_mut().poll(cx) {
                return Poll::Ready(Some(output));
            }
            match Pin::new(&mut stop).poll(cx) {
                Poll::Ready(()) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        if let Some(output) = done {
            return Some(output);
        }
    }
}
