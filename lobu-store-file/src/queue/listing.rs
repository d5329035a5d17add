//! `runs`: an org's run records for operators, in run id order.
//!
//! Records of every org share `queue/runs/`, and nothing indexes them by org or state, so a
//! page reads records in id order, after the cursor, until it has one more match than it
//! returns. Only names are listed for the rest. No lock is taken: records are replaced
//! atomically, as `status` relies on too.
//!
//! A record that does not decode (or names another run than its file) is skipped with a
//! warning naming its run, rather than failing the whole listing: its org cannot be told,
//! so it cannot be listed, and `status` of that run answers `Corrupt`, which is where an
//! operator following the warning finds it.

use lobu_core::{ErrorKind, OrgId, Page, Result, RunFilter, RunId, RunRecord};

use super::files::Queue;
use crate::error::io_at;
use crate::layout;
use crate::store::Inner;

pub(crate) fn runs(
    inner: &Inner,
    org: &OrgId,
    filter: &RunFilter,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Page<RunRecord>> {
    let queue = Queue::new(inner);
    let dir = queue.runs_dir();
    let leaves = layout::leaves(&dir).map_err(io_at("list", &dir))?;
    // Ordered by the ids the names encode, not by the names.
    let mut found: Vec<_> = leaves
        .into_iter()
        .filter_map(|(text, path)| Some((RunId::new(text).ok()?, path)))
        .filter(|(run, _)| cursor.is_none_or(|after| run.as_str() > after))
        .collect();
    found.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    let mut items = Vec::new();
    for (run, path) in found {
        let file = match queue.load_run_at(&path) {
            Ok(Some(file)) if file.record.run == run => file,
            // Pruned or erased since the names were listed.
            Ok(None) => continue,
            Ok(Some(_)) => {
                tracing::warn!(run = %run, "skipped in the run listing: its record names another run");
                continue;
            }
            Err(e) if e.kind() == ErrorKind::Corrupt => {
                tracing::warn!(run = %run, error = %e, "skipped in the run listing");
                continue;
            }
            Err(e) => return Err(e),
        };
        if file.key().org != *org || !filter.matches(&file.record) {
            continue;
        }
        items.push(file.record);
        if items.len() > limit {
            break;
        }
    }
    let next_cursor = (items.len() > limit).then(|| items[limit - 1].run.to_string());
    items.truncate(limit);
    Ok(Page { items, next_cursor })
}
