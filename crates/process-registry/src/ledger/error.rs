//! What can go wrong with a ledger.

/// Why a ledger could not be opened, read or written. Every variant says what to do in
/// its text; none is ever a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The file exists but is not a completion ledger (another program's database, or
    /// not a database at all). It was not changed.
    #[error("{path} is not a completion ledger ({reason}); it was left untouched")]
    NotALedger {
        /// The file.
        path: String,
        /// What was found instead.
        reason: String,
    },
    /// The file is a completion ledger but cannot be read. It was not changed.
    #[error("the completion ledger {path} is corrupt ({reason}); it was left untouched")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The file was written by a newer version of this crate. It was not changed.
    #[error(
        "the completion ledger {path} has schema version {found}, newer than the {supported} \
         this build knows; it was left untouched (upgrade this program to read it)"
    )]
    NewerSchema {
        /// The file.
        path: String,
        /// Its schema version.
        found: u32,
        /// The newest this build reads.
        supported: u32,
    },
    /// A write failed: a read-only file, a full disk, a lost connection.
    #[error("the completion ledger could not be written: {reason}")]
    Unwritable {
        /// The store's explanation.
        reason: String,
    },
    /// The ledger cannot be used at all (its store is gone, a thread it needs could not
    /// be started).
    #[error("the completion ledger is unavailable: {reason}")]
    Unavailable {
        /// What is missing.
        reason: String,
    },
    /// A read failed.
    #[error("the completion ledger could not be read: {reason}")]
    Unreadable {
        /// The store's explanation.
        reason: String,
    },
}

/// Why a claim could not be settled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettleError {
    /// The claim's lease ran out and the row was claimed again (or settled) by someone
    /// else: this claim may no longer decide anything. Whatever it delivered may be
    /// delivered again, flagged as a possible redelivery.
    #[error("the claim was lost: its lease ran out and the completion was claimed again")]
    ClaimLost,
    /// The ledger could not record the decision; the claim stays as it was and its lease
    /// runs out, after which the completion is offered again.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}
