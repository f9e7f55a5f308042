//! A `redis-server` of the tests' own on a free loopback port (`tests/fleet.rs`,
//! `tests/redis_store.rs`), and the line a missing one writes.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::io::Write as _;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `redis-server` of our own; killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    /// A cluster node's configuration file, removed on drop.
    config: Option<std::path::PathBuf>,
}

impl RedisServer {
    /// Start one, or `None` (after a skip line) when `redis-server` is missing and not
    /// required.
    pub fn start(test: &str) -> Option<Self> {
        Self::start_with(test, |port| vec!["--port".into(), port.to_string()])
    }

    /// Start one with TLS only (`rediss://`), serving the PEM certificate and key files
    /// given.
    pub fn start_tls(test: &str, cert: &Path, key: &Path) -> Option<Self> {
        Self::start_with(test, |port| {
            vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                cert.display().to_string(),
                "--tls-key-file".into(),
                key.display().to_string(),
                "--tls-auth-clients".into(),
                "no".into(),
            ]
        })
    }

    /// Start one in cluster mode, alone, serving every slot: a script there may only touch
    /// keys of one slot (`CROSSSLOT` otherwise), as on any Redis Cluster.
    pub async fn start_cluster(test: &str) -> Option<Self> {
        let config = std::env::temp_dir().join(format!(
            "docplanner-auth-cluster-{}-{:016x}.conf",
            std::process::id(),
            fastrand::u64(..)
        ));
        let mut server = Self::start_with(test, |port| {
            vec![
                "--port".into(),
                port.to_string(),
                "--cluster-enabled".into(),
                "yes".into(),
                "--cluster-config-file".into(),
                config.display().to_string(),
            ]
        })?;
        server.config = Some(config);
        server
            .command(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"])
            .await;
        for _ in 0..500 {
            if let redis::Value::BulkString(info) = server.command(&["CLUSTER", "INFO"]).await {
                if info.starts_with(b"cluster_state:ok") {
                    return Some(server);
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the one-node cluster never reached cluster_state:ok");
    }

    fn start_with(test: &str, listen: impl FnOnce(u16) -> Vec<String>) -> Option<Self> {
        let free = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        let spawned = Command::new("redis-server")
            .args(listen(port))
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--enable-debug-command",
                "local",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(error) if std::env::var("REQUIRE_REDIS").as_deref() == Ok("1") => {
                panic!("REQUIRE_REDIS=1 but redis-server could not start: {error}")
            }
            Err(_) => {
                // Straight to the process's stderr, not through `eprintln!`: the test
                // harness captures the print macros of a passing test, and this line must
                // be seen (the test itself still counts as passed).
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED {test}: redis-server is not on PATH (apt-get install \
                     redis-server; REQUIRE_REDIS=1 makes this a failure)"
                );
                return None;
            }
        };
        let server = Self {
            child: Some(child),
            port,
            config: None,
        };
        for _ in 0..500 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server did not listen on port {port}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The URL of a server started with [`start_tls`](Self::start_tls).
    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}/", self.port)
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A raw command, for the tests' own interventions (flush, a dead lock holder, a slow
    /// server).
    pub async fn command(&self, args: &[&str]) -> redis::Value {
        let client = redis::Client::open(self.url()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query_async(&mut connection).await.unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if let Some(config) = self.config.take() {
            let _ = std::fs::remove_file(config);
        }
    }
}
