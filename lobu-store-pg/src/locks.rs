//! [`ConversationLocks`] as rows: a lease is an expiry and a fence in the conversation's row.
//! Nothing is held between calls (no connection, no session lock), so any number of leases
//! cost nothing and every call works through a transaction-mode pooler.

use std::time::Duration;

use async_trait::async_trait;
use lobu_core::{
    ConversationKey, ConversationLocks, Error, Fence, Lease, Result, check_lease_duration,
};
use sqlx::SqlStr;
use time::OffsetDateTime;

use crate::error::PgStoreError;
use crate::store::{PgStore, db, micros, sql, system_time};

/// The lease statements, for one schema. Expiry is judged by the database clock, the one
/// clock every replica shares.
#[derive(Debug)]
pub(crate) struct LockSql {
    acquire: SqlStr,
    renew: SqlStr,
    release: SqlStr,
}

impl LockSql {
    pub(crate) fn new(schema: &str) -> Self {
        LockSql {
            // One statement: insert the row, or take it over only if the lease is free. A
            // concurrent acquirer waits on the row lock and re-checks the expiry on the new
            // version (ON CONFLICT DO UPDATE always sees the latest row), so one wins. A
            // takeover draws its fence in DO UPDATE, while it holds the row lock, so fences
            // grow in commit order even when it waited; the fence drawn in VALUES is then
            // never stored (a gap in the sequence). Expiries use clock_timestamp(), not the
            // statement's start: a wait behind a prune or a large persist must not shorten
            // the lease, nor make a lapsed one look live.
            acquire: sql(
                "INSERT INTO {s}.conversations AS c \
                     (org, agent, conversation, fence, lease_expires_at) \
                 VALUES ($1, $2, $3, nextval('{s}.fences'), \
                         clock_timestamp() + $4 * interval '1 microsecond') \
                 ON CONFLICT (org, agent, conversation) DO UPDATE \
                    SET fence = nextval('{s}.fences'), \
                        lease_expires_at = clock_timestamp() + $4 * interval '1 microsecond' \
                  WHERE c.lease_expires_at <= clock_timestamp() \
                 RETURNING c.fence, c.lease_expires_at",
                schema,
            ),
            // Still the newest fence: extend, even if it had lapsed or been released. The
            // CTE takes the row lock first: a plain UPDATE computes its new values before it
            // waits for a row another transaction holds, so a renew stuck behind a prune or a
            // large persist would get less than its duration from when the row was ours.
            renew: sql(
                "WITH held AS MATERIALIZED ( \
                     SELECT org, agent, conversation FROM {s}.conversations \
                      WHERE org = $1 AND agent = $2 AND conversation = $3 AND fence = $4 \
                        FOR UPDATE) \
                 UPDATE {s}.conversations c \
                    SET lease_expires_at = clock_timestamp() + $5 * interval '1 microsecond' \
                   FROM held \
                  WHERE c.org = held.org AND c.agent = held.agent \
                    AND c.conversation = held.conversation AND c.fence = $4 \
                 RETURNING c.lease_expires_at",
                schema,
            ),
            // Released is expired now: prune can tell how long a conversation sat unleased.
            // The conversation's runs are claimable again: wake waiters (a hint, one NOTIFY).
            release: sql(
                "WITH ended AS ( \
                     UPDATE {s}.conversations \
                        SET lease_expires_at = least(lease_expires_at, now()) \
                      WHERE org = $1 AND agent = $2 AND conversation = $3 AND fence = $4 \
                     RETURNING 1) \
                 SELECT count(pg_notify($5, '')) FROM ended",
                schema,
            ),
        }
    }
}

#[async_trait]
impl ConversationLocks for PgStore {
    async fn try_acquire(&self, key: &ConversationKey, ttl: Duration) -> Result<Option<Lease>> {
        check_lease_duration(ttl)?;
        let row: Option<(i64, OffsetDateTime)> = sqlx::query_as(self.inner.locks.acquire.clone())
            .bind(key.org.as_str())
            .bind(key.agent.as_str())
            .bind(key.conversation.as_str())
            .bind(micros(ttl))
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(db("try_acquire"))?;
        let Some((fence, expires_at)) = row else {
            return Ok(None);
        };
        let fence = u64::try_from(fence)
            .map_err(|_| PgStoreError::Corrupt(format!("{key}: negative fence {fence}")))?;
        Ok(Some(Lease {
            key: key.clone(),
            fence: Fence(fence),
            expires_at: system_time(expires_at),
        }))
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        check_lease_duration(ttl)?;
        let stale = || {
            Error::fenced(format!(
                "{}: {} was taken over or released",
                lease.key, lease.fence
            ))
        };
        let fence = i64::try_from(lease.fence.0).map_err(|_| stale())?;
        let key = &lease.key;
        let expires_at: Option<OffsetDateTime> = sqlx::query_scalar(self.inner.locks.renew.clone())
            .bind(key.org.as_str())
            .bind(key.agent.as_str())
            .bind(key.conversation.as_str())
            .bind(fence)
            .bind(micros(ttl))
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(db("renew"))?;
        let expires_at = expires_at.ok_or_else(stale)?;
        Ok(Lease {
            key: key.clone(),
            fence: lease.fence,
            expires_at: system_time(expires_at),
        })
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        // A fence that does not fit a bigint was never issued: nothing of ours to release.
        let Ok(fence) = i64::try_from(lease.fence.0) else {
            return Ok(());
        };
        let key = &lease.key;
        sqlx::query(self.inner.locks.release.clone())
            .bind(key.org.as_str())
            .bind(key.agent.as_str())
            .bind(key.conversation.as_str())
            .bind(fence)
            .bind(self.inner.wakeup.channel())
            .execute(&self.inner.pool)
            .await
            .map_err(db("release"))?;
        Ok(())
    }
}
