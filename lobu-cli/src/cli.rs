//! The command line: every command and flag, with its `--help` text.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Operate lobu stores: move conversations between them, prune old data, look inside.
///
/// A store is named by URL: `file:./lobu-data` (a directory; `file:/abs/path` too) or
/// `postgres://user@host:5432/db` (opening one brings its schema up to date, as the host
/// does). `LOBU_STORE` is the default for `--store`.
#[derive(Debug, Parser)]
#[command(name = "lobu", version, about, long_about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum Command {
    /// Write conversations as lobu export documents (JSON Lines: a header line, then the
    /// transcript byte for byte), one conversation, an agent's, an org's or the whole store.
    Export(ExportArgs),
    /// Import lobu export documents, or a bare pi session file (any version: 1 and 2 are
    /// migrated to 3 as pi does on load) as one conversation. Importing again is harmless;
    /// an import never overwrites a conversation that has another transcript.
    Import(ImportArgs),
    /// Copy every conversation of one store into another (e.g. files to PostgreSQL),
    /// verifying each by SHA-256. Idempotent: run it again after a crash or a kill and it
    /// finishes the job without duplicating anything.
    Migrate(MigrateArgs),
    /// Run one retention pass now (the runtime also runs them on its own), or with
    /// `--dry-run` report what one would remove.
    Prune(PruneArgs),
    /// List an agent's conversations, a page at a time.
    Ls(LsArgs),
    /// Show one conversation: its stats and its last messages.
    Show(ShowArgs),
    /// List an org's runs: unfinished and failed ones by default.
    Runs(RunsArgs),
}

/// The store a command reads or changes.
#[derive(Debug, Args)]
pub struct StoreArg {
    /// The store's URL (`file:DIR` or `postgres://…`).
    #[arg(long, env = "LOBU_STORE", value_name = "URL")]
    pub store: String,
}

/// Which conversations a command takes.
#[derive(Debug, Args)]
pub struct ScopeArgs {
    /// Only this org's conversations.
    #[arg(long)]
    pub org: Option<String>,
    /// Only this agent's (needs `--org`).
    #[arg(long, requires = "org")]
    pub agent: Option<String>,
    /// Only this conversation (needs `--org` and `--agent`).
    #[arg(long, requires = "agent")]
    pub conversation: Option<String>,
}

/// `lobu export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The store to export from.
    #[arg(long, value_name = "URL")]
    pub from: String,
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// Write here instead of to standard output.
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `lobu import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The store to import into.
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// The conversation's ids: required for a pi session file; for export documents they
    /// import the (single) document under these ids instead of its own.
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// An export document (or several, concatenated) or a pi session file; `-` reads
    /// standard input.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// `lobu migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The store to copy from (it is only read).
    #[arg(long, value_name = "URL")]
    pub from: String,
    /// The store to copy into.
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// Conversations copied at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// No progress bar (it is also off when standard error is not a terminal).
    #[arg(long)]
    pub quiet: bool,
}

/// `lobu prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub store: StoreArg,
    /// Report what a pass would remove (up to one batch of each kind), removing nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep finished runs this long.
    #[arg(long, default_value = "7d", value_parser = duration, value_name = "DURATION")]
    pub runs: Duration,
    /// Keep stored events of finished runs this long.
    #[arg(long, default_value = "24h", value_parser = duration, value_name = "DURATION")]
    pub events: Duration,
    /// Keep failed, timed-out and cancelled runs this long (default: as long as --runs).
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pub failed_runs: Option<Duration>,
    /// Remove conversations idle this long (default: keep them for ever).
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pub idle: Option<Duration>,
    /// An agent's own idle window, `AGENT=DURATION` or `AGENT=never` (repeat for more).
    #[arg(long = "idle-agent", value_parser = agent_window, value_name = "AGENT=DURATION")]
    pub idle_agent: Vec<(String, Option<Duration>)>,
    /// Keep forensic copies of failed attempts this long.
    #[arg(long, default_value = "7d", value_parser = duration, value_name = "DURATION")]
    pub forensic: Duration,
    /// The most items of each kind one round removes (a pass runs up to ten rounds).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: u32,
}

/// `lobu ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub store: StoreArg,
    /// The org.
    #[arg(long)]
    pub org: String,
    /// The agent.
    #[arg(long)]
    pub agent: String,
    /// Start after this cursor (printed at the end of the previous page).
    #[arg(long)]
    pub cursor: Option<String>,
    /// Conversations per page (1 to 200).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `lobu show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub store: StoreArg,
    /// The org.
    #[arg(long)]
    pub org: String,
    /// The agent.
    #[arg(long)]
    pub agent: String,
    /// The conversation.
    #[arg(long)]
    pub conversation: String,
    /// How many of the last messages to print (1 to 200).
    #[arg(long, default_value_t = 20)]
    pub messages: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Which runs `lobu runs` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[non_exhaustive]
pub enum RunState {
    /// Pending and running.
    Unfinished,
    /// Failed, timed out or cancelled.
    Failed,
    /// Unfinished and failed.
    Attention,
    /// Every run still kept.
    All,
}

/// `lobu runs`.
#[derive(Debug, Args)]
pub struct RunsArgs {
    #[command(flatten)]
    pub store: StoreArg,
    /// The org.
    #[arg(long)]
    pub org: String,
    /// Only this agent's runs.
    #[arg(long)]
    pub agent: Option<String>,
    /// Which runs.
    #[arg(long, value_enum, default_value_t = RunState::Attention)]
    pub state: RunState,
    /// Start after this cursor (printed at the end of the previous page).
    #[arg(long)]
    pub cursor: Option<String>,
    /// Runs per page (1 to 200).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn agent_window(text: &str) -> Result<(String, Option<Duration>), String> {
    let (agent, window) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not AGENT=DURATION or AGENT=never"))?;
    let window = match window {
        "never" => None,
        other => Some(duration(other)?),
    };
    Ok((agent.to_owned(), window))
}

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration ({e}); try 7d, 24h or 90m"))
}
