//! Running the operator tools (`replay`, `loadgen`) as child processes of a test.

use std::process::{Output, Stdio};
use std::time::Duration;

/// `blob-router <command> --nats-url <url>`, ready for more flags: logs at `warn`, no
/// OTLP export, stdout and stderr piped, and killed (SIGKILL) if dropped, so a test that
/// gives up leaves no process behind.
pub fn operator_command(command: &str, nats_url: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_blob-router"));
    cmd.arg(command)
        .args(["--nats-url", nats_url])
        .env("BLOB_ROUTER_LOG_LEVEL", "warn")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// A child's exit status and output, waited for at most `limit`; past that the test
/// fails naming `what` (and the child, dropped, is killed).
pub async fn finish(what: &str, child: tokio::process::Child, limit: Duration) -> Output {
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(out) => out.unwrap(),
        Err(_) => panic!("{what} did not finish within {limit:?}"),
    }
}
