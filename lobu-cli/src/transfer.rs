//! `lobu export` and `lobu import`.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Cursor, Read, Write};
use std::time::SystemTime;

use lobu_core::export::{DocumentReader, Exported, Imported};
use lobu_core::transcript::{self, hash};
use lobu_core::{
    AgentId, ConversationKey, Error, ErrorKind, OrgId, Result, RunId, Version, scan_cursor_at_org,
};

use crate::cli::{ExportArgs, ImportArgs, ScopeArgs};
use crate::store::{Access, Store, open};

/// `lobu export`: write the scope's conversations as export documents.
pub(crate) async fn export(args: &ExportArgs) -> Result<()> {
    let store = open(&args.from, Access::Existing, 2).await?;
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(BufWriter::new(File::create(path).map_err(|e| {
            Error::invalid(format!("cannot create {}", path.display())).with_source(e)
        })?)),
        None => Box::new(BufWriter::new(io::stdout().lock())),
    };
    let (mut count, mut bytes) = (0u64, 0u64);
    let write_failed =
        |e: io::Error| Error::unavailable("writing the export failed").with_source(e);
    for key in keys(&store, &args.scope).await? {
        let Some(conversation) = store.backend.sessions.export(&key).await? else {
            continue; // cleared or pruned since it was listed
        };
        out.write_all(&conversation.to_document())
            .map_err(write_failed)?;
        count += 1;
        bytes += conversation.transcript.len() as u64;
    }
    out.flush().map_err(write_failed)?;
    eprintln!(
        "exported {count} conversations ({bytes} transcript bytes) from {}",
        store.name
    );
    Ok(())
}

/// The conversations a scope names, in key order.
async fn keys(store: &Store, scope: &ScopeArgs) -> Result<Vec<ConversationKey>> {
    let sessions = &store.backend.sessions;
    match (&scope.org, &scope.agent, &scope.conversation) {
        (Some(org), Some(agent), Some(conversation)) => {
            let key = ConversationKey::parse(org, agent, conversation)?;
            if sessions.head(&key).await?.is_none() {
                return Err(Error::not_found(format!(
                    "{key} has no transcript in {}",
                    store.name
                )));
            }
            Ok(vec![key])
        }
        (Some(org), Some(agent), None) => {
            let (org, agent) = (OrgId::new(org)?, AgentId::new(agent)?);
            let mut keys = Vec::new();
            let mut cursor = None;
            loop {
                let page = sessions.list(&org, &agent, cursor.as_deref(), 200).await?;
                keys.extend(
                    page.items
                        .into_iter()
                        .map(|s| ConversationKey::new(org.clone(), agent.clone(), s.conversation)),
                );
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => return Ok(keys),
                }
            }
        }
        (org, _, _) => {
            let org = org.as_deref().map(OrgId::new).transpose()?;
            scan(store, org.as_ref()).await
        }
    }
}

/// Every conversation of the store, or of one org, in key order.
pub(crate) async fn scan(store: &Store, org: Option<&OrgId>) -> Result<Vec<ConversationKey>> {
    let mut keys = Vec::new();
    let mut cursor = org.map(scan_cursor_at_org);
    loop {
        let page = store.backend.sessions.scan(cursor.as_deref(), 200).await?;
        let in_scope = |k: &ConversationKey| org.is_none_or(|o| k.org == *o);
        // Keys come in order: once one is past the org, so are all the rest.
        let left_the_org = page.items.iter().any(|k| !in_scope(k));
        keys.extend(page.items.into_iter().filter(in_scope));
        match page.next_cursor {
            Some(next) if !left_the_org => cursor = Some(next),
            _ => return Ok(keys),
        }
    }
}

/// `lobu import`: export documents, or a pi session file as one conversation.
pub(crate) async fn import(args: &ImportArgs) -> Result<()> {
    let mut input = reader(args)?;
    let mut first = Vec::new();
    input.read_until(b'\n', &mut first).map_err(|e| {
        Error::invalid(format!("cannot read {}", args.file.display())).with_source(e)
    })?;
    let kind = serde_json::from_slice::<serde_json::Value>(&first).ok();
    let is_export = kind
        .as_ref()
        .is_some_and(|v| v.get("lobu_export").is_some());
    let is_pi = kind.as_ref().is_some_and(|v| v["type"] == "session");
    let rekey = target_key(&args.scope)?;
    let input = Cursor::new(first).chain(input);
    let conversations: Vec<Exported> = if is_export {
        let documents = DocumentReader::new(input).collect::<Result<Vec<_>>>()?;
        match rekey {
            Some(key) if documents.len() == 1 => documents
                .into_iter()
                .map(|d| Exported {
                    key: key.clone(),
                    ..d
                })
                .collect(),
            Some(_) => {
                return Err(Error::invalid(format!(
                    "{} holds {} conversations; --org/--agent/--conversation name one",
                    args.file.display(),
                    documents.len()
                )));
            }
            None => documents,
        }
    } else if is_pi {
        let key = rekey.ok_or_else(|| {
            Error::invalid("a pi session file needs --org, --agent and --conversation")
        })?;
        vec![from_pi(input, key)?]
    } else {
        return Err(Error::invalid(format!(
            "{} is neither a lobu export document nor a pi session file",
            args.file.display()
        )));
    };
    let store = open(&args.to, Access::CreateIfMissing, 2).await?;
    let (mut written, mut unchanged, mut refused) = (0, 0, 0);
    for conversation in &conversations {
        match store.backend.sessions.import(conversation).await {
            Ok(Imported::Written(v)) => {
                written += 1;
                println!("written    {} at {v}", conversation.key);
            }
            Ok(Imported::Unchanged(v)) => {
                unchanged += 1;
                println!("unchanged  {} at {v}", conversation.key);
            }
            // An outcome added to lobu-core after this command: the store took the import,
            // so it counts as written, shown with the store's own word for it.
            Ok(other) => {
                written += 1;
                println!(
                    "written    {} at {} ({other:?})",
                    conversation.key,
                    other.version()
                );
            }
            Err(e) if matches!(e.kind(), ErrorKind::Conflict | ErrorKind::TooLarge) => {
                refused += 1;
                eprintln!("refused    {}: {e}", conversation.key);
            }
            Err(e) => return Err(e),
        }
    }
    eprintln!(
        "imported into {}: {written} written, {unchanged} already there, {refused} refused",
        store.name
    );
    if refused > 0 {
        return Err(Error::conflict(format!(
            "{refused} conversations were not imported"
        )));
    }
    Ok(())
}

fn reader(args: &ImportArgs) -> Result<Box<dyn BufRead>> {
    if args.file.as_os_str() == "-" {
        return Ok(Box::new(BufReader::new(io::stdin())));
    }
    let file = File::open(&args.file).map_err(|e| {
        Error::not_found(format!("cannot open {}", args.file.display())).with_source(e)
    })?;
    Ok(Box::new(BufReader::new(file)))
}

/// The key `--org/--agent/--conversation` name: all three or none.
fn target_key(scope: &ScopeArgs) -> Result<Option<ConversationKey>> {
    match (&scope.org, &scope.agent, &scope.conversation) {
        (None, None, None) => Ok(None),
        (Some(org), Some(agent), Some(conversation)) => {
            ConversationKey::parse(org, agent, conversation).map(Some)
        }
        _ => Err(Error::invalid(
            "give --org, --agent and --conversation together",
        )),
    }
}

/// A pi session file as a conversation: migrated to version 3, written by a run whose id
/// comes from the file's bytes (so importing the same file again finds its own head).
fn from_pi(mut input: impl Read, key: ConversationKey) -> Result<Exported> {
    let mut bytes = Vec::new();
    input
        .read_to_end(&mut bytes)
        .map_err(|e| Error::invalid("cannot read the pi session file").with_source(e))?;
    let upgraded = transcript::upgrade(&bytes)?;
    if upgraded.from_version < transcript::SESSION_VERSION {
        eprintln!(
            "migrated a pi session of version {} to {} ({} blank or malformed lines dropped)",
            upgraded.from_version,
            transcript::SESSION_VERSION,
            upgraded.dropped_lines
        );
    }
    let run = RunId::new(format!(
        "pi-import-{}",
        &hash::hex(&hash::digest(&bytes))[..32]
    ))?;
    Ok(Exported::new(
        key,
        Version(1),
        run,
        SystemTime::now(),
        upgraded.bytes,
    ))
}
