//! The PostgreSQL ledger's housekeeping under its statement timeout (from a hostile
//! review): a prune of any backlog makes progress, skips rows another session holds and
//! does not keep a queue from opening; the open's migration is not cancelled; a refused
//! write is retried whatever the prune does; a timeout longer than the server takes still
//! connects. Backlogs are scaled down (300 000 rows against a 20 ms timeout stand for the
//! tens of millions a 30 s one would take). Schemas `housekeeping_*`, dropped at the end.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use process_registry::{CompletionQueue, LedgerBackend, PostgresLedger};

mod pg_support;

use pg_support::{client, Schema};

/// `count` delivered rows, delivered long ago (past any retention), written straight
/// into the schema's table: a ledger whose pruning fell behind (an outage, a burst, a
/// retention shortened by hand).
fn delivered_backlog(schema: &Schema, count: i64) {
    client()
        .batch_execute(&format!(
            "INSERT INTO {s}.ledger_rows (key, kind, session_key, delivery, owner, created_at, delivered_at, event)
             SELECT 'event-' || n, 'watch_overflow_tripped', '', 'delivered', 'gone', 1.0, 1.0,
                    '{{\"type\":\"watch_overflow_tripped\",\"message\":\"old\"}}'
             FROM generate_series(1, {count}) AS n",
            s = schema.0
        ))
        .unwrap();
}

/// A ledger in `schema` made with no timeout, then given a backlog of `rows` delivered
/// rows, and opened again under a 20 ms statement timeout.
fn with_backlog(schema: &Schema, rows: i64) -> PostgresLedger {
    drop(PostgresLedger::connect_with(&pg_support::params(), schema.options(1)).unwrap());
    delivered_backlog(schema, rows);
    PostgresLedger::connect_with(
        &pg_support::params(),
        schema
            .options(1)
            .with_statement_timeout(Duration::from_millis(20)),
    )
    .unwrap()
}

fn rows_left(schema: &Schema) -> i64 {
    client()
        .query_one(
            &format!("SELECT count(*) FROM {}.ledger_rows", schema.0),
            &[],
        )
        .unwrap()
        .get(0)
}

/// A prune deletes in batches (halved when one is cancelled): a backlog larger than one
/// statement could delete within the timeout is still pruned. (One unbatched `DELETE`
/// would be cancelled at every sweep and never finish.)
#[test]
fn a_prune_of_a_big_backlog_makes_progress_under_the_statement_timeout() {
    let schema = Schema::new("housekeeping", "prune_backlog");
    // The schema made with no timeout, then the backlog written.
    let ledger = with_backlog(&schema, 300_000);
    let mut errors = Vec::new();
    for _ in 0..5 {
        if let Err(error) = ledger.prune_delivered(1e12) {
            errors.push(error.to_string());
        }
    }
    assert_eq!(
        rows_left(&schema),
        0,
        "five prunes deleted nothing; each failed: {errors:?}"
    );
}

/// The queue's open runs a sweep, whose prune error `open` would return: a backlog the
/// prune could not delete within the timeout would keep every process from opening its
/// queue on the ledger (and a running one's sweep from getting past the prune, before
/// it retries its refused writes: `retry_outbox` comes after it).
#[test]
fn a_queue_opens_on_a_ledger_with_a_big_delivered_backlog() {
    let schema = Schema::new("housekeeping", "open_backlog");
    let ledger = with_backlog(&schema, 300_000);
    let opened = CompletionQueue::builder(ledger).open();
    assert!(
        opened.is_ok(),
        "the queue cannot open: {:?}",
        opened.err().map(|error| error.to_string())
    );
}

/// A delivered row locked by another session (an operator's `SELECT … FOR UPDATE`, a
/// backup tool, another process's long transaction) is skipped by the prune (left for a
/// later sweep), so it cannot hold the open's sweep past the timeout.
#[test]
fn a_queue_opens_while_another_session_holds_a_delivered_row() {
    let schema = Schema::new("housekeeping", "open_locked");
    drop(PostgresLedger::connect_with(&pg_support::params(), schema.options(1)).unwrap());
    delivered_backlog(&schema, 1);
    let mut locker = client();
    locker
        .batch_execute(&format!(
            "BEGIN; SELECT * FROM {}.ledger_rows FOR UPDATE",
            schema.0
        ))
        .unwrap();
    let params = pg_support::params();
    let options = schema
        .options(1)
        .with_statement_timeout(Duration::from_millis(300));
    let (done, opened) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let opened = PostgresLedger::connect_with(&params, options)
            .and_then(|ledger| CompletionQueue::builder(ledger).open())
            .map(drop)
            .map_err(|error| error.to_string());
        let _ = done.send(opened);
    });
    // The other session ends after a second (well past the 300 ms timeout).
    std::thread::sleep(Duration::from_secs(1));
    locker.batch_execute("ROLLBACK").unwrap();
    let opened = opened.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(opened.is_ok(), "the open failed: {opened:?}");
}

/// `statement_timeout` is an `int` of milliseconds on the server (at most 2 147 483 647,
/// about 24.8 days). A longer `PostgresOptions::statement_timeout` — `Duration::MAX` or
/// 30 days, what a caller writes for "effectively none" — is sent as that longest: sent
/// as is, the server would refuse every connection at startup.
#[test]
fn a_long_statement_timeout_does_not_refuse_every_connection() {
    let schema = Schema::new("housekeeping", "long_timeout");
    for timeout in [Duration::MAX, Duration::from_secs(30 * 24 * 3600)] {
        let opened = PostgresLedger::connect_with(
            &pg_support::params(),
            schema.options(1).with_statement_timeout(timeout),
        );
        assert!(
            opened.is_ok(),
            "{timeout:?}: {:?}",
            opened.err().map(|error| error.to_string())
        );
    }
}

/// The migration at open (version 1 → 2: `ALTER TABLE`, and `CREATE INDEX ledger_fenced`,
/// which reads the whole table) runs with no statement timeout: held to it, a big
/// ledger's migration would be cancelled and rolled back at every open, and a new build
/// could never open the ledger with its default options.
#[test]
fn a_migration_of_a_big_ledger_at_open_is_not_cancelled() {
    migrate_under_a_20ms_timeout("migrate_big", 300_000);
}

/// The control: the same migration of a small ledger under the same timeout opens.
#[test]
fn a_migration_of_a_small_ledger_under_the_same_timeout_opens() {
    migrate_under_a_20ms_timeout("migrate_small", 10);
}

fn migrate_under_a_20ms_timeout(name: &str, rows: i64) {
    let schema = Schema::new("housekeeping", name);
    drop(PostgresLedger::connect_with(&pg_support::params(), schema.options(1)).unwrap());
    // Back to version 1, as an older build left it.
    client()
        .batch_execute(&format!(
            "SET search_path TO {s};
             DROP INDEX ledger_fenced; DROP TABLE ledger_leases;
             ALTER TABLE ledger_rows DROP COLUMN claim_scope, DROP COLUMN claim_epoch;
             UPDATE ledger_meta SET schema_version = 1;",
            s = schema.0
        ))
        .unwrap();
    delivered_backlog(&schema, rows);
    let mut errors = Vec::new();
    for _ in 0..3 {
        match PostgresLedger::connect_with(
            &pg_support::params(),
            schema
                .options(1)
                .with_statement_timeout(Duration::from_millis(20)),
        ) {
            Ok(_) => return,
            Err(error) => errors.push(error.to_string()),
        }
    }
    panic!("three opens could not migrate the ledger: {errors:?}");
}

fn overflow(message: &str) -> process_registry::Event {
    process_registry::Event::WatchOverflowTripped(process_registry::WatchOverflow {
        message: Some(message.to_owned()),
        ..process_registry::WatchOverflow::default()
    })
}

/// `put` keeps an event the store refused in memory, "written by a later sweep": a sweep
/// on a ledger with a big backlog to prune writes it (the sweep's steps each run, and the
/// prune makes progress).
#[test]
fn a_refused_put_is_written_by_a_later_sweep_while_the_prune_cannot_finish() {
    let schema = Schema::new("housekeeping", "outbox_starved");
    let ledger = PostgresLedger::connect_with(
        &pg_support::params(),
        schema
            .options(1)
            .with_statement_timeout(Duration::from_millis(20)),
    )
    .unwrap();
    let queue = CompletionQueue::builder(ledger).open().unwrap();
    // Another session holds the table for a moment: the put is cancelled at the timeout
    // and kept in the outbox.
    let mut locker = client();
    locker
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE {}.ledger_rows IN SHARE MODE",
            schema.0
        ))
        .unwrap();
    queue.put(overflow("refused once"));
    locker.batch_execute("ROLLBACK").unwrap();
    // Then the delivered backlog (the prune now outlasts the timeout).
    delivered_backlog(&schema, 300_000);
    let mut sweeps = Vec::new();
    for _ in 0..5 {
        sweeps.push(queue.sweep().map_err(|error| error.to_string()));
    }
    let taken = queue.try_take();
    assert!(
        taken.is_some(),
        "the refused event was never written; the sweeps: {sweeps:?}"
    );
}
