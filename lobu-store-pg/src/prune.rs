//! Conversation retention ([`SessionStore::prune_with`]) in batches: each batch is one
//! statement, so its own short transaction, and skips rows locked right now. A lease or a
//! write on some conversation thus waits for at most one batch, never for a whole prune of a
//! large store. What goes is lobu-core's rule ([`IdlePrune`]), stated once in SQL
//! (sql/idle_conversations.sql, sql/forensic_copies.sql) and spliced into the statements that
//! remove and the one that counts, so a dry run counts what a prune removes.
//!
//! Round trips per call (a bad limit is refused before any):
//! * dry run: 1 (sql/prune_count.sql).
//! * otherwise three steps, idle conversations (sql/prune_idle.sql), forensic copies
//!   (sql/prune_forensic.sql) and spent leases (sql/prune_leases.sql), each one statement per
//!   batch of up to [`BATCH`] rows until a batch comes back short or the limit is used up:
//!   `n / BATCH + 1` for `n` rows below the limit, `ceil(n / BATCH)` at it. A step without
//!   a cutoff (`None`) costs none (spent leases go with the idle cutoff), so a prune that
//!   finds less than a batch of each is 3 round trips, and one of forensic copies only is 1.
//!
//! [`SessionStore::prune_with`]: lobu_core::SessionStore::prune_with

use lobu_core::retention::{Agents, IdlePrune, sql_limit};
use lobu_core::{Error, PruneReport, Result};
use sqlx::SqlStr;
use sqlx::postgres::{PgArguments, PgRow, Postgres};
use sqlx::query::QueryAs;
use time::OffsetDateTime;

use crate::store::{PgStore, db, offset_date_time, sql};

/// Rows one prune statement handles.
const BATCH: i64 = 500;

/// The prune statements, for one schema. Each takes the parameters [`Params::bind`] binds.
#[derive(Debug)]
pub(crate) struct PruneSql {
    idle: SqlStr,
    forensic: SqlStr,
    leases: SqlStr,
    count: SqlStr,
}

impl PruneSql {
    pub(crate) fn new(schema: &str) -> Self {
        // The rules are written once and spliced in, as held_claim.sql is.
        let with_rules = |template: &str| {
            let text = template
                .replace(
                    "{idle_conversations}",
                    include_str!("sql/idle_conversations.sql").trim_end(),
                )
                .replace(
                    "{forensic_copies}",
                    include_str!("sql/forensic_copies.sql").trim_end(),
                );
            sql(&text, schema)
        };
        PruneSql {
            idle: with_rules(include_str!("sql/prune_idle.sql")),
            forensic: with_rules(include_str!("sql/prune_forensic.sql")),
            leases: sql(include_str!("sql/prune_leases.sql"), schema),
            count: with_rules(include_str!("sql/prune_count.sql")),
        }
    }
}

/// An [`IdlePrune`] as every prune statement takes it.
struct Params<'a> {
    idle_before: Option<OffsetDateTime>,
    forensic_before: Option<OffsetDateTime>,
    /// `Agents::Only`; `None`: every agent.
    only: Option<&'a str>,
    /// `Agents::AllExcept`; empty: none left out.
    except: Vec<&'a str>,
}

impl<'a> Params<'a> {
    fn new(prune: &'a IdlePrune) -> Result<Self> {
        let (only, except) = match &prune.agents {
            Agents::All => (None, Vec::new()),
            Agents::Only(agent) => (Some(agent.as_str()), Vec::new()),
            Agents::AllExcept(agents) => (None, agents.iter().map(|a| a.as_str()).collect()),
            // A selection added to lobu-core after this store: refused before any statement,
            // as pruning a guess at it could remove conversations it does not cover.
            other => {
                return Err(Error::invalid(format!(
                    "this version of lobu-store-pg cannot prune the agents {other:?}"
                )));
            }
        };
        Ok(Params {
            idle_before: prune.idle_before.map(offset_date_time),
            forensic_before: prune.forensic_before.map(offset_date_time),
            only,
            except,
        })
    }

    /// `statement` with $1 idle_before, $2 forensic_before, $3 the only agent, $4 the agents
    /// left out and $5 how many rows, whichever of them it reads (sqlx sends every
    /// parameter's type, so one a statement does not read is no error).
    fn bind<'q, O>(&'q self, statement: &SqlStr, rows: i64) -> QueryAs<'q, Postgres, O, PgArguments>
    where
        O: for<'r> sqlx::FromRow<'r, PgRow>,
    {
        sqlx::query_as(statement.clone())
            .bind(self.idle_before)
            .bind(self.forensic_before)
            .bind(self.only)
            .bind(&self.except)
            .bind(rows)
    }
}

impl PgStore {
    /// [`SessionStore::prune_with`](lobu_core::SessionStore::prune_with): idle
    /// conversations, then forensic copies, then spent leases, each in batches and each at
    /// most `limit`; a dry run counts the first two in one statement. The counts are the sums
    /// of what each batch removed.
    pub(crate) async fn prune_idle(&self, prune: &IdlePrune) -> Result<PruneReport> {
        prune.validate()?;
        let params = Params::new(prune)?;
        let limit = sql_limit(prune.limit);
        let statements = &self.inner.prune;
        if prune.dry_run {
            let (conversations, snapshots, forensic): (i64, i64, i64) = params
                .bind(&statements.count, limit)
                .fetch_one(&self.inner.pool)
                .await
                .map_err(db("prune: dry run"))?;
            return Ok(PruneReport {
                conversations: count(conversations),
                snapshots: count(snapshots) + count(forensic),
            });
        }
        let mut report = PruneReport::default();
        if params.idle_before.is_some() {
            let (conversations, snapshots) = self
                .in_batches(
                    &statements.idle,
                    &params,
                    limit,
                    "prune: idle conversations",
                )
                .await?;
            report.conversations = conversations;
            report.snapshots = snapshots;
        }
        if params.forensic_before.is_some() {
            let (_, snapshots) = self
                .in_batches(
                    &statements.forensic,
                    &params,
                    limit,
                    "prune: forensic copies",
                )
                .await?;
            report.snapshots += snapshots;
        }
        if params.idle_before.is_some() {
            self.in_batches(&statements.leases, &params, limit, "prune: spent leases")
                .await?;
        }
        Ok(report)
    }

    /// Runs a batched prune statement (it returns how many rows it took and how many
    /// snapshots it removed) until a batch takes fewer than it may, or `limit` rows are
    /// taken; returns the sums.
    async fn in_batches(
        &self,
        statement: &SqlStr,
        params: &Params<'_>,
        limit: i64,
        op: &'static str,
    ) -> Result<(u64, u64)> {
        let (mut left, mut taken, mut snapshots) = (limit, 0, 0);
        while left > 0 {
            let rows = left.min(BATCH);
            let (n, removed): (i64, i64) = params
                .bind(statement, rows)
                .fetch_one(&self.inner.pool)
                .await
                .map_err(db(op))?;
            taken += count(n);
            snapshots += count(removed);
            left -= n;
            if n < rows {
                break;
            }
        }
        Ok((taken, snapshots))
    }
}

/// A SQL count as lobu counts (a count is never negative).
pub(crate) fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}
