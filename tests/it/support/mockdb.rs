//! A scripted MongoDB for tests: MockupDB (Debian's `python3-mockupdb`) speaks the wire
//! protocol to the real driver, and the test answers each command from Rust. See
//! `mockupdb_bridge.py` for the line protocol between the two.

use std::collections::VecDeque;
use std::process::Stdio;
use std::time::Duration;

use mongodb::bson::{doc, Bson, Document};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, Mutex};

/// What `hello` says the deployment is.
#[derive(Clone, Copy)]
pub enum Mode {
    ReplicaSet,
    Sharded,
    Standalone,
}

/// One command the driver sent.
#[derive(Debug, Clone)]
pub struct Request {
    pub id: u64,
    pub command: Document,
}

impl Request {
    /// The command name (the first key).
    pub fn name(&self) -> &str {
        self.command.keys().next().map(String::as_str).unwrap_or("")
    }
}

pub struct MockDb {
    child: Child,
    port: u16,
    stdin: Mutex<ChildStdin>,
    incoming: Mutex<mpsc::UnboundedReceiver<Request>>,
    /// Requests received but not yet asked for by name.
    held: Mutex<VecDeque<Request>>,
}

/// The interpreter with Debian's packages (pyenv's `python3` may shadow it on PATH).
fn python() -> String {
    std::env::var("MOCKUPDB_PYTHON").unwrap_or_else(|_| {
        if std::path::Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3".into()
        } else {
            "python3".into()
        }
    })
}

const WAIT: Duration = Duration::from_secs(15);

impl MockDb {
    pub async fn start(mode: Mode) -> Self {
        Self::start_on(mode, None).await
    }

    /// Like [`Self::start`], on `port` if given: a server restarted where it was.
    pub async fn start_on(mode: Mode, port: Option<u16>) -> Self {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/it/support/mockupdb_bridge.py"
        );
        let mode = match mode {
            Mode::ReplicaSet => "replicaset",
            Mode::Sharded => "sharded",
            Mode::Standalone => "standalone",
        };
        let mut child = Command::new(python())
            .arg(script)
            .arg(mode)
            .args(port.map(|p| p.to_string()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start the MockupDB bridge (needs python3-mockupdb: see .ci/run)");
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("MockupDB bridge did not start")
            .unwrap()
            .expect("MockupDB bridge exited (is python3-mockupdb installed?)");
        let port = serde_json::from_str::<Value>(&first).unwrap()["port"]
            .as_u64()
            .unwrap() as u16;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let v: Value = serde_json::from_str(&line).unwrap();
                let command = match Bson::try_from(v["command"].clone()).unwrap() {
                    Bson::Document(d) => d,
                    other => panic!("not a document: {other}"),
                };
                let id = v["id"].as_u64().unwrap();
                if tx.send(Request { id, command }).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            port,
            stdin: Mutex::new(stdin),
            incoming: Mutex::new(rx),
            held: Mutex::new(VecDeque::new()),
        }
    }

    /// A URI for the driver (direct connection: the mock is one server).
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Freezes the server (SIGSTOP): the kernel still accepts connections, nothing
    /// answers. [`Self::resume`] thaws it.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("bridge running");
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Kills the server and waits until it is gone: its port refuses connections.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    /// The next request of any name (held ones first), None after `limit`.
    pub async fn next_any(&self, limit: Duration) -> Option<Request> {
        if let Some(req) = self.held.lock().await.pop_front() {
            return Some(req);
        }
        let mut incoming = self.incoming.lock().await;
        tokio::time::timeout(limit, incoming.recv()).await.ok()?
    }

    /// The next request named `name`; requests for other commands are held for later.
    pub async fn next(&self, name: &str) -> Request {
        self.try_next(name, WAIT)
            .await
            .unwrap_or_else(|| panic!("no `{name}` command within {WAIT:?}"))
    }

    /// Like [`Self::next`], None after `limit`.
    pub async fn try_next(&self, name: &str, limit: Duration) -> Option<Request> {
        {
            let mut held = self.held.lock().await;
            if let Some(i) = held.iter().position(|r| r.name() == name) {
                return held.remove(i);
            }
        }
        let mut incoming = self.incoming.lock().await;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let req = tokio::time::timeout_at(deadline, incoming.recv())
                .await
                .ok()??;
            if req.name() == name {
                return Some(req);
            }
            self.held.lock().await.push_back(req);
        }
    }

    /// Whether a request named `name` arrives within `limit` (held, not answered).
    pub async fn sees(&self, name: &str, limit: Duration) -> bool {
        match self.try_next(name, limit).await {
            Some(req) => {
                self.held.lock().await.push_front(req);
                true
            }
            None => false,
        }
    }

    pub async fn reply(&self, req: &Request, reply: Document) {
        let reply = Bson::Document(reply).into_canonical_extjson();
        self.send(serde_json::json!({"id": req.id, "reply": reply}))
            .await;
    }

    /// Answers with a command error.
    pub async fn fail(&self, req: &Request, code: i32, message: &str, labels: &[&str]) {
        let mut reply = doc! {"ok": 0, "code": code, "errmsg": message};
        if !labels.is_empty() {
            reply.insert("errorLabels", labels.to_vec());
        }
        self.reply(req, reply).await;
    }

    /// Closes `req`'s connection without an answer (the bridge's `hangup`).
    #[allow(
        dead_code,
        reason = "part of the bridge's protocol; no test hangs up today"
    )]
    pub async fn hangup(&self, req: &Request) {
        self.send(serde_json::json!({"id": req.id, "hangup": true}))
            .await;
    }

    async fn send(&self, msg: Value) {
        let mut stdin = self.stdin.lock().await;
        stdin
            .write_all(format!("{msg}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }
}

impl Drop for MockDb {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The first batch of a cursor (`find`, `aggregate`).
pub fn first_batch(ns: &str, id: i64, docs: Vec<Document>, token: Option<&str>) -> Document {
    let mut cursor = doc! {"id": id, "ns": ns, "firstBatch": docs};
    if let Some(t) = token {
        cursor.insert("postBatchResumeToken", doc! {"_data": t});
    }
    doc! {"ok": 1, "cursor": cursor}
}

/// A `getMore` batch.
pub fn next_batch(ns: &str, id: i64, docs: Vec<Document>, token: Option<&str>) -> Document {
    let mut cursor = doc! {"id": id, "ns": ns, "nextBatch": docs};
    if let Some(t) = token {
        cursor.insert("postBatchResumeToken", doc! {"_data": t});
    }
    doc! {"ok": 1, "cursor": cursor}
}

/// A change event as the server sends it.
pub fn change_event(
    token: &str,
    op: &str,
    ns: (&str, &str),
    id: Option<&str>,
    full: Option<Document>,
) -> Document {
    let mut event = doc! {
        "_id": {"_data": token},
        "operationType": op,
        "ns": {"db": ns.0, "coll": ns.1},
    };
    if let Some(id) = id {
        event.insert("documentKey", doc! {"_id": id});
    }
    match full {
        Some(d) => event.insert("fullDocument", d),
        None if op == "update" => event.insert("fullDocument", Bson::Null),
        None => None,
    };
    event
}
