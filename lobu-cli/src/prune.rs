//! `lobu prune`: one retention pass, now.

use std::time::Duration;

use lobu_core::{Error, ErrorKind, Result};
use lobu_runtime::{RetentionPolicy, retention_pass};

use crate::cli::PruneArgs;
use crate::store::{Access, open};

/// How long one step of the pass may take (a large first prune deletes a lot at once).
const STEP_LIMIT: Duration = Duration::from_secs(600);

/// `lobu prune`. It takes the same fleet-wide lease as the runtime's own passes, so it never
/// runs beside one.
pub(crate) async fn prune(args: &PruneArgs) -> Result<()> {
    let store = open(&args.store.store, Access::Existing, 2).await?;
    let policy = RetentionPolicy {
        events: args.events,
        runs: args.runs,
        idle: args.idle,
    };
    let Some(report) = retention_pass(&store.backend, &policy, STEP_LIMIT).await? else {
        return Err(Error::new(
            ErrorKind::Busy,
            "a retention pass is running now (a host's, or another lobu prune); try again later",
        ));
    };
    println!(
        "{}: removed {} run events, {} finished runs, {} idle conversations ({} snapshots)",
        store.name, report.events, report.runs, report.conversations, report.snapshots
    );
    Ok(())
}
