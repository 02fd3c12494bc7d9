//! Logs and metrics set up in one place. Logs go through `tracing` (pretty or JSON);
//! metrics through OpenTelemetry, read by the Prometheus registry behind `/metrics` and,
//! when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, exported over OTLP/HTTP as well.

pub mod events;
pub mod metrics;

use std::sync::Arc;

use anyhow::Context;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use tracing_subscriber::EnvFilter;

use metrics::Metrics;

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Shows an error with every cause in its chain, `outer: cause: root`, for log lines and
/// messages (`error = %Chain(&e)`): a typed error keeps its cause as `source()`, and
/// this is where that cause becomes visible. Some errors (async-nats's) already print
/// their cause in their own text; a cause whose text is already shown is not repeated.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut shown = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(e) = cause {
            let text = e.to_string();
            if !shown.contains(&text) {
                shown.push_str(": ");
                shown.push_str(&text);
            }
            cause = e.source();
        }
        f.write_str(&shown)
    }
}

/// Installs the global log subscriber. Safe to call once per process.
pub fn init_logging(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_new(filter).with_context(|| format!("invalid --log-level `{filter}`"))?;
    // Colour only for a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let result = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    result.map_err(|e| anyhow::anyhow!(e).context("installing the log subscriber"))
}

/// The metrics pipeline: keep it alive for the life of the process and call
/// [`Telemetry::shutdown`] at the end so OTLP flushes its last batch.
pub struct Telemetry {
    pub metrics: Arc<Metrics>,
    pub registry: prometheus::Registry,
    provider: SdkMeterProvider,
}

impl Telemetry {
    pub fn init() -> anyhow::Result<Self> {
        let registry = prometheus::Registry::new();
        let prom = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .scope_info_enabled(false)
            .without_target_info()
            .build()?;
        let mut builder = SdkMeterProvider::builder().with_reader(prom);
        if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
            let exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .build()
                .context("building the OTLP metric exporter")?;
            builder = builder.with_periodic_exporter(exporter);
            tracing::info!("exporting metrics over OTLP");
        }
        let provider = builder.build();
        let metrics = Metrics::new(&provider.meter("blob-router"));
        Ok(Self {
            metrics,
            registry,
            provider,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(registry: &prometheus::Registry) -> String {
        use prometheus::Encoder;
        let mut out = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::debug!(error = %e, "metrics shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Chain;

    #[derive(Debug, thiserror::Error)]
    #[error("reading the config file")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("publish failed: {0}")]
    struct SaysItsCause(#[source] std::io::Error);

    #[test]
    fn chain_shows_every_cause_once() {
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such file",
        ));
        assert_eq!(
            Chain(&e).to_string(),
            "reading the config file: no such file"
        );
        let e = SaysItsCause(std::io::Error::other("timed out"));
        assert_eq!(Chain(&e).to_string(), "publish failed: timed out");
        let e: anyhow::Error = anyhow::Error::new(e).context("sending");
        assert_eq!(
            Chain(e.as_ref()).to_string(),
            "sending: publish failed: timed out"
        );
    }
}
