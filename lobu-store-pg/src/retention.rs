//! Queue retention on PostgreSQL ([`RunQueue::prune_runs_with`],
//! [`RunQueue::prune_events_with`]), in batches: each batch is one statement, so its own short
//! transaction, and every call removes at most its limit. What goes is lobu-core's rule
//! ([`RunPrune::takes`], [`EventPrune::takes`]) in each statement's `WHERE`; a dry run counts
//! by the same `WHERE` in one statement.
//!
//! Round trips per call (a bad limit is refused before any):
//! * `prune_runs_with`: dry run 1 (sql/prune_runs_count.sql); otherwise one
//!   sql/prune_runs.sql per batch of up to [`RUN_BATCH`] runs until a batch comes back short
//!   or the limit is used up: `n / RUN_BATCH + 1` for `n` runs below the limit.
//! * `prune_events_with`: dry run 1 (sql/prune_events_count.sql); otherwise one
//!   sql/prune_events.sql per batch of [`EVENT_RUNS`] finished runs, oldest first, until a
//!   batch holds fewer runs or the limit is used up: `r / EVENT_RUNS + 1` for `r` finished
//!   runs before the cutoff (whether they still hold events or not).
//!
//! [`RunQueue::prune_runs_with`]: lobu_core::RunQueue::prune_runs_with
//! [`RunQueue::prune_events_with`]: lobu_core::RunQueue::prune_events_with

use lobu_core::Result;
use lobu_core::retention::{EventPrune, RunPrune, sql_limit};
use sqlx::SqlStr;
use time::OffsetDateTime;

use crate::prune::count;
use crate::store::{PgStore, db, offset_date_time, sql};

/// Runs one `prune_runs` statement drops (each with its events).
const RUN_BATCH: i64 = 1_000;
/// Finished runs whose events one `prune_events` statement goes through.
const EVENT_RUNS: i64 = 10_000;

/// The queue retention statements, for one schema.
#[derive(Debug)]
pub(crate) struct RetentionSql {
    runs: SqlStr,
    runs_count: SqlStr,
    events: SqlStr,
    events_count: SqlStr,
}

impl RetentionSql {
    pub(crate) fn new(schema: &str) -> Self {
        // The run rule is written once and spliced in, as held_claim.sql is.
        let with_rule = |template: &str| {
            let rule = include_str!("sql/finished_runs.sql").trim_end();
            sql(&template.replace("{finished_runs}", rule), schema)
        };
        RetentionSql {
            runs: with_rule(include_str!("sql/prune_runs.sql")),
            runs_count: with_rule(include_str!("sql/prune_runs_count.sql")),
            events: sql(include_str!("sql/prune_events.sql"), schema),
            events_count: sql(include_str!("sql/prune_events_count.sql"), schema),
        }
    }
}

impl PgStore {
    /// [`RunQueue::prune_runs_with`](lobu_core::RunQueue::prune_runs_with).
    pub(crate) async fn prune_finished_runs(&self, prune: &RunPrune) -> Result<u64> {
        prune.validate()?;
        let completed = offset_date_time(prune.completed_before);
        let failed = offset_date_time(prune.failed_before);
        let statements = &self.inner.retention;
        let limit = sql_limit(prune.limit);
        if prune.dry_run {
            let n: i64 = sqlx::query_scalar(statements.runs_count.clone())
                .bind(completed)
                .bind(failed)
                .bind(limit)
                .fetch_one(&self.inner.pool)
                .await
                .map_err(db("prune_runs: dry run"))?;
            return Ok(count(n));
        }
        let (mut left, mut removed) = (limit, 0);
        while left > 0 {
            let rows = left.min(RUN_BATCH);
            let n = sqlx::query(statements.runs.clone())
                .bind(completed)
                .bind(failed)
                .bind(rows)
                .execute(&self.inner.pool)
                .await
                .map_err(db("prune_runs"))?
                .rows_affected();
            removed += n;
            let n = i64::try_from(n).unwrap_or(rows);
            left -= n;
            if n < rows {
                break;
            }
        }
        Ok(removed)
    }

    /// [`RunQueue::prune_events_with`](lobu_core::RunQueue::prune_events_with).
    pub(crate) async fn prune_finished_events(&self, prune: &EventPrune) -> Result<u64> {
        prune.validate()?;
        let before = offset_date_time(prune.finished_before);
        let statements = &self.inner.retention;
        let limit = sql_limit(prune.limit);
        if prune.dry_run {
            let n: i64 = sqlx::query_scalar(statements.events_count.clone())
                .bind(before)
                .bind(limit)
                .fetch_one(&self.inner.pool)
                .await
                .map_err(db("prune_events: dry run"))?;
            return Ok(count(n));
        }
        let mut cursor: Option<(OffsetDateTime, String)> = None;
        let (mut left, mut removed) = (limit, 0);
        while left > 0 {
            let (at, id) = cursor.unzip();
            let (events, runs, at, id): (i64, i64, Option<OffsetDateTime>, Option<String>) =
                sqlx::query_as(statements.events.clone())
                    .bind(before)
                    .bind(at)
                    .bind(id)
                    .bind(EVENT_RUNS)
                    .bind(left)
                    .fetch_one(&self.inner.pool)
                    .await
                    .map_err(db("prune_events"))?;
            removed += count(events);
            left -= events;
            // A short batch was the last; a full one whose events all went moves the cursor
            // past it (a run cut short by the limit ends the call, so none is skipped).
            if runs < EVENT_RUNS {
                break;
            }
            cursor = at.zip(id);
        }
        Ok(removed)
    }
}
