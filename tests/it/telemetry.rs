//! Observability of the real binary: JSON logs are one JSON object per line, URLs in
//! logs carry no credentials, and metrics are pushed over OTLP/HTTP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::*;

#[test]
fn json_logs_are_one_object_per_line_and_hide_credentials() {
    // Nothing listens on this port: the worker logs its connection attempts, then we stop it.
    let closed = ClosedPort::new();
    let mut child = Command::new(env!("CARGO_BIN_EXE_blob-router"))
        .args(["--log-format", "json", "run", "--http-addr", "127.0.0.1:0"])
        .args([
            "--nats-url",
            &format!("nats://alice:hunter2@127.0.0.1:{}", closed.port),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read the log as it is written; stop the worker once it has logged a failed attempt.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    while !lines
        .iter()
        .any(|l: &String| l.contains("NATS connect failed"))
    {
        lines.push(
            rx.recv_timeout(Duration::from_secs(30))
                .expect("no connect attempt logged"),
        );
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = wait_timeout(&mut child, Duration::from_secs(30)).expect("stops on SIGTERM");
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM while still connecting is a clean stop"
    );
    lines.extend(rx.iter());
    let logs = lines.join("\n");
    assert!(logs.lines().count() >= 2, "{logs}");
    for line in logs.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
    }
    assert!(
        http_addr_in(&format!("{logs}\n")).is_some_and(|a| a.port() != 0),
        "the bound HTTP address is logged: {logs}"
    );
    assert!(!logs.contains("hunter2"), "password leaked: {logs}");
    assert!(logs.contains("alice:***@127.0.0.1"), "{logs}");
}

#[test]
fn metrics_are_exported_over_otlp_when_an_endpoint_is_set() {
    let collector = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", collector.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in collector.incoming() {
            let mut stream = stream.unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            let n = stream.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n])
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
            if tx.send(head).is_err() {
                return;
            }
        }
    });
    let nats = NatsServer::start();
    let mut child = Command::new(env!("CARGO_BIN_EXE_blob-router"))
        .args([
            "run",
            "--nats-url",
            &nats.url(),
            "--http-addr",
            "127.0.0.1:0",
        ])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_METRIC_EXPORT_INTERVAL", "300")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first = rx.recv_timeout(Duration::from_secs(30));
    // A clean stop flushes the exporter and still exits 0.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = wait_timeout(&mut child, Duration::from_secs(30)).expect("stops on SIGTERM");
    assert_eq!(status.code(), Some(0));
    let request_line = first.expect("no OTLP export arrived");
    assert!(
        request_line.starts_with("POST /v1/metrics"),
        "{request_line}"
    );
}
