//! The PostgreSQL ledger's schema: made when missing, checked as ours, moved forward by
//! versioned migrations at open.

use super::connection::Session;
use super::{channel, describe, quoted};
use crate::LedgerError;

/// What `ledger_meta.application` says in a schema of ours.
const APPLICATION: &str = "delegation-completion-ledger";
/// The schema version this build writes and reads: the last of [`MIGRATIONS`].
pub(super) const SCHEMA_VERSION: i32 = 2;

/// Version 1's tables, made in one transaction when the schema has none (`{channel}`:
/// the schema's notification channel); [`MIGRATIONS`] then bring them to
/// [`SCHEMA_VERSION`], as they do an older ledger's.
pub(super) const SCHEMA: &str = "
CREATE TABLE ledger_meta (
    id             integer PRIMARY KEY CHECK (id = 1),
    application    text NOT NULL,
    schema_version integer NOT NULL
);
CREATE TABLE ledger_rows (
    seq                 bigserial PRIMARY KEY,
    key                 text,
    delegation_id       text UNIQUE,
    kind                text NOT NULL,
    session_key         text NOT NULL,
    run_state           text,
    status              text,
    delivery            text,
    attempts            integer NOT NULL DEFAULT 0,
    reason              text,
    owner               text NOT NULL,
    claim_id            bigint,
    claimed_by          text,
    restored            boolean NOT NULL DEFAULT false,
    possible_redelivery boolean NOT NULL DEFAULT false,
    created_at          double precision NOT NULL,
    completed_at        double precision,
    delivered_at        double precision,
    not_before          double precision,
    lease_until         double precision,
    event               text NOT NULL
);
CREATE TABLE ledger_instances (
    instance    text PRIMARY KEY,
    lease_until double precision NOT NULL,
    started_at  double precision NOT NULL
);
CREATE INDEX ledger_open ON ledger_rows (seq) WHERE delivery IN ('pending', 'claimed');
CREATE INDEX ledger_running ON ledger_rows (owner) WHERE run_state = 'running';
CREATE INDEX ledger_delivered ON ledger_rows (delivered_at) WHERE delivery = 'delivered';
CREATE FUNCTION ledger_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_ARGV[0], '');
    RETURN NULL;
END
$$;
CREATE TRIGGER ledger_claimable AFTER INSERT OR UPDATE ON ledger_rows
    FOR EACH ROW WHEN (NEW.delivery = 'pending')
    EXECUTE FUNCTION ledger_notify('{channel}');
";

/// The changes from each version to the next, in order: `(version reached, SQL)`. A
/// ledger is only ever moved forward, inside the transaction (and the advisory lock) of
/// its open; a process of an older build then refuses it as newer.
pub(super) const MIGRATIONS: &[(i32, &str)] = &[(
    2,
    // Session ownership: leases on scopes, and the fence a claim was made under.
    "ALTER TABLE ledger_rows ADD COLUMN claim_scope text, ADD COLUMN claim_epoch bigint;
     CREATE TABLE ledger_leases (
         scope       text PRIMARY KEY,
         holder      text NOT NULL,
         epoch       bigint NOT NULL,
         lease_until double precision NOT NULL
     );
     CREATE INDEX ledger_fenced ON ledger_rows (claim_scope) WHERE delivery = 'claimed';",
)];

/// Runs the migrations past `from` and records the version reached.
fn migrate(transaction: &mut postgres::Transaction<'_>, from: i32) -> Result<(), postgres::Error> {
    for (version, sql) in MIGRATIONS {
        if *version > from {
            transaction.batch_execute(sql)?;
        }
    }
    if from < SCHEMA_VERSION {
        transaction.execute(
            "UPDATE ledger_meta SET schema_version = $1 WHERE id = 1",
            &[&SCHEMA_VERSION],
        )?;
    }
    Ok(())
}

/// Makes the schema a ledger when it holds no object; otherwise checks that it is one this
/// build reads. Serialized between processes by an advisory lock, in one transaction —
/// with no statement timeout: a migration (which may read a big table to build an index)
/// must finish once begun, and an open that waits for another process's migration waits
/// for it to end, not for a timer.
pub(super) fn check_or_create_schema(
    session: &mut Session,
    schema: &str,
    shown: &str,
) -> Result<(), LedgerError> {
    let unavailable = |error: postgres::Error| LedgerError::Unavailable {
        reason: format!("{shown}: {}", describe(&error)),
    };
    let client = session.client().map_err(unavailable)?;
    let mut transaction = client.transaction().map_err(unavailable)?;
    transaction
        .batch_execute("SET LOCAL statement_timeout = 0")
        .map_err(unavailable)?;
    transaction
        .execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            &[&format!("delegation-ledger {schema}")],
        )
        .map_err(unavailable)?;
    transaction
        .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", quoted(schema)))
        .map_err(unavailable)?;
    // Every object in the schema — tables, views, sequences, functions, types — not only
    // tables: a schema is empty, and may become a ledger, only when it holds none.
    let objects: i64 = transaction
        .query_one(
            "SELECT (SELECT count(*) FROM pg_class WHERE relnamespace = n.oid)
                  + (SELECT count(*) FROM pg_proc WHERE pronamespace = n.oid)
                  + (SELECT count(*) FROM pg_type
                     WHERE typnamespace = n.oid AND typrelid = 0 AND typcategory <> 'A')
             FROM pg_namespace n WHERE n.nspname = $1",
            &[&schema],
        )
        .map_err(unavailable)?
        .try_get(0)
        .map_err(unavailable)?;
    let has_meta: bool = transaction
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = 'ledger_meta')",
            &[&schema],
        )
        .map_err(unavailable)?
        .try_get(0)
        .map_err(unavailable)?;
    if objects == 0 {
        transaction
            .batch_execute(&SCHEMA.replace("{channel}", &channel(schema)))
            .map_err(unavailable)?;
        transaction
            .execute(
                "INSERT INTO ledger_meta (id, application, schema_version) VALUES (1, $1, 1)",
                &[&APPLICATION],
            )
            .map_err(unavailable)?;
        migrate(&mut transaction, 1).map_err(unavailable)?;
        return transaction.commit().map_err(unavailable);
    }
    let not_ours = |reason: String| LedgerError::NotALedger {
        path: shown.to_owned(),
        reason,
    };
    if !has_meta {
        return Err(not_ours(format!(
            "it holds {objects} objects of another program"
        )));
    }
    let meta = transaction
        .query_opt(
            "SELECT application, schema_version FROM ledger_meta WHERE id = 1",
            &[],
        )
        .map_err(|error| {
            not_ours(format!(
                "its ledger_meta is not ours ({})",
                describe(&error)
            ))
        })?;
    let Some(meta) = meta else {
        return Err(LedgerError::Corrupt {
            path: shown.to_owned(),
            reason: "ledger_meta is empty".to_owned(),
        });
    };
    let (Ok(application), Ok(version)) = (meta.try_get::<_, String>(0), meta.try_get::<_, i32>(1))
    else {
        return Err(not_ours(
            "its ledger_meta has columns of other types".to_owned(),
        ));
    };
    if application != APPLICATION {
        return Err(not_ours(format!("its ledger_meta names {application:?}")));
    }
    if version > SCHEMA_VERSION {
        return Err(LedgerError::NewerSchema {
            path: shown.to_owned(),
            found: u32::try_from(version).unwrap_or(u32::MAX),
            supported: SCHEMA_VERSION.unsigned_abs(),
        });
    }
    if version < 1 {
        return Err(LedgerError::Corrupt {
            path: shown.to_owned(),
            reason: format!("schema version {version} is not one this crate ever wrote"),
        });
    }
    migrate(&mut transaction, version).map_err(unavailable)?;
    transaction.commit().map_err(unavailable)
}
