//! Ending a transaction explicitly when it writes nothing.
//!
//! A `sqlx` transaction dropped without `commit` or `rollback` is rolled back only when its
//! connection is next used, so its row locks outlive the call that returned: the caller's
//! next statement, on another connection of the pool, finds them held, and a claim's
//! `SKIP LOCKED` skips a conversation nobody is writing to (seen as a turn that is not
//! claimable right after a refused `reject` submit). Calls whose expected outcomes end the
//! transaction early end it here, at the cost of the ROLLBACK round trip they would pay later
//! anyway.

use lobu_core::Result;
use sqlx::{Postgres, Transaction};

/// What a transaction's body decided.
#[derive(Debug)]
pub(crate) enum Ending<T> {
    /// It wrote: commit, then answer `T`.
    Commit(T),
    /// It wrote nothing (a refusal comes as an error): roll back, then answer `T`.
    RollBack(T),
}

/// End `tx` as `outcome` says, now: commit what wrote, roll back the rest (errors too). A
/// rollback that fails is only logged: the connection is then discarded by the pool, which
/// ends the transaction on the server.
pub(crate) async fn end<T>(
    tx: Transaction<'_, Postgres>,
    what: &'static str,
    outcome: Result<Ending<T>>,
) -> Result<T> {
    match outcome {
        Ok(Ending::Commit(answer)) => {
            tx.commit().await.map_err(crate::store::db(what))?;
            Ok(answer)
        }
        Ok(Ending::RollBack(answer)) => {
            roll_back(tx).await;
            Ok(answer)
        }
        Err(error) => {
            roll_back(tx).await;
            Err(error)
        }
    }
}

async fn roll_back(tx: Transaction<'_, Postgres>) {
    if let Err(error) = tx.rollback().await {
        tracing::debug!(%error, "a rollback failed; the pool drops the connection");
    }
}
