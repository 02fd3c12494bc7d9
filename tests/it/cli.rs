//! The binary's command line: `check` exit codes and bad flags failing fast.

use std::process::{Command, Output};

use crate::support::*;

fn blob_router(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_blob-router"))
        .args(args)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn check_passes_against_a_reachable_nats_and_valid_configs() {
    let nats = NatsServer::start();
    let configs = fixture_path("configs.yaml");
    let configs = configs.to_str().unwrap();
    let out = blob_router(&["check", "--nats-url", &nats.url(), "--configs", configs]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("ok    NATS reachable"), "{t}");
    assert!(t.contains("created BLOB_EVENTS"), "{t}");
    // Second time round the streams are simply present.
    let out = blob_router(&["check", "--nats-url", &nats.url(), "--configs", configs]);
    assert!(
        text(&out).contains("ok    streams present\n"),
        "{}",
        text(&out)
    );
}

#[test]
fn check_names_what_failed_in_its_exit_code() {
    let closed = ClosedPort::new();
    let out = blob_router(&[
        "check",
        "--nats-url",
        &format!("nats://127.0.0.1:{}", closed.port),
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "NATS unreachable: {}",
        text(&out)
    );
    assert!(text(&out).contains("FAIL  NATS"));

    let nats = NatsServer::start();
    let out = blob_router(&[
        "check",
        "--nats-url",
        &nats.url(),
        "--create-streams",
        "false",
    ]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "streams missing: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("BLOB_EVENTS does not exist"),
        "{}",
        text(&out)
    );

    let bad = ConfigFile::new("- _id: bad id\n  ingestion: {mode: blob_trigger, landing_container: c, path_pattern: {pattern: 'a/{x'}}\n");
    let out = blob_router(&[
        "check",
        "--nats-url",
        &nats.url(),
        "--configs",
        bad.path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(5), "config refused: {}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("1 of 1 configs refused") && t.contains("bad id"),
        "{t}"
    );

    let out = blob_router(&[
        "check",
        "--nats-url",
        &nats.url(),
        "--configs",
        "/nonexistent/configs.yaml",
    ]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
}

#[test]
fn bad_flags_fail_fast_with_a_message() {
    let out = blob_router(&["run", "--max-ack-pending", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("--max-ack-pending"), "{}", text(&out));
    let out = blob_router(&["run", "--http-addr", "not-an-address"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("--http-addr"), "{}", text(&out));
    let out = blob_router(&["run", "--log-format", "xml"]);
    assert_eq!(out.status.code(), Some(2));
    // Names and prefixes end up in subjects, which the worker's connections trust.
    let out = blob_router(&["run", "--dlq-prefix", "blob dlq"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("--dlq-prefix") && text(&out).contains("whitespace"),
        "{}",
        text(&out)
    );
    let out = blob_router(&["run", "--consumer", "blob.router"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("contains '.'"), "{}", text(&out));
    let out = blob_router(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn flags_can_come_from_the_environment() {
    let out = Command::new(env!("CARGO_BIN_EXE_blob-router"))
        .args(["run"])
        .env("BLOB_ROUTER_CONCURRENCY", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("concurrency"), "{}", text(&out));
}

#[test]
fn a_busy_http_port_fails_startup_with_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    // The NATS URL is never dialled: binding the HTTP server comes first, and fails.
    let out = blob_router(&[
        "run",
        "--http-addr",
        &addr,
        "--nats-url",
        "nats://127.0.0.1:1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("binding the HTTP server"),
        "{}",
        text(&out)
    );
}
