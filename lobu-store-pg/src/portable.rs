//! Moving conversations between stores: [`SessionStore::scan`], [`SessionStore::export`]
//! and [`SessionStore::import`]. lobu-core decides (the cursor, [`plan_import`]); this
//! module loads, locks and writes.
//!
//! Round trips (each statement or transaction control is one):
//! * `scan`: 1 (sql/scan.sql).
//! * `export`: 1 (sql/hydrate.sql, as hydrate reads the head: its whole copy and deltas).
//! * `import` of a conversation with no row: 4 (BEGIN, sql/import_take.sql creates and locks
//!   the row, sql/import_write.sql, COMMIT). With a row: 5 (BEGIN, take, sql/import_head.sql,
//!   write, COMMIT); when nothing is written (the same head again, or a refusal): 3, and
//!   the ROLLBACK sqlx sends on the connection's next use.
//!
//! [`SessionStore::scan`]: lobu_core::SessionStore::scan
//! [`SessionStore::export`]: lobu_core::SessionStore::export
//! [`SessionStore::import`]: lobu_core::SessionStore::import

use bytes::Bytes;
use lobu_core::export::{ExistingHead, Exported, ImportPlan, Imported, plan_import};
use lobu_core::transcript::hash::Digest;
use lobu_core::{
    ConversationKey, Error, ErrorKind, Page, Result, RunId, check_page_limit, parse_scan_cursor,
    scan_cursor,
};
use sqlx::{PgConnection, SqlStr};

use crate::delta::Digests;
use crate::error::{PgStoreError, stored};
use crate::sessions::{OFF_THREAD_BYTES, len_i64, version};
use crate::store::{PgStore, db, offset_date_time, sql};
use crate::tx::{Ending, end};

/// The statements of scan and import, for one schema (export reads sql/hydrate.sql).
#[derive(Debug)]
pub(crate) struct PortableSql {
    scan: SqlStr,
    take: SqlStr,
    head: SqlStr,
    write: SqlStr,
}

impl PortableSql {
    pub(crate) fn new(schema: &str) -> Self {
        PortableSql {
            scan: sql(include_str!("sql/scan.sql"), schema),
            take: sql(include_str!("sql/import_take.sql"), schema),
            head: sql(include_str!("sql/import_head.sql"), schema),
            write: sql(include_str!("sql/import_write.sql"), schema),
        }
    }
}

/// What sql/import_head.sql reads under the conversation's row lock.
#[derive(sqlx::FromRow)]
struct Found {
    head_seq: Option<i64>,
    head_run: Option<String>,
    head_digest: Option<Vec<u8>>,
    last_issued: Option<i64>,
}

impl Found {
    /// The head as [`plan_import`] takes it (`None`: no head).
    fn head(&self, key: &ConversationKey) -> Result<Option<ExistingHead>> {
        let Some(seq) = self.head_seq else {
            return Ok(None);
        };
        let broken =
            || PgStoreError::Corrupt(format!("{key}: head v{seq} without its run or SHA-256"));
        let run = self.head_run.as_deref().ok_or_else(broken)?;
        let digest: Digest = self
            .head_digest
            .as_deref()
            .and_then(|d| d.try_into().ok())
            .ok_or_else(broken)?;
        Ok(Some(ExistingHead {
            version: version(seq)?,
            run: stored("head run id", RunId::new(run))?,
            digest,
        }))
    }
}

/// A position text PostgreSQL can hold: NUL is no id's, and `text` cannot store it.
fn check_text(what: &str, text: &str) -> Result<()> {
    if text.contains('\0') {
        return Err(Error::invalid(format!("{what} must not contain NUL")));
    }
    Ok(())
}

/// The SHA-256 (and its resumable state, stored with a head so the next append digests only
/// its own bytes) and the title of a transcript: linear in it, so large ones off the async
/// worker threads, as persist does.
async fn digests_and_title(transcript: &Bytes) -> Result<(Digests, Option<String>)> {
    let work = |bytes: &[u8]| {
        (
            Digests::of(bytes, None),
            lobu_core::transcript::title(bytes),
        )
    };
    if transcript.len() <= OFF_THREAD_BYTES {
        return Ok(work(transcript));
    }
    let bytes = transcript.clone();
    tokio::task::spawn_blocking(move || work(&bytes))
        .await
        .map_err(|e| Error::new(ErrorKind::Other, "import: hashing task failed").with_source(e))
}

impl PgStore {
    /// [`SessionStore::scan`](lobu_core::SessionStore::scan): one statement.
    pub(crate) async fn scan_keys(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<ConversationKey>> {
        check_page_limit(limit)?;
        let after = cursor.map(parse_scan_cursor).transpose()?;
        let (org, agent, conversation) = after.as_ref().map_or(("", "", ""), |p| {
            (p.org.as_str(), p.agent.as_str(), p.conversation.as_str())
        });
        for text in [org, agent, conversation] {
            check_text("a scan cursor", text)?;
        }
        let rows: Vec<(String, String, String)> = sqlx::query_as(self.inner.portable.scan.clone())
            .bind(org)
            .bind(agent)
            .bind(conversation)
            .bind(len_i64(limit + 1))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(db("scan"))?;
        let more = rows.len() > limit;
        let items = rows
            .into_iter()
            .take(limit)
            .map(|(org, agent, conversation)| {
                stored(
                    "conversation key",
                    ConversationKey::parse(&org, &agent, &conversation),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let next_cursor = more.then(|| items.last().map(scan_cursor)).flatten();
        Ok(Page { items, next_cursor })
    }

    /// [`SessionStore::export`](lobu_core::SessionStore::export): the head as hydrate reads
    /// it, with the conversation's `updated_at` (when the head was written), in one statement.
    pub(crate) async fn export_head(&self, key: &ConversationKey) -> Result<Option<Exported>> {
        let head = self.read_written_head(&self.inner.pool, key).await?;
        Ok(head.map(|(head, written)| {
            Exported::new(
                key.clone(),
                head.version,
                head.run,
                written,
                head.transcript,
            )
        }))
    }

    /// [`SessionStore::import`](lobu_core::SessionStore::import) in one transaction under
    /// the conversation's row lock; round trips in the module docs.
    pub(crate) async fn import_head(&self, incoming: &Exported) -> Result<Imported> {
        let mut tx = self.inner.pool.begin().await.map_err(db("import: begin"))?;
        let outcome = self.import_in(&mut tx, incoming).await;
        // Unchanged or refused: rolled back now (which also drops a row just created), so
        // the row lock does not outlive the call (see tx.rs).
        end(tx, "import: commit", outcome).await
    }

    async fn import_in(
        &self,
        tx: &mut PgConnection,
        incoming: &Exported,
    ) -> Result<Ending<Imported>> {
        let key = &incoming.key;
        let (org, agent, conversation) = (
            key.org.as_str(),
            key.agent.as_str(),
            key.conversation.as_str(),
        );
        let statements = &self.inner.portable;
        let created: Option<bool> = sqlx::query_scalar(statements.take.clone())
            .bind(org)
            .bind(agent)
            .bind(conversation)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("import: lock conversation"))?;
        // A row we just created: the conversation is new here, or was erased (which forgets
        // its versions). It may also be one whose row prune dropped as a spent lease after
        // its snapshots went (cleared or idle): its old versions are then forgotten too,
        // since nothing kept them.
        let (head, last_issued) = match created {
            Some(_) => (None, None),
            None => {
                let found: Found = sqlx::query_as(statements.head.clone())
                    .bind(org)
                    .bind(agent)
                    .bind(conversation)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db("import: read head"))?;
                let last = found.last_issued.map(version).transpose()?;
                (found.head(key)?, last)
            }
        };
        let max_bytes = self.inner.config.max_transcript_bytes;
        let at = match plan_import(incoming, head.as_ref(), last_issued, max_bytes)? {
            ImportPlan::Unchanged(version) => {
                return Ok(Ending::RollBack(Imported::Unchanged(version)));
            }
            ImportPlan::WriteFresh => None,
            ImportPlan::WriteAt(version) => Some(i64::try_from(version.0).map_err(|_| {
                Error::invalid(format!(
                    "{key}: {version} is above the largest version this store keeps ({})",
                    i64::MAX
                ))
            })?),
            // A plan added to lobu-core after this store: refused, the transaction rolls
            // back with nothing written.
            other => {
                return Err(Error::new(
                    ErrorKind::Other,
                    format!("{key}: this version of lobu-store-pg cannot carry out {other:?}"),
                ));
            }
        };
        let (digests, title) = digests_and_title(&incoming.transcript).await?;
        let seq: i64 = sqlx::query_scalar(statements.write.clone())
            .bind(org)
            .bind(agent)
            .bind(conversation)
            .bind(incoming.run.as_str())
            .bind(at)
            .bind(&incoming.transcript[..])
            .bind(len_i64(incoming.transcript.len()))
            .bind(&digests.full[..])
            .bind(&digests.state[..])
            .bind(title.as_deref())
            .bind(offset_date_time(incoming.updated_at))
            .fetch_one(&mut *tx)
            .await
            .map_err(db("import: write head"))?;
        Ok(Ending::Commit(Imported::Written(version(seq)?)))
    }
}
