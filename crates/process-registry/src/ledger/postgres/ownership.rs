//! Session ownership on PostgreSQL: leases on scopes (`ledger_leases`), timed on the
//! server's clock so that every machine of a fleet reads them alike, and claims fenced by
//! them.
//!
//! Lock order: a lease row before the ledger rows it fences. A takeover updates the lease
//! and then puts the stale claims back; a fenced claim share-locks the lease while it
//! checks it, so a claim racing a takeover either lands before it (and is put back by
//! it) or sees the new holder and fails.

use super::{read_error, write_error, PostgresLedger};
use crate::ledger::backend::ScopeLease;
use crate::LedgerError;

/// Seconds since the Unix epoch on the server's clock.
const SERVER_NOW: &str = "extract(epoch FROM clock_timestamp())";

/// While claimed, the fence the claim was made under (if any) still has its holder and
/// epoch: what settles and renewals are guarded by.
pub(super) const FENCE_HOLDS: &str = "(claim_scope IS NULL OR EXISTS (
     SELECT 1 FROM ledger_leases l
     WHERE l.scope = ledger_rows.claim_scope AND l.holder = ledger_rows.claimed_by
       AND l.epoch = ledger_rows.claim_epoch))";

/// The guard a fenced claim adds to its `WHERE` (`scope`, `holder`, `epoch`: its
/// parameters): `holder` holds the lease on `scope` at `epoch`, running on the server's
/// clock. It share-locks the lease while the claim is made (the lock order above).
pub(super) fn lease_held(scope: &str, holder: &str, epoch: &str) -> String {
    format!(
        " AND EXISTS (SELECT 1 FROM ledger_leases
                      WHERE scope = {scope} AND holder = {holder} AND epoch = {epoch}
                        AND lease_until > {SERVER_NOW}
                      FOR SHARE)"
    )
}

/// Puts the claims of scope `$1` that are not of epoch `$2` back to pending (`$2` NULL:
/// every claim of the scope).
const RECLAIM: &str = "UPDATE ledger_rows
     SET delivery = 'pending', claim_id = NULL, claimed_by = NULL, lease_until = NULL,
         claim_scope = NULL, claim_epoch = NULL, possible_redelivery = true
     WHERE delivery = 'claimed' AND claim_scope = $1
       AND ($2::bigint IS NULL OR claim_epoch <> $2::bigint)";

/// An epoch as a parameter (a `bigint`).
pub(super) fn epoch_param(epoch: u64) -> i64 {
    i64::try_from(epoch).unwrap_or(i64::MAX)
}

impl PostgresLedger {
    pub(super) fn acquire(
        &self,
        scope: &str,
        holder: &str,
        lease_seconds: f64,
    ) -> Result<Option<u64>, LedgerError> {
        let (scope, holder) = (scope.to_owned(), holder.to_owned());
        self.run(write_error, move |session| {
            let mut transaction = session.client()?.transaction()?;
            let granted = transaction.query_opt(
                &format!(
                    "INSERT INTO ledger_leases AS l (scope, holder, epoch, lease_until)
                     VALUES ($1, $2, 1, {SERVER_NOW} + $3::float8)
                     ON CONFLICT (scope) DO UPDATE
                     SET epoch = CASE WHEN l.holder = EXCLUDED.holder THEN l.epoch ELSE l.epoch + 1 END,
                         holder = EXCLUDED.holder, lease_until = EXCLUDED.lease_until
                     WHERE l.holder = EXCLUDED.holder OR l.holder = ''
                        OR l.lease_until <= {SERVER_NOW}
                     RETURNING epoch"
                ),
                &[&scope, &holder, &lease_seconds],
            )?;
            let Some(granted) = granted else {
                transaction.commit()?;
                return Ok(None);
            };
            let epoch: i64 = granted.try_get(0)?;
            transaction.execute(RECLAIM, &[&scope, &Some(epoch)])?;
            transaction.commit()?;
            Ok(Some(u64::try_from(epoch).unwrap_or(0)))
        })
    }

    pub(super) fn release(
        &self,
        scope: &str,
        holder: &str,
        epoch: u64,
    ) -> Result<bool, LedgerError> {
        let (scope, holder, epoch) = (scope.to_owned(), holder.to_owned(), epoch_param(epoch));
        self.run(write_error, move |session| {
            let mut transaction = session.client()?.transaction()?;
            let released = transaction.execute(
                &format!("UPDATE ledger_leases SET holder = '', lease_until = LEAST(lease_until, {SERVER_NOW})
                 WHERE scope = $1 AND holder = $2 AND holder <> '' AND epoch = $3"),
                &[&scope, &holder, &epoch],
            )?;
            if released == 1 {
                transaction.execute(RECLAIM, &[&scope, &None::<i64>])?;
            }
            transaction.commit()?;
            Ok(released == 1)
        })
    }

    pub(super) fn leases(&self) -> Result<Vec<ScopeLease>, LedgerError> {
        let rows = self.run(read_error, |session| {
            session.query(
                "SELECT scope, holder, epoch, lease_until FROM ledger_leases ORDER BY scope",
                &[],
            )
        })?;
        rows.iter()
            .map(|row| {
                Ok(ScopeLease {
                    scope: row.try_get(0).map_err(read_error)?,
                    holder: row.try_get(1).map_err(read_error)?,
                    epoch: u64::try_from(row.try_get::<_, i64>(2).map_err(read_error)?)
                        .unwrap_or(0),
                    lease_until: row.try_get(3).map_err(read_error)?,
                })
            })
            .collect()
    }
}
