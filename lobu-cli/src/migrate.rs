//! `lobu migrate`: copy every conversation of one store into another, verified.

use std::io::IsTerminal;

use futures::{StreamExt, TryStreamExt, stream};
use indicatif::{ProgressBar, ProgressStyle};
use lobu_core::export::Imported;
use lobu_core::{ConversationKey, Error, ErrorKind, Result};

use crate::cli::MigrateArgs;
use crate::store::{Access, Store, open};
use crate::transfer::scan;

/// What became of one conversation.
enum Copied {
    Written,
    AlreadyThere,
    /// Gone from the source since it was listed (cleared, pruned, erased).
    Vanished,
    /// The target holds another transcript for it.
    Conflict(Error),
}

/// `lobu migrate`. Every conversation is exported from the source, imported into the target
/// and read back from the target to compare its SHA-256; a conversation the target already
/// holds is left as it is (and verified), so running it again after a crash finishes the
/// job and duplicates nothing.
pub(crate) async fn migrate(args: &MigrateArgs) -> Result<()> {
    let connections = u32::from(args.jobs) + 1;
    let from = open(&args.from, Access::Existing, connections).await?;
    let to = open(&args.to, Access::CreateIfMissing, connections).await?;
    if from.name == to.name {
        return Err(Error::invalid(format!(
            "{} is both the source and the target",
            from.name
        )));
    }
    let keys = scan(&from, None).await?;
    let bar = progress(keys.len() as u64, args.quiet);
    let copies = stream::iter(keys)
        .map(|key| copy(&from, &to, key))
        .buffer_unordered(usize::from(args.jobs));
    let (mut written, mut there, mut vanished, mut conflicts) = (0u64, 0u64, 0u64, Vec::new());
    let result = copies
        .try_for_each(|copied| {
            match copied {
                Copied::Written => written += 1,
                Copied::AlreadyThere => there += 1,
                Copied::Vanished => vanished += 1,
                Copied::Conflict(e) => {
                    bar.suspend(|| eprintln!("conflict: {e}"));
                    conflicts.push(e);
                }
            }
            bar.inc(1);
            futures::future::ready(Ok(()))
        })
        .await;
    bar.finish_and_clear();
    let copied = written + there;
    eprintln!(
        "{} → {}: {copied} conversations copied and verified by SHA-256 ({written} written now, \
         {there} already there), {vanished} gone from the source meanwhile, {} conflicts",
        from.name,
        to.name,
        conflicts.len()
    );
    result.map_err(|e| {
        Error::new(e.kind(), "the migration stopped; run it again to finish").with_source(e)
    })?;
    if !conflicts.is_empty() {
        return Err(Error::conflict(format!(
            "{} conversations hold another transcript in the target; erase them there or \
             leave them",
            conflicts.len()
        )));
    }
    Ok(())
}

async fn copy(from: &Store, to: &Store, key: ConversationKey) -> Result<Copied> {
    let Some(conversation) = from.backend.sessions.export(&key).await? else {
        return Ok(Copied::Vanished);
    };
    let copied = match to.backend.sessions.import(&conversation).await {
        Ok(Imported::Written(_)) => Copied::Written,
        Ok(Imported::Unchanged(_)) => Copied::AlreadyThere,
        // An outcome added to lobu-core after this command: the store took the import, and
        // the read-back below still checks the copy; it counts as written.
        Ok(_) => Copied::Written,
        Err(e) if e.kind() == ErrorKind::Conflict => return Ok(Copied::Conflict(e)),
        Err(e) => return Err(e),
    };
    let back = to.backend.sessions.export(&key).await?;
    if back.is_none_or(|b| b.run != conversation.run || b.digest() != conversation.digest()) {
        return Err(Error::corrupt(format!(
            "{key}: the copy in {} does not read back with the source's SHA-256",
            to.name
        )));
    }
    Ok(copied)
}

fn progress(total: u64, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} conversations, {per_sec}, {eta} left")
    {
        bar.set_style(style);
    }
    bar
}
