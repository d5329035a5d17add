//! Conversation retention (`SessionStore::prune`) in batches: each batch is one statement, so
//! its own short transaction, and skips rows locked right now. A lease or a write on some
//! conversation thus waits for at most one batch, never for a whole prune of a large store.

use std::time::SystemTime;

use lobu_core::{PruneReport, Result};
use sqlx::SqlStr;
use time::OffsetDateTime;

use crate::store::{PgStore, db, offset_date_time, sql};

/// Rows one prune statement handles.
const BATCH: i64 = 500;

/// The prune statements, for one schema. Each takes the cutoff ($1) and the batch size ($2).
#[derive(Debug)]
pub(crate) struct PruneSql {
    idle: SqlStr,
    forensic: SqlStr,
    leases: SqlStr,
}

impl PruneSql {
    pub(crate) fn new(schema: &str) -> Self {
        PruneSql {
            idle: sql(include_str!("sql/prune_idle.sql"), schema),
            // Forensic copies (failed, timed-out, cancelled turns) older than the cutoff.
            forensic: sql(
                "DELETE FROM {s}.snapshots \
                  WHERE (org, agent, conversation, seq) IN ( \
                        SELECT org, agent, conversation, seq FROM {s}.snapshots \
                         WHERE status <> 'completed' AND created_at < $1 \
                         LIMIT $2 FOR UPDATE SKIP LOCKED)",
                schema,
            ),
            // Rows left with no head, no snapshot and a lease that lapsed before the cutoff
            // (and is not live now, whatever the cutoff) are only a spent lease: drop them so
            // idle keys do not pile up. A conversation with a running run keeps its row, whose
            // fence that run's claim is checked against. Fences come from a sequence, so a
            // later acquisition or claim still gets a larger one.
            leases: sql(
                "DELETE FROM {s}.conversations \
                  WHERE (org, agent, conversation) IN ( \
                        SELECT c.org, c.agent, c.conversation FROM {s}.conversations c \
                         WHERE c.head_seq IS NULL AND c.lease_expires_at < $1 \
                           AND c.lease_expires_at <= now() \
                           AND NOT EXISTS (SELECT 1 FROM {s}.runs r \
                                            WHERE r.org = c.org AND r.agent = c.agent \
                                              AND r.conversation = c.conversation \
                                              AND r.status = 'running') \
                           AND NOT EXISTS (SELECT 1 FROM {s}.snapshots s \
                                            WHERE s.org = c.org AND s.agent = c.agent \
                                              AND s.conversation = c.conversation) \
                         LIMIT $2 FOR UPDATE OF c SKIP LOCKED)",
                schema,
            ),
        }
    }
}

impl PgStore {
    /// Idle conversations, then old forensic copies, then spent leases, each in batches
    /// until a batch finds nothing. The counts are the sums of what each batch removed.
    pub(crate) async fn prune_in_batches(&self, idle_before: SystemTime) -> Result<PruneReport> {
        let cutoff = offset_date_time(idle_before);
        let statements = &self.inner.prune;
        let (mut conversations, mut snapshots) = (0u64, 0u64);
        loop {
            let (pruned, removed): (i64, i64) = sqlx::query_as(statements.idle.clone())
                .bind(cutoff)
                .bind(BATCH)
                .fetch_one(&self.inner.pool)
                .await
                .map_err(db("prune: idle conversations"))?;
            if pruned == 0 {
                break;
            }
            conversations += u64::try_from(pruned).unwrap_or(0);
            snapshots += u64::try_from(removed).unwrap_or(0);
        }
        snapshots += self
            .delete_in_batches(&statements.forensic, cutoff, "prune: forensic copies")
            .await?;
        self.delete_in_batches(&statements.leases, cutoff, "prune: spent leases")
            .await?;
        Ok(PruneReport {
            conversations,
            snapshots,
        })
    }

    /// Runs a batched `DELETE` until it deletes nothing; returns how many rows it deleted.
    async fn delete_in_batches(
        &self,
        statement: &SqlStr,
        cutoff: OffsetDateTime,
        op: &'static str,
    ) -> Result<u64> {
        let mut deleted = 0;
        loop {
            let n = sqlx::query(statement.clone())
                .bind(cutoff)
                .bind(BATCH)
                .execute(&self.inner.pool)
                .await
                .map_err(db(op))?
                .rows_affected();
            if n == 0 {
                return Ok(deleted);
            }
            deleted += n;
        }
    }
}
