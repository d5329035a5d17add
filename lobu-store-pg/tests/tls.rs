//! PostgreSQL over TLS (feature `rustls`): a private server of this test's own, with `ssl=on`
//! and a certificate for `localhost` signed by a test CA, accepting TLS connections only.
//! A client that verifies it against that CA does real store work; one trusting another CA
//! is refused with `Unavailable`.
//!
//! Needs the PostgreSQL server binaries (`/usr/lib/postgresql/<version>/bin`); the test
//! fails, never skips, without them. Run as root, the server runs as the `postgres` user.
#![cfg(feature = "rustls")]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use lobu_core::{ErrorKind, SessionStore};
use lobu_store_pg::PgStore;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use support::{exchange, key, lease, turn, writer};

/// A CA certificate (PEM) and, when it signed one, a server certificate and key (PEM) for
/// `localhost`.
fn test_ca(name: &str) -> (String, String, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, name);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate().unwrap();
    let server_cert = params.signed_by(&server_key, &ca).unwrap();
    (ca.pem(), server_cert.pem(), server_key.serialize_pem())
}

/// The newest `/usr/lib/postgresql/<version>/bin` holding `initdb` and `pg_ctl`.
fn postgres_bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .unwrap_or_else(|e| {
            panic!(
                "the PostgreSQL server binaries are missing ({}: {e}); install the \
                 postgresql package to run the TLS test",
                root.display()
            )
        })
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let version = path.file_name()?.to_str()?.parse().ok()?;
            let bin = path.join("bin");
            (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "no initdb and pg_ctl under {}/<version>/bin; install the postgresql package to \
             run the TLS test",
            root.display()
        )
    })
}

fn running_as_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("run id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// A private PostgreSQL server in a temporary directory, stopped (and its files removed) on
/// drop, even when the test panics.
struct PrivateServer {
    bin: PathBuf,
    data: PathBuf,
    as_postgres: bool,
    port: u16,
    dir: tempfile::TempDir,
}

impl PrivateServer {
    /// initdb, write the TLS files, start with `ssl=on` on a free port of 127.0.0.1 and
    /// accept TLS connections only (`hostssl` in pg_hba.conf).
    fn start(server_cert: &str, server_key: &str) -> PrivateServer {
        let bin = postgres_bin_dir();
        let as_postgres = running_as_root();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let data = dir.path().join("data");
        let cert = dir.path().join("server.crt");
        let key = dir.path().join("server.key");
        std::fs::write(&cert, server_cert).unwrap();
        std::fs::write(&key, server_key).unwrap();
        set_mode(&key, 0o600);
        if as_postgres {
            // The server refuses to run as root, and reads its key only if it owns it.
            run(Command::new("chown")
                .arg("-R")
                .arg("postgres:")
                .arg(dir.path()));
        }
        let mut server = PrivateServer {
            bin,
            data,
            as_postgres,
            port: 0,
            dir,
        };
        run(server
            .command("initdb")
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&server.data));
        std::fs::write(
            server.data.join("pg_hba.conf"),
            "hostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
        )
        .unwrap();
        server.port = free_port();
        let options = format!(
            "-c port={} -c listen_addresses=localhost -c unix_socket_directories='{}' \
             -c ssl=on -c ssl_cert_file='{}' -c ssl_key_file='{}' -c fsync=off",
            server.port,
            server.dir.path().display(),
            cert.display(),
            key.display(),
        );
        let log = server.dir.path().join("server.log");
        let started = server
            .command("pg_ctl")
            .args(["start", "-w", "-D"])
            .arg(&server.data)
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(options)
            .output()
            .expect("run pg_ctl start");
        assert!(
            started.status.success(),
            "the private PostgreSQL server did not start: {}{}",
            String::from_utf8_lossy(&started.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        server
    }

    /// `program` from the server's bin directory, run as `postgres` when we are root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    fn url(&self, root_ca: &Path) -> String {
        format!(
            "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
            self.port,
            root_ca.display()
        )
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(&self.data)
            .output();
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn run(command: &mut Command) {
    let out = command.output().expect("run a PostgreSQL setup command");
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().unwrap().port()
}

async fn store_at(url: &str) -> PgStore {
    let options = PgConnectOptions::from_str(url).expect("a valid URL");
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(options);
    PgStore::new(pool)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_verifying_the_test_ca_does_store_work_over_tls_and_another_ca_is_refused() {
    let (ca_pem, server_cert, server_key) = test_ca("lobu test CA");
    let server = PrivateServer::start(&server_cert, &server_key);
    let client_dir = tempfile::tempdir().unwrap();
    let ca = client_dir.path().join("ca.pem");
    std::fs::write(&ca, &ca_pem).unwrap();

    let store = store_at(&server.url(&ca)).await;
    store.migrate().await.expect("migrate over TLS");
    let k = key("acme", "bot", "tls");
    let held = lease(&store, &k).await;
    let mut w = writer();
    exchange(&mut w, 0);
    let bytes = w.bytes();
    let version = turn(&store, &held, None, &bytes).await;
    let head = store.hydrate(&k).await.expect("hydrate").expect("a head");
    assert_eq!(head.version, version);
    assert_eq!(head.transcript, bytes);
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&server.url(&ca))
        .await
        .unwrap();
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(encrypted, "the connection is TLS");
    pool.close().await;

    // A client trusting another CA refuses the server's certificate.
    let (other_pem, _, _) = test_ca("another CA");
    let other = client_dir.path().join("other.pem");
    std::fs::write(&other, other_pem).unwrap();
    let refused = store_at(&server.url(&other))
        .await
        .migrate()
        .await
        .unwrap_err();
    assert!(refused.is(ErrorKind::Unavailable), "{refused}");
    let chain = describe(&refused);
    assert!(
        chain.contains("invalid peer certificate: UnknownIssuer"),
        "{chain}"
    );

    // Without TLS the server (hostssl only) refuses to talk at all.
    let plain = format!(
        "postgres://postgres@localhost:{}/postgres?sslmode=disable",
        server.port
    );
    let refused = store_at(&plain).await.migrate().await.unwrap_err();
    let chain = describe(&refused);
    assert!(chain.contains("no encryption"), "{chain}");
    drop(server);
}

/// An error with its sources, `outer: inner: …`.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
