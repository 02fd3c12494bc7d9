//! `docker-compose.yaml`, `Dockerfile` and `.dockerignore`, checked by reading them.
//!
//! There is no Docker engine where the tests run, so nothing here builds an image or
//! starts a container. Instead these tests keep the files honest against what can be
//! checked without one: the services and their wiring, the fixtures the image ships, the
//! runtime stage of the Dockerfile, and above all that every `BLOB_ROUTER_*` variable the
//! compose file sets is a real flag of the binary (a misspelt one is silently ignored).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const COMPOSE: &str = "docker-compose.yaml";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(name: &str) -> String {
    let path = repo().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn compose() -> Value {
    serde_yaml_ng::from_str(&read(COMPOSE))
        .unwrap_or_else(|e| panic!("{COMPOSE} is not valid YAML: {e}"))
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose
        .get("services")
        .and_then(|s| s.get(name))
        .unwrap_or_else(|| panic!("{COMPOSE}: no service `{name}` under `services`"))
}

/// A string or a number (`8222`) as text; anything else is a broken file.
fn scalar(v: &Value, what: &str) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("{COMPOSE}: {what} should be a string, found {other}"),
    }
}

/// A list of strings, or one string split on whitespace (both are valid compose).
fn words(v: &Value, what: &str) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().map(|i| scalar(i, what)).collect(),
        Value::String(s) => s.split_whitespace().map(String::from).collect(),
        other => panic!("{COMPOSE}: {what} should be a list of strings, found {other}"),
    }
}

fn command(compose: &Value, name: &str) -> Vec<String> {
    let v = service(compose, name)
        .get("command")
        .unwrap_or_else(|| panic!("{COMPOSE}: service `{name}` has no `command`"));
    words(v, &format!("`{name}.command`"))
}

/// `environment:` as a map, whether written as a map or as a list of `KEY=VALUE`.
fn environment(compose: &Value, name: &str) -> BTreeMap<String, String> {
    let what = format!("`{name}.environment`");
    match service(compose, name).get("environment") {
        None => BTreeMap::new(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| (k.clone(), scalar(v, &what)))
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                let kv = scalar(i, &what);
                let (k, v) = kv.split_once('=').unwrap_or((&kv, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        Some(other) => panic!("{COMPOSE}: {what} should be a map, found {other}"),
    }
}

fn env_var(compose: &Value, name: &str, key: &str) -> String {
    environment(compose, name)
        .remove(key)
        .unwrap_or_else(|| panic!("{COMPOSE}: service `{name}` does not set {key}"))
}

/// `ports:` entries as written (`127.0.0.1:8080:8080`).
fn ports(compose: &Value, name: &str) -> Vec<String> {
    match service(compose, name).get("ports") {
        None => Vec::new(),
        Some(v) => words(v, &format!("`{name}.ports`")),
    }
}

/// `volumes:` of a service as (source, target) pairs.
fn mounts(compose: &Value, name: &str) -> Vec<(String, String)> {
    let Some(v) = service(compose, name).get("volumes") else {
        return Vec::new();
    };
    let what = format!("`{name}.volumes`");
    let Value::Array(items) = v else {
        panic!("{COMPOSE}: {what} should be a list, found {v}");
    };
    items
        .iter()
        .map(|item| match item {
            Value::String(s) => {
                let mut parts = s.split(':');
                let source = parts.next().unwrap_or_default().to_string();
                let target = parts
                    .next()
                    .unwrap_or_else(|| panic!("{COMPOSE}: {what} entry `{s}` has no target"));
                (source, target.to_string())
            }
            Value::Object(m) => (
                m.get("source")
                    .map(|v| scalar(v, &what))
                    .unwrap_or_default(),
                m.get("target")
                    .map(|v| scalar(v, &what))
                    .unwrap_or_else(|| panic!("{COMPOSE}: {what} entry {item} has no target")),
            ),
            other => panic!("{COMPOSE}: {what} entry should be a string, found {other}"),
        })
        .collect()
}

/// The `condition:` under `depends_on.<on>` (the short list form means `service_started`).
fn depends_on(compose: &Value, name: &str, on: &str) -> Option<String> {
    match service(compose, name).get("depends_on")? {
        Value::Array(items) => items
            .iter()
            .any(|i| i.as_str() == Some(on))
            .then(|| "service_started".to_string()),
        Value::Object(map) => map.get(on).map(|d| {
            d.get("condition")
                .and_then(Value::as_str)
                .unwrap_or("service_started")
                .to_string()
        }),
        _ => None,
    }
}

/// The `--replSet` name the mongo service starts with.
fn replica_set_name(compose: &Value) -> String {
    let cmd = command(compose, "mongo");
    let at = cmd
        .iter()
        .position(|a| a == "--replSet")
        .unwrap_or_else(|| panic!("{COMPOSE}: mongo's command {cmd:?} has no --replSet"));
    cmd.get(at + 1)
        .cloned()
        .unwrap_or_else(|| panic!("{COMPOSE}: mongo's --replSet has no name: {cmd:?}"))
}

/// One Dockerfile instruction: its keyword (upper case) and the rest of the line, with
/// `\` continuations joined.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

/// The Dockerfile's build stages, each a list of instructions starting with its `FROM`.
fn dockerfile_stages() -> Vec<Vec<Instruction>> {
    let text = read("Dockerfile");
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if !current.is_empty() && trimmed.starts_with('#') {
            continue; // a comment inside a continued instruction
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head.trim_end());
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    assert!(
        current.is_empty(),
        "Dockerfile ends inside a `\\` continuation: {current}"
    );
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    for line in logical {
        let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let instruction = Instruction {
            keyword: keyword.to_ascii_uppercase(),
            args: args.trim().to_string(),
        };
        if instruction.keyword == "FROM" {
            stages.push(Vec::new());
        }
        match stages.last_mut() {
            Some(stage) => stage.push(instruction),
            None if instruction.keyword == "ARG" => {} // ARG before the first FROM
            None => panic!("Dockerfile: `{line}` comes before the first FROM"),
        }
    }
    assert!(!stages.is_empty(), "Dockerfile has no FROM");
    stages
}

fn runtime_stage() -> Vec<Instruction> {
    dockerfile_stages().pop().unwrap()
}

fn instructions<'a>(stage: &'a [Instruction], keyword: &str) -> Vec<&'a str> {
    stage
        .iter()
        .filter(|i| i.keyword == keyword)
        .map(|i| i.args.as_str())
        .collect()
}

/// The value of an exec-form (`["a", "b"]`) instruction.
fn exec_form(args: &str, keyword: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| {
        panic!("Dockerfile: {keyword} {args} should be the exec form [\"...\"]: {e}")
    })
}

/// `blob-router <args> --help`, whitespace collapsed so a wrapped line cannot split
/// an `[env: NAME=]` marker.
fn help(args: &[&str]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_blob-router"));
    cmd.args(args).arg("--help");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("BLOB_ROUTER_") {
            cmd.env_remove(key);
        }
    }
    let out = cmd.output().expect("run blob-router");
    assert!(
        out.status.success(),
        "`blob-router {} --help` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether clap lists `key` as the variable of some flag (`[env: KEY=]`, or
/// `[env: KEY]` for a flag whose value is hidden).
fn help_has_env(help: &str, key: &str) -> bool {
    help.contains(&format!("[env: {key}=")) || help.contains(&format!("[env: {key}]"))
}

#[test]
fn the_four_services_are_there() {
    let c = compose();
    for name in ["mongo", "nats", "configs-import", "worker"] {
        let image = service(&c, name).get("image");
        assert!(
            image.and_then(Value::as_str).is_some(),
            "{COMPOSE}: service `{name}` has no `image` (worker and configs-import need \
             one too, so they share the image built from the Dockerfile)"
        );
    }
}

#[test]
fn mongo_is_a_replica_set_its_healthcheck_initiates() {
    let c = compose();
    let mongo = service(&c, "mongo");
    let image = mongo["image"].as_str().unwrap_or_default();
    assert!(
        image.starts_with("mongo:7"),
        "{COMPOSE}: mongo's image is `{image}`, expected mongo:7"
    );
    let set = replica_set_name(&c);
    let cmd = command(&c, "mongo");
    assert!(
        cmd.iter().any(|a| a == "--bind_ip_all"),
        "{COMPOSE}: mongo's command {cmd:?} lacks --bind_ip_all: the other containers \
         could not connect"
    );

    let test = mongo
        .get("healthcheck")
        .and_then(|h| h.get("test"))
        .unwrap_or_else(|| panic!("{COMPOSE}: mongo has no healthcheck.test"));
    let test = words(test, "mongo's healthcheck.test");
    assert_eq!(
        test.first().map(String::as_str),
        Some("CMD"),
        "{COMPOSE}: mongo's healthcheck.test should be the exec form [\"CMD\", ...]: {test:?}"
    );
    assert!(
        test.iter().any(|a| a == "mongosh"),
        "{COMPOSE}: mongo's healthcheck should run mongosh (mongo:7 has no `mongo` shell): \
         {test:?}"
    );
    let script = test.last().unwrap();
    assert!(
        script.contains("rs.initiate("),
        "{COMPOSE}: mongo's healthcheck never calls rs.initiate, so the replica set is \
         never initiated and change streams fail: {script}"
    );
    assert!(
        script.contains(&format!("_id: '{set}'")),
        "{COMPOSE}: mongo's healthcheck initiates a set other than `{set}` (--replSet): \
         {script}"
    );
    assert!(
        script.contains("host: 'mongo:27017'"),
        "{COMPOSE}: mongo's healthcheck should initiate the member as `mongo:27017`, the \
         name the other containers resolve: {script}"
    );
    assert!(
        script.contains("isWritablePrimary"),
        "{COMPOSE}: mongo's healthcheck must fail until the node is primary (the first \
         seconds after rs.initiate it is not), else configs-import starts too early: \
         {script}"
    );
    assert!(
        !script.replace("$$", "").contains('$'),
        "{COMPOSE}: mongo's healthcheck has a `$`, which compose interpolates; write `$$`: \
         {script}"
    );
    let check = &mongo["healthcheck"];
    for key in ["interval", "retries", "start_period"] {
        assert!(
            check.get(key).is_some(),
            "{COMPOSE}: mongo's healthcheck has no `{key}`"
        );
    }
}

#[test]
fn nats_runs_jetstream_with_a_store() {
    let c = compose();
    let image = service(&c, "nats")["image"].as_str().unwrap_or_default();
    assert!(
        image.starts_with("nats:2"),
        "{COMPOSE}: nats's image is `{image}`, expected nats:2.x"
    );
    let cmd = command(&c, "nats");
    assert!(
        cmd.iter().any(|a| a == "-js" || a == "--jetstream"),
        "{COMPOSE}: nats's command {cmd:?} does not enable JetStream (-js)"
    );
    let store = cmd
        .iter()
        .position(|a| a == "-sd" || a == "--store_dir")
        .and_then(|at| cmd.get(at + 1))
        .unwrap_or_else(|| panic!("{COMPOSE}: nats's command {cmd:?} has no -sd <dir>"));
    assert!(
        mounts(&c, "nats").iter().any(|(_, target)| target == store),
        "{COMPOSE}: nats stores JetStream data in {store}, but no volume is mounted there"
    );
}

#[test]
fn worker_and_import_build_one_image_from_the_dockerfile() {
    let c = compose();
    let mut images = Vec::new();
    for name in ["configs-import", "worker"] {
        let svc = service(&c, name);
        let build = svc
            .get("build")
            .unwrap_or_else(|| panic!("{COMPOSE}: service `{name}` has no `build`"));
        let (context, dockerfile) = match build {
            Value::String(s) => (s.as_str(), "Dockerfile"),
            Value::Object(m) => (
                m.get("context").and_then(Value::as_str).unwrap_or("."),
                m.get("dockerfile")
                    .and_then(Value::as_str)
                    .unwrap_or("Dockerfile"),
            ),
            other => panic!("{COMPOSE}: `{name}.build` should be `.`, found {other}"),
        };
        assert!(
            context == "." || context == "./",
            "{COMPOSE}: service `{name}` builds from `{context}`, expected the repo (`.`)"
        );
        assert!(
            repo().join(dockerfile).is_file(),
            "{COMPOSE}: service `{name}` builds {dockerfile}, which does not exist"
        );
        images.push(svc["image"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(
        images[0], images[1],
        "{COMPOSE}: configs-import and worker should name the same image, so it is built \
         once"
    );
}

#[test]
fn configs_import_imports_a_valid_fixture_the_image_contains() {
    let c = compose();
    let cmd = command(&c, "configs-import");
    assert!(
        cmd.len() == 3 && cmd[0] == "configs" && cmd[1] == "import",
        "{COMPOSE}: configs-import's command should be [configs, import, <file>], found \
         {cmd:?}"
    );
    let file = &cmd[2];
    let in_fixtures = file.strip_prefix("/fixtures/").unwrap_or_else(|| {
        panic!("{COMPOSE}: configs-import imports {file}, expected a file under /fixtures/")
    });
    let local = repo().join("fixtures").join(in_fixtures);
    assert!(
        local.is_file(),
        "{COMPOSE}: configs-import imports {file}, but {} does not exist",
        local.display()
    );

    let copies = instructions(&runtime_stage(), "COPY")
        .into_iter()
        .any(|args| {
            let parts: Vec<&str> = args.split_whitespace().collect();
            !args.starts_with("--from")
                && parts.len() >= 2
                && parts[..parts.len() - 1]
                    .iter()
                    .any(|src| src.trim_end_matches('/') == "fixtures")
                && parts[parts.len() - 1].trim_end_matches('/') == "/fixtures"
        });
    assert!(
        copies,
        "Dockerfile: the runtime stage does not `COPY fixtures /fixtures`, so {file} is \
         not in the image"
    );

    // `configs import` refuses the whole file when one document is invalid, and then the
    // worker (which waits for the import to succeed) never starts.
    let out = Command::new(env!("CARGO_BIN_EXE_blob-router"))
        .args(["configs", "validate"])
        .arg(&local)
        .output()
        .expect("run blob-router");
    assert!(
        out.status.success(),
        "{}: `blob-router configs validate` refuses it, so configs-import would fail:\n{}{}",
        local.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn environment_variables_are_flags_of_the_binary() {
    let c = compose();
    let cases: [(&str, &[&str]); 2] = [
        ("worker", &["run"]),
        ("configs-import", &["configs", "import"]),
    ];
    for (name, subcommand) in cases {
        let cmd = command(&c, name);
        assert!(
            cmd.starts_with(&subcommand.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
            "{COMPOSE}: service `{name}` runs {cmd:?}, expected `{}`",
            subcommand.join(" ")
        );
        let help = help(subcommand);
        let env = environment(&c, name);
        assert!(
            !env.is_empty(),
            "{COMPOSE}: service `{name}` sets no environment"
        );
        for key in env.keys() {
            assert!(
                key.starts_with("BLOB_ROUTER_"),
                "{COMPOSE}: service `{name}` sets {key}, which the binary does not read \
                 (its variables are BLOB_ROUTER_*)"
            );
            assert!(
                help_has_env(&help, key),
                "{COMPOSE}: service `{name}` sets {key}, but `blob-router {} --help` has \
                 no flag with that variable, so it is ignored",
                subcommand.join(" ")
            );
        }
    }
}

#[test]
fn services_reach_mongo_as_the_replica_set_and_nats_by_service_name() {
    let c = compose();
    let set = replica_set_name(&c);
    for name in ["configs-import", "worker"] {
        let uri = env_var(&c, name, "BLOB_ROUTER_MONGODB_URI");
        assert!(
            uri.starts_with("mongodb://mongo:27017/"),
            "{COMPOSE}: {name}'s BLOB_ROUTER_MONGODB_URI `{uri}` should point at the mongo \
             service (mongodb://mongo:27017/...)"
        );
        assert!(
            uri.contains(&format!("replicaSet={set}")),
            "{COMPOSE}: {name}'s BLOB_ROUTER_MONGODB_URI `{uri}` lacks replicaSet={set}"
        );
    }
    assert_eq!(
        env_var(&c, "worker", "BLOB_ROUTER_MONGODB_URI"),
        env_var(&c, "configs-import", "BLOB_ROUTER_MONGODB_URI"),
        "{COMPOSE}: the worker reads another database than configs-import writes"
    );
    let nats = env_var(&c, "worker", "BLOB_ROUTER_NATS_URL");
    assert_eq!(
        nats, "nats://nats:4222",
        "{COMPOSE}: the worker's BLOB_ROUTER_NATS_URL should be the nats service"
    );
}

#[test]
fn worker_starts_after_the_import_and_its_dependencies() {
    let c = compose();
    let expected = [
        ("configs-import", "service_completed_successfully"),
        ("mongo", "service_healthy"),
        ("nats", "service_started"),
    ];
    for (on, condition) in expected {
        let found = depends_on(&c, "worker", on);
        assert_eq!(
            found.as_deref(),
            Some(condition),
            "{COMPOSE}: worker should depend on {on} with `condition: {condition}`"
        );
    }
    assert_eq!(
        depends_on(&c, "configs-import", "mongo").as_deref(),
        Some("service_healthy"),
        "{COMPOSE}: configs-import should wait for mongo to be healthy (initiated, primary)"
    );
    let restart = service(&c, "configs-import")
        .get("restart")
        .and_then(Value::as_str);
    assert_eq!(
        restart,
        Some("no"),
        "{COMPOSE}: configs-import is one-shot; it needs `restart: \"no\"`"
    );
}

#[test]
fn resume_token_lives_on_a_volume_the_image_user_owns() {
    let c = compose();
    let token = env_var(&c, "worker", "BLOB_ROUTER_RESUME_TOKEN_FILE");
    let dir = Path::new(&token)
        .parent()
        .and_then(Path::to_str)
        .unwrap_or_else(|| panic!("{COMPOSE}: BLOB_ROUTER_RESUME_TOKEN_FILE `{token}` has no dir"))
        .to_string();
    let volume = mounts(&c, "worker")
        .into_iter()
        .find(|(_, target)| *target == dir)
        .map(|(source, _)| source)
        .unwrap_or_else(|| {
            panic!(
                "{COMPOSE}: the worker keeps its resume token in {dir}, but no volume is \
                 mounted there, so the token is lost with the container"
            )
        });
    assert!(
        c.get("volumes").and_then(|v| v.get(&volume)).is_some(),
        "{COMPOSE}: the worker mounts volume `{volume}`, which the top-level `volumes:` \
         does not declare"
    );

    let stage = runtime_stage();
    let user = instructions(&stage, "USER")
        .last()
        .map(|u| u.to_string())
        .unwrap_or_else(|| panic!("Dockerfile: the runtime stage has no USER, so it runs as root"));
    let uid = user.split(':').next().unwrap_or_default();
    assert!(
        uid != "0" && uid != "root",
        "Dockerfile: the runtime stage runs as `{user}`; use a non-root user"
    );
    let owned = instructions(&stage, "RUN")
        .into_iter()
        .any(|run| run.contains("chown") && run.contains(uid) && run.contains(&dir));
    assert!(
        owned,
        "Dockerfile: the runtime stage should create {dir} owned by {uid} (`RUN mkdir -p \
         {dir} && chown {user} {dir}`): an empty named volume takes that owner, and without \
         it the worker cannot write its resume token"
    );
}

#[test]
fn ports_are_published_on_loopback_and_match_the_worker() {
    let c = compose();
    for name in ["mongo", "nats", "worker"] {
        let published = ports(&c, name);
        assert!(
            !published.is_empty(),
            "{COMPOSE}: service `{name}` publishes no port"
        );
        for p in published {
            assert!(
                p.starts_with("127.0.0.1:"),
                "{COMPOSE}: service `{name}` publishes `{p}` on every interface; use \
                 127.0.0.1:<host>:<container>"
            );
        }
    }
    let addr = env_var(&c, "worker", "BLOB_ROUTER_HTTP_ADDR");
    let (host, port) = addr
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{COMPOSE}: BLOB_ROUTER_HTTP_ADDR `{addr}` has no port"));
    assert_eq!(
        host, "0.0.0.0",
        "{COMPOSE}: the worker's HTTP server listens on {host}, unreachable through the \
         published port"
    );
    assert!(
        ports(&c, "worker")
            .iter()
            .any(|p| p.rsplit(':').next() == Some(port)),
        "{COMPOSE}: the worker listens on {port}, which its `ports:` do not publish"
    );
    let exposed = instructions(&runtime_stage(), "EXPOSE").join(" ");
    assert!(
        exposed.split_whitespace().any(|p| p == port),
        "Dockerfile: the runtime stage EXPOSEs `{exposed}`, not the worker's port {port}"
    );
}

#[test]
fn named_volumes_are_declared() {
    let c = compose();
    for name in ["mongo", "nats", "worker"] {
        for (source, target) in mounts(&c, name) {
            let named = !source.is_empty() && !source.starts_with(['.', '/', '~']);
            assert!(
                !named || c.get("volumes").and_then(|v| v.get(&source)).is_some(),
                "{COMPOSE}: service `{name}` mounts volume `{source}` at {target}, but the \
                 top-level `volumes:` does not declare it"
            );
        }
    }
    assert!(
        mounts(&c, "mongo").iter().any(|(_, t)| t == "/data/db"),
        "{COMPOSE}: mongo has no volume at /data/db, so its data (and the replica set \
         config) go with the container"
    );
}

#[test]
fn dockerfile_builds_the_binary_and_runs_it() {
    let stages = dockerfile_stages();
    assert!(
        stages.len() >= 2,
        "Dockerfile: expected a build stage and a runtime stage, found {}",
        stages.len()
    );
    let build = &stages[0];
    let from = build[0].args.as_str();
    let rust_version = env!("CARGO_PKG_RUST_VERSION");
    assert!(
        from.starts_with(&format!("rust:{rust_version}-"))
            || from.starts_with(&format!("rust:{rust_version} ")),
        "Dockerfile: the build stage is `FROM {from}`; Cargo.toml's rust-version is \
         {rust_version}, so build with rust:{rust_version}-..."
    );
    let builds = instructions(build, "RUN").into_iter().any(|run| {
        run.contains("cargo build")
            && run.contains("--release")
            && run.contains("--locked")
            && run.contains("--bin blob-router")
    });
    assert!(
        builds,
        "Dockerfile: the build stage has no `cargo build --release --locked --bin blob-router`"
    );

    let runtime = stages.last().unwrap();
    let from = runtime[0].args.as_str();
    assert!(
        !from.starts_with("rust:"),
        "Dockerfile: the runtime stage is `FROM {from}`, the whole toolchain; use a slim base"
    );
    let copies_binary = instructions(runtime, "COPY")
        .into_iter()
        .any(|args| args.starts_with("--from=") && args.ends_with("/usr/local/bin/blob-router"));
    assert!(
        copies_binary,
        "Dockerfile: the runtime stage does not COPY --from the build stage to \
         /usr/local/bin/blob-router"
    );
    let installs_ca = instructions(runtime, "RUN")
        .into_iter()
        .any(|run| run.contains("ca-certificates"));
    assert!(
        installs_ca,
        "Dockerfile: the runtime stage does not install ca-certificates; TLS to MongoDB \
         Atlas would fail"
    );
    let entrypoint = instructions(runtime, "ENTRYPOINT");
    let entrypoint = entrypoint
        .last()
        .unwrap_or_else(|| panic!("Dockerfile: the runtime stage has no ENTRYPOINT"));
    assert_eq!(
        exec_form(entrypoint, "ENTRYPOINT"),
        ["blob-router"],
        "Dockerfile: the runtime stage's ENTRYPOINT should be [\"blob-router\"], so compose \
         commands are its subcommands"
    );
    let cmd = instructions(runtime, "CMD");
    let cmd = cmd
        .last()
        .unwrap_or_else(|| panic!("Dockerfile: the runtime stage has no CMD"));
    assert_eq!(
        exec_form(cmd, "CMD"),
        ["run"],
        "Dockerfile: the runtime stage's default CMD should be [\"run\"]"
    );
}

#[test]
fn dockerignore_keeps_target_out_and_the_sources_in() {
    let text = read(".dockerignore");
    let patterns: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_end_matches('/'))
        .collect();
    for needed in ["target", ".git"] {
        assert!(
            patterns.contains(&needed),
            ".dockerignore does not exclude {needed}/, which bloats the build context"
        );
    }
    // benches/ too: Cargo.toml names a [[bench]] target, and a missing one fails the build.
    for kept in ["src", "benches", "fixtures", "Cargo.toml", "Cargo.lock"] {
        assert!(
            !patterns.contains(&kept),
            ".dockerignore excludes {kept}, which the image build needs"
        );
    }
}
