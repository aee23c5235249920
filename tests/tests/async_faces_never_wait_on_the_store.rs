//! The async faces of the stack on stores whose calls may block: none of them waits on the
//! store on the thread that polls it. Each test locks the ledger from another session or
//! connection (every call that needs it then waits), makes a call that needs it, and
//! shows the thread it was made from is still free:
//! - the queue, on PostgreSQL and on SQLite: a first poll of `next_event` and of
//!   `next_claim` returns at once;
//! - the gateway's router on a current-thread runtime: a task spawned while a router
//!   task's claim waits still runs;
//! - an async runner's completion: the same, while its write waits.
//!
//! Each fails on a build that calls the store on the polling thread (the wait outlasts
//! the guard). Needs the project machines' PostgreSQL server (127.0.0.1:5432, or
//! `LEDGER_TEST_POSTGRES`); fails without it, never skips. Nothing measures time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use async_delegation::{DelegationEngine, DelegationResult, DelegationSpec};
use gateway::{AdapterError, DeliveryRouter, InternalMessage, Platform};
use integration_tests::{take_delegation, wait_until, HANG_GUARD};
use process_registry::{
    AsyncDelegationEvent, ClaimFilter, CompletionQueue, Event, PostgresLedger, PostgresOptions,
};

fn params() -> String {
    std::env::var("LEDGER_TEST_POSTGRES")
        .unwrap_or_else(|_| "host=127.0.0.1 user=postgres dbname=test".to_owned())
}

fn client() -> postgres::Client {
    postgres::Client::connect(&params(), postgres::NoTls)
        .unwrap_or_else(|error| panic!("the test PostgreSQL server ({}): {error}", params()))
}

/// A schema of the test's own (emptied first, dropped with the value) and a queue on it.
struct Ledger {
    schema: String,
    queue: CompletionQueue,
}

impl Ledger {
    fn new(name: &str) -> Ledger {
        let schema = format!("never_waits_{}_{name}", std::process::id());
        client()
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .unwrap();
        let ledger = PostgresLedger::connect_with(
            &params(),
            PostgresOptions::default().with_schema(schema.clone()),
        )
        .unwrap();
        let queue = CompletionQueue::builder(ledger).open().unwrap();
        Ledger { schema, queue }
    }

    fn rows(&self) -> String {
        format!("{}.ledger_rows", self.schema)
    }

    /// Another session holds the rows' table in its strongest lock until released.
    fn lock(&self) -> Locked {
        let table = self.rows();
        let (locked, is_locked) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let mut session = client();
            let mut transaction = session.transaction().unwrap();
            transaction
                .batch_execute(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
                .unwrap();
            locked.send(()).unwrap();
            let _ = released.recv_timeout(HANG_GUARD * 2);
            transaction.commit().unwrap();
        });
        is_locked.recv_timeout(HANG_GUARD).unwrap();
        Locked {
            release,
            holder,
            rows: self.rows(),
        }
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        if let Ok(mut admin) = postgres::Client::connect(&params(), postgres::NoTls) {
            let _ = admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema));
        }
    }
}

struct Locked {
    release: mpsc::Sender<()>,
    holder: std::thread::JoinHandle<()>,
    rows: String,
}

impl Locked {
    /// Returns once a statement waits for the lock.
    fn until_a_call_waits(&self) {
        let mut admin = client();
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            let waiting: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = to_regclass($1)",
                    &[&self.rows],
                )
                .unwrap()
                .get(0);
            if waiting > 0 {
                return;
            }
            assert!(Instant::now() < deadline, "no call waits for the lock");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn release(self) {
        self.release.send(()).unwrap();
        self.holder.join().unwrap();
    }
}

/// A current-thread runtime driven by a thread of its own: its handle, and what ends it.
fn driven_runtime() -> (tokio::runtime::Handle, impl FnOnce()) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let handle = runtime.handle().clone();
    let (end, ended) = tokio::sync::oneshot::channel::<()>();
    let driver = std::thread::spawn(move || runtime.block_on(async move { ended.await.ok() }));
    (handle, move || {
        end.send(()).unwrap();
        driver.join().unwrap();
    })
}

/// Whether a task spawned on `runtime` now runs (within the guard).
fn a_task_runs(runtime: &tokio::runtime::Handle) -> bool {
    let (ran, probe) = mpsc::channel();
    runtime.spawn(async move {
        let _ = ran.send(());
    });
    probe.recv_timeout(HANG_GUARD).is_ok()
}

fn completion(session_key: &str, id: &str) -> AsyncDelegationEvent {
    AsyncDelegationEvent {
        delegation_id: Some(id.into()),
        session_key: session_key.into(),
        goal: "g".into(),
        ..AsyncDelegationEvent::default()
    }
}

fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    Pin::new(future).poll(&mut Context::from_waker(Waker::noop()))
}

/// Awaits `future` on a thread of its own, failing after the guard.
fn finish<F: Future + Send + 'static>(future: F) -> F::Output
where
    F::Output: Send + 'static,
{
    let (done, answer) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(futures_executor::block_on(future));
    });
    answer.recv_timeout(HANG_GUARD).expect("the wait ended")
}

/// While `hold` keeps the lock every store call needs, a first poll of `next_event` and of
/// `next_claim` returns `Pending` at once; once `hold`'s release runs, both futures finish
/// with the two rows.
fn polls_never_wait(queue: &CompletionQueue, hold: impl FnOnce() -> Box<dyn FnOnce()>) {
    queue
        .try_put(Event::AsyncDelegation(completion("", "deleg_00000001")))
        .unwrap();
    queue
        .try_put(Event::AsyncDelegation(completion("", "deleg_00000002")))
        .unwrap();
    let release = hold();
    let taker = queue.clone();
    let mut taking = Box::pin(async move { taker.next_event().await });
    assert!(
        poll_once(&mut taking).is_pending(),
        "the take waits off this thread"
    );
    let claimer = queue.clone();
    let mut claiming = Box::pin(async move { claimer.next_claim(&ClaimFilter::any()).await });
    assert!(
        poll_once(&mut claiming).is_pending(),
        "the claim waits off this thread"
    );
    release();
    let taken = finish(taking).unwrap();
    let claim = finish(claiming).unwrap();
    let mut ids = [taken, claim.event().clone()].map(|event| match event {
        Event::AsyncDelegation(event) => event.delegation_id.unwrap().to_string(),
        other => panic!("unexpected {other:?}"),
    });
    ids.sort();
    assert_eq!(ids, ["deleg_00000001", "deleg_00000002"]);
    claim.ack().unwrap();
    // The awaited take's claim is acknowledged on the offload thread, just after.
    assert!(wait_until(|| queue.is_empty()), "both acknowledged");
}

#[test]
fn a_poll_of_the_queue_never_waits_for_the_server() {
    let ledger = Ledger::new("queue");
    polls_never_wait(&ledger.queue, || {
        let locked = ledger.lock();
        Box::new(move || locked.release())
    });
}

/// The same on SQLite: another connection holds the file's write lock (a take or a claim
/// waits for it up to the busy timeout).
#[test]
fn a_poll_of_the_queue_never_waits_for_the_file_lock() {
    let dir = std::env::temp_dir().join(format!("never-waits-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ledger.sqlite3");
    let queue = CompletionQueue::builder(process_registry::SqliteLedger::open(&path).unwrap())
        .open()
        .unwrap();
    polls_never_wait(&queue, || {
        let (locked, is_locked) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let connection = rusqlite::Connection::open(&path).unwrap();
            connection.execute_batch("BEGIN IMMEDIATE").unwrap();
            locked.send(()).unwrap();
            let _ = released.recv_timeout(HANG_GUARD);
            connection.execute_batch("COMMIT").unwrap();
        });
        is_locked.recv_timeout(HANG_GUARD).unwrap();
        Box::new(move || {
            release.send(()).unwrap();
            holder.join().unwrap();
        })
    });
    drop(queue);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An async adapter that sends each message's delegation id to `inbox`.
fn forwarding(
    inbox: mpsc::Sender<String>,
) -> impl Fn(InternalMessage) -> std::future::Ready<Result<(), AdapterError>> + Send + Sync {
    move |message: InternalMessage| {
        let id = match &*message.event {
            Event::AsyncDelegation(e) => e.delegation_id.clone().unwrap_or_default().to_string(),
            other => format!("{other:?}"),
        };
        std::future::ready(
            inbox
                .send(id)
                .map_err(|e| AdapterError::from(e.to_string())),
        )
    }
}

#[test]
fn a_router_look_waiting_on_the_server_never_holds_the_runtime() {
    let ledger = Ledger::new("router");
    let queue = &ledger.queue;
    let (runtime, end) = driven_runtime();
    let (telegram_inbox, telegram) = mpsc::channel();
    let router = DeliveryRouter::builder(queue.clone())
        .async_adapter(Platform::Telegram, forwarding(telegram_inbox))
        .start_on(&runtime)
        .unwrap();
    queue.put(completion("agent:main:telegram:dm:1", "deleg_00000001"));
    assert_eq!(telegram.recv_timeout(HANG_GUARD).unwrap(), "deleg_00000001");

    let locked = ledger.lock();
    // A new platform's task starts and looks at once: its claim waits for the lock.
    let (matrix_inbox, matrix) = mpsc::channel();
    router.register_async_adapter(Platform::Matrix, forwarding(matrix_inbox));
    locked.until_a_call_waits();
    let ran = a_task_runs(&runtime);
    locked.release();
    assert!(
        ran,
        "a task ran while the router's look waited on the server"
    );

    // Once the lock goes, the router goes on.
    queue.put(completion("agent:main:matrix:dm:2", "deleg_00000002"));
    assert_eq!(matrix.recv_timeout(HANG_GUARD).unwrap(), "deleg_00000002");
    assert_eq!(runtime.block_on(router.stop_async()).delivered, 2);
    end();
}

#[test]
fn an_async_completion_waiting_on_the_server_never_holds_the_runtime() {
    let ledger = Ledger::new("runner");
    let queue = &ledger.queue;
    let engine = DelegationEngine::new(queue.clone());
    let (runtime, end) = driven_runtime();
    // Dispatched (its row written) before the lock; it returns when the gate opens.
    let (open, gate) = tokio::sync::oneshot::channel::<()>();
    let handle = engine
        .dispatch_async(
            DelegationSpec::new("Waits at the gate"),
            &runtime,
            |_| async move {
                let _ = gate.await;
                Ok(DelegationResult::completed("through"))
            },
            1,
        )
        .unwrap();
    let locked = ledger.lock();
    open.send(()).unwrap();
    // The runner returned; its completion's write waits for the lock.
    locked.until_a_call_waits();
    let ran = a_task_runs(&runtime);
    locked.release();
    assert!(
        ran,
        "a task ran while the completion's write waited on the server"
    );

    let outcome = handle
        .wait_timeout(HANG_GUARD)
        .expect("recorded once the lock went");
    assert_eq!(outcome.summary.as_deref(), Some("through"));
    let recorded = take_delegation(queue).expect("the completion");
    assert_eq!(recorded.summary.as_deref(), Some("through"));
    assert!(queue.try_take().is_none(), "one completion");
    end();
}

/// A sync adapter on the router's tasks over SQLite: the send and the settle after it run
/// on one blocking thread, and every completion is delivered once and acked.
#[test]
fn a_sync_adapter_on_the_tasks_settles_on_its_blocking_thread() {
    let dir = std::env::temp_dir().join(format!("never-waits-sync-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ledger = process_registry::SqliteLedger::open(dir.join("ledger.sqlite3")).unwrap();
    let queue = CompletionQueue::builder(ledger).open().unwrap();
    let (runtime, end) = driven_runtime();
    let (inbox, delivered) = mpsc::channel();
    let inbox = std::sync::Mutex::new(inbox);
    let router = DeliveryRouter::builder(queue.clone())
        .adapter(Platform::Telegram, move |message: &InternalMessage| {
            let id = match &*message.event {
                Event::AsyncDelegation(e) => e.delegation_id.clone().unwrap_or_default(),
                _ => Default::default(),
            };
            inbox.lock().unwrap().send(id.to_string()).unwrap();
            Ok(())
        })
        .start_on(&runtime)
        .unwrap();
    for n in 1..=5 {
        queue.put(completion(
            "agent:main:telegram:dm:1",
            &format!("deleg_0000000{n}"),
        ));
    }
    let mut ids: Vec<String> = (0..5)
        .map(|_| delivered.recv_timeout(HANG_GUARD).unwrap())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        (1..=5)
            .map(|n| format!("deleg_0000000{n}"))
            .collect::<Vec<_>>()
    );
    let stats = runtime.block_on(router.stop_async());
    assert_eq!(stats.delivered, 5);
    assert!(queue.is_empty(), "every delivery was acked");
    end();
    drop(queue);
    let _ = std::fs::remove_dir_all(&dir);
}
