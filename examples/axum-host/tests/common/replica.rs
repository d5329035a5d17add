//! The real binary as a child process: start it, talk to it, stop it (SIGTERM) or kill it.

use std::path::Path;
use std::process::{ExitStatus, Stdio};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{Api, PATIENCE, Store, TestDb, client};

pub const BINARY: &str = env!("CARGO_BIN_EXE_example-axum-host");
pub const KEYS: &str = "alpha-key-0001=acme";

/// One server process; killed if the test ends without stopping it.
pub struct Replica {
    child: Child,
    base: String,
    log: tempfile::NamedTempFile,
}

pub fn command(vars: &[(&str, &str)], cwd: &Path, log: &tempfile::NamedTempFile) -> Command {
    let mut command = Command::new(BINARY);
    command
        .env_clear()
        .env("LOBU_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .envs(vars.iter().copied())
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log.reopen().expect("log file"))
        .kill_on_drop(true);
    command
}

impl Replica {
    pub async fn start(vars: &[(&str, &str)], cwd: &Path) -> Replica {
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut child = command(vars, cwd, &log)
            .spawn()
            .expect("spawn the host binary");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .expect("the host prints its address")
            .unwrap()
            .unwrap_or_else(|| panic!("the host exited: {}", read(&log)));
        let base = line
            .strip_prefix("lobu example host listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Replica { child, base, log }
    }

    pub fn api(&self, key: Option<&str>) -> Api {
        Api {
            base: self.base.clone(),
            client: client(),
            key: key.map(str::to_owned),
        }
    }

    /// SIGKILL: the process dies at once, mid-turn, its claims left to lapse.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("kill the host");
    }

    /// Send SIGTERM and wait for the process to exit.
    pub async fn terminate(mut self) -> (ExitStatus, String) {
        let pid = self.child.id().expect("running").to_string();
        let kill = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(kill.success());
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("the host exits after SIGTERM")
            .unwrap();
        (status, read(&self.log))
    }
}

pub fn read(log: &tempfile::NamedTempFile) -> String {
    std::fs::read_to_string(log.path()).unwrap_or_default()
}

/// Run the binary to its end; returns its exit status and stderr.
pub async fn run_to_exit(vars: &[(&str, &str)]) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = command(vars, dir.path(), &log).spawn().unwrap();
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("the host exits")
        .unwrap();
    (status, read(&log))
}

/// The variables that put a replica on `store`: a fresh database, or files under `dir`.
pub async fn store_vars(store: Store, dir: &Path) -> (Vec<(&'static str, String)>, Option<TestDb>) {
    let data_dir = dir.join("data").to_str().unwrap().to_owned();
    let mut vars = vec![("LOBU_DATA_DIR", data_dir)];
    let db = match store {
        Store::Pg => Some(TestDb::create().await),
        Store::File => None,
    };
    if let Some(db) = &db {
        vars.push(("DATABASE_URL", db.url.clone()));
    }
    (vars, db)
}

pub fn borrowed<'a>(vars: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    vars.iter().map(|(k, v)| (*k, v.as_str())).collect()
}
