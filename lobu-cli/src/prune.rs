//! `lobu prune`: one retention pass now, or its dry run.

use std::time::Duration;

use lobu_core::{AgentId, Error, ErrorKind, Result};
use lobu_runtime::{RetentionPolicy, retention_pass};

use crate::cli::PruneArgs;
use crate::store::{Access, open};

/// How long one step of the pass may take (a large first prune deletes a lot at once).
const STEP_LIMIT: Duration = Duration::from_secs(600);

/// `lobu prune`. A real pass takes the same fleet-wide lease as the runtime's own passes,
/// so it never runs beside one; a dry run takes none and removes nothing.
pub(crate) async fn prune(args: &PruneArgs) -> Result<()> {
    let mut idle_by_agent = std::collections::BTreeMap::new();
    for (agent, window) in &args.idle_agent {
        idle_by_agent.insert(AgentId::new(agent)?, *window);
    }
    let failed_runs = args.failed_runs.unwrap_or(args.runs);
    if failed_runs < args.runs {
        return Err(Error::invalid("--failed-runs must be at least --runs"));
    }
    let policy = RetentionPolicy {
        events: args.events,
        runs: args.runs,
        failed_runs,
        idle: args.idle,
        idle_by_agent,
        forensic: args.forensic,
        batch: args.batch as usize,
        dry_run: args.dry_run,
    };
    let store = open(&args.store.store, Access::Existing, 2).await?;
    let Some(report) = retention_pass(&store.backend, &policy, STEP_LIMIT).await? else {
        return Err(Error::new(
            ErrorKind::Busy,
            "a retention pass is running now (a host's, or another lobu prune); try again later",
        ));
    };
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    println!(
        "{}: {verb} {} run events, {} finished runs, {} idle conversations, {} snapshots",
        store.name, report.events, report.runs, report.conversations, report.snapshots
    );
    if report.more {
        println!("more is left than one pass takes; run it again (or let the host's passes go on)");
    }
    Ok(())
}
