//! NATS JetStream I/O: connecting with retries (with the credentials and TLS of
//! [`auth`]), the three streams, the durable pull
//! consumer that feeds the pipeline, and the publisher that waits for PubAcks.

pub mod auth;
pub mod consumer;
pub mod given_up;
pub mod publisher;
pub mod pull;
pub mod streams;

use std::time::Duration;

use async_nats::ConnectErrorKind;
use backon::{ExponentialBuilder, Retryable};

pub use auth::{AuthSpec, ConnectSettings, Secret, SecretSource, SettingsError, TlsSpec};

/// Why the first connection to NATS failed. Credentials and TLS failures are final (the
/// same attempt would fail the same way): they end the connect at once instead of being
/// retried for the whole connect timeout. Each text is one line naming what failed,
/// never a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("NATS authentication failed ({auth}) at {url}: {reason}")]
    Auth {
        auth: String,
        url: String,
        reason: &'static str,
    },
    #[error("NATS TLS failed at {url}: {reason}")]
    Tls { url: String, reason: String },
    #[error("connecting to NATS at {url}")]
    Unreachable {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
}

/// Connects with `settings`, retrying transient failures with exponential backoff and
/// jitter for up to `settings.patience`. The URL is never logged with its credentials.
pub async fn connect(
    settings: &ConnectSettings,
    name: &str,
) -> Result<async_nats::Client, ConnectError> {
    let shown = redact_url(&settings.url);
    let policy = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .with_total_delay(Some(settings.patience))
        .without_max_times();
    // Each line about a connection names it: a command may hold more than one.
    let connection: std::sync::Arc<str> = name.into();
    let client = (|| async {
        let connection = connection.clone();
        settings
            .options()
            .name(name)
            .connection_timeout(Duration::from_secs(3))
            .event_callback(move |event| {
                let connection = connection.clone();
                async move {
                    match event {
                        async_nats::Event::Disconnected => {
                            tracing::warn!(%connection, "NATS disconnected")
                        }
                        async_nats::Event::Connected => tracing::info!(%connection, "NATS connected"),
                        // Messages of a subscription were dropped: whatever waited on
                        // them (a pull, a PubAck) times out and is retried.
                        async_nats::Event::SlowConsumer(sid) => tracing::warn!(
                            %connection,
                            subscription = sid,
                            "NATS client dropped messages of a subscription that fell behind"
                        ),
                        other => tracing::debug!(%connection, event = %other, "NATS event"),
                    }
                }
            })
            .connect(settings.url.as_str())
            .await
    })
    .retry(policy)
    .sleep(tokio::time::sleep)
    .when(|e| classify(e) == Failure::Transient)
    .notify(|err, wait| tracing::warn!(url = %shown, %connection, error = %err, retry_in = ?wait, "NATS connect failed"))
    .await
    .map_err(|e| match classify(&e) {
        Failure::Auth(reason) => ConnectError::Auth {
            auth: settings.describe_auth(),
            url: shown.clone(),
            reason,
        },
        Failure::Tls(reason) => ConnectError::Tls {
            url: shown.clone(),
            reason: tls_hint(reason, settings),
        },
        Failure::Transient => ConnectError::Unreachable {
            url: shown.clone(),
            source: e,
        },
    })?;
    tracing::info!(url = %shown, %connection, "connected to NATS");
    Ok(client)
}

#[derive(Debug, PartialEq)]
enum Failure {
    /// The server refused the credentials, or they could not sign its challenge.
    Auth(&'static str),
    /// TLS cannot work with this configuration (certificate not trusted, refused,
    /// TLS required by one side only).
    Tls(String),
    /// Worth another try: refused, timed out, reset, DNS.
    Transient,
}

fn classify(e: &async_nats::ConnectError) -> Failure {
    match e.kind() {
        ConnectErrorKind::AuthorizationViolation => {
            Failure::Auth("the server refused the credentials (authorization violation)")
        }
        ConnectErrorKind::Authentication => {
            Failure::Auth("the credentials could not sign the server's challenge")
        }
        ConnectErrorKind::Tls => Failure::Tls(crate::telemetry::Chain(e).to_string()),
        // A failed handshake comes back as an I/O error around the TLS library's error.
        ConnectErrorKind::Io => match tls_error_in(e) {
            Some(tls) => Failure::Tls(tls.to_string()),
            None => Failure::Transient,
        },
        _ => Failure::Transient,
    }
}

/// The rustls error behind an I/O error, if that is what it is.
fn tls_error_in(e: &async_nats::ConnectError) -> Option<&async_nats::rustls::Error> {
    let mut cause = std::error::Error::source(e);
    while let Some(err) = cause {
        if let Some(tls) = err.downcast_ref::<async_nats::rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(tls) = inner.downcast_ref::<async_nats::rustls::Error>() {
                return Some(tls);
            }
        }
        cause = err.source();
    }
    None
}

/// The TLS failure, with what to look at when the server's certificate is not trusted.
fn tls_hint(reason: String, settings: &ConnectSettings) -> String {
    if reason.contains("invalid peer certificate") {
        let hint = if settings.tls_configured() {
            "is --nats-tls-ca the CA that signed the server's certificate?"
        } else {
            "the server's certificate is not signed by a system CA: give its CA with --nats-tls-ca"
        };
        format!("server certificate not trusted: {reason} ({hint})")
    } else if reason.contains("corrupt message") {
        let hint = if settings.tls_first() {
            "--nats-tls-first needs `handshake_first` in the server's tls block"
        } else {
            "is TLS enabled on the server?"
        };
        format!("the server did not answer in TLS: {reason} ({hint})")
    } else {
        reason
    }
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
    use super::{classify, redact_url, Failure};
    use async_nats::rustls::{CertificateError, Error as TlsError};
    use async_nats::{ConnectError as NatsError, ConnectErrorKind as Kind};

    #[test]
    fn only_unreachable_servers_are_retried() {
        let refused = NatsError::new(Kind::AuthorizationViolation);
        assert!(matches!(classify(&refused), Failure::Auth(_)));
        // A failed handshake: an I/O error around the TLS library's error.
        let untrusted = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            TlsError::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        let untrusted = NatsError::with_source(Kind::Io, untrusted);
        match classify(&untrusted) {
            Failure::Tls(reason) => assert!(reason.contains("UnknownIssuer"), "{reason}"),
            other => panic!("{other:?}"),
        }
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            classify(&NatsError::with_source(Kind::Io, reset)),
            Failure::Transient
        );
        assert_eq!(
            classify(&NatsError::new(Kind::TimedOut)),
            Failure::Transient
        );
    }

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
