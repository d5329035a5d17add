//! `lobu-chaos`: replicas of the example host killed under load, database faults, and checks
//! from the outside that every guarantee held. See `--help` and the README's "Reliability".
//!
//! The last line is `chaos: accepted=A completed=C failed=F lost=L duplicated=D corrupt=X
//! overlaps=O kills=K`; the exit status is 0 only when lost, duplicated, corrupt and overlaps
//! are 0, every other check passed, and at least one replica was killed (1 otherwise, 2 when
//! the harness could not run).

mod api;
mod args;
mod check_fences;
mod check_overlap;
mod check_sql;
mod check_stored;
mod check_transcript;
mod database;
mod db_faults;
mod findings;
mod fleet;
mod host_binary;
mod ledger;
mod load;
mod logs;
mod plan;
mod protocol;
mod proxy;
mod replica;
mod report;
mod run;
mod verify;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let args = args::Args::parse();
    if let Err(error) = args.validate() {
        eprintln!("lobu-chaos: {error}");
        return ExitCode::from(2);
    }
    match run::run(args).await {
        Ok(report) => {
            for line in report.lines() {
                println!("{line}");
            }
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("lobu-chaos: could not run: {error}");
            ExitCode::from(2)
        }
    }
}
