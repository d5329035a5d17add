//! One replica: a process of the example host, its log file, and how it ended.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::database::via_proxy;
use crate::logs::Nanos;
use crate::proxy::FaultProxy;

/// How long a replica may take to print its address.
const START_PATIENCE: Duration = Duration::from_secs(60);
/// How long a replica may take to exit after SIGTERM before it is killed.
const STOP_PATIENCE: Duration = Duration::from_secs(30);

/// What every replica is started with.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    pub(crate) binary: PathBuf,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) log_dir: PathBuf,
    /// With database faults: each replica reaches the database through its own proxy port.
    pub(crate) proxied: Option<Proxied>,
}

/// The database behind the fault proxy.
#[derive(Debug, Clone)]
pub(crate) struct Proxied {
    pub(crate) proxy: FaultProxy,
    /// The database's own URL.
    pub(crate) database_url: String,
}

/// A running replica process.
#[derive(Debug)]
pub(crate) struct Replica {
    pub(crate) id: usize,
    child: Child,
    /// `http://127.0.0.1:port`, once it printed it.
    pub(crate) base: Option<String>,
    pub(crate) log: PathBuf,
}

/// A replica that is gone: where its log is and when (and how) it ended.
#[derive(Debug, Clone)]
pub(crate) struct Ended {
    pub(crate) id: usize,
    pub(crate) log: PathBuf,
    pub(crate) at: Nanos,
    /// `killed`, `stopped` or `exited`.
    pub(crate) how: &'static str,
}

pub(crate) fn now_nanos() -> Nanos {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as Nanos)
}

impl Replica {
    /// Start replica `id`; it is not serving until [`wait_ready`](Self::wait_ready).
    pub(crate) fn spawn(launch: &Launch, id: usize) -> Result<Replica, String> {
        let log = launch.log_dir.join(format!("replica-{id:03}.log"));
        let file =
            std::fs::File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let mut env = launch.env.clone();
        if let Some(proxied) = &launch.proxied {
            let port = proxied.proxy.open_port(id)?;
            env.push((
                "DATABASE_URL".to_owned(),
                via_proxy(&proxied.database_url, port),
            ));
        }
        let child = Command::new(&launch.binary)
            .env_clear()
            .envs(env)
            .current_dir(&launch.log_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", launch.binary.display()))?;
        Ok(Replica {
            id,
            child,
            base: None,
            log,
        })
    }

    /// Wait for the address line; `Err` if the process exited first (its log says why).
    pub(crate) async fn wait_ready(&mut self) -> Result<(), String> {
        let stdout = self.child.stdout.take().ok_or("stdout already read")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(START_PATIENCE, lines.next_line())
            .await
            .map_err(|_| format!("replica {} printed no address in time", self.id))?
            .map_err(|e| format!("reading replica {}: {e}", self.id))?;
        let Some(line) = line else {
            return Err(format!(
                "replica {} exited during start-up: {}",
                self.id,
                last_line(&self.log)
            ));
        };
        let base = line
            .strip_prefix("lobu example host listening on ")
            .ok_or_else(|| format!("replica {} printed {line:?}", self.id))?;
        self.base = Some(base.to_owned());
        Ok(())
    }

    /// SIGKILL, and wait until the process is gone.
    pub(crate) async fn kill(mut self) -> Ended {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        self.ended("killed")
    }

    /// SIGTERM (a graceful stop), SIGKILL if it takes too long.
    pub(crate) async fn stop(mut self) -> Ended {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        match tokio::time::timeout(STOP_PATIENCE, self.child.wait()).await {
            Ok(_) => self.ended("stopped"),
            Err(_) => self.kill().await,
        }
    }

    /// Whether the process has exited by itself (a failed start, a crash).
    pub(crate) fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    pub(crate) fn into_exited(self) -> Ended {
        self.ended("exited")
    }

    fn ended(self, how: &'static str) -> Ended {
        Ended {
            id: self.id,
            log: self.log,
            at: now_nanos(),
            how,
        }
    }
}

/// The last line of a log, to say why a replica stopped.
pub(crate) fn last_line(log: &Path) -> String {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .last()
        .unwrap_or("(empty log)")
        .to_owned()
}
