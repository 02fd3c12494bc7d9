//! Source configs from a MongoDB collection, followed through a change stream.
//!
//! [`MongoStore`] implements the [`ConfigStore`] seam with the official driver:
//!
//! - [`ConfigStore::watch`] opens the change stream and only returns once the server has
//!   answered the `aggregate`, so the stream's start point (its resume token, or the
//!   operation time read just before) is fixed *before* the snapshot is read; the stream
//!   task ([`stream`]) then forwards every change, resumes after errors and asks for a full
//!   reload when the stream cannot be resumed. See that module for the mechanism.
//! - [`ConfigStore::snapshot`] reads every enabled config (`enabled != false`) with
//!   majority read concern, so it never sees a write the change stream could later roll
//!   back.
//! - [`ConfigStore::read_container`] is the forced read of the miss path, a query on
//!   `ingestion.landing_container` (the index on it is created by `configs import` and
//!   checked by `check`).
//!
//! A disabled config is "not visible" to the worker: the snapshot leaves it out, and a
//! change that disables one arrives as a delete, so the TTL resync does not count the
//! difference as drift.
//!
//! Connection strings often carry credentials: [`MongoStore::describe`] shows only hosts,
//! database and collection, and no error this module returns embeds the URI.

mod import;

pub use import::{ImportPlan, ImportReport};
pub mod stream;
pub mod token;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document, Timestamp};
use mongodb::error::ErrorKind;
use mongodb::options::{ClientOptions, IndexOptions, ReadConcern};
use mongodb::{Client, Collection, IndexModel};
use serde_json::Value;
use tokio::sync::mpsc;

use super::{ChangeFeed, ConfigStore, StoreError, StoredDoc};
use token::TokenFile;

/// The field the forced read queries, and that `configs import` indexes.
pub const CONTAINER_FIELD: &str = "ingestion.landing_container";
/// Name of the index on [`CONTAINER_FIELD`].
pub const CONTAINER_INDEX: &str = "ingestion_landing_container";
/// Database used when neither `--database` nor the URI names one.
pub const DEFAULT_DATABASE: &str = "blob_router";
/// Changes buffered between the stream task and the cache.
const FEED_CAPACITY: usize = 1024;

/// What the flags say about the MongoDB source.
#[derive(Debug, Clone)]
pub struct MongoSettings {
    pub uri: String,
    /// `None`: the URI's default database, else [`DEFAULT_DATABASE`].
    pub database: Option<String>,
    pub collection: String,
    /// Where the resume token is kept across restarts (optional).
    pub resume_token_file: Option<PathBuf>,
}

/// What kind of deployment the URI points at; change streams need one of the first two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deployment {
    ReplicaSet(String),
    Sharded,
    Standalone,
}

/// The MongoDB config source. Cheap to share: the driver client is a pool.
pub struct MongoStore {
    shared: Arc<Shared>,
}

/// State shared with the stream task.
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) db: String,
    pub(crate) collection: Collection<Document>,
    pub(crate) shown: String,
    /// The persisted token, used by the first `watch` only.
    pub(crate) token_file: Option<TokenFile>,
    pub(crate) first_watch: Mutex<bool>,
}

impl MongoStore {
    /// Parses the URI and builds the client. Does not contact the server: the driver
    /// connects lazily, and every call below waits for server selection.
    pub async fn connect(settings: &MongoSettings) -> Result<Self, StoreError> {
        let mut options = ClientOptions::parse(&settings.uri)
            .await
            .map_err(|e| parse_error(&e, &settings.uri))?;
        options.app_name.get_or_insert_with(|| "blob-router".into());
        options
            .server_selection_timeout
            .get_or_insert(Duration::from_secs(10));
        let db = settings
            .database
            .clone()
            .or_else(|| options.default_database.clone())
            .unwrap_or_else(|| DEFAULT_DATABASE.into());
        let hosts: Vec<String> = options.hosts.iter().map(|h| h.to_string()).collect();
        let shown = format!(
            "mongodb://{}/{}.{}",
            hosts.join(","),
            db,
            settings.collection
        );
        let client = Client::with_options(options).map_err(|e| parse_error(&e, &settings.uri))?;
        let collection = client
            .database(&db)
            .collection::<Document>(&settings.collection);
        let token_file = settings
            .resume_token_file
            .as_ref()
            .map(|p| TokenFile::new(p.clone(), format!("{db}.{}", settings.collection)));
        Ok(Self {
            shared: Arc::new(Shared {
                client,
                db,
                collection,
                shown,
                token_file,
                first_watch: Mutex::new(true),
            }),
        })
    }

    /// The collection, for the `configs` commands.
    pub(crate) fn collection(&self) -> &Collection<Document> {
        &self.shared.collection
    }

    /// Asks the server what it is (`hello`): change streams need a replica set or a
    /// sharded cluster.
    pub async fn deployment(&self) -> Result<Deployment, StoreError> {
        let hello = self
            .shared
            .client
            .database("admin")
            .run_command(doc! {"hello": 1})
            .await
            .map_err(|e| self.driver_error("hello", e))?;
        Ok(if let Ok(name) = hello.get_str("setName") {
            Deployment::ReplicaSet(name.to_string())
        } else if hello.get_str("msg") == Ok("isdbgrid") {
            Deployment::Sharded
        } else {
            Deployment::Standalone
        })
    }

    /// Whether the index on [`CONTAINER_FIELD`] exists.
    pub async fn has_container_index(&self) -> Result<bool, StoreError> {
        let indexes: Vec<IndexModel> = self
            .shared
            .collection
            .list_indexes()
            .await
            .map_err(|e| self.driver_error("listIndexes", e))?
            .try_collect()
            .await
            .map_err(|e| self.driver_error("listIndexes", e))?;
        Ok(indexes
            .iter()
            .any(|i| i.keys.keys().next().map(String::as_str) == Some(CONTAINER_FIELD)))
    }

    /// Creates the index on [`CONTAINER_FIELD`] (idempotent; needs write access).
    pub async fn ensure_container_index(&self) -> Result<(), StoreError> {
        let model = IndexModel::builder()
            .keys(doc! {CONTAINER_FIELD: 1})
            .options(
                IndexOptions::builder()
                    .name(CONTAINER_INDEX.to_string())
                    .build(),
            )
            .build();
        self.shared
            .collection
            .create_index(model)
            .await
            .map_err(|e| self.driver_error("createIndex", e))?;
        Ok(())
    }

    /// Every document, enabled or not, for `configs export|list`.
    pub async fn all(&self) -> Result<Vec<Value>, StoreError> {
        self.find(doc! {}).await
    }

    async fn find(&self, filter: Document) -> Result<Vec<Value>, StoreError> {
        let mut docs = Vec::new();
        self.find_each(filter, &mut |doc| docs.push(doc)).await?;
        Ok(docs)
    }

    /// Hands each matching document to `each` as the cursor yields it (batch by batch),
    /// so a large collection is never in memory whole.
    async fn find_each(
        &self,
        filter: Document,
        each: &mut (dyn FnMut(Value) + Send),
    ) -> Result<(), StoreError> {
        let mut cursor = self
            .shared
            .collection
            .find(filter)
            .read_concern(ReadConcern::majority())
            .sort(doc! {"_id": 1})
            .await
            .map_err(|e| self.driver_error("find", e))?;
        while let Some(doc) = cursor
            .try_next()
            .await
            .map_err(|e| self.driver_error("find", e))?
        {
            each(to_json(doc));
        }
        Ok(())
    }

    /// A driver error as the caller's kind of error: bad credentials will not heal by
    /// waiting (the caller fails fast); anything else may.
    fn driver_error(&self, what: &str, e: mongodb::error::Error) -> StoreError {
        let context = format!("{} {what}", self.shared.shown);
        if matches!(e.kind.as_ref(), ErrorKind::Authentication { .. }) {
            StoreError::invalid(context, e)
        } else {
            StoreError::unavailable(context, e)
        }
    }
}

/// Only enabled configs are visible to the worker.
fn visible() -> Document {
    doc! {"enabled": {"$ne": false}}
}

#[async_trait]
impl ConfigStore for MongoStore {
    async fn watch(&self) -> Result<ChangeFeed, StoreError> {
        // The saved token is for the first stream this process opens successfully.
        let resume = *self.shared.first_watch.lock().expect("first_watch lock");
        let (tx, rx) = mpsc::channel(FEED_CAPACITY);
        let follower = stream::open(self.shared.clone(), resume)
            .await
            .map_err(|e| self.driver_error("change stream", e))?;
        *self.shared.first_watch.lock().expect("first_watch lock") = false;
        tokio::spawn(follower.run(tx));
        Ok(rx)
    }

    async fn snapshot(&self) -> Result<Vec<Value>, StoreError> {
        self.find(visible()).await
    }

    async fn snapshot_each(
        &self,
        each: &mut (dyn for<'d> FnMut(StoredDoc<'d>) + Send),
    ) -> Result<(), StoreError> {
        self.find_each(visible(), &mut |doc| each(StoredDoc::from_value(doc)))
            .await
    }

    async fn read_container(&self, container: &str) -> Result<Vec<Value>, StoreError> {
        let mut filter = visible();
        filter.insert(CONTAINER_FIELD, container);
        self.find(filter).await
    }

    fn describe(&self) -> String {
        self.shared.shown.clone()
    }
}

/// A BSON document as the JSON the cache validates: relaxed extended JSON, so an
/// ObjectId `_id` is `{"$oid": ..}` and a date `{"$date": ..}`, both of which the config
/// model understands.
pub fn to_json(doc: Document) -> Value {
    Bson::Document(doc).into_relaxed_extjson()
}

/// A JSON document (from a file) as BSON, for `configs import`. Extended JSON (`$oid`,
/// `$date`) is honoured.
pub fn from_json(value: &Value) -> Result<Document, String> {
    match Bson::try_from(value.clone()) {
        Ok(Bson::Document(d)) => Ok(d),
        Ok(other) => Err(format!("expected a document, got {other}")),
        Err(e) => Err(e.to_string()),
    }
}

/// The operation time of a server reply, where the deployment reports one.
pub(crate) fn operation_time(reply: &Document) -> Option<Timestamp> {
    reply.get_timestamp("operationTime").ok()
}

/// A URI the driver cannot use. Its message may quote pieces of the URI (a host the
/// parser split out of a mangled password, say), so it is shown only when the URI holds
/// no credentials. A failed `mongodb+srv` DNS lookup is "unavailable": it may heal.
fn parse_error(e: &mongodb::error::Error, uri: &str) -> StoreError {
    let secret = has_credentials(uri);
    if matches!(e.kind.as_ref(), ErrorKind::DnsResolve { .. }) {
        return if secret {
            StoreError::Unavailable {
                context: "--mongodb-uri: the DNS lookup of the host failed".into(),
                source: None,
            }
        } else {
            StoreError::unavailable("--mongodb-uri", e.clone())
        };
    }
    if secret {
        StoreError::invalid_because(
            "--mongodb-uri is not a usable MongoDB connection string (the driver's message is \
             not shown because the URI holds credentials; check that the user name and \
             password are percent-encoded, e.g. `@` as %40, `:` as %3A, `/` as %2F, `?` as %3F)",
        )
    } else {
        StoreError::invalid(
            "--mongodb-uri is not a usable MongoDB connection string",
            e.clone(),
        )
    }
}

/// Whether the URI carries a user name or password (anything before an `@`).
fn has_credentials(uri: &str) -> bool {
    uri.split_once("://")
        .map_or(uri, |(_, rest)| rest)
        .contains('@')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bson_documents_become_json_the_config_model_reads() {
        let oid = mongodb::bson::oid::ObjectId::parse_str("65f0c0ffee0000000000abcd").unwrap();
        let v = to_json(doc! {"_id": oid, "enabled": true, "priority": 2_i64,
        "updated_at": mongodb::bson::DateTime::from_millis(0)});
        assert_eq!(v["_id"], json!({"$oid": "65f0c0ffee0000000000abcd"}));
        assert_eq!(v["priority"], json!(2));
        assert_eq!(
            crate::config::doc_id(&v).as_deref(),
            Some("65f0c0ffee0000000000abcd")
        );
        assert!(v["updated_at"].get("$date").is_some());
    }

    #[test]
    fn json_documents_become_bson_with_extended_json_honoured() {
        let d = from_json(&json!({"_id": {"$oid": "65f0c0ffee0000000000abcd"}, "n": 1})).unwrap();
        assert!(matches!(d.get("_id"), Some(Bson::ObjectId(_))));
        assert!(from_json(&json!([1])).is_err());
    }

    #[tokio::test]
    async fn describe_never_shows_credentials_and_picks_the_database() {
        let s = MongoStore::connect(&MongoSettings {
            uri: "mongodb://app:s3cret@db1.example:27017,db2.example:27017/configs?replicaSet=rs0"
                .into(),
            database: None,
            collection: "source_configs".into(),
            resume_token_file: None,
        })
        .await
        .unwrap();
        let shown = s.describe();
        assert!(
            !shown.contains("s3cret") && !shown.contains("app"),
            "{shown}"
        );
        assert_eq!(
            shown,
            "mongodb://db1.example:27017,db2.example:27017/configs.source_configs"
        );
        let s = MongoStore::connect(&MongoSettings {
            uri: "mongodb://127.0.0.1:27017".into(),
            database: Some("other".into()),
            collection: "c".into(),
            resume_token_file: None,
        })
        .await
        .unwrap();
        assert_eq!(s.describe(), "mongodb://127.0.0.1:27017/other.c");
    }

    /// The error as an operator sees it: with its whole cause chain.
    async fn refused(uri: &str) -> String {
        let e = MongoStore::connect(&MongoSettings {
            uri: uri.into(),
            database: None,
            collection: "c".into(),
            resume_token_file: None,
        })
        .await
        .err()
        .expect("refused");
        crate::telemetry::Chain(&e).to_string()
    }

    #[tokio::test]
    async fn a_bad_uri_is_refused_without_echoing_it() {
        let msg = refused("mongodb://u:pw@host:notaport").await;
        assert!(msg.contains("--mongodb-uri"), "{msg}");
        assert!(!msg.contains("pw"), "{msg}");
        // A password the parser splits (an unencoded `?`) is not echoed in pieces.
        for uri in [
            "mongodb://app:s3cr?etpw@db1:27017/x",
            "mongodb://app:pa/ss@db1:27017/x",
        ] {
            let msg = refused(uri).await;
            assert!(
                !msg.contains("s3cr") && !msg.contains("pa/") && !msg.contains("app"),
                "{msg}"
            );
            assert!(msg.contains("percent-encoded"), "{msg}");
        }
        // Without credentials the driver's reason is shown.
        let msg = refused("mongodb://db1:notaport").await;
        assert!(msg.contains("notaport"), "{msg}");
    }
}
