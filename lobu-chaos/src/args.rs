//! The command line: which store, how many replicas, conversations and turns, how often a
//! replica dies, the seed, and whether the database misbehaves too.

use clap::{Parser, ValueEnum};

/// Which store the replicas share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum StoreKind {
    /// A fresh PostgreSQL database on the server at `DATABASE_URL`, dropped at the end.
    Pg,
    /// One data directory (a temporary one), shared by every replica.
    File,
}

impl StoreKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            StoreKind::Pg => "pg",
            StoreKind::File => "file",
        }
    }
}

/// Replicas of the example host killed under load; checks from the outside that no accepted
/// turn was lost, duplicated or torn and that no two turns of a conversation overlapped.
#[derive(Debug, Clone, Parser)]
#[command(name = "lobu-chaos")]
pub(crate) struct Args {
    /// The store every replica shares.
    #[arg(long, value_enum, default_value_t = StoreKind::Pg)]
    pub(crate) store: StoreKind,
    /// How many replicas run at once (a killed one is replaced at once).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub(crate) replicas: u16,
    /// How many conversations the client spreads its turns over (half per org).
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(2..=10_000))]
    pub(crate) conversations: u32,
    /// How many turns the client submits in all.
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) turns: u32,
    /// How often a random replica is killed with SIGKILL, in milliseconds.
    #[arg(long, default_value_t = 2500, value_parser = clap::value_parser!(u64).range(100..))]
    pub(crate) kill_every_ms: u64,
    /// The seed of the workload and of the killer's choices (default: from the clock).
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Put a faulty TCP proxy between the replicas and PostgreSQL (pg only): it drops
    /// connections mid-transaction, stalls them past the claim, and refuses connections.
    #[arg(long)]
    pub(crate) db_faults: bool,
    /// How long a turn's claim lasts unrenewed (`LOBU_CLAIM_TTL_MS` of the replicas): a
    /// killed replica's turns run again after it.
    #[arg(long, default_value_t = 6000, value_parser = clap::value_parser!(u64).range(1000..=300_000))]
    pub(crate) claim_ttl_ms: u64,
    /// Keep the work directory (replica logs, file store) even when every check passes.
    #[arg(long)]
    pub(crate) keep: bool,
}

impl Args {
    /// Combinations clap cannot check.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.db_faults && self.store != StoreKind::Pg {
            return Err("--db-faults needs --store pg (it sits in front of PostgreSQL)".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_postgresql_three_replicas_and_no_database_faults() {
        let args = Args::parse_from(["lobu-chaos"]);
        assert_eq!(args.store, StoreKind::Pg);
        assert_eq!(args.replicas, 3);
        assert!(!args.db_faults);
        assert!(args.validate().is_ok());
    }

    #[test]
    fn database_faults_on_the_file_store_are_refused() {
        let args = Args::parse_from(["lobu-chaos", "--store", "file", "--db-faults"]);
        assert!(args.validate().unwrap_err().contains("--store pg"));
    }
}
