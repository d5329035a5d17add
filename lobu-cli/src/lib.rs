//! # lobu-cli: the `lobu` command for operators
//!
//! ```text
//! lobu export  --from file:./lobu-data --org acme --agent bot > bot.jsonl
//! lobu import  --to postgres://postgres@127.0.0.1/lobu bot.jsonl
//! lobu import  --to file:./lobu-data --org acme --agent bot --conversation c1 session.jsonl
//! lobu migrate --from file:./lobu-data --to postgres://postgres@127.0.0.1/lobu
//! lobu prune   --store file:./lobu-data --runs 7d --events 24h --idle 90d
//! lobu ls      --store file:./lobu-data --org acme --agent bot
//! lobu show    --store file:./lobu-data --org acme --agent bot --conversation c1
//! lobu runs    --store file:./lobu-data --org acme --state failed
//! ```
//!
//! Stores are named by URL (`file:DIR`, `postgres://…`). Every command has `--help`. An
//! error names the problem on standard error and the command exits with status 1 (2 for a
//! usage error). Results go to standard output, counts and progress to standard error.
//!
//! The commands are also functions ([`run`]), for a host that wants them in its own binary.

mod cli;
mod inspect;
mod migrate;
mod prune;
mod store;
mod transfer;

pub use cli::{
    Cli, Command, ExportArgs, ImportArgs, LsArgs, MigrateArgs, PruneArgs, RunState, RunsArgs,
    ScopeArgs, ShowArgs, StoreArg,
};
pub use store::{Access, Store, StoreUrl, open};

/// Run one command.
pub async fn run(cli: &Cli) -> lobu_core::Result<()> {
    match &cli.command {
        Command::Export(args) => transfer::export(args).await,
        Command::Import(args) => transfer::import(args).await,
        Command::Migrate(args) => migrate::migrate(args).await,
        Command::Prune(args) => prune::prune(args).await,
        Command::Ls(args) => inspect::ls(args).await,
        Command::Show(args) => inspect::show(args).await,
        Command::Runs(args) => inspect::runs(args).await,
    }
}
