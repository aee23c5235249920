//! The PostgreSQL ledger at its edges, from a hostile review: schemas that are not ours
//! in ways the first check missed, crossed recoveries that deadlocked, a terminated
//! connection, the listener's reconnect, and exactly-once delivery with many handles
//! (processes) producing and consuming at once. Schemas `review_*`, dropped at the end.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use process_registry::{
    CandidateQuery, ClaimFilter, ClaimToken, CompletionQueue, Event, Finish, LedgerBackend,
    LedgerConfig, LedgerError, NewClaim, NewPending, NewRunning, Ownership, PostgresLedger,
    PostgresOptions, RunState, SessionMatch, Settle, WatchOverflow,
};

mod pg_support;

use pg_support::{client, Schema};

fn base() -> String {
    pg_support::params()
}

/// The connection string with an application name, to find the ledger's connections.
fn params(app: &str) -> String {
    format!("{} application_name={app}", base())
}

fn event(message: &str) -> Event {
    Event::WatchOverflowTripped(WatchOverflow {
        message: Some(message.to_owned()),
        ..WatchOverflow::default()
    })
}

fn message(event: &Event) -> String {
    match event {
        Event::WatchOverflowTripped(w) => w.message.clone().unwrap_or_default(),
        other => panic!("{other:?}"),
    }
}

fn any() -> CandidateQuery<'static> {
    CandidateQuery {
        kinds: &[],
        except_kinds: &[],
        sessions: SessionMatch::Any,
        restored: true,
        after_seq: 0,
    }
}

fn put(ledger: &PostgresLedger, owner: &str, text: &str) -> u64 {
    ledger
        .insert_pending(NewPending {
            owner,
            event: event(text),
        })
        .map_err(|refused| refused.error)
        .unwrap()
}

fn claim_as(ledger: &PostgresLedger, seq: u64, id: u64, owner: &str) {
    let claimed = ledger
        .claim(
            seq,
            NewClaim {
                token: ClaimToken { id, owner },
                lease_seconds: 3600.0,
            },
        )
        .unwrap();
    assert!(claimed.is_some());
}

/// An application name of this process's own: connections are found (and terminated)
/// by it, and another run of these tests on the same server must not be counted.
fn app_name(base: &str) -> String {
    format!("{base}_{}", std::process::id())
}

/// Terminates the matching backends and waits (up to 10 s) until each has exited: by
/// then its FATAL message has been sent, so the client reads the server's word before it
/// can send another call. (Without the wait, a call sent before a slow backend handled
/// its signal gets the FATAL as its answer and then the closed socket, and fails with
/// "connection closed", which is not retried; and the terminated backend, still listed,
/// passes a check for the listener's new connection.)
fn terminate(app: &str, query_like: &str) -> i64 {
    client()
        .query_one(
            "SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity
             WHERE application_name = $1 AND query LIKE $2",
            &[&app, &query_like],
        )
        .unwrap()
        .get(0)
}

// ---------------------------------------------------------------------------------------
// Schema checks

/// A schema that holds another program's views (or functions, sequences, types) but no
/// table is not ours: it must be refused and left untouched, not turned into a ledger.
#[test]
fn a_schema_with_another_programs_views_only_is_refused() {
    let schema = Schema::new("review", "views");
    client()
        .batch_execute(&format!(
            "CREATE SCHEMA {0}; CREATE VIEW {0}.report AS SELECT 1 AS x;
             CREATE SEQUENCE {0}.invoice_numbers;",
            schema.0
        ))
        .unwrap();
    let opened = PostgresLedger::connect_with(&params("review_views"), schema.options(1));
    let relations: Vec<String> = client()
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY 1",
            &[&schema.0],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(
        matches!(opened, Err(LedgerError::NotALedger { .. })),
        "opened: {:?}; tables now in their schema: {relations:?}",
        opened.map(|_| "a ledger")
    );
    assert!(relations.is_empty(), "{relations:?}");
}

/// Another program's `ledger_meta` whose columns have other types: refused as not ours,
/// not a panic on the connection thread (reported as "panicked").
#[test]
fn a_ledger_meta_of_other_types_is_refused_as_not_ours() {
    let schema = Schema::new("review", "meta_types");
    client()
        .batch_execute(&format!(
            "CREATE SCHEMA {0};
             CREATE TABLE {0}.ledger_meta (id int, application int, schema_version bigint);
             INSERT INTO {0}.ledger_meta VALUES (1, 42, 1);",
            schema.0
        ))
        .unwrap();
    let error =
        PostgresLedger::connect_with(&params("review_meta"), schema.options(1)).unwrap_err();
    assert!(matches!(error, LedgerError::NotALedger { .. }), "{error:?}");
}

/// Many handles opening the same new schema at once (separate processes would).
#[test]
fn concurrent_first_opens_all_succeed() {
    let schema = Schema::new("review", "first_opens");
    let name = schema.0.clone();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let name = name.clone();
            std::thread::spawn(move || {
                PostgresLedger::connect_with(
                    &params("review_first"),
                    PostgresOptions::default()
                        .with_schema(name)
                        .with_connections(1),
                )
                .map(|_| ())
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap().unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// Concurrency

/// Two instances that died, each having claimed the other's completion, recovered at the
/// same time by two live processes (each sweep adopts the orphans of every dead owner):
/// `adopt_orphans` locks rows in two statements of one transaction, in an order that
/// depends on the owner, so the two recoveries deadlock and one of them fails.
#[test]
fn crossed_adoptions_do_not_deadlock() {
    let schema = Schema::new("review", "crossed");
    let app = &app_name("review_crossed");
    let one = Arc::new(PostgresLedger::connect_with(&params(app), schema.options(2)).unwrap());
    let two = Arc::new(PostgresLedger::connect_with(&params(app), schema.options(2)).unwrap());
    // r3: A's, pending; r1: A's, claimed by B; r2: B's, claimed by A.
    let r3 = put(&one, "dead-a", "r3");
    let r1 = put(&one, "dead-a", "r1");
    let r2 = put(&one, "dead-b", "r2");
    claim_as(&one, r1, 1, "dead-b");
    claim_as(&one, r2, 2, "dead-a");

    // Another session holds r3 for a moment (anything may: a claim, a settle, an admin),
    // so that the first recovery is inside its second statement when the other starts.
    let mut holder = client();
    let mut hold = holder.transaction().unwrap();
    hold.execute(
        &format!(
            "SELECT 1 FROM {}.ledger_rows WHERE seq = $1 FOR UPDATE",
            schema.0
        ),
        &[&(r3 as i64)],
    )
    .unwrap();

    let waiting_on_locks = || -> i64 {
        client()
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1
                 AND wait_event_type = 'Lock'",
                &[&app],
            )
            .unwrap()
            .get(0)
    };
    let wait_for = |n: i64| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while waiting_on_locks() < n {
            assert!(Instant::now() < deadline, "never blocked");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let a = {
        let one = one.clone();
        std::thread::spawn(move || one.adopt_orphans("dead-a"))
    };
    wait_for(1);
    let b = {
        let two = two.clone();
        std::thread::spawn(move || two.adopt_orphans("dead-b"))
    };
    // With the rows locked in one order, the second recovery either waits behind the
    // first or is done already; in opposite orders it would be waiting on the first
    // while the first waits on it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while waiting_on_locks() < 2 && !b.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the second recovery neither waits nor ends"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    hold.commit().unwrap();
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    assert!(
        a.is_ok() && b.is_ok(),
        "adopt(dead-a): {a:?}\nadopt(dead-b): {b:?}"
    );
}

/// Producers and consumers on several handles (processes) at once: every completion is
/// delivered exactly once, whether claimed and acked, released and claimed again, or taken.
#[test]
fn many_handles_deliver_every_completion_exactly_once() {
    let schema = Schema::new("review", "exactly_once");
    let app = &app_name("review_exactly");
    let handles: Vec<Arc<PostgresLedger>> = (0..4)
        .map(|_| Arc::new(PostgresLedger::connect_with(&params(app), schema.options(3)).unwrap()))
        .collect();
    const PER_PRODUCER: usize = 300;
    const PRODUCERS: usize = 4;
    let done = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let ledger = handles[p % handles.len()].clone();
        let errors = errors.clone();
        producers.push(std::thread::spawn(move || {
            for i in 0..PER_PRODUCER {
                let text = format!("{p}-{i}");
                if p % 2 == 0 {
                    // A run recorded, then finished: finish_run gives the row a new seq
                    // while claimers are scanning.
                    let id = format!("run-{text}");
                    let started = ledger.insert_running(NewRunning {
                        delegation_id: &id,
                        session_key: "",
                        owner: "producer",
                        skeleton: Arc::new(event("running")),
                    });
                    if let Err(e) = started {
                        errors.lock().unwrap().push(format!("insert_running: {e}"));
                        continue;
                    }
                    match ledger.finish_run(Finish {
                        delegation_id: &id,
                        expect_owner: Some("producer"),
                        run_state: RunState::Finished("ok".into()),
                        event: Arc::new(event(&text)),
                        reason: None,
                    }) {
                        Ok(Some(_)) => {}
                        other => errors
                            .lock()
                            .unwrap()
                            .push(format!("finish_run: {other:?}")),
                    }
                } else if let Err(refused) = ledger.insert_pending(NewPending {
                    owner: "producer",
                    event: event(&text),
                }) {
                    errors
                        .lock()
                        .unwrap()
                        .push(format!("put: {}", refused.error));
                }
            }
        }));
    }
    let mut consumers = Vec::new();
    for c in 0..8usize {
        let ledger = handles[c % handles.len()].clone();
        let (done, delivered, errors) = (done.clone(), delivered.clone(), errors.clone());
        consumers.push(std::thread::spawn(move || {
            let owner = format!("consumer-{c}");
            let mut id = (c as u64) << 32;
            let mut n = 0u64;
            loop {
                n += 1;
                if c % 4 == 0 {
                    match ledger.take_next(&any()) {
                        Ok(Some(row)) => {
                            *delivered
                                .lock()
                                .unwrap()
                                .entry(message(&row.event))
                                .or_default() += 1;
                        }
                        Ok(None) if done.load(Ordering::SeqCst) => return,
                        Ok(None) => std::thread::yield_now(),
                        Err(e) => errors.lock().unwrap().push(format!("take: {e}")),
                    }
                    continue;
                }
                id += 1;
                let token = ClaimToken { id, owner: &owner };
                let new = NewClaim {
                    token,
                    lease_seconds: 3600.0,
                };
                // Half the claimers claim by seq, from a candidate list (racing claim_next).
                let claimed = if c % 2 == 1 {
                    match ledger.candidates(&any(), 4) {
                        Ok(list) => {
                            let mut got = Ok(None);
                            for candidate in list {
                                got = ledger.claim(candidate.seq, new);
                                if !matches!(got, Ok(None)) {
                                    break;
                                }
                            }
                            got
                        }
                        Err(e) => Err(e),
                    }
                } else {
                    ledger.claim_next(&any(), new)
                };
                match claimed {
                    Ok(Some(row)) => {
                        let settle = if n.is_multiple_of(5) {
                            Settle::Defer
                        } else {
                            Settle::Ack
                        };
                        let is_ack = matches!(settle, Settle::Ack);
                        match ledger.settle(row.seq, token, settle) {
                            Ok(true) if is_ack => {
                                *delivered
                                    .lock()
                                    .unwrap()
                                    .entry(message(&row.event))
                                    .or_default() += 1;
                            }
                            Ok(true) => {}
                            Ok(false) => errors
                                .lock()
                                .unwrap()
                                .push(format!("settle of a fresh claim refused: {}", row.seq)),
                            Err(e) => errors.lock().unwrap().push(format!("settle: {e}")),
                        }
                    }
                    Ok(None) if done.load(Ordering::SeqCst) => return,
                    Ok(None) => std::thread::yield_now(),
                    Err(e) => errors.lock().unwrap().push(format!("claim: {e}")),
                }
            }
        }));
    }
    for p in producers {
        p.join().unwrap();
    }
    // Let the consumers drain.
    let deadline = Instant::now() + Duration::from_secs(60);
    while handles[0].count_undelivered().unwrap() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    done.store(true, Ordering::SeqCst);
    for c in consumers {
        c.join().unwrap();
    }
    let errors = errors.lock().unwrap();
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    let delivered = delivered.lock().unwrap();
    let twice: Vec<_> = delivered.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    assert_eq!(delivered.len(), PER_PRODUCER * PRODUCERS, "lost");
}

/// A single producer's completions are claimed in the order they were put.
#[test]
fn a_single_producers_puts_are_claimed_in_order() {
    let schema = Schema::new("review", "fifo");
    let ledger = PostgresLedger::connect_with(&params("review_fifo"), schema.options(4)).unwrap();
    let queue = CompletionQueue::builder(ledger).open().unwrap();
    for i in 0..200 {
        queue.put(event(&i.to_string()));
    }
    for i in 0..200 {
        let claim = queue.claim(&ClaimFilter::any()).unwrap().unwrap();
        assert_eq!(message(claim.event()), i.to_string());
        claim.ack().unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// The server going away

/// The ledger's connection is terminated between two calls (a server restart, a failover,
/// an idle-connection killer): the next call reconnects and works.
#[test]
fn the_call_after_a_terminated_connection_works() {
    let schema = Schema::new("review", "terminated");
    let app = &app_name("review_terminated");
    let ledger = PostgresLedger::connect_with(&params(app), schema.options(1)).unwrap();
    put(&ledger, "me", "before");
    assert_eq!(terminate(app, "%"), 1);
    std::thread::sleep(Duration::from_millis(200));
    let after = ledger.insert_pending(NewPending {
        owner: "me",
        event: event("after"),
    });
    let again = ledger.count_undelivered();
    assert!(
        after.is_ok(),
        "the first call after the termination: {:?}; the next: {again:?}",
        after.map_err(|refused| refused.error)
    );
}

/// The listener's connection is terminated: it reconnects, and a consumer waiting on this
/// handle is woken by another handle's completion afterwards.
#[test]
fn the_listener_reconnects_after_its_connection_is_terminated() {
    let schema = Schema::new("review", "listener");
    let app = &app_name("review_listener");
    let config = LedgerConfig::default().with_sweep_interval(Duration::from_secs(3600));
    let consumer_ledger = PostgresLedger::connect_with(&params(app), schema.options(1)).unwrap();
    let consumer = CompletionQueue::builder(consumer_ledger)
        .instance("gateway")
        .config(config.clone())
        .open()
        .unwrap();
    let producer_ledger =
        PostgresLedger::connect_with(&params("review_listener_p"), schema.options(1)).unwrap();
    assert_eq!(terminate(app, "LISTEN%"), 1);
    // The listener sees the loss and reconnects (it waits 100 ms first).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listening: i64 = client()
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND query LIKE 'LISTEN%'",
                &[&app],
            )
            .unwrap()
            .get(0);
        if listening == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the listener never reconnected");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let wait = consumer.listen();
    put(&producer_ledger, "worker", "after the loss");
    assert!(
        wait.wait_until(Instant::now() + Duration::from_secs(10)),
        "the waiting consumer was never woken"
    );
    drop(consumer);
}

/// A listener that heard nothing for longer than its alive check (2 s) still hears the
/// next notification: a consumer waiting on this handle is woken by another handle's
/// completion (the sweep, an hour away, does not).
#[test]
fn the_listener_hears_a_completion_after_an_idle_alive_check() {
    let schema = Schema::new("review", "idle_listener");
    let config = LedgerConfig::default().with_sweep_interval(Duration::from_secs(3600));
    let consumer_ledger =
        PostgresLedger::connect_with(&params("review_idle_listener"), schema.options(1)).unwrap();
    let consumer = CompletionQueue::builder(consumer_ledger)
        .instance("gateway")
        .config(config)
        .open()
        .unwrap();
    let producer_ledger =
        PostgresLedger::connect_with(&params("review_idle_listener_p"), schema.options(1)).unwrap();
    // Past the listener's first alive check, and a little into its second.
    std::thread::sleep(Duration::from_millis(2500));
    let wait = consumer.listen();
    put(&producer_ledger, "worker", "after an idle while");
    assert!(
        wait.wait_until(Instant::now() + Duration::from_secs(10)),
        "the waiting consumer was never woken"
    );
}

// ---------------------------------------------------------------------------------------
// Released ownership leases

const LEASED: &str = "platform:custom";

fn queue_of(ledger: &Arc<PostgresLedger>, instance: &str) -> CompletionQueue {
    let backend: Arc<dyn LedgerBackend> = ledger.clone();
    CompletionQueue::builder_shared(backend)
        .instance(instance)
        .open()
        .unwrap()
}

/// A lease released by an earlier build (same schema version, so it may run beside this
/// one in a fleet) has `lease_until = -infinity`, not the release's time: it still counts
/// as leased, instead of being forgotten at once as over for a day.
#[test]
fn a_lease_released_by_an_earlier_build_still_counts_as_leased() {
    let schema = Schema::new("review", "legacy_release");
    let ledger = Arc::new(
        PostgresLedger::connect_with(&params("review_legacy_release"), schema.options(2)).unwrap(),
    );
    let a = queue_of(&ledger, "gw-a");
    assert_eq!(ledger.acquire_scope(LEASED, "gw-a", 30.0).unwrap(), Some(1));
    client()
        .batch_execute(&format!(
            "UPDATE {}.ledger_leases SET holder = '', lease_until = '-infinity'::float8",
            schema.0
        ))
        .unwrap();
    drop(a);
    let b = queue_of(&ledger, "gw-b");
    let ownership = Ownership::start(&b, Duration::from_secs(30)).unwrap();
    ownership.renew_now().unwrap();
    assert!(ownership.leases_read());
    assert!(ownership.is_leased(LEASED));
}

/// A released lease (no holder) is taken over at once whatever the server's clock says
/// of its `lease_until` (a clock stepped back after the release).
#[test]
fn a_released_lease_is_taken_over_at_once_whatever_the_clock() {
    let schema = Schema::new("review", "release_clock");
    let ledger = Arc::new(
        PostgresLedger::connect_with(&params("review_release_clock"), schema.options(2)).unwrap(),
    );
    let (_a, _b) = (queue_of(&ledger, "gw-a"), queue_of(&ledger, "gw-b"));
    assert_eq!(ledger.acquire_scope(LEASED, "gw-a", 30.0).unwrap(), Some(1));
    assert!(ledger.release_scope(LEASED, "gw-a", 1).unwrap());
    client()
        .batch_execute(&format!(
            "UPDATE {}.ledger_leases SET lease_until = extract(epoch FROM clock_timestamp()) + 5",
            schema.0
        ))
        .unwrap();
    assert_eq!(
        ledger.acquire_scope(LEASED, "gw-b", 30.0).unwrap(),
        Some(2),
        "a released lease was refused to the standby"
    );
}

/// Locks the ledger's rows from another session (in a transaction its `ROLLBACK` ends)
/// and starts a write behind the lock on a thread: the locking client and the write's
/// answer.
fn a_write_behind_a_lock(
    ledger: &Arc<PostgresLedger>,
    schema: &Schema,
) -> (
    postgres::Client,
    std::sync::mpsc::Receiver<Result<u64, LedgerError>>,
) {
    let mut locker = client();
    locker
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE {}.ledger_rows IN ACCESS EXCLUSIVE MODE",
            schema.0
        ))
        .unwrap();
    let (done, answered) = std::sync::mpsc::channel();
    let held = Arc::clone(ledger);
    std::thread::spawn(move || {
        let answer = held
            .insert_pending(NewPending {
                owner: "me",
                event: event("held"),
            })
            .map_err(|refused| refused.error);
        let _ = done.send(answer);
    });
    (locker, answered)
}

/// A statement held behind another session's lock is cancelled at the handle's statement
/// timeout: the call fails with an error that says so instead of blocking its caller, the
/// connection stays usable, and the call after the lock is released works.
#[test]
fn a_statement_held_past_the_statement_timeout_fails_and_the_next_call_works() {
    let schema = Schema::new("review", "statement_timeout");
    let options = schema
        .options(1)
        .with_statement_timeout(Duration::from_millis(300));
    let ledger = Arc::new(PostgresLedger::connect_with(&base(), options).unwrap());
    put(&ledger, "me", "before");
    let (mut locker, answered) = a_write_behind_a_lock(&ledger, &schema);
    let answer = answered
        .recv_timeout(Duration::from_secs(20))
        .expect("the call returned (a statement with no timeout waits for the lock)");
    let error = answer.expect_err("a write behind the lock fails");
    assert!(
        matches!(&error, LedgerError::Unwritable { reason } if reason.contains("statement timeout")),
        "{error:?}"
    );
    locker.batch_execute("ROLLBACK").unwrap();
    put(&ledger, "me", "after");
    let rows = ledger.candidates(&any(), 10).unwrap();
    let texts: Vec<String> = rows.iter().map(|row| message(&row.event)).collect();
    assert_eq!(texts, ["before", "after"]);
}

/// The connection string's own `options` are kept beside the handle's timeout, and its
/// own `statement_timeout` wins: `0` there (none) leaves a write behind a lock waiting
/// past the handle's 300 ms, until the lock is released.
#[test]
fn a_statement_timeout_in_the_connection_string_wins() {
    let schema = Schema::new("review", "statement_timeout_string");
    let params = format!(
        "{} options='-c lock_timeout=0 -c statement_timeout=0'",
        base()
    );
    let options = schema
        .options(1)
        .with_statement_timeout(Duration::from_millis(300));
    let ledger = Arc::new(PostgresLedger::connect_with(&params, options).unwrap());
    put(&ledger, "me", "before");
    let (mut locker, answered) = a_write_behind_a_lock(&ledger, &schema);
    // Well past the handle's 300 ms: still waiting for the lock.
    assert!(
        answered.recv_timeout(Duration::from_secs(2)).is_err(),
        "the string's statement_timeout=0 was overridden"
    );
    locker.batch_execute("ROLLBACK").unwrap();
    let answer = answered
        .recv_timeout(Duration::from_secs(20))
        .expect("the write went through once the lock was released");
    assert!(answer.is_ok(), "{answer:?}");
}
