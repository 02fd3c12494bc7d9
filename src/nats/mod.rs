//! NATS JetStream I/O: connecting with retries, the three streams, the durable pull
//! consumer that feeds the pipeline, and the publisher that waits for PubAcks.

pub mod consumer;
pub mod publisher;
pub mod streams;

use std::time::Duration;

use anyhow::Context;
use backon::{ExponentialBuilder, Retryable};

/// Connects to `url`, retrying with exponential backoff and jitter for up to `patience`.
/// The URL is never logged with its credentials.
pub async fn connect(
    url: &str,
    name: &str,
    patience: Duration,
) -> anyhow::Result<async_nats::Client> {
    let shown = redact_url(url);
    let policy = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .with_total_delay(Some(patience))
        .without_max_times();
    let client = (|| async {
        async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(3))
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Disconnected => tracing::warn!("NATS disconnected"),
                    async_nats::Event::Connected => tracing::info!("NATS connected"),
                    other => tracing::debug!(event = %other, "NATS event"),
                }
            })
            .connect(url)
            .await
    })
    .retry(policy)
    .sleep(tokio::time::sleep)
    .notify(|err, wait| tracing::warn!(url = %shown, error = %err, retry_in = ?wait, "NATS connect failed"))
    .await
    .with_context(|| format!("connecting to NATS at {shown}"))?;
    tracing::info!(url = %shown, "connected to NATS");
    Ok(client)
}

/// `url` with any password or token replaced by `***` (for logs and errors).
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|one| match (one.find("://"), one.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let userinfo = &one[scheme + 3..at];
                let user = userinfo.split(':').next().unwrap_or("");
                if userinfo.contains(':') {
                    format!("{}{}:***{}", &one[..scheme + 3], user, &one[at..])
                } else {
                    format!("{}***{}", &one[..scheme + 3], &one[at..])
                }
            }
            _ => one.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn credentials_never_survive_redaction() {
        assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(
            redact_url("nats://bob:s3cret@h:4222"),
            "nats://bob:***@h:4222"
        );
        assert_eq!(redact_url("nats://tok3n@h:4222"), "nats://***@h:4222");
        let many = redact_url("nats://a:pw1@h1:4222,nats://b:pw2@h2:4222");
        assert!(!many.contains("pw1") && !many.contains("pw2"), "{many}");
        assert_eq!(
            redact_url("mongodb://u:p%40ss@db:27017/x?replicaSet=rs0"),
            "mongodb://u:***@db:27017/x?replicaSet=rs0"
        );
    }
}
