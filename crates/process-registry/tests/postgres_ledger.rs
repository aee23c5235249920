//! The PostgreSQL ledger beyond the conformance suite: a schema that is not ours, or is
//! newer, is refused and left as it was; an unreachable server and a bad schema name are
//! clear errors; a call from inside a tokio runtime works (the sync client never runs on
//! the caller's thread); and another handle's completion — another process's — wakes a
//! waiting consumer through the server's notification, not a sweep.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use process_registry::{
    ClaimFilter, CompletionQueue, Event, LedgerConfig, LedgerError, PostgresLedger,
    PostgresOptions, WatchOverflow,
};

mod pg_support;

use pg_support::{client, params, Schema};

fn event(message: &str) -> Event {
    Event::WatchOverflowTripped(WatchOverflow {
        message: Some(message.to_owned()),
        ..WatchOverflow::default()
    })
}

#[test]
fn another_programs_schema_is_refused_and_left_as_it_was() {
    let schema = Schema::new("pgtest", "theirs");
    let mut client = client();
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {0}; CREATE TABLE {0}.orders (id int); INSERT INTO {0}.orders VALUES (7);",
            schema.0
        ))
        .unwrap();
    let refused = PostgresLedger::connect_with(&params(), schema.options(1)).unwrap_err();
    assert!(
        matches!(refused, LedgerError::NotALedger { .. }),
        "{refused}"
    );
    assert!(refused.to_string().contains("another program"), "{refused}");
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = $1",
            &[&schema.0],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables, 1, "nothing was created beside their table");
    let id: i32 = client
        .query_one(&format!("SELECT id FROM {}.orders", schema.0), &[])
        .unwrap()
        .get(0);
    assert_eq!(id, 7);
}

#[test]
fn a_newer_schema_is_refused_and_left_as_it_was() {
    let schema = Schema::new("pgtest", "newer");
    {
        let ledger = PostgresLedger::connect_with(&params(), schema.options(1)).unwrap();
        let queue = CompletionQueue::builder(ledger).open().unwrap();
        queue.put(event("kept"));
    }
    let mut client = client();
    client
        .batch_execute(&format!(
            "UPDATE {}.ledger_meta SET schema_version = 3",
            schema.0
        ))
        .unwrap();
    let refused = PostgresLedger::connect_with(&params(), schema.options(1)).unwrap_err();
    match &refused {
        LedgerError::NewerSchema {
            found, supported, ..
        } => assert_eq!((*found, *supported), (3, 2)),
        other => panic!("{other}"),
    }
    let rows: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM {}.ledger_rows", schema.0),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(rows, 1, "the row is still there");
}

#[test]
fn an_unreachable_server_and_a_bad_schema_name_are_clear_errors() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let refused =
        PostgresLedger::connect("host=127.0.0.1 port=1 user=postgres dbname=test").unwrap_err();
    assert!(
        matches!(refused, LedgerError::Unavailable { .. }),
        "{refused}"
    );
    let unparsed = PostgresLedger::connect("host=127.0.0.1 port=notaport").unwrap_err();
    assert!(
        unparsed.to_string().contains("does not parse"),
        "{unparsed}"
    );
    for name in ["", "1st", "a-b", "x\"; DROP TABLE y; --", &"s".repeat(49)] {
        let error =
            PostgresLedger::connect_with(&params(), PostgresOptions::default().with_schema(name))
                .unwrap_err();
        assert!(
            error.to_string().contains("is not a schema name"),
            "{name:?}: {error}"
        );
    }
}

#[test]
fn a_call_from_inside_a_tokio_runtime_works() {
    let schema = Schema::new("pgtest", "in_runtime");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let options = schema.options(1);
    let taken = runtime.block_on(async move {
        let ledger = PostgresLedger::connect_with(&params(), options).unwrap();
        let queue = CompletionQueue::builder(ledger).open().unwrap();
        queue.put(event("from a task"));
        queue.try_take()
    });
    assert!(taken.is_some());
}

#[test]
fn another_handles_completion_wakes_a_waiting_consumer() {
    let schema = Schema::new("pgtest", "woken");
    // No sweep within the test: only the server's notification can wake the consumer.
    let config = LedgerConfig::default().with_sweep_interval(Duration::from_secs(3600));
    let open = |instance: &str| {
        let ledger = PostgresLedger::connect_with(&params(), schema.options(1)).unwrap();
        CompletionQueue::builder(ledger)
            .instance(instance)
            .config(config.clone())
            .open()
            .unwrap()
    };
    let consumer = open("gateway-1");
    let producer = open("worker-1");
    // Armed first, so the put cannot slip in before it; the producer's queue wakes only
    // its own waits, so only the notification can end this one before its guard.
    let wait = consumer.listen();
    producer.put(event("from another process"));
    assert!(
        wait.wait_until(std::time::Instant::now() + Duration::from_secs(30)),
        "the waiting consumer was never woken"
    );
    let claim = consumer.claim(&ClaimFilter::any()).unwrap().unwrap();
    claim.ack().unwrap();
}

/// The schema a child process of the kill test works in (set only for the child).
const CHILD_SCHEMA: &str = "POSTGRES_LEDGER_TEST_CHILD_SCHEMA";
const KILLED: &str = "worker-to-be-killed";

fn heartbeat_options(schema: &str) -> PostgresOptions {
    PostgresOptions::default()
        .with_schema(schema)
        .with_connections(1)
        .with_instance_lease(Duration::from_secs(5))
}

/// Run by [`a_killed_workers_running_rows_become_unknown_once_its_lease_runs_out`] as a
/// child process: a worker that dispatches one delegation, says so, and waits to be
/// killed.
#[test]
#[ignore = "a child process of the kill test, not a test of its own"]
fn kill_test_child_worker() {
    let schema = std::env::var(CHILD_SCHEMA).expect("run by the kill test");
    let ledger = PostgresLedger::connect_with(&params(), heartbeat_options(&schema)).unwrap();
    let queue = CompletionQueue::builder(ledger)
        .instance(KILLED)
        .open()
        .unwrap();
    let recorded = queue
        .record_dispatch(
            "deleg_0000000k",
            "agent:main:telegram:dm:1",
            Event::from(process_registry::AsyncDelegationEvent {
                delegation_id: Some("deleg_0000000k".into()),
                session_key: "agent:main:telegram:dm:1".into(),
                goal: "run until killed".into(),
                ..Default::default()
            }),
        )
        .unwrap();
    assert!(matches!(recorded, process_registry::Recorded::Dispatch(_)));
    println!("child-ready");
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn a_killed_workers_running_rows_become_unknown_once_its_lease_runs_out() {
    use std::io::BufRead as _;
    use std::process::{Command, Stdio};

    let schema = Schema::new("pgtest", "killed");
    /// Kills the child however the test ends.
    struct Child(std::process::Child);
    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "kill_test_child_worker",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_SCHEMA, &schema.0)
        .stdout(Stdio::piped())
        .spawn()
        .map(Child)
        .unwrap();
    let mut lines = std::io::BufReader::new(child.0.stdout.take().unwrap()).lines();
    assert!(
        lines.any(|line| line.is_ok_and(|line| line.contains("child-ready"))),
        "the child never dispatched"
    );
    let ledger = PostgresLedger::connect_with(&params(), heartbeat_options(&schema.0)).unwrap();
    let gateway = CompletionQueue::builder(ledger)
        .instance("gateway-survivor")
        .config(LedgerConfig::default().with_sweep_interval(Duration::from_secs(3600)))
        .open()
        .unwrap();
    let state = || {
        gateway
            .rows(&process_registry::RowQuery {
                delegation_id: Some("deleg_0000000k".to_owned()),
                ..Default::default()
            })
            .unwrap()
            .first()
            .and_then(|row| row.run_state.clone())
    };
    // Alive (its heartbeat renews its lease): its delegation still runs.
    gateway.sweep().unwrap();
    assert_eq!(state(), Some(process_registry::RunState::Running));

    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    let guard = std::time::Instant::now() + Duration::from_secs(60);
    while state() == Some(process_registry::RunState::Running) {
        assert!(
            std::time::Instant::now() < guard,
            "still running a minute after its owner was killed"
        );
        std::thread::sleep(Duration::from_millis(250));
        gateway.sweep().unwrap();
    }
    assert_eq!(state(), Some(process_registry::RunState::Unknown));
    let claim = gateway
        .claim(&ClaimFilter::any().including_restored())
        .unwrap()
        .expect("the unknown completion is offered");
    match claim.event() {
        Event::AsyncDelegation(event) => {
            assert_eq!(event.status.as_deref(), Some("unknown"));
            assert_eq!(
                event.error.as_deref(),
                Some(process_registry::OWNER_EXITED_ERROR)
            );
        }
        other => panic!("{other:?}"),
    }
    claim.ack().unwrap();
}

/// A ledger of schema version 1 (before session ownership) is moved forward at open: its
/// rows kept, the version recorded, ownership working; a second open finds it current.
#[test]
fn a_version_1_ledger_is_migrated_at_open() {
    let schema = Schema::new("pgtest", "migrate");
    {
        let ledger = PostgresLedger::connect_with(&params(), schema.options(1)).unwrap();
        let queue = CompletionQueue::builder(ledger).open().unwrap();
        queue.put(event("written by version 1"));
    }
    // What version 1 had: no leases, no fence columns.
    client()
        .batch_execute(&format!(
            "DROP TABLE {0}.ledger_leases;
             ALTER TABLE {0}.ledger_rows DROP COLUMN claim_scope, DROP COLUMN claim_epoch;
             UPDATE {0}.ledger_meta SET schema_version = 1;",
            schema.0
        ))
        .unwrap();
    let ledger = PostgresLedger::connect_with(&params(), schema.options(1)).unwrap();
    let version: i32 = client()
        .query_one(
            &format!("SELECT schema_version FROM {}.ledger_meta", schema.0),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(version, 2);
    use process_registry::LedgerBackend as _;
    assert_eq!(
        ledger.acquire_scope("platform:a", "gw", 30.0).unwrap(),
        Some(1)
    );
    let queue = CompletionQueue::builder(ledger).open().unwrap();
    let kept = queue.try_take().expect("the version 1 row");
    assert_eq!(kept, event("written by version 1"));
    drop(queue);
    // Current now: opened again as it is.
    PostgresLedger::connect_with(&params(), schema.options(1)).unwrap();
}
