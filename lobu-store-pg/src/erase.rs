//! Erasure ([`SessionStore::erase`](lobu_core::SessionStore::erase)): every row of a
//! conversation, of one agent's conversations in an org, or of a whole org, in one
//! transaction that first takes the locks the scope's writers take.
//!
//! The scope is three parameters, org required, agent and conversation NULL for the wider
//! scopes, so the same two statements serve all three. `runs` has no index on a
//! conversation's finished runs (submit and claim never need one), so an erasure scans the
//! runs table; that is bounded by run retention (`prune_runs`) and erasures are rare.

use lobu_core::{AgentId, EraseScope, ErasureReport, Error, Result};
use sqlx::SqlStr;

use crate::store::{PgStore, db, sql};

/// The erasure statements, for one schema.
#[derive(Debug)]
pub(crate) struct EraseSql {
    lock: SqlStr,
    erase: SqlStr,
}

impl EraseSql {
    pub(crate) fn new(schema: &str) -> Self {
        EraseSql {
            lock: sql(include_str!("sql/erase_lock.sql"), schema),
            erase: sql(include_str!("sql/erase.sql"), schema),
        }
    }
}

#[derive(sqlx::FromRow)]
struct Erased {
    conversations: i64,
    snapshots: i64,
    runs: i64,
    events: i64,
    heads: Vec<i64>,
}

impl PgStore {
    /// Round trips: BEGIN, lock (sql/erase_lock.sql), delete (sql/erase.sql), COMMIT. The
    /// delete is a statement of its own so that its snapshot is taken after the locks: a
    /// commit or submit we waited for is then seen, and erased with the rest.
    pub(crate) async fn erase_scope(&self, scope: &EraseScope) -> Result<ErasureReport> {
        let org = scope.org().as_str();
        let agent = scope.agent().map(AgentId::as_str);
        let conversation = match scope {
            EraseScope::Conversation(key) => Some(key.conversation.as_str()),
            EraseScope::Agent(..) | EraseScope::Org(_) => None,
            // A scope added to lobu-core after this store: refused before anything is
            // removed, as erasing a guess at it could remove too much.
            other => {
                return Err(Error::invalid(format!(
                    "this version of lobu-store-pg cannot erase {other:?}; nothing was erased"
                )));
            }
        };
        let statements = &self.inner.erase;
        let mut tx = self.inner.pool.begin().await.map_err(db("erase: begin"))?;
        let _locked: i64 = sqlx::query_scalar(statements.lock.clone())
            .bind(org)
            .bind(agent)
            .bind(conversation)
            .fetch_one(&mut *tx)
            .await
            .map_err(db("erase: lock"))?;
        let erased: Erased = sqlx::query_as(statements.erase.clone())
            .bind(org)
            .bind(agent)
            .bind(conversation)
            .fetch_one(&mut *tx)
            .await
            .map_err(db("erase"))?;
        tx.commit().await.map_err(db("erase: commit"))?;
        // The hash states this store's claims kept of the erased heads: derived from their
        // bytes, and of no use to anyone now (a claim on them is refused).
        for seq in erased.heads {
            self.inner.head_states.take(seq);
        }
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(ErasureReport {
            conversations: count(erased.conversations),
            snapshots: count(erased.snapshots),
            runs: count(erased.runs),
            events: count(erased.events),
        })
    }
}
