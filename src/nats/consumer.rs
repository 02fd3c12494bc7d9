//! The input side: the durable pull consumer all replicas share. Explicit acks plus a
//! bounded `max_ack_pending` are the backpressure: the server stops handing out messages
//! while that many are unacknowledged, however many replicas pull.

use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, consumer::pull};

/// Settings of the durable consumer.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub stream: String,
    pub durable: String,
    pub max_ack_pending: i64,
    pub ack_wait: Duration,
}

/// Gets the durable consumer, creating it on first use. An existing consumer keeps its
/// configuration (replicas may run different versions during a rollout); a difference
/// in the settings that matter is logged.
pub async fn durable(
    js: &jetstream::Context,
    settings: &ConsumerSettings,
) -> anyhow::Result<jetstream::consumer::Consumer<pull::Config>> {
    let stream = js
        .get_stream(&settings.stream)
        .await
        .with_context(|| format!("input stream {}", settings.stream))?;
    let consumer = stream
        .get_or_create_consumer(
            &settings.durable,
            pull::Config {
                durable_name: Some(settings.durable.clone()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                max_ack_pending: settings.max_ack_pending,
                ack_wait: settings.ack_wait,
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("consumer {} on {}", settings.durable, settings.stream))?;
    let cached = consumer.cached_info();
    if cached.config.max_ack_pending != settings.max_ack_pending {
        tracing::warn!(
            existing = cached.config.max_ack_pending,
            requested = settings.max_ack_pending,
            "durable consumer exists with another max_ack_pending; keeping the existing one"
        );
    }
    Ok(consumer)
}

/// Delay before a nak'ed message comes back: doubles per delivery, capped.
pub fn retry_delay(delivered: i64) -> Duration {
    let exp = delivered.clamp(1, 7) - 1;
    Duration::from_millis(500 * (1u64 << exp)).min(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::retry_delay;
    use std::time::Duration;

    #[test]
    fn retry_delay_grows_and_is_capped() {
        assert_eq!(retry_delay(1), Duration::from_millis(500));
        assert_eq!(retry_delay(2), Duration::from_secs(1));
        assert!(retry_delay(5) > retry_delay(4));
        assert_eq!(retry_delay(100), Duration::from_secs(30));
        assert_eq!(retry_delay(0), Duration::from_millis(500));
    }
}
