//! Run events on PostgreSQL ([`RunQueue::record_events`], [`RunQueue::read_events`]): rows of
//! `run_events`, numbered per run under the run's row lock, fenced by the run's newest claim,
//! read with the run's record in one snapshot. Their retention is in retention.rs.
//!
//! Round trips per call:
//! * `record_events`: 1 (sql/record_events.sql: check, number, insert, `NOTIFY`), with an
//!   asynchronous commit; a refused call costs one more lookup to say why (`NotFound` or
//!   `Fenced`). Bad events are refused before any round trip.
//! * `read_events`: 1 (sql/read_events.sql); a bad limit is refused before it.
//!
//! [`RunQueue::record_events`]: lobu_core::RunQueue::record_events
//! [`RunQueue::read_events`]: lobu_core::RunQueue::read_events

use lobu_core::events::{EventPage, StoredEvent, check_events, check_may_record, check_read_limit};
use lobu_core::{Claim, Error, Fence, OrgId, Result, RunId, RunStatus};
use sqlx::postgres::{PgArguments, Postgres};
use sqlx::query::QueryScalar;
use sqlx::{FromRow, SqlStr};

use crate::error::{PgStoreError, stored};
use crate::queue::{RUN_RECORD, RunRow};
use crate::store::{PgStore, db, sql};

/// Event bytes after which a page stops (it always carries its first event): far below
/// PostgreSQL's 1 GB limit on one array, and a bound on a reader's memory.
const PAGE_BYTES: i64 = 16 * 1024 * 1024;

/// The event statements, for one schema.
#[derive(Debug)]
pub(crate) struct EventSql {
    record: SqlStr,
    read: SqlStr,
}

impl EventSql {
    pub(crate) fn new(schema: &str) -> Self {
        let read = include_str!("sql/read_events.sql").replace("{run_record}", RUN_RECORD);
        EventSql {
            record: sql(include_str!("sql/record_events.sql"), schema),
            read: sql(&read, schema),
        }
    }
}

/// What sql/read_events.sql returns: the run's record and a page of its events.
#[derive(FromRow)]
struct PageRow {
    #[sqlx(flatten)]
    run: RunRow,
    last_seq: i64,
    event_seqs: Vec<i64>,
    event_attempts: Vec<i32>,
    event_data: Vec<String>,
}

impl PageRow {
    fn page(self) -> Result<EventPage> {
        let seq = |n: i64| {
            u64::try_from(n)
                .map_err(|_| Error::from(PgStoreError::Corrupt(format!("event seq {n}"))))
        };
        let (seqs, attempts, data) = (self.event_seqs, self.event_attempts, self.event_data);
        if seqs.len() != attempts.len() || seqs.len() != data.len() {
            return Err(
                PgStoreError::Corrupt("an event page's columns differ in length".into()).into(),
            );
        }
        let rows = seqs.into_iter().zip(attempts).zip(data);
        let events = rows
            .map(|((n, attempt), data)| {
                Ok(StoredEvent {
                    seq: seq(n)?,
                    attempt: u32::try_from(attempt).map_err(|_| {
                        PgStoreError::Corrupt(format!("event {n} has attempt {attempt}"))
                    })?,
                    data,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(EventPage {
            record: self.run.record()?,
            events,
            last_seq: seq(self.last_seq)?,
        })
    }
}

/// The `Fenced` error [`check_may_record`] gives `claim` for a run in `status` whose newest
/// claim has `last_fence`. Should it allow the claim, the run changed back since the statement
/// refused it (it cannot: fences only grow and finished runs stay finished): still `Fenced`.
fn refusal(claim: &Claim, status: RunStatus, last_fence: Option<Fence>) -> Error {
    match check_may_record(claim, status, last_fence) {
        Err(e) => e,
        Ok(()) => Error::fenced(format!(
            "attempt {} of run {} ({}) may not record events",
            claim.attempt, claim.run, claim.fence
        )),
    }
}

impl PgStore {
    /// [`RunQueue::record_events`](lobu_core::RunQueue::record_events): 1 round trip (an
    /// asynchronous commit, see sql/record_events.sql), 2 when refused.
    pub(crate) async fn append_events(&self, claim: &Claim, events: &[String]) -> Result<u64> {
        check_events(events)?;
        // A fence or attempt that does not fit was never issued: no claim of the run has it.
        let refused = || refusal(claim, RunStatus::Pending, None);
        let fence = i64::try_from(claim.fence.0).map_err(|_| refused())?;
        let attempt = i32::try_from(claim.attempt).map_err(|_| refused())?;
        // Awaited before the statement: the notification may come back before its answer.
        let echo = (!events.is_empty()).then(|| self.inner.wakeup.events_echo(&claim.run));
        let last = self
            .record_statement(claim, fence, attempt, events)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(db("record_events"))?;
        let Some(last) = last else {
            return Err(self.events_refused(claim).await);
        };
        if let Some(echo) = echo {
            echo.sent();
            // Followers here wake now; other replicas' by the NOTIFY the statement sent.
            self.inner.wakeup.wake_followers(&claim.run);
        }
        u64::try_from(last).map_err(|_| PgStoreError::Corrupt(format!("event seq {last}")).into())
    }

    /// sql/record_events.sql with its parameters bound.
    fn record_statement<'q>(
        &'q self,
        claim: &'q Claim,
        fence: i64,
        attempt: i32,
        events: &'q [String],
    ) -> QueryScalar<'q, Postgres, i64, PgArguments> {
        sqlx::query_scalar(self.inner.events.record.clone())
            .bind(claim.key.org.as_str())
            .bind(claim.run.as_str())
            .bind(fence)
            .bind(events)
            .bind(attempt)
            .bind(self.channel())
    }

    /// Why sql/record_events.sql matched no run: none of the claim's org (`NotFound`), or the
    /// claim may not record ([`check_may_record`] says why, with the run as it is now).
    async fn events_refused(&self, claim: &Claim) -> Error {
        let state = match self.claim_state(claim).await {
            Ok(Some(state)) => state,
            Ok(None) => return Error::not_found(format!("run {} does not exist", claim.run)),
            Err(e) => return e,
        };
        let status = match stored("run status", RunStatus::parse(&state.status)) {
            Ok(status) => status,
            Err(e) => return e,
        };
        refusal(
            claim,
            status,
            u64::try_from(state.claim_token).ok().map(Fence),
        )
    }

    /// [`RunQueue::read_events`](lobu_core::RunQueue::read_events): 1 round trip.
    pub(crate) async fn event_page(
        &self,
        org: &OrgId,
        run: &RunId,
        after: u64,
        limit: usize,
    ) -> Result<Option<EventPage>> {
        check_read_limit(limit)?;
        let row: Option<PageRow> = sqlx::query_as(self.inner.events.read.clone())
            .bind(org.as_str())
            .bind(run.as_str())
            .bind(i64::try_from(after).unwrap_or(i64::MAX))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(PAGE_BYTES)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(db("read_events"))?;
        row.map(PageRow::page).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    use lobu_core::{ConversationKey, NewRun, RunQueue, WorkerId};
    use sqlx::{Acquire, PgPool};

    /// In production the statement is its own transaction; here it runs inside one, so the
    /// setting it made can be read before the commit.
    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn the_append_statement_makes_its_own_commit_asynchronous_and_nothing_after(
        pool: PgPool,
    ) -> sqlx::Result<()> {
        let store = PgStore::new(pool.clone());
        let key = ConversationKey::parse("acme", "bot", "async").expect("key");
        let run = NewRun::turn(key, serde_json::json!({}));
        store.submit(run).await.expect("submit");
        let worker = WorkerId::generate();
        let claim = store.claim(&worker, Duration::from_secs(60)).await;
        let claim = claim.expect("claim").expect("a run");
        let fence = i64::try_from(claim.fence.0).expect("fence");
        let events = [r#"{"n":1}"#.to_owned()];
        let mut conn = pool.acquire().await?;
        let show = "SELECT current_setting('synchronous_commit')";
        let mut tx = conn.begin().await?;
        let last = store.record_statement(&claim, fence, 1, &events);
        assert_eq!(last.fetch_one(&mut *tx).await?, 1);
        let during: String = sqlx::query_scalar(show).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        let after: String = sqlx::query_scalar(show).fetch_one(&mut *conn).await?;
        assert_eq!((during.as_str(), after.as_str()), ("off", "on"));
        Ok(())
    }
}
