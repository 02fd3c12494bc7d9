//! NATS credentials and TLS on a real nats-server, one test per kind: user/password,
//! token, NKey, a creds file of an operator/account/user made here, and mutual TLS with
//! certificates made here. Each shows that the worker routes with the right credentials;
//! that with wrong ones `check` exits with its NATS code and `run` stops at once (no
//! retrying for its connect timeout), each with one line naming what failed; and that no
//! secret shows in any captured log line, `/health/*`, `/metrics`, or what `check` (and,
//! for user/password, `replay` and `loadgen`) printed. A TLS flag never falls back to
//! plain text.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::ConnectOptions;
use data_encoding::BASE64URL_NOPAD;
use nkeys::KeyPair;
use serde_json::{json, Value};

use super::support::*;

/// `check`'s exit code when NATS fails.
const EXIT_NATS: i32 = 3;

/// Flags and environment a blob-router command authenticates with.
#[derive(Default)]
struct Credentials {
    flags: Vec<String>,
    env: Vec<(String, String)>,
}

impl Credentials {
    fn flags(flags: &[&str]) -> Self {
        Self {
            flags: flags.iter().map(|f| f.to_string()).collect(),
            env: Vec::new(),
        }
    }

    fn env(name: &str, value: &str, flags: &[&str]) -> Self {
        Self {
            env: vec![(name.into(), value.into())],
            ..Self::flags(flags)
        }
    }

    fn apply(&self, cmd: &mut tokio::process::Command) {
        cmd.args(&self.flags)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("BLOB_ROUTER_LOG_LEVEL", "trace");
    }
}

/// One kind of credentials: the server's configuration, the right and the wrong
/// credentials, what a failure names, and every secret involved.
struct Case {
    config: String,
    /// The test's own client (it publishes and reads the outputs).
    client: Box<dyn Fn() -> ConnectOptions>,
    right: Credentials,
    wrong: Credentials,
    /// The start of the failure line, and what it must name.
    failure: &'static str,
    names: String,
    secrets: Vec<String>,
    dir: tempfile::TempDir,
}

impl Case {
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

fn random(prefix: &str) -> String {
    format!(
        "{prefix}-{:016x}{:016x}",
        fastrand::u64(..),
        fastrand::u64(..)
    )
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A blob-router tool run to its end with these credentials.
async fn tool(nats: &NatsServer, command: &str, creds: &Credentials, args: &[&str]) -> Output {
    let mut cmd = operator_command(command, &nats.url());
    cmd.args(args);
    creds.apply(&mut cmd);
    finish(command, cmd.spawn().unwrap(), Duration::from_secs(90)).await
}

async fn check(nats: &NatsServer, creds: &Credentials) -> Output {
    let configs = fixture_path("configs.yaml");
    tool(
        nats,
        "check",
        creds,
        &["--configs", configs.to_str().unwrap()],
    )
    .await
}

async fn spawn_worker(nats: &NatsServer, creds: &Credentials, extra: &[&str]) -> Worker {
    let configs = fixture_path("configs.yaml");
    let mut args = vec!["--configs", configs.to_str().unwrap()];
    args.extend(creds.flags.iter().map(String::as_str));
    args.extend_from_slice(extra);
    let mut env: Vec<(&str, &str)> = creds
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.push(("BLOB_ROUTER_LOG_LEVEL", "trace"));
    Worker::spawn_env(&nats.url(), &args, &env).await
}

/// What a case left behind to look at: the server and everything a secret could have
/// leaked into.
struct Proven {
    nats: NatsServer,
    js: async_nats::jetstream::Context,
    worker: Worker,
    seen: Vec<String>,
}

/// Right credentials route an event and pass `check`; wrong ones fail `check` (exit 3)
/// and stop `run` at once, each with one line naming what failed.
async fn prove(case: &Case) -> Proven {
    let nats = NatsServer::with_config(&case.config);
    let js = nats.jetstream_with((case.client)()).await;
    let mut seen = Vec::new();

    let worker = spawn_worker(&nats, &case.right, &[]).await;
    worker.wait_ready().await;
    publish(
        &js,
        "blob.events.azure",
        fixture("events/eventgrid.json"),
        &[],
    )
    .await;
    let counts = wait_outputs(&js, 1, Duration::from_secs(30)).await;
    assert_eq!(counts, (1, 0), "logs:\n{}", worker.logs());
    for path in ["/health/live", "/health/ready", "/health/cache", "/metrics"] {
        let (code, body) = worker.get(path).await.expect("HTTP reachable");
        assert_eq!(code, 200, "{path}: {body}");
        seen.push(body);
    }

    let ok = check(&nats, &case.right).await;
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    seen.push(text(&ok));

    let failed = check(&nats, &case.wrong).await;
    let shown = text(&failed);
    assert_eq!(failed.status.code(), Some(EXIT_NATS), "{shown}");
    let stdout = String::from_utf8_lossy(&failed.stdout);
    let fails: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(fails.len(), 1, "{shown}");
    let line = format!("FAIL  NATS: {}", case.failure);
    assert!(fails[0].starts_with(&line), "{shown}");
    assert!(fails[0].contains(&case.names), "{shown}");
    seen.push(shown);

    // A connect timeout of 10 minutes: the worker only exits now if it does not retry.
    let mut refused = spawn_worker(&nats, &case.wrong, &["--nats-connect-timeout", "10m"]).await;
    let status = refused.wait_exit(Duration::from_secs(60)).await;
    let logs = refused.logs();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "logs:\n{logs}");
    let line = logs
        .lines()
        .find(|l| l.contains("blob-router failed"))
        .unwrap_or_else(|| panic!("no failure line in:\n{logs}"));
    assert!(
        line.contains(case.failure) && line.contains(&case.names),
        "{line}"
    );
    assert!(!logs.contains("NATS connect failed"), "retried:\n{logs}");
    seen.push(logs);

    Proven {
        nats,
        js,
        worker,
        seen,
    }
}

impl Proven {
    /// No secret of `case` in any log line, HTTP body or tool output seen.
    fn assert_no_secret(mut self, case: &Case) {
        self.seen.push(self.worker.logs());
        // Logs are captured at `trace`: they hold the client's CONNECT, where the
        // credentials travel (async-nats prints it with them masked).
        assert!(
            self.seen
                .iter()
                .any(|t| t.contains("write operation: CONNECT")),
            "no CONNECT in the captured logs"
        );
        assert!(!case.secrets.is_empty());
        for (i, secret) in case.secrets.iter().enumerate() {
            assert!(secret.len() >= 16, "secret {i} is too short to grep for");
            for text in &self.seen {
                assert!(
                    !text.contains(secret.as_str()),
                    "secret {i} shows in:\n{text}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password() {
    let (password, wrong) = (random("pw"), random("wrong-pw"));
    let dir = tempfile::tempdir().unwrap();
    let wrong_file = dir.path().join("wrong-password");
    std::fs::write(&wrong_file, format!("{wrong}\n")).unwrap();
    let pw = password.clone();
    let case = Case {
        config: format!("authorization {{ user: bob, password: \"{password}\" }}"),
        client: Box::new(move || ConnectOptions::with_user_and_password("bob".into(), pw.clone())),
        right: Credentials::env(
            "BLOB_ROUTER_NATS_PASSWORD",
            &password,
            &["--nats-user", "bob"],
        ),
        wrong: Credentials::flags(&[
            "--nats-user",
            "bob",
            "--nats-password-file",
            wrong_file.to_str().unwrap(),
        ]),
        failure: "NATS authentication failed",
        names: "user/password for user \"bob\"".into(),
        secrets: vec![password.clone(), wrong],
        dir,
    };
    let mut proven = prove(&case).await;

    // loadgen and replay connect the same way: loadgen's events (for no configured
    // container) are dead-lettered, and replay --dry-run reads them back.
    let out = tool(
        &proven.nats,
        "loadgen",
        &case.right,
        &["--count", "20", "--rate", "0", "--unmatched-ratio", "1"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    proven.seen.push(text(&out));
    assert_eq!(outputs(&proven.js).await, (1, 20));
    let out = tool(
        &proven.nats,
        "replay",
        &case.right,
        &["--dry-run", "--output", "json"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["selected"], 20, "{summary}");
    proven.seen.push(text(&out));
    // And neither gets far with the wrong password.
    for command in ["loadgen", "replay"] {
        let out = tool(&proven.nats, command, &case.wrong, &[]).await;
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let shown = text(&out);
        assert!(
            shown.contains("error: NATS authentication failed (user/password for user \"bob\")"),
            "{shown}"
        );
        proven.seen.push(shown);
    }
    proven.assert_no_secret(&case);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token() {
    let (token, wrong) = (random("tok"), random("wrong-tok"));
    let dir = tempfile::tempdir().unwrap();
    let wrong_file = dir.path().join("wrong-token");
    std::fs::write(&wrong_file, &wrong).unwrap();
    let t = token.clone();
    let case = Case {
        config: format!("authorization {{ token: \"{token}\" }}"),
        client: Box::new(move || ConnectOptions::with_token(t.clone())),
        right: Credentials::env("BLOB_ROUTER_NATS_TOKEN", &token, &[]),
        wrong: Credentials::flags(&["--nats-token-file", wrong_file.to_str().unwrap()]),
        failure: "NATS authentication failed",
        names: format!("token from {}", wrong_file.display()),
        secrets: vec![token.clone(), wrong],
        dir,
    };
    prove(&case).await.assert_no_secret(&case);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nkey() {
    let (user, stranger) = (KeyPair::new_user(), KeyPair::new_user());
    let (seed, wrong) = (user.seed().unwrap(), stranger.seed().unwrap());
    let mut case = Case {
        config: format!(
            "authorization {{ users: [ {{ nkey: \"{}\" }} ] }}",
            user.public_key()
        ),
        client: {
            let seed = seed.clone();
            Box::new(move || ConnectOptions::with_nkey(seed.clone()))
        },
        right: Credentials::default(),
        wrong: Credentials::default(),
        failure: "NATS authentication failed",
        names: format!("nkey {}", stranger.public_key()),
        secrets: vec![seed.clone(), wrong.clone()],
        dir: tempfile::tempdir().unwrap(),
    };
    let right_file = case.file("user.nk", &format!("{seed}\n"));
    let wrong_file = case.file("stranger.nk", &wrong);
    case.right = Credentials::flags(&["--nats-nkey", right_file.to_str().unwrap()]);
    case.wrong = Credentials::flags(&["--nats-nkey", wrong_file.to_str().unwrap()]);
    prove(&case).await.assert_no_secret(&case);
}

// Creds: a NATS JWT is `header.claims.signature`, base64url without padding, signed
// with ed25519 by the issuer's NKey (alg `ed25519-nkey`), as nats-io/jwt writes them.

fn jwt(issuer: &KeyPair, subject: &str, name: &str, nats: Value) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = json!({"typ": "JWT", "alg": "ed25519-nkey"});
    let claims = json!({
        "jti": random("jti").to_uppercase(),
        "iat": now,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let signed = format!(
        "{}.{}",
        BASE64URL_NOPAD.encode(header.to_string().as_bytes()),
        BASE64URL_NOPAD.encode(claims.to_string().as_bytes())
    );
    let signature = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", BASE64URL_NOPAD.encode(&signature))
}

/// An account with JetStream and no other limits.
fn account_jwt(operator: &KeyPair, account: &KeyPair) -> String {
    let unlimited = json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
        "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
    });
    let nats = json!({"limits": unlimited, "type": "account", "version": 2});
    jwt(operator, &account.public_key(), "blob", nats)
}

/// A creds file: a user of `account`, its JWT and seed.
fn creds(account: &KeyPair) -> (String, String, String) {
    let user = KeyPair::new_user();
    let nats = json!({
        "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
        "type": "user", "version": 2,
    });
    let token = jwt(account, &user.public_key(), "router", nats);
    let seed = user.seed().unwrap();
    let file = format!(
        "-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    );
    (file, token, seed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creds_of_an_operator_account_user() {
    let (operator, account) = (KeyPair::new_operator(), KeyPair::new_account());
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "test",
        json!({"type": "operator", "version": 2}),
    );
    let (right, right_jwt, right_seed) = creds(&account);
    // A user of an account the server does not know.
    let (wrong, wrong_jwt, wrong_seed) = creds(&KeyPair::new_account());
    // JetStream needs a system account (without JetStream of its own).
    let system = KeyPair::new_account();
    let system_jwt = jwt(
        &operator,
        &system.public_key(),
        "SYS",
        json!({"type": "account", "version": 2}),
    );
    let config = format!(
        "operator: \"{operator_jwt}\"\nsystem_account: {sys}\nresolver: MEMORY\n\
         resolver_preload: {{\n  {sys}: \"{system_jwt}\"\n  {}: \"{}\"\n}}\n",
        account.public_key(),
        account_jwt(&operator, &account),
        sys = system.public_key(),
    );
    let mut case = Case {
        config,
        client: {
            let right = right.clone();
            Box::new(move || ConnectOptions::with_credentials(&right).unwrap())
        },
        right: Credentials::default(),
        wrong: Credentials::default(),
        failure: "NATS authentication failed",
        names: String::new(),
        secrets: vec![right_jwt, right_seed, wrong_jwt, wrong_seed],
        dir: tempfile::tempdir().unwrap(),
    };
    let right_file = case.file("router.creds", &right);
    let wrong_file = case.file("stranger.creds", &wrong);
    case.right = Credentials::flags(&["--nats-creds", right_file.to_str().unwrap()]);
    case.wrong = Credentials::env("BLOB_ROUTER_NATS_CREDS", wrong_file.to_str().unwrap(), &[]);
    case.names = format!("creds file {}", wrong_file.display());
    prove(&case).await.assert_no_secret(&case);
}

// TLS.

/// A CA and what it signed, as PEM files in `dir`.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    /// The private keys' PEM text.
    keys: Vec<String>,
}

fn pki(dir: &Path, name: &str) -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair as CertKey, KeyUsagePurpose,
    };
    let write = |file: &str, text: String| {
        let path = dir.join(format!("{name}-{file}"));
        std::fs::write(&path, text).unwrap();
        path
    };
    let ca_key = CertKey::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("{name} test CA"));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |purpose, sans: Vec<String>| {
        let key = CertKey::generate().unwrap();
        let mut params = CertificateParams::new(sans).unwrap();
        params.extended_key_usages = vec![purpose];
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(
        ExtendedKeyUsagePurpose::ServerAuth,
        vec!["127.0.0.1".into(), "localhost".into()],
    );
    let (client_cert, client_key) = leaf(ExtendedKeyUsagePurpose::ClientAuth, vec![]);
    Pki {
        ca: write("ca.pem", ca_pem),
        server_cert: write("server.pem", server_cert),
        server_key: write("server-key.pem", server_key.clone()),
        client_cert: write("client.pem", client_cert),
        client_key: write("client-key.pem", client_key.clone()),
        keys: vec![server_key, client_key],
    }
}

/// The base64 lines of PEM text (what would show if a key leaked).
fn pem_body(pem: &str) -> impl Iterator<Item = String> + '_ {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let good = pki(dir.path(), "good");
    let other = pki(dir.path(), "other");
    let path = |p: &PathBuf| p.to_str().unwrap().to_string();
    let config = format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n}}\n",
        path(&good.server_cert),
        path(&good.server_key),
        path(&good.ca)
    );
    let (ca, cert, key) = (
        good.ca.clone(),
        good.client_cert.clone(),
        good.client_key.clone(),
    );
    let client = move || {
        ConnectOptions::new()
            .add_root_certificates(ca.clone())
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true)
    };
    let flags = |ca: &PathBuf| {
        Credentials::flags(&[
            "--nats-tls-ca",
            &path(ca),
            "--nats-tls-cert",
            &path(&good.client_cert),
            "--nats-tls-key",
            &path(&good.client_key),
        ])
    };
    let case = Case {
        config,
        client: Box::new(client),
        right: flags(&good.ca),
        // A CA that did not sign the server's certificate.
        wrong: flags(&other.ca),
        failure: "NATS TLS failed",
        names: "server certificate not trusted".into(),
        secrets: good
            .keys
            .iter()
            .chain(&other.keys)
            .flat_map(|k| pem_body(k))
            .collect(),
        dir,
    };
    let proven = prove(&case).await;

    // Without a client certificate the server refuses the connection.
    let out = check(
        &proven.nats,
        &Credentials::flags(&["--nats-tls-ca", &path(&good.ca)]),
    )
    .await;
    assert_eq!(out.status.code(), Some(EXIT_NATS), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("FAIL  NATS: NATS TLS failed"),
        "{}",
        text(&out)
    );
    // A key file that is not one is named before any connection.
    let out = check(
        &proven.nats,
        &Credentials::flags(&[
            "--nats-tls-ca",
            &path(&good.ca),
            "--nats-tls-cert",
            &path(&good.client_cert),
            "--nats-tls-key",
            &path(&good.client_cert),
        ]),
    )
    .await;
    assert_eq!(out.status.code(), Some(EXIT_NATS), "{}", text(&out));
    let expected = format!(
        "FAIL  NATS: NATS TLS client key {}: no PEM private key in it",
        good.client_cert.display()
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&expected),
        "{}",
        text(&out)
    );
    proven.assert_no_secret(&case);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_flags_never_fall_back_to_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let good = pki(dir.path(), "good");
    let plain = NatsServer::start();
    let ca = good.ca.to_str().unwrap();
    for (flags, hint) in [
        (&["--nats-tls-ca", ca][..], "is TLS enabled on the server?"),
        (
            &["--nats-tls-first"][..],
            "--nats-tls-first needs `handshake_first`",
        ),
    ] {
        let out = check(&plain, &Credentials::flags(flags)).await;
        let shown = text(&out);
        assert_eq!(out.status.code(), Some(EXIT_NATS), "{shown}");
        assert!(
            shown.contains("FAIL  NATS: NATS TLS failed at ")
                && shown.contains("the server did not answer in TLS")
                && shown.contains(hint),
            "{shown}"
        );
    }
}

/// Usage errors and `--help` never print a secret given in the environment, and a
/// secret given on the command line is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_and_help_show_no_secret() {
    let (token, password) = (random("tok"), random("pw"));
    let cases: [(&[&str], &str); 4] = [
        (&["--nats-user", "bob"], "cannot be used with"),
        (&["--nats-creds", "x.creds"], "cannot be used with"),
        (&["--help"], "BLOB_ROUTER_NATS_TOKEN"),
        (
            &["--nats-password", "on-the-command-line"],
            "is not accepted on the command line",
        ),
    ];
    for (flags, expected) in cases {
        let mut cmd = operator_command("check", "nats://127.0.0.1:1");
        cmd.args(flags)
            .env("BLOB_ROUTER_NATS_TOKEN", &token)
            .env("BLOB_ROUTER_NATS_PASSWORD", &password);
        if flags[0] == "--nats-password" {
            cmd.env_remove("BLOB_ROUTER_NATS_TOKEN")
                .args(["--nats-user", "bob"]);
        }
        let out = finish("check", cmd.spawn().unwrap(), Duration::from_secs(30)).await;
        let shown = text(&out);
        let code = if flags[0] == "--help" { 0 } else { 2 };
        assert_eq!(out.status.code(), Some(code), "{flags:?}: {shown}");
        assert!(shown.contains(expected), "{flags:?}: {shown}");
        for secret in [token.as_str(), password.as_str(), "on-the-command-line"] {
            assert!(!shown.contains(secret), "{flags:?}: {shown}");
        }
    }
}
