//! Test support shared by every integration test: a private nats-server per test (free
//! loopback port, temporary store, killable and restartable), the real `blob-router`
//! binary spawned against it, and helpers to publish events and read the outputs.
#![allow(dead_code)]

pub mod contract;
pub mod mockdb;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull};
use async_nats::HeaderMap;
use futures::StreamExt;

/// The nats-server binary: `$NATS_SERVER`, else Debian's path, else whatever is on PATH.
pub fn nats_server_bin() -> String {
    std::env::var("NATS_SERVER").unwrap_or_else(|_| {
        if Path::new("/usr/sbin/nats-server").exists() {
            "/usr/sbin/nats-server".into()
        } else {
            "nats-server".into()
        }
    })
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(name),
    )
    .unwrap()
}

pub fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// A nats-server with JetStream of this test's own.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    store: tempfile::TempDir,
}

impl NatsServer {
    pub fn start() -> Self {
        let mut s = Self {
            child: None,
            port: free_port(),
            store: tempfile::tempdir().unwrap(),
        };
        s.launch();
        s
    }

    fn launch(&mut self) {
        let child = Command::new(nats_server_bin())
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server must be installed (see .ci/run)");
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(10));
        // On a restart another test may have taken the freed port: then ours exits.
        std::thread::sleep(Duration::from_millis(50));
        let exited = self.child.as_mut().unwrap().try_wait().unwrap();
        assert!(
            exited.is_none(),
            "nats-server on port {} exited: {exited:?}",
            self.port
        );
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Same port, same store: what a crashed server looks like when it comes back.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    pub async fn jetstream(&self) -> jetstream::Context {
        let client = async_nats::connect(self.url()).await.unwrap();
        jetstream::new(client)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn wait_for_port(port: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Waits for `child` to exit, at most `limit`; kills it and returns None if it does not.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The real binary, running `run` against a test's server.
pub struct Worker {
    child: Option<Child>,
    pub http: SocketAddr,
    pub log: PathBuf,
    _logdir: tempfile::TempDir,
}

impl Worker {
    /// Spawns `blob-router run` with `--configs configs` and any extra flags.
    pub fn spawn(nats_url: &str, configs: &Path, extra: &[&str]) -> Self {
        let configs = configs.to_str().unwrap();
        let mut args = vec!["--configs", configs];
        args.extend_from_slice(extra);
        Self::spawn_with(nats_url, &args)
    }

    /// Spawns `blob-router run` with these flags (the config source among them).
    pub fn spawn_with(nats_url: &str, args: &[&str]) -> Self {
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let logdir = tempfile::tempdir().unwrap();
        let log = logdir.path().join("worker.log");
        let child = Command::new(env!("CARGO_BIN_EXE_blob-router"))
            .arg("run")
            .args(["--nats-url", nats_url, "--http-addr", &http.to_string()])
            .args(args)
            .env("BLOB_ROUTER_LOG_LEVEL", "info,blob_router=debug")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self {
            child: Some(child),
            http,
            log,
            _logdir: logdir,
        }
    }

    /// Spawns the worker and waits until it is ready.
    pub async fn start(nats_url: &str, configs: &Path, extra: &[&str]) -> Self {
        let worker = Self::spawn(nats_url, configs, extra);
        worker.wait_ready().await;
        worker
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let r = reqwest::get(format!("http://{}{path}", self.http))
            .await
            .ok()?;
        let code = r.status().as_u16();
        Some((code, r.text().await.ok()?))
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some((200, _)) = self.get("/health/ready").await {
                return;
            }
            if Instant::now() > deadline {
                panic!("worker never became ready; logs:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Value of a metric line (exact name and labels) in `/metrics`, 0 if absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.get("/metrics").await.expect("metrics reachable");
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0.0)
    }

    /// Polls `/metrics` until `series` reaches `at_least`; panics with the logs after `limit`.
    pub async fn wait_metric(&self, series: &str, at_least: f64, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.metric(series).await < at_least {
            assert!(
                Instant::now() < deadline,
                "{series} never reached {at_least}; logs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    pub fn sigkill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the process to exit on its own.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut()?;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// Publishes one input message and waits for its PubAck.
pub async fn publish(
    js: &jetstream::Context,
    subject: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(*k, *v);
    }
    js.publish_with_headers(subject.to_string(), h, body.into())
        .await
        .unwrap()
        .await
        .unwrap();
}

/// One output message as the tests look at it.
#[derive(Debug, Clone)]
pub struct Out {
    pub subject: String,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Out {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap()
    }
}

/// Every message currently in `stream`, read with an ephemeral consumer (nothing is
/// acked away: the stream keeps them for the next look).
pub async fn read_all(js: &jetstream::Context, stream: &str) -> Vec<Out> {
    let Ok(mut s) = js.get_stream(stream).await else {
        return Vec::new();
    };
    let total = s.info().await.unwrap().state.messages as usize;
    if total == 0 {
        return Vec::new();
    }
    let consumer = s
        .create_consumer(pull::Config {
            ack_policy: jetstream::consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out = Vec::with_capacity(total);
    let mut msgs = consumer.messages().await.unwrap();
    while out.len() < total {
        let m = tokio::time::timeout(Duration::from_secs(10), msgs.next())
            .await
            .expect("stream read timed out")
            .unwrap()
            .unwrap();
        let headers = m
            .headers
            .iter()
            .flat_map(|h| {
                h.iter()
                    .flat_map(|(k, vs)| vs.iter().map(move |v| (k.to_string(), v.to_string())))
            })
            .collect();
        out.push(Out {
            subject: m.subject.to_string(),
            payload: m.payload.to_vec(),
            headers,
        });
    }
    out
}

/// Number of messages in `stream` (0 if it does not exist).
pub async fn count(js: &jetstream::Context, stream: &str) -> u64 {
    match js.get_stream(stream).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

/// Polls until routed + dead-lettered reaches `n` (or the limit passes); returns the counts.
pub async fn wait_outputs(js: &jetstream::Context, n: u64, limit: Duration) -> (u64, u64) {
    let deadline = Instant::now() + limit;
    loop {
        let (r, d) = (count(js, "BLOB_ROUTED").await, count(js, "BLOB_DLQ").await);
        if r + d >= n || Instant::now() > deadline {
            return (r, d);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the durable consumer has nothing pending and nothing unacked.
pub async fn wait_drained(js: &jetstream::Context, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(stream) = js.get_stream("BLOB_EVENTS").await {
            if let Ok(info) = stream.consumer_info("blob-router").await {
                if info.num_pending == 0 && info.num_ack_pending == 0 {
                    return true;
                }
            }
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A config file in a temp dir the test can rewrite.
pub struct ConfigFile {
    dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl ConfigFile {
    pub fn new(yaml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("configs.yaml");
        std::fs::write(&path, yaml).unwrap();
        Self { dir, path }
    }

    pub fn fixture() -> Self {
        Self::new(&String::from_utf8(fixture("configs.yaml")).unwrap())
    }

    /// Replaces the file the way editors do: write aside, rename over.
    pub fn replace(&self, yaml: &str) {
        let tmp = self.dir.path().join(".configs.yaml.tmp");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }
}
