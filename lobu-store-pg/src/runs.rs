//! [`RunQueue::runs`](lobu_core::RunQueue::runs): an org's runs for operators, filtered and
//! paged by run id, in one statement (sql/runs.sql).

use lobu_core::{AgentId, Error, OrgId, Page, Result, RunFilter, RunRecord, check_page_limit};
use sqlx::SqlStr;

use crate::queue::{RUN_RECORD, RunRow};
use crate::sessions::len_i64;
use crate::store::{PgStore, db, sql};

/// The run listing statement, for one schema.
#[derive(Debug)]
pub(crate) struct RunsSql {
    list: SqlStr,
}

impl RunsSql {
    pub(crate) fn new(schema: &str) -> Self {
        RunsSql {
            list: sql(
                &include_str!("sql/runs.sql").replace("{record}", RUN_RECORD),
                schema,
            ),
        }
    }
}

impl PgStore {
    /// The org's runs that `filter` takes, ordered by run id, after `cursor` (the last id of
    /// the previous page); `next_cursor` is this page's last id when more follow. The
    /// statement's WHERE says what [`RunFilter::matches`] says (agent: any or equal;
    /// statuses: any when empty, else one of them), on the status column the record's status
    /// is parsed from, so a page holds exactly the runs `matches` takes. One round trip.
    pub(crate) async fn list_runs(
        &self,
        org: &OrgId,
        filter: &RunFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<RunRecord>> {
        check_page_limit(limit)?;
        // `text` cannot hold NUL, and no run id has one: refused as list refuses it.
        if cursor.is_some_and(|c| c.contains('\0')) {
            return Err(Error::invalid("cursor must not contain NUL"));
        }
        let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
        let rows: Vec<RunRow> = sqlx::query_as(self.inner.runs.list.clone())
            .bind(org.as_str())
            .bind(filter.agent.as_ref().map(AgentId::as_str))
            .bind(&statuses)
            .bind(cursor.unwrap_or(""))
            .bind(len_i64(limit + 1))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(db("runs"))?;
        let more = rows.len() > limit;
        let items = rows
            .into_iter()
            .take(limit)
            .map(RunRow::record)
            .collect::<Result<Vec<_>>>()?;
        let next_cursor = more
            .then(|| items.last().map(|r| r.run.as_str().to_owned()))
            .flatten();
        Ok(Page { items, next_cursor })
    }
}
