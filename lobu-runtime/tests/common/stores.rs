//! The stores the scenarios run on, each fresh per test.

use std::path::Path;
use std::sync::Arc;

use lobu_core::Backend;
use lobu_core::memory::MemoryBackend;
use lobu_runtime::{Runtime, RuntimeBuilder};
use lobu_store_file::FileStore;
use tempfile::TempDir;

use super::agent::ScriptAgent;
use super::pg::PgDatabase;

/// Which backend a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Memory,
    File,
    Pg,
}

/// A fresh store plus a scratch root, dropped at the end of the test.
#[derive(Debug)]
pub struct Fixture {
    pub store: Store,
    pub backend: Backend,
    pub dir: TempDir,
    memory: Option<Arc<MemoryBackend>>,
    pg: Option<PgDatabase>,
}

impl Fixture {
    pub async fn new(store: Store) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        match store {
            Store::Memory => {
                let memory = Arc::new(MemoryBackend::new());
                Fixture {
                    store,
                    backend: Backend::from_shared(memory.clone()),
                    dir,
                    memory: Some(memory),
                    pg: None,
                }
            }
            Store::File => {
                let backend = open_file(&dir.path().join("store")).await;
                Fixture {
                    store,
                    backend,
                    dir,
                    memory: None,
                    pg: None,
                }
            }
            Store::Pg => {
                let db = PgDatabase::create().await;
                Fixture {
                    store,
                    backend: db.backend().await,
                    dir,
                    memory: None,
                    pg: Some(db),
                }
            }
        }
    }

    /// Another handle on the same storage, as a second replica would open it (for
    /// PostgreSQL: its own pool and its own wake-up listener).
    pub async fn replica(&self) -> Backend {
        match self.store {
            Store::Memory => Backend::from_shared(self.memory.clone().expect("memory")),
            Store::File => open_file(&self.dir.path().join("store")).await,
            Store::Pg => self.pg.as_ref().expect("pg").backend().await,
        }
    }

    /// How a child process opens this store: `file:<root>` or `pg:<database>`.
    pub fn spec(&self) -> String {
        match self.store {
            Store::Memory => panic!("a memory store cannot be shared with another process"),
            Store::File => format!("file:{}", self.dir.path().join("store").display()),
            Store::Pg => format!("pg:{}", self.pg.as_ref().expect("pg").name()),
        }
    }

    /// A builder on this store with `agent`, scratch dirs under the fixture's directory.
    pub fn builder(&self, agent: &ScriptAgent) -> RuntimeBuilder {
        self.builder_on(self.backend.clone(), agent)
    }

    /// A builder on `backend` (e.g. a [`replica`](Self::replica)).
    pub fn builder_on(&self, backend: Backend, agent: &ScriptAgent) -> RuntimeBuilder {
        super::quick(Runtime::builder(backend, agent.arc())).scratch_root(self.scratch_root())
    }

    /// The scratch root of runtimes made by [`builder`](Self::builder).
    pub fn scratch_root(&self) -> std::path::PathBuf {
        self.dir.path().join("scratch")
    }
}

/// A file store at `root`: a second call on the same root is another replica, exactly as
/// another process would open it.
pub async fn open_file(root: &Path) -> Backend {
    FileStore::open(root)
        .await
        .expect("open the file store")
        .into_backend()
}
