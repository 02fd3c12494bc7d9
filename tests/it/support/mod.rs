//! Test support shared by every integration test: a private nats-server per test (on a
//! port it picked and reported, with a temporary store, killable and restartable), the
//! real `blob-router` binary spawned against it (its HTTP address read from its log),
//! helpers to publish events and read the outputs, and [`eventually`], the one way a
//! test waits for something.

pub mod burst;
pub mod contract;
pub mod mockdb;
pub mod tools;

pub use tools::{finish, operator_command};

use std::future::Future;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull};
use async_nats::HeaderMap;
use futures::StreamExt;

// Waiting.

/// How often [`eventually`] looks again: short enough not to slow a test down, long
/// enough not to load the machine the worker under test shares.
const POLL: Duration = Duration::from_millis(25);

/// How long a process may take to start and report its address.
const STARTUP: Duration = Duration::from_secs(30);

/// Runs `check` until it returns `Some` and returns that; panics naming `what` if it has
/// not after `limit`. The one way these tests wait for a state: never a fixed sleep.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_or(what, limit, check, String::new).await
}

/// [`eventually`], with `context` (e.g. the worker's logs) added to the panic message.
pub async fn eventually_or<T, F, Fut>(
    what: &str,
    limit: Duration,
    check: F,
    context: impl FnOnce() -> String,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match within(limit, check).await {
        Some(found) => found,
        None => panic!("gave up after {limit:?} waiting for: {what}\n{}", context()),
    }
}

/// The polling behind [`eventually`], for a caller that handles the timeout itself (or
/// asserts that something does *not* happen within `limit`): `None` after `limit`. A
/// `check` still running at the deadline is abandoned.
pub async fn within<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, check()).await {
            Ok(Some(found)) => return Some(found),
            Ok(None) if tokio::time::Instant::now() < deadline => {}
            _ => return None,
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually`] for code that is not async (process start-up, plain `#[test]`s).
pub fn eventually_blocking<T>(
    what: &str,
    limit: Duration,
    check: impl FnMut() -> Option<T>,
    context: impl FnOnce() -> String,
) -> T {
    match within_blocking(limit, check) {
        Some(found) => found,
        None => panic!("gave up after {limit:?} waiting for: {what}\n{}", context()),
    }
}

/// [`within`] for code that is not async.
pub fn within_blocking<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = check() {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

// Files and ports.

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

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap()
}

pub fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// A file's complete lines: a line still being written (no newline yet) could hold half
/// a port number, so it is left for the next look.
fn complete_lines(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .map(str::trim_end)
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A loopback port where nothing listens, and where nothing can start listening while
/// this is held: connecting to it is refused at once. The port is the local end of a
/// connection this holds open, so the kernel hands it to no other socket (a listener's
/// port would accept connections instead; a port merely seen free could be taken by
/// another test before the connection attempt).
pub struct ClosedPort {
    pub port: u16,
    _ends: (TcpStream, TcpStream),
}

impl ClosedPort {
    pub fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        Self {
            port: client.local_addr().unwrap().port(),
            _ends: (client, server),
        }
    }
}

// nats-server.

/// A nats-server with JetStream of this test's own.
pub struct NatsServer {
    child: Option<Child>,
    /// The port the server picked on its first start, and keeps across restarts.
    pub port: u16,
    store: tempfile::TempDir,
    logs: tempfile::TempDir,
    launches: usize,
    /// A configuration file (`-c`), for credentials, TLS or settings with no flag
    /// (`max_payload`).
    config: Option<PathBuf>,
}

impl NatsServer {
    pub fn start() -> Self {
        let mut s = Self::unlaunched(tempfile::tempdir().unwrap(), None);
        s.launch();
        s
    }

    /// A server with this configuration file text (accounts, authorization, TLS...);
    /// address, port and JetStream store are still set by the command line.
    pub fn with_config(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nats-server.conf");
        std::fs::write(&path, config).unwrap();
        let mut s = Self::unlaunched(dir, Some(path));
        s.launch();
        s
    }

    fn unlaunched(logs: tempfile::TempDir, config: Option<PathBuf>) -> Self {
        Self {
            child: None,
            config,
            port: 0,
            store: tempfile::tempdir().unwrap(),
            logs,
            launches: 0,
        }
    }

    /// Starts the server on `self.port`, or on a port of its choosing (`-p -1`) the first
    /// time, and waits until it says it is ready.
    fn launch(&mut self) {
        self.launches += 1;
        let log = self.logs.path().join(format!("nats-{}.log", self.launches));
        let port = if self.port == 0 {
            "-1".to_string()
        } else {
            self.port.to_string()
        };
        let mut command = Command::new(nats_server_bin());
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        let child = command
            .args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd"])
            .arg(self.store.path())
            .arg("-l")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log.with_extension("stderr")).unwrap())
            .spawn()
            .expect("nats-server must be installed (see .ci/run)");
        let child = self.child.insert(child);
        let logs = || {
            format!(
                "nats-server log:\n{}{}",
                read_log(&log),
                read_log(&log.with_extension("stderr"))
            )
        };
        let port = eventually_blocking(
            "nats-server ready",
            STARTUP,
            || {
                let text = read_log(&log);
                let port = nats_port_in(&text);
                if port.is_some() && text.contains("Server is ready") {
                    return port;
                }
                // On a restart another process may have taken our port: then it exits.
                if let Some(status) = child.try_wait().unwrap() {
                    panic!(
                        "nats-server exited ({status}) before it was ready; {}",
                        logs()
                    );
                }
                None
            },
            logs,
        );
        assert!(
            self.port == 0 || self.port == port,
            "restarted on {port}, not {}",
            self.port
        );
        self.port = port;
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
        self.jetstream_with(async_nats::ConnectOptions::new()).await
    }

    /// [`Self::jetstream`] for a server that wants credentials or TLS.
    pub async fn jetstream_with(&self, options: async_nats::ConnectOptions) -> jetstream::Context {
        let client = options.connect(self.url()).await.unwrap();
        jetstream::new(client)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The port in nats-server's `Listening for client connections on 127.0.0.1:NNNNN`.
fn nats_port_in(log: &str) -> Option<u16> {
    complete_lines(log).find_map(|line| {
        let (_, addr) = line.split_once("Listening for client connections on ")?;
        addr.trim().rsplit_once(':')?.1.parse().ok()
    })
}

/// Waits for `child` to exit, at most `limit`; kills it and returns None if it does not.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let status = within_blocking(limit, || child.try_wait().unwrap());
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    status
}

// The worker.

/// The real binary, running `run` against a test's server.
pub struct Worker {
    child: Option<Child>,
    /// The address the worker's HTTP server bound (it is started on port 0), read from
    /// its log by `spawn`.
    pub http: SocketAddr,
    pub log: PathBuf,
    _logdir: tempfile::TempDir,
}

impl Worker {
    /// Spawns `blob-router run` with `--configs configs` and any extra flags, and waits
    /// until its HTTP server listens.
    pub async fn spawn(nats_url: &str, configs: &Path, extra: &[&str]) -> Self {
        let configs = configs.to_str().unwrap();
        let mut args = vec!["--configs", configs];
        args.extend_from_slice(extra);
        Self::spawn_with(nats_url, &args).await
    }

    /// Spawns `blob-router run` with these flags (the config source among them), and
    /// waits until its HTTP server listens.
    pub async fn spawn_with(nats_url: &str, args: &[&str]) -> Self {
        Self::spawn_env(nats_url, args, &[]).await
    }

    /// [`Self::spawn_with`], with these environment variables set too (they override
    /// the defaults, e.g. `BLOB_ROUTER_LOG_LEVEL`).
    pub async fn spawn_env(nats_url: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let logdir = tempfile::tempdir().unwrap();
        let log = logdir.path().join("worker.log");
        let child = Command::new(env!("CARGO_BIN_EXE_blob-router"))
            .arg("run")
            .args(["--nats-url", nats_url, "--http-addr", "127.0.0.1:0"])
            .args(args)
            .env("BLOB_ROUTER_LOG_LEVEL", "info,blob_router=debug")
            .envs(env.iter().copied())
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        // Owned (and killed on drop) before the wait, so a failed wait leaves no process.
        let mut worker = Self {
            child: Some(child),
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            _logdir: logdir,
        };
        worker.http = worker.bound_http_addr().await;
        worker
    }

    /// Waits for the `HTTP server listening` line; panics with the logs if the worker
    /// exits first.
    async fn bound_http_addr(&mut self) -> SocketAddr {
        let log = self.log.clone();
        let child = self.child.as_mut().expect("running");
        eventually_or(
            "the worker's HTTP address in its log",
            STARTUP,
            || {
                let logs = read_log(&log);
                let addr = http_addr_in(&logs);
                if addr.is_none() {
                    if let Some(status) = child.try_wait().unwrap() {
                        panic!("the worker exited ({status}) before its HTTP server listened; logs:\n{logs}");
                    }
                }
                std::future::ready(addr)
            },
            || format!("logs:\n{}", read_log(&log)),
        )
        .await
    }

    /// Spawns the worker and waits until it is ready.
    pub async fn start(nats_url: &str, configs: &Path, extra: &[&str]) -> Self {
        let worker = Self::spawn(nats_url, configs, extra).await;
        worker.wait_ready().await;
        worker
    }

    pub fn logs(&self) -> String {
        read_log(&self.log)
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let r = reqwest::get(format!("http://{}{path}", self.http))
            .await
            .ok()?;
        let code = r.status().as_u16();
        Some((code, r.text().await.ok()?))
    }

    /// `/health/cache` as JSON.
    pub async fn health_cache(&self) -> serde_json::Value {
        let (_, body) = self.get("/health/cache").await.expect("HTTP reachable");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }

    pub async fn wait_ready(&self) {
        eventually_or(
            "the worker is ready",
            Duration::from_secs(60),
            || async { matches!(self.get("/health/ready").await, Some((200, _))).then_some(()) },
            || format!("logs:\n{}", self.logs()),
        )
        .await
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
        eventually_or(
            &format!("{series} reaches {at_least}"),
            limit,
            || async { (self.metric(series).await >= at_least).then_some(()) },
            || format!("logs:\n{}", self.logs()),
        )
        .await
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

    /// A memory figure of the worker process from `/proc/<pid>/status`, in KiB:
    /// `VmRSS` (now) or `VmHWM` (peak).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
    }

    /// Waits for the process to exit on its own, at most `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = within(limit, || std::future::ready(child.try_wait().unwrap())).await?;
        self.child = None;
        Some(status)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// The address in the worker's `HTTP server listening` line, in either log format:
/// `... HTTP server listening addr=127.0.0.1:41234` (pretty, possibly coloured) or
/// `{"message":"HTTP server listening","addr":"127.0.0.1:41234",...}` (JSON, the field
/// beside the message or under `fields`).
pub fn http_addr_in(logs: &str) -> Option<SocketAddr> {
    const MESSAGE: &str = "HTTP server listening";
    complete_lines(logs)
        .filter(|line| line.contains(MESSAGE))
        .find_map(|line| {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                let fields = [&v, &v["fields"]]
                    .into_iter()
                    .find(|f| f["message"] == MESSAGE)?;
                return fields["addr"].as_str()?.parse().ok();
            }
            let plain = strip_ansi(line);
            let (_, after) = plain.split_once(MESSAGE)?;
            after
                .split_whitespace()
                .find_map(|field| field.strip_prefix("addr="))?
                .parse()
                .ok()
        })
}

/// `text` without ANSI colour sequences (`ESC [ ... letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// Inputs and outputs.

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

/// Publishes `payload` with this raw header block (the text between `NATS/1.0\r\n` and
/// the blank line) by speaking the protocol on a socket of its own: a client library
/// would refuse, or mend, a header no well-behaved producer sends. Returns once the
/// server has answered a PING after it, so the message has reached the server.
pub fn publish_raw(port: u16, subject: &str, header_lines: &str, payload: &[u8]) {
    use std::io::{BufRead, BufReader, Write};
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("INFO "), "{line}");
    let headers = format!("NATS/1.0\r\n{header_lines}\r\n");
    let mut out = format!(
        "CONNECT {{\"verbose\":false,\"pedantic\":false,\"headers\":true}}\r\nHPUB {subject} {} {}\r\n{headers}",
        headers.len(),
        headers.len() + payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\nPING\r\n");
    (&stream).write_all(&out).unwrap();
    loop {
        line.clear();
        assert_ne!(reader.read_line(&mut line).unwrap(), 0, "connection closed");
        assert!(!line.starts_with("-ERR"), "{line}");
        if line.starts_with("PONG") {
            return;
        }
    }
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

/// Routed and dead-lettered messages stored so far.
pub async fn outputs(js: &jetstream::Context) -> (u64, u64) {
    (count(js, "BLOB_ROUTED").await, count(js, "BLOB_DLQ").await)
}

/// Polls until routed + dead-lettered reaches `n` (or the limit passes); returns the
/// counts, for the caller to compare with what it expects.
pub async fn wait_outputs(js: &jetstream::Context, n: u64, limit: Duration) -> (u64, u64) {
    let reached = within(limit, || async {
        let (r, d) = outputs(js).await;
        (r + d >= n).then_some((r, d))
    })
    .await;
    match reached {
        Some(counts) => counts,
        None => outputs(js).await,
    }
}

/// Whether the durable consumer has nothing pending and nothing unacked.
pub async fn drained(js: &jetstream::Context) -> bool {
    let Ok(stream) = js.get_stream("BLOB_EVENTS").await else {
        return false;
    };
    stream
        .consumer_info("blob-router")
        .await
        .is_ok_and(|info| info.num_pending == 0 && info.num_ack_pending == 0)
}

/// Whether the durable consumer drains within `limit`.
pub async fn wait_drained(js: &jetstream::Context, limit: Duration) -> bool {
    within(limit, || async { drained(js).await.then_some(()) })
        .await
        .is_some()
}

/// A config file in a temp dir the test can rewrite.
pub struct ConfigFile {
    dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl ConfigFile {
    pub fn new(yaml: &str) -> Self {
        Self::named("configs.yaml", yaml)
    }

    /// A file called `name`: its extension tells YAML from JSON.
    pub fn named(name: &str, text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        Self { dir, path }
    }

    pub fn fixture() -> Self {
        Self::new(&String::from_utf8(fixture("configs.yaml")).unwrap())
    }

    /// Replaces the file the way editors do: write aside, rename over.
    pub fn replace(&self, text: &str) {
        let tmp = self.dir.path().join(".configs.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_http_address_is_read_from_either_log_format() {
        let pretty = "2026-11-26T12:53:17.791Z  WARN blob_router::commands::run: no --configs given\n\
                      2026-11-26T12:53:17.791Z  INFO blob_router::http: HTTP server listening addr=127.0.0.1:32871\n";
        assert_eq!(
            http_addr_in(pretty),
            Some("127.0.0.1:32871".parse().unwrap())
        );
        let coloured = "\u{1b}[2m2026-11-26T12:53:17Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m blob_router::http: HTTP server listening \u{1b}[3maddr\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:41234\n";
        assert_eq!(
            http_addr_in(coloured),
            Some("127.0.0.1:41234".parse().unwrap())
        );
        let json = r#"{"timestamp":"2026-11-26T12:53:19Z","level":"INFO","message":"HTTP server listening","addr":"127.0.0.1:40131","target":"blob_router::http"}"#;
        assert_eq!(
            http_addr_in(&format!("{json}\n")),
            Some("127.0.0.1:40131".parse().unwrap())
        );
        let nested =
            r#"{"level":"INFO","fields":{"message":"HTTP server listening","addr":"[::1]:8080"}}"#;
        assert_eq!(
            http_addr_in(&format!("{nested}\n")),
            Some("[::1]:8080".parse().unwrap())
        );
    }

    #[test]
    fn a_line_still_being_written_is_not_read() {
        let partial = "INFO blob_router::http: HTTP server listening addr=127.0.0.1:412";
        assert_eq!(http_addr_in(partial), None);
        assert_eq!(
            nats_port_in("[1] [INF] Listening for client connections on 127.0.0.1:34"),
            None
        );
        assert_eq!(http_addr_in("INFO other: addr=127.0.0.1:1\n"), None);
    }

    #[test]
    fn the_nats_port_is_read_from_its_log() {
        let log = "[4359] 2026/11/26 12:53:22.017879 [INF] Listening for client connections on 127.0.0.1:34409\n\
                   [4359] 2026/11/26 12:53:22.017897 [INF] Server is ready\n";
        assert_eq!(nats_port_in(log), Some(34409));
    }

    #[test]
    fn a_closed_port_refuses_connections_and_cannot_be_taken() {
        let closed = ClosedPort::new();
        let err = TcpStream::connect(("127.0.0.1", closed.port)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
        assert!(TcpListener::bind(("127.0.0.1", closed.port)).is_err());
    }
}
