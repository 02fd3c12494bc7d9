//! NATS credentials and TLS: what the flags name is read and checked once, before the
//! first connection attempt (so a missing or malformed file is reported by name, not
//! as a failed connection), then applied to every attempt. No secret is ever part of a
//! `Debug`, `Display` or error text: they show `***`, a file path, a user name or a
//! public key, never a password, token, seed, JWT or private key.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use async_nats::rustls::pki_types::pem::{self, PemObject};
use async_nats::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use async_nats::ConnectOptions;

/// A secret value (password, token, seed, creds). `Debug` and `Display` print `***`, so
/// a derived `Debug` of the arguments holding one, or a careless log field, shows
/// nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the NATS client only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
    }
}

/// Where a password or token comes from: an environment variable (already read) or a
/// file (read by [`ConnectSettings::load`]).
#[derive(Debug, Clone)]
pub enum SecretSource {
    Value(Secret),
    File(PathBuf),
}

/// How to authenticate, as the flags name it.
#[derive(Debug, Clone, Default)]
pub enum AuthSpec {
    #[default]
    None,
    /// A `.creds` file: user JWT + user NKey seed (what `nsc` writes).
    Creds(PathBuf),
    /// A file holding an NKey seed.
    NKey(PathBuf),
    Token(SecretSource),
    UserPassword {
        user: String,
        password: Option<SecretSource>,
    },
}

/// TLS files and mode, as the flags name them. Any of them makes TLS required.
#[derive(Debug, Clone, Default)]
pub struct TlsSpec {
    /// CA certificate(s) trusted for the server's certificate (PEM); without it the
    /// system's roots.
    pub ca: Option<PathBuf>,
    /// Client certificate and its private key (PEM), for servers that verify clients.
    pub client: Option<(PathBuf, PathBuf)>,
    /// TLS before the server's INFO (servers with `handshake_first`).
    pub first: bool,
}

impl TlsSpec {
    fn wanted(&self) -> bool {
        self.ca.is_some() || self.client.is_some() || self.first
    }
}

/// A file the settings could not use. The text names the file and what it was for,
/// never its content.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read NATS {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("NATS {what} {}: {problem}", path.display())]
    Invalid {
        what: &'static str,
        path: PathBuf,
        problem: &'static str,
    },
    #[error(
        "NATS user {user:?} has no password: set BLOB_ROUTER_NATS_PASSWORD or --nats-password-file"
    )]
    NoPassword { user: String },
}

/// Credentials as loaded: what is sent to the server.
#[derive(Debug, Clone)]
enum Auth {
    None,
    Creds {
        path: PathBuf,
        contents: Secret,
    },
    NKey {
        public: String,
        seed: Secret,
    },
    Token {
        from: Option<PathBuf>,
        token: Secret,
    },
    UserPassword {
        user: String,
        password: Secret,
    },
}

/// Everything needed to connect to NATS, checked: the URL, how long to keep trying,
/// the credentials and TLS. Built once per command and shared by its connection.
#[derive(Debug, Clone)]
pub struct ConnectSettings {
    pub url: String,
    /// How long to keep retrying transient failures of the first connection.
    pub patience: Duration,
    auth: Auth,
    tls: TlsSpec,
    /// Messages a subscription holds before the client drops the excess (a slow
    /// consumer); the client's default (65,536) when unset.
    subscription_capacity: Option<usize>,
    /// Every subject published on the connection is checked before (see
    /// [`crate::subject`]): the client does not check each again.
    subjects_checked: bool,
}

impl ConnectSettings {
    /// Reads and checks every file the specs name.
    pub fn load(
        url: &str,
        patience: Duration,
        auth: &AuthSpec,
        tls: &TlsSpec,
    ) -> Result<Self, SettingsError> {
        let auth = match auth {
            AuthSpec::None => Auth::None,
            AuthSpec::Creds(path) => {
                let contents = read_secret("creds file", path)?;
                // The client's own parser, so what passes here is what it will use.
                ConnectOptions::new()
                    .credentials(contents.expose())
                    .map_err(|_| invalid("creds file", path, "not a NATS credentials file (a user JWT and an NKey seed, as `nsc generate creds` writes it)"))?;
                Auth::Creds {
                    path: path.clone(),
                    contents,
                }
            }
            AuthSpec::NKey(path) => {
                let seed = read_secret("nkey seed file", path)?;
                // A seed never has spaces: whatever surrounds it is formatting.
                let seed = Secret::new(seed.expose().trim());
                let pair = nkeys::KeyPair::from_seed(seed.expose()).map_err(|_| {
                    invalid(
                        "nkey seed file",
                        path,
                        "not an NKey seed (one line starting with `SU`, as `nk -gen user` writes it)",
                    )
                })?;
                Auth::NKey {
                    public: pair.public_key(),
                    seed,
                }
            }
            AuthSpec::Token(source) => {
                let (from, token) = resolve("token file", source)?;
                Auth::Token { from, token }
            }
            AuthSpec::UserPassword { user, password } => {
                let Some(source) = password else {
                    return Err(SettingsError::NoPassword { user: user.clone() });
                };
                Auth::UserPassword {
                    user: user.clone(),
                    password: resolve("password file", source)?.1,
                }
            }
        };
        if let Some(ca) = &tls.ca {
            check_certificates("TLS CA file", ca)?;
        }
        if let Some((cert, key)) = &tls.client {
            check_certificates("TLS client certificate", cert)?;
            PrivateKeyDer::from_pem_file(key)
                .map_err(|e| pem_error("TLS client key", key, e, "no PEM private key in it"))?;
        }
        Ok(Self {
            url: url.to_string(),
            patience,
            auth,
            tls: tls.clone(),
            subscription_capacity: None,
            subjects_checked: false,
        })
    }

    /// The same settings, with room for at least `capacity` messages per subscription
    /// (a connection whose one subscription takes the answers to many publishes in
    /// flight, see [`crate::nats::publisher`]).
    pub fn with_subscription_capacity(mut self, capacity: usize) -> Self {
        self.subscription_capacity = Some(capacity);
        self
    }

    /// The same settings, for a connection that publishes only to subjects checked
    /// already: those of configs and flags ([`crate::subject`]), reply subjects the
    /// server gave and inboxes of its own. The client then skips its check of each
    /// publish's subject (for spaces and line breaks, which would break the protocol
    /// line), about a thousand instructions per routed event. Subscriptions are
    /// checked all the same.
    pub fn with_subjects_checked(mut self) -> Self {
        self.subjects_checked = true;
        self
    }

    /// The client options for one connection attempt: credentials and TLS applied.
    pub fn options(&self) -> ConnectOptions {
        let mut options = ConnectOptions::new();
        options = match &self.auth {
            Auth::None => options,
            // Parsed once already in `load`; the same text cannot fail now.
            Auth::Creds { contents, .. } => options
                .credentials(contents.expose())
                .expect("creds checked when loaded"),
            Auth::NKey { seed, .. } => options.nkey(seed.expose().to_string()),
            Auth::Token { token, .. } => options.token(token.expose().to_string()),
            Auth::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.expose().to_string())
            }
        };
        if let Some(ca) = &self.tls.ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.tls.client {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if self.tls.wanted() {
            options = options.require_tls(true);
        }
        if self.tls.first {
            options = options.tls_first();
        }
        if let Some(capacity) = self.subscription_capacity {
            options = options.subscription_capacity(capacity);
        }
        if self.subjects_checked {
            options = options.skip_subject_validation(true);
        }
        options
    }

    /// What credentials these are, for an error: the kind and a name that is not
    /// secret (file path, user name, public key).
    pub fn describe_auth(&self) -> String {
        match &self.auth {
            Auth::None => "no credentials given".into(),
            Auth::Creds { path, .. } => format!("creds file {}", path.display()),
            Auth::NKey { public, .. } => format!("nkey {public}"),
            Auth::Token {
                from: Some(path), ..
            } => format!("token from {}", path.display()),
            Auth::Token { from: None, .. } => "token from BLOB_ROUTER_NATS_TOKEN".into(),
            Auth::UserPassword { user, .. } => format!("user/password for user {user:?}"),
        }
    }

    /// Whether any TLS flag was given.
    pub fn tls_configured(&self) -> bool {
        self.tls.wanted()
    }

    /// Whether TLS is to start before the server's first message.
    pub fn tls_first(&self) -> bool {
        self.tls.first
    }
}

fn invalid(what: &'static str, path: &Path, problem: &'static str) -> SettingsError {
    SettingsError::Invalid {
        what,
        path: path.to_path_buf(),
        problem,
    }
}

/// A file's content as a secret, without a trailing newline; an empty file is refused.
fn read_secret(what: &'static str, path: &Path) -> Result<Secret, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    // One line ending only: a secret may itself begin or end with spaces.
    let value = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if value.is_empty() {
        return Err(invalid(what, path, "empty"));
    }
    Ok(Secret::new(value))
}

fn resolve(
    what: &'static str,
    source: &SecretSource,
) -> Result<(Option<PathBuf>, Secret), SettingsError> {
    match source {
        SecretSource::Value(secret) => Ok((None, secret.clone())),
        SecretSource::File(path) => Ok((Some(path.clone()), read_secret(what, path)?)),
    }
}

/// At least one PEM certificate in `path`.
fn check_certificates(what: &'static str, path: &Path) -> Result<(), SettingsError> {
    let mut count = 0;
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(what, path, e, NO_CERTIFICATE))?;
    for cert in certs {
        cert.map_err(|e| pem_error(what, path, e, NO_CERTIFICATE))?;
        count += 1;
    }
    if count == 0 {
        return Err(invalid(what, path, NO_CERTIFICATE));
    }
    Ok(())
}

const NO_CERTIFICATE: &str = "no PEM certificate in it";

/// A PEM error in our words: the parser's own text can quote the file's lines, and a
/// key file's lines are secret.
fn pem_error(
    what: &'static str,
    path: &Path,
    e: pem::Error,
    no_items: &'static str,
) -> SettingsError {
    match e {
        pem::Error::Io(source) => SettingsError::Read {
            what,
            path: path.to_path_buf(),
            source,
        },
        pem::Error::NoItemsFound => invalid(what, path, no_items),
        _ => invalid(what, path, "not valid PEM"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY";

    #[test]
    fn secrets_never_show_in_debug_or_errors() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "hunter2-secret\n").unwrap();
        let settings = ConnectSettings::load(
            "nats://h:4222",
            Duration::from_secs(1),
            &AuthSpec::UserPassword {
                user: "bob".into(),
                password: Some(SecretSource::File(pw)),
            },
            &TlsSpec::default(),
        )
        .unwrap();
        let shown = format!("{settings:?} {}", settings.describe_auth());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("\"bob\""), "{shown}");
        assert_eq!(format!("{}", Secret::new("x")), "***");

        let seed = dir.path().join("seed");
        std::fs::write(&seed, format!("{SEED}\n")).unwrap();
        let settings = ConnectSettings::load(
            "nats://h:4222",
            Duration::from_secs(1),
            &AuthSpec::NKey(seed),
            &TlsSpec::default(),
        )
        .unwrap();
        let shown = format!("{settings:?} {}", settings.describe_auth());
        assert!(!shown.contains(SEED), "{shown}");
        assert!(settings.describe_auth().starts_with("nkey U"), "{shown}");
    }

    /// Only settings marked so skip the client's check of publish subjects.
    #[test]
    fn only_checked_subjects_skip_the_clients_check() {
        let settings = ConnectSettings::load(
            "nats://h:4222",
            Duration::from_secs(1),
            &AuthSpec::None,
            &TlsSpec::default(),
        )
        .unwrap();
        let skips = |s: &ConnectSettings| {
            format!("{:?}", s.options()).contains("\"skip_subject_validation\": true")
        };
        assert!(!skips(&settings));
        assert!(skips(&settings.clone().with_subjects_checked()));
        assert!(skips(
            &settings
                .with_subjects_checked()
                .with_subscription_capacity(10)
        ));
    }

    #[test]
    fn bad_files_are_named_before_connecting() {
        let dir = tempfile::tempdir().unwrap();
        let load = |auth: AuthSpec, tls: TlsSpec| {
            ConnectSettings::load("nats://h:4222", Duration::from_secs(1), &auth, &tls)
                .unwrap_err()
                .to_string()
        };
        let missing = dir.path().join("missing.creds");
        let e = load(AuthSpec::Creds(missing), TlsSpec::default());
        assert!(
            e.starts_with("cannot read NATS creds file ") && e.contains("missing.creds"),
            "{e}"
        );

        let bad = dir.path().join("bad.seed");
        std::fs::write(&bad, "SUnot-a-seed-but-secret").unwrap();
        let e = load(AuthSpec::NKey(bad), TlsSpec::default());
        assert!(
            e.contains("not an NKey seed") && !e.contains("secret"),
            "{e}"
        );

        let creds = dir.path().join("bad.creds");
        std::fs::write(&creds, "hello").unwrap();
        let e = load(AuthSpec::Creds(creds), TlsSpec::default());
        assert!(e.contains("not a NATS credentials file"), "{e}");

        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "nothing").unwrap();
        let e = load(
            AuthSpec::None,
            TlsSpec {
                ca: Some(cert.clone()),
                ..Default::default()
            },
        );
        assert!(
            e.contains("TLS CA file") && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = load(
            AuthSpec::UserPassword {
                user: "bob".into(),
                password: None,
            },
            TlsSpec::default(),
        );
        assert!(e.contains("BLOB_ROUTER_NATS_PASSWORD"), "{e}");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let e = load(
            AuthSpec::Token(SecretSource::File(empty)),
            TlsSpec::default(),
        );
        assert!(e.contains("token file") && e.ends_with("empty"), "{e}");
    }
}
