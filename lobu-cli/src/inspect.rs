//! `lobu ls`, `lobu show` and `lobu runs`: looking inside a store.

use lobu_core::transcript::{self, DisplayMessage};
use lobu_core::{AgentId, ConversationKey, Error, OrgId, Result, RunFilter, RunRecord, time_serde};
use serde_json::{Value, json};

use crate::cli::{LsArgs, RunState, RunsArgs, ShowArgs};
use crate::store::{Access, open};

/// `lobu ls`.
pub(crate) async fn ls(args: &LsArgs) -> Result<()> {
    let store = open(&args.store.store, Access::Existing, 1).await?;
    let (org, agent) = (OrgId::new(&args.org)?, AgentId::new(&args.agent)?);
    let page = store
        .backend
        .sessions
        .list(&org, &agent, args.cursor.as_deref(), args.limit)
        .await?;
    if args.json {
        return print_json(&json!({"items": page.items, "nextCursor": page.next_cursor}));
    }
    println!(
        "{:<36} {:>8} {:>6} {:>10}  {:<20}  TITLE",
        "CONVERSATION", "VERSION", "TURNS", "BYTES", "UPDATED"
    );
    for c in &page.items {
        println!(
            "{:<36} {:>8} {:>6} {:>10}  {:<20}  {}",
            c.conversation.as_str(),
            c.version.0,
            c.turns,
            c.bytes,
            short_time(c.updated_at),
            c.title.as_deref().unwrap_or("")
        );
    }
    if let Some(next) = &page.next_cursor {
        println!("more: --cursor {}", shell_word(next));
    }
    Ok(())
}

/// `lobu show`.
pub(crate) async fn show(args: &ShowArgs) -> Result<()> {
    if args.messages == 0 || args.messages > lobu_core::MAX_PAGE_LIMIT {
        return Err(Error::invalid("--messages must be between 1 and 200"));
    }
    let store = open(&args.store.store, Access::Existing, 1).await?;
    let key = ConversationKey::parse(&args.org, &args.agent, &args.conversation)?;
    let Some(head) = store.backend.sessions.hydrate(&key).await? else {
        return Err(Error::not_found(format!(
            "{key} has no transcript in {}",
            store.name
        )));
    };
    let parsed = transcript::parse(&head.transcript);
    let stats = parsed.stats();
    let mut last: Vec<DisplayMessage> = Vec::new();
    let mut cursor = None;
    loop {
        let page = parsed.page(cursor.as_deref(), Some(200))?;
        last.extend(page.messages);
        let keep_from = last.len().saturating_sub(args.messages);
        last.drain(..keep_from);
        match page.next_cursor {
            Some(next) if page.has_more => cursor = Some(next),
            _ => break,
        }
    }
    if args.json {
        return print_json(&json!({
            "conversation": key.to_string(),
            "version": head.version.0,
            "run": head.run,
            "bytes": head.transcript.len(),
            "entries": parsed.entries().len(),
            "skippedLines": parsed.skipped_lines(),
            "stats": stats,
            "messages": last,
        }));
    }
    println!("{key} at {} (run {})", head.version, head.run);
    println!(
        "{} bytes, {} entries ({} unreadable lines), {} messages ({} user, {} assistant), \
         tokens {} in / {} out, model {}",
        head.transcript.len(),
        parsed.entries().len(),
        parsed.skipped_lines(),
        stats.message_count,
        stats.user_messages,
        stats.assistant_messages,
        stats.total_input_tokens,
        stats.total_output_tokens,
        stats.current_model.as_deref().unwrap_or("-")
    );
    for message in &last {
        let kind = serde_json::to_value(message.kind).unwrap_or_default();
        let who = message.role.as_deref().or(kind.as_str()).unwrap_or("entry");
        println!("\n[{who}] {}", text_of(message.content.as_ref()));
    }
    Ok(())
}

/// `lobu runs`.
pub(crate) async fn runs(args: &RunsArgs) -> Result<()> {
    let store = open(&args.store.store, Access::Existing, 1).await?;
    let org = OrgId::new(&args.org)?;
    let mut filter = match args.state {
        RunState::Unfinished => RunFilter::unfinished(),
        RunState::Failed => RunFilter::failed(),
        RunState::Attention => RunFilter::unfinished().statuses(RunFilter::failed().statuses),
        RunState::All => RunFilter::all(),
    };
    if let Some(agent) = &args.agent {
        filter = filter.agent(AgentId::new(agent)?);
    }
    let page = store
        .backend
        .queue
        .runs(&org, &filter, args.cursor.as_deref(), args.limit)
        .await?;
    if args.json {
        return print_json(&json!({"items": page.items, "nextCursor": page.next_cursor}));
    }
    println!(
        "{:<36} {:<9} {:<5} {:>8}  {:<20}  CONVERSATION / ERROR",
        "RUN", "STATUS", "KIND", "ATTEMPTS", "UPDATED"
    );
    for run in &page.items {
        print_run(run);
    }
    if let Some(next) = &page.next_cursor {
        println!("more: --cursor {}", shell_word(next));
    }
    Ok(())
}

fn print_run(run: &RunRecord) {
    let attempts = format!("{}/{}", run.attempts, run.max_attempts);
    let mut line = format!(
        "{:<36} {:<9} {:<5} {:>8}  {:<20}  {}/{}",
        run.run.as_str(),
        run.status.as_str(),
        run.kind.as_str(),
        attempts,
        short_time(run.updated_at),
        run.key.agent,
        run.key.conversation
    );
    if let Some(error) = &run.error {
        let error: String = error.chars().take(120).collect();
        line.push_str(&format!(": {}", error.replace('\n', " ")));
    }
    println!("{line}");
}

/// A message's text: a string, or its text blocks joined, with other blocks named.
fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .map(|b| match (b["type"].as_str(), b["text"].as_str()) {
                (Some("text"), Some(text)) => text.to_owned(),
                (Some(other), _) => format!("[{other}]"),
                _ => "[?]".to_owned(),
            })
            .collect::<Vec<_>>()
            .join(" "),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

fn short_time(t: std::time::SystemTime) -> String {
    let text = time_serde::format(t);
    text.get(..19).map_or(text.clone(), |s| s.replace('T', " "))
}

/// A cursor quoted for a shell when it needs to be.
fn shell_word(text: &str) -> String {
    if text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.:@/".contains(&b))
    {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

fn print_json(value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::invalid("the output does not serialise").with_source(e))?;
    println!("{text}");
    Ok(())
}
