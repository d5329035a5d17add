//! A TCP proxy between the replicas and PostgreSQL, on 127.0.0.1, that misbehaves on
//! command: it drops connections in the middle of a transaction, stalls connections (bytes
//! held, both ways) past a claim's lifetime, and goes away (existing connections cut, new
//! ones refused by closed ports) for a while. Each replica gets a port of its own, so one
//! replica can be stalled whole while the others go on.
//!
//! It follows just enough of the PostgreSQL protocol to know whether a connection is inside
//! a transaction: the status byte of the server's last `ReadyForQuery` (`T` or `E`). The
//! replicas connect with `sslmode=disable`, so the server's side is plain messages.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

use crate::protocol::ReadyTracker;

/// What the proxy did, for the report.
#[derive(Debug, Default)]
pub(crate) struct ProxyStats {
    pub(crate) connections: AtomicU64,
    pub(crate) dropped_mid_transaction: AtomicU64,
    pub(crate) stalled: AtomicU64,
    pub(crate) cut_by_outage: AtomicU64,
}

impl ProxyStats {
    /// One line for the report.
    pub(crate) fn summary(&self) -> String {
        format!(
            "{} connections proxied, {} dropped mid-transaction, {} stalled, {} cut by outages",
            self.connections.load(Ordering::Relaxed),
            self.dropped_mid_transaction.load(Ordering::Relaxed),
            self.stalled.load(Ordering::Relaxed),
            self.cut_by_outage.load(Ordering::Relaxed)
        )
    }
}

#[derive(Debug)]
struct Connection {
    /// Which replica's port it came in on.
    replica: usize,
    in_transaction: AtomicBool,
    stalled: AtomicBool,
    kill: watch::Sender<bool>,
}

#[derive(Debug)]
struct Shared {
    upstream: String,
    drop_in_transaction: AtomicBool,
    away: watch::Sender<bool>,
    connections: Mutex<HashMap<u64, Arc<Connection>>>,
    /// Replicas whose every connection, open or new, is stalled.
    stalled_replicas: Mutex<HashSet<usize>>,
    next_id: AtomicU64,
    stats: ProxyStats,
}

/// The running proxy; its tasks end with the process.
#[derive(Debug, Clone)]
pub(crate) struct FaultProxy {
    shared: Arc<Shared>,
}

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

fn connections(shared: &Shared) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Connection>>> {
    shared.connections.lock().unwrap_or_else(|p| p.into_inner())
}

impl FaultProxy {
    /// A proxy forwarding to `upstream` (`host:port`); ports are opened per replica.
    pub(crate) fn new(upstream: String) -> FaultProxy {
        let (away, _) = watch::channel(false);
        FaultProxy {
            shared: Arc::new(Shared {
                upstream,
                drop_in_transaction: AtomicBool::new(false),
                away,
                connections: Mutex::new(HashMap::new()),
                stalled_replicas: Mutex::new(HashSet::new()),
                next_id: AtomicU64::new(0),
                stats: ProxyStats::default(),
            }),
        }
    }

    /// Open a port of 127.0.0.1 for `replica`'s connections.
    pub(crate) fn open_port(&self, replica: usize) -> Result<u16, String> {
        let listener = listen("127.0.0.1:0".parse().expect("a valid address"))
            .map_err(|e| format!("proxy: {e}"))?;
        let addr = listener.local_addr().map_err(|e| format!("proxy: {e}"))?;
        tokio::spawn(accept_loop(listener, addr, replica, self.shared.clone()));
        Ok(addr.port())
    }

    pub(crate) fn stats(&self) -> &ProxyStats {
        &self.shared.stats
    }

    /// For `window`, cut every connection that sends or receives while inside a transaction.
    pub(crate) async fn drop_mid_transaction(&self, window: Duration) {
        self.shared
            .drop_in_transaction
            .store(true, Ordering::SeqCst);
        tokio::time::sleep(window).await;
        self.shared
            .drop_in_transaction
            .store(false, Ordering::SeqCst);
    }

    /// Hold every other open connection's bytes, both ways, for `duration`, then let them
    /// flow again (late answers and late writes arrive then).
    pub(crate) async fn stall_half(&self, duration: Duration) {
        let chosen: Vec<Arc<Connection>> = connections(&self.shared)
            .values()
            .step_by(2)
            .cloned()
            .collect();
        for connection in &chosen {
            connection.stalled.store(true, Ordering::SeqCst);
        }
        self.shared
            .stats
            .stalled
            .fetch_add(chosen.len() as u64, Ordering::Relaxed);
        tokio::time::sleep(duration).await;
        for connection in &chosen {
            connection.stalled.store(false, Ordering::SeqCst);
        }
    }

    /// Hold every byte of `replica`'s connections, open and new, both ways, for `duration`:
    /// to it the database hangs, while the other replicas go on (and take its conversations
    /// over once its claims lapse); then its late calls arrive.
    pub(crate) async fn stall_replica(&self, replica: usize, duration: Duration) {
        let stalled = || {
            self.shared
                .stalled_replicas
                .lock()
                .unwrap_or_else(|p| p.into_inner())
        };
        stalled().insert(replica);
        self.shared.stats.stalled.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(duration).await;
        stalled().remove(&replica);
    }

    /// While `away`, the database is gone: every connection is cut and every port closed.
    pub(crate) fn set_away(&self, away: bool) {
        if away {
            let cut: Vec<Arc<Connection>> = connections(&self.shared).values().cloned().collect();
            self.shared
                .stats
                .cut_by_outage
                .fetch_add(cut.len() as u64, Ordering::Relaxed);
            for connection in cut {
                let _ = connection.kill.send(true);
            }
        }
        self.shared.away.send_replace(away);
    }
}

fn is_stalled(shared: &Shared, connection: &Connection) -> bool {
    connection.stalled.load(Ordering::SeqCst)
        || shared
            .stalled_replicas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&connection.replica)
}

async fn accept_loop(listener: TcpListener, addr: SocketAddr, replica: usize, shared: Arc<Shared>) {
    let mut away = shared.away.subscribe();
    let mut listener = Some(listener);
    loop {
        if *away.borrow_and_update() {
            listener = None; // also a port opened while the database is away
        }
        let Some(open) = &listener else {
            // Away: the port is closed, so connecting is refused, until it is back.
            if away.wait_for(|a| !*a).await.is_err() {
                return;
            }
            while listener.is_none() {
                match listen(addr) {
                    Ok(l) => listener = Some(l),
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            continue;
        };
        tokio::select! {
            accepted = open.accept() => {
                if let Ok((client, _)) = accepted {
                    tokio::spawn(serve(client, replica, shared.clone()));
                }
            }
            changed = away.changed() => {
                if changed.is_err() {
                    return;
                }
                if *away.borrow() {
                    listener = None;
                }
            }
        }
    }
}

async fn serve(client: TcpStream, replica: usize, shared: Arc<Shared>) {
    let Ok(server) = TcpStream::connect(&shared.upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let (kill, killed) = watch::channel(false);
    let connection = Arc::new(Connection {
        replica,
        in_transaction: AtomicBool::new(false),
        stalled: AtomicBool::new(false),
        kill,
    });
    connections(&shared).insert(id, connection.clone());
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let upstream = pump(
        client_read,
        server_write,
        &shared,
        &connection,
        killed.clone(),
        None,
    );
    let mut tracker = ReadyTracker::default();
    let downstream = pump(
        server_read,
        client_write,
        &shared,
        &connection,
        killed,
        Some(&mut tracker),
    );
    tokio::join!(upstream, downstream);
    connections(&shared).remove(&id);
}

/// Copy `from` to `to` until either side closes or the connection is killed; obey stalls
/// and mid-transaction drops. The server's side updates the transaction state.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shared: &Shared,
    connection: &Connection,
    mut killed: watch::Receiver<bool>,
    mut tracker: Option<&mut ReadyTracker>,
) {
    let mut away = shared.away.subscribe();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = killed.wait_for(|k| *k) => break,
            _ = away.wait_for(|a| *a) => break,
        };
        if let Some(in_transaction) = tracker.as_deref_mut().and_then(|t| t.feed(&buf[..n])) {
            connection
                .in_transaction
                .store(in_transaction, Ordering::SeqCst);
        }
        while is_stalled(shared, connection) && !*killed.borrow() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if *killed.borrow() || *away.borrow() {
            break; // also bytes read in the instant the database went away
        }
        if shared.drop_in_transaction.load(Ordering::SeqCst)
            && connection.in_transaction.load(Ordering::SeqCst)
        {
            shared
                .stats
                .dropped_mid_transaction
                .fetch_add(1, Ordering::Relaxed);
            let _ = connection.kill.send(true);
            break;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = connection.kill.send(true); // one side closed: close the other
}
