//! The router's tasks on a store whose calls may block (PostgreSQL): a look that waits on
//! the server never holds the runtime's thread. On a current-thread runtime, while another
//! session locks the ledger's table and a router task's claim waits for it, a task
//! spawned on the same runtime still runs. Needs the PostgreSQL server of the project's
//! machines (127.0.0.1:5432, or `LEDGER_TEST_POSTGRES`); fails without it, never skips.
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::mpsc;
use std::time::{Duration, Instant};

use gateway::{AdapterError, DeliveryRouter, InternalMessage, Platform};
use process_registry::{
    AsyncDelegationEvent, CompletionQueue, Event, PostgresLedger, PostgresOptions,
};

/// Long enough for any machine, and shorter than the ledger's statement timeout (30 s):
/// a runtime thread held by the locked claim would miss it.
const HANG_GUARD: Duration = Duration::from_secs(20);

fn params() -> String {
    std::env::var("LEDGER_TEST_POSTGRES")
        .unwrap_or_else(|_| "host=127.0.0.1 user=postgres dbname=test".to_owned())
}

fn client() -> postgres::Client {
    postgres::Client::connect(&params(), postgres::NoTls)
        .unwrap_or_else(|error| panic!("the test PostgreSQL server ({}): {error}", params()))
}

fn completion(session_key: &str, id: &str) -> AsyncDelegationEvent {
    AsyncDelegationEvent {
        delegation_id: Some(id.into()),
        session_key: session_key.into(),
        goal: "g".into(),
        ..AsyncDelegationEvent::default()
    }
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
fn a_look_waiting_on_the_server_never_holds_the_runtime() {
    let schema = format!("gw_async_blocking_{}", std::process::id());
    let mut admin = client();
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .unwrap();
    let ledger = PostgresLedger::connect_with(
        &params(),
        PostgresOptions::default().with_schema(schema.clone()),
    )
    .unwrap();
    let queue = CompletionQueue::builder(ledger).open().unwrap();

    // One runtime thread, driven apart from the test.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let handle = runtime.handle().clone();
    let (end, ended) = tokio::sync::oneshot::channel::<()>();
    let driver = std::thread::spawn(move || runtime.block_on(async move { ended.await.ok() }));

    let (telegram_inbox, telegram) = mpsc::channel();
    let router = DeliveryRouter::builder(queue.clone())
        .async_adapter(Platform::Telegram, forwarding(telegram_inbox))
        .start_on(&handle)
        .unwrap();
    queue.put(completion("agent:main:telegram:dm:1", "deleg_00000001"));
    assert_eq!(telegram.recv_timeout(HANG_GUARD).unwrap(), "deleg_00000001");

    // Another session takes the rows' table in its strongest lock: every statement on it
    // waits until that session commits.
    let table = format!("{schema}.ledger_rows");
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

    // A new platform's task starts and looks at once: its claim waits for the lock.
    let (matrix_inbox, matrix) = mpsc::channel();
    router.register_async_adapter(Platform::Matrix, forwarding(matrix_inbox));
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let waiting: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_locks
                  WHERE NOT granted AND relation = to_regclass($1)",
                &[&format!("{schema}.ledger_rows")],
            )
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no look of the router waits for the lock"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    // The runtime's one thread is free: a task spawned now runs while the look waits.
    let (ran, probe) = mpsc::channel();
    handle.spawn(async move { ran.send(()).unwrap() });
    let probed = probe.recv_timeout(HANG_GUARD);
    release.send(()).unwrap();
    holder.join().unwrap();
    probed.expect("a task ran while the router's look waited on the server");

    // Once the lock goes, the look goes on: the next completion is delivered.
    queue.put(completion("agent:main:matrix:dm:2", "deleg_00000002"));
    assert_eq!(matrix.recv_timeout(HANG_GUARD).unwrap(), "deleg_00000002");
    let stats = handle.block_on(router.stop_async());
    assert_eq!(stats.delivered, 2);
    end.send(()).unwrap();
    driver.join().unwrap();
    drop(queue);
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .unwrap();
}
