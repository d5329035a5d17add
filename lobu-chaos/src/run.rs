//! One chaos run: set up the store and the replicas, run the load while replicas die (and
//! the database misbehaves), drain, check, clean up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::time::Instant;

use crate::api::Api;
use crate::args::{Args, StoreKind};
use crate::database::{ChaosDb, server_address};
use crate::db_faults::{FaultReport, run_faults};
use crate::fleet::Fleet;
use crate::host_binary::host_binary;
use crate::load::{SleepRuns, run_conversation};
use crate::plan::{ORGS, plan};
use crate::proxy::FaultProxy;
use crate::replica::{Launch, Proxied};
use crate::report::Report;
use crate::verify::{Setting, verify};

/// Run the harness; `Err` when it could not run at all (no database, no binary).
pub(crate) async fn run(args: Args) -> Result<Report, String> {
    let started = Instant::now();
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64 % 1_000_000_000)
    });
    let binary = host_binary()?;
    let work = tempfile::Builder::new()
        .prefix("lobu-chaos-")
        .tempdir()
        .map_err(|e| format!("work directory: {e}"))?;
    // A private copy: a build elsewhere in a shared target directory must not change the
    // binary that replacements start from in the middle of a run.
    let copy = work.path().join("example-axum-host");
    std::fs::copy(&binary, &copy)
        .map_err(|e| format!("copying {} into the work directory: {e}", binary.display()))?;
    let binary = copy;
    println!(
        "chaos: seed {seed}, store {}, {} replicas, {} conversations, {} turns, a kill every {} ms{}; \
         logs in {}",
        args.store.name(),
        args.replicas,
        args.conversations,
        args.turns,
        args.kill_every_ms,
        if args.db_faults {
            ", database faults"
        } else {
            ""
        },
        work.path().display()
    );

    let db = match args.store {
        StoreKind::Pg => Some(ChaosDb::create(seed).await?),
        StoreKind::File => None,
    };
    let proxy = match (&db, args.db_faults) {
        (Some(db), true) => Some(FaultProxy::new(server_address(&db.url))),
        _ => None,
    };
    let data_dir = work.path().join("data");
    let mut env = vec![
        ("LOBU_ADDR", "127.0.0.1:0".to_owned()),
        (
            "LOBU_API_KEYS",
            format!("{}={},{}={}", ORGS[0].1, ORGS[0].0, ORGS[1].1, ORGS[1].0),
        ),
        ("LOBU_RETRY_DELAY_MS", "100".to_owned()),
        ("LOBU_DEMO_WORD_DELAY_MS", "2".to_owned()),
        ("LOBU_CLAIM_TTL_MS", args.claim_ttl_ms.to_string()),
        ("LOBU_SHUTDOWN_GRACE_SECS", "10".to_owned()),
        ("LOBU_CONCURRENCY", "8".to_owned()),
        ("LOBU_PG_MAX_CONNECTIONS", "6".to_owned()),
        ("RUST_LOG", "info".to_owned()),
        ("NO_COLOR", "1".to_owned()),
    ];
    match (&db, &proxy) {
        (Some(_), Some(_)) => {} // a proxy port per replica
        (Some(db), None) => env.push(("DATABASE_URL", db.url.clone())),
        (None, _) => {
            env.push(("LOBU_SESSION_STORE", "file".to_owned()));
            env.push(("LOBU_DATA_DIR", data_dir.display().to_string()));
        }
    }
    let launch = Launch {
        binary,
        env: env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        log_dir: work.path().to_owned(),
        proxied: db.as_ref().zip(proxy.clone()).map(|(db, proxy)| Proxied {
            proxy,
            database_url: db.url.clone(),
        }),
    };
    let fleet = Arc::new(Fleet::new(launch));
    let starts = (0..args.replicas).map(|_| fleet.start_one());
    for started in futures::future::join_all(starts).await {
        started?;
    }
    let api = Api::new(fleet.clone())?;

    // The load, the killer and the database faults, side by side.
    let load_started = Instant::now();
    let running = Arc::new(AtomicBool::new(true));
    let sleep_runs = SleepRuns::default();
    let plans = plan(seed, args.conversations, args.turns);
    let conversations: Vec<_> = plans
        .into_iter()
        .map(|p| tokio::spawn(run_conversation(api.clone(), p, seed, sleep_runs.clone())))
        .collect();
    let killer = tokio::spawn(kill_loop(
        fleet.clone(),
        seed,
        args.kill_every_ms,
        sleep_runs.clone(),
        running.clone(),
    ));
    let faults = proxy.clone().map(|proxy| {
        tokio::spawn(run_faults(
            proxy,
            fleet.clone(),
            api.clone(),
            Duration::from_millis(args.claim_ttl_ms),
            running.clone(),
        ))
    });
    let mut ledgers = Vec::new();
    for conversation in conversations {
        ledgers.push(
            conversation
                .await
                .map_err(|e| format!("a client task panicked: {e}"))?,
        );
    }
    running.store(false, Ordering::SeqCst);
    let kill_error = killer
        .await
        .map_err(|e| format!("the killer panicked: {e}"))?;
    let fault_report = match faults {
        Some(task) => task
            .await
            .map_err(|e| format!("the faults panicked: {e}"))?,
        None => FaultReport::default(),
    };
    let load_time = load_started.elapsed();

    let setting = Setting {
        fleet: &fleet,
        api: &api,
        db: db.as_ref(),
        data_dir: &data_dir,
    };
    let mut report = verify(&setting, ledgers).await?;
    report.load_time = load_time;
    report.seed = seed;
    report.kills = fleet.stats();
    report.faults = fault_report;
    report.proxy = proxy.map(|p| p.stats().summary());
    if let Some(error) = kill_error {
        report.findings.other.push(error);
    }
    report.total_time = started.elapsed();

    let keep = args.keep || !report.passed();
    if let Some(db) = db {
        if keep {
            println!("chaos: kept the database {}", db.name);
        } else {
            db.drop_database().await?;
        }
    }
    if keep {
        let path = work.keep();
        println!("chaos: kept the logs and data in {}", path.display());
    }
    Ok(report)
}

/// Every `every_ms` (±30%) kill a replica and start another, until `running` turns false;
/// `Some(error)` if replicas stopped starting.
async fn kill_loop(
    fleet: Arc<Fleet>,
    seed: u64,
    every_ms: u64,
    sleep_runs: SleepRuns,
    running: Arc<AtomicBool>,
) -> Option<String> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6b69_6c6c);
    loop {
        let pause = rng.random_range(every_ms * 7 / 10..=every_ms * 13 / 10);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        if !running.load(Ordering::SeqCst) {
            return fleet.replace_crashed().await.err();
        }
        let sleeping = sleep_runs.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Err(error) = fleet.replace_crashed().await {
            return Some(error);
        }
        if let Err(error) = fleet.kill_one(&mut rng, &sleeping).await {
            return Some(error);
        }
    }
}
