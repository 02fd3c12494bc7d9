//! The change stream task: follows `source_configs`, turns each change event into a
//! [`Change`] for the cache, resumes after errors, and asks for a full reload when the
//! stream cannot be resumed.
//!
//! # Why no change is ever missed
//!
//! 1. **Open first.** `open` sends the `aggregate` with the `$changeStream` stage and
//!    waits for the server's answer. From that point the server records every change for
//!    this stream; the answer carries the stream's start point (`postBatchResumeToken`),
//!    and for servers that give none, the `operationTime` of a `ping` sent just before
//!    is kept instead (`startAtOperationTime` replays from there).
//! 2. **Then the snapshot.** Only after `open` returns does the app read the snapshot.
//!    A change committed while the snapshot is read is therefore after the stream's start
//!    point, so the stream delivers it, and the app applies it after the snapshot.
//! 3. **Then the buffered changes, in order.** Applying a change the snapshot already
//!    contains is harmless: an upsert carries the document as the server looked it up
//!    (`fullDocument: updateLookup`), a delete of an absent id does nothing, and since
//!    every later change follows in order, the cache converges on the collection.
//!
//! The same order protects every reopen: after an invalidate, a drop, a rename, a lost
//! history (code 286) or an unknown resume token, the task first opens a new stream from
//! "now", and only then sends [`Change::Reload`], so the reload's snapshot is again read
//! after the new start point.
//!
//! # Resuming
//!
//! After a network error or a `ResumableChangeStreamError` the driver reopens the stream
//! by itself, as long as its reopening `aggregate` succeeds. An error that still reaches
//! this task marks the feed inactive (the cache then stops trusting negative answers,
//! forces a read on every miss and resyncs more often) and is retried with exponential
//! backoff and jitter: `resumeAfter` the last token seen (the token advances with every
//! batch, even an empty one), or `startAtOperationTime` (the last event's cluster time, or
//! the first `ping`'s) when the server gives no token. Nothing is missed, so no reload is
//! needed; the feed is marked active again with [`Change::Resumed`]. The backoff spans
//! cycles: a stream that reopens fine and then fails again at once (an event too large
//! after the lookup, say) waits longer each time, and after [`MAX_RESUMES`] failures
//! without a good batch in between the task gives up on the position and restarts from
//! now with a full reload.
//!
//! # A saved token (`--resume-token-file`)
//!
//! A restarted worker reopens the stream after its saved token and first reads it up to
//! the present (the first empty batch). Those changes were made while it was stopped; the
//! snapshot that follows already holds their result, and insert and replace events carry
//! the document as it was *then*, so they are logged and counted, not applied. Only after
//! that does `open` return, and the snapshot is read: the usual order again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, Retryable};
use mongodb::bson::{doc, Document, Timestamp};
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType, ResumeToken};
use mongodb::change_stream::ChangeStream;
use mongodb::error::{Error, ErrorKind};
use mongodb::options::FullDocumentType;
use tokio::sync::mpsc;

use super::{operation_time, to_json, Shared};
use crate::config::doc_id;
use crate::store::{retry_policy, Change};

/// Server error codes after which the stream cannot be resumed where it was.
pub mod codes {
    /// The oplog no longer holds the resume point.
    pub const CHANGE_STREAM_HISTORY_LOST: i32 = 286;
    /// e.g. "the resume token was not found".
    pub const CHANGE_STREAM_FATAL: i32 = 280;
    pub const INVALID_RESUME_TOKEN: i32 = 260;
    /// Older servers' way of saying history was lost.
    pub const CAPPED_POSITION_LOST: i32 = 136;
    /// MongoDB 4.0: "resume of change stream was not possible, as the resume token was
    /// not found".
    pub const RESUME_TOKEN_NOT_FOUND_4_0: i32 = 40585;
    /// MongoDB 4.0: the collection's UUID does not exist (dropped and recreated).
    pub const UUID_NOT_FOUND_4_0: i32 = 40615;
}

/// The events the stream asks the server for: the four that change a document, and the
/// four that end a stream (so they are seen and answered with a reload).
pub fn match_stage() -> Document {
    doc! {"$match": {"operationType": {"$in": [
        "insert", "update", "replace", "delete",
        "invalidate", "drop", "rename", "dropDatabase",
    ]}}}
}

/// Saving the token to disk after empty batches happens at most this often.
const SAVE_EVERY: Duration = Duration::from_secs(5);
/// Failed resumes in a row (no good batch between them) before the position is given
/// up for a fresh start and a full reload.
pub const MAX_RESUMES: u32 = 5;

/// Where a (re)opened stream starts.
#[derive(Debug, Clone)]
enum Start {
    Now,
    After(ResumeToken),
    At(Timestamp),
}

/// An open change stream and the position to resume it from.
pub(crate) struct Follower {
    shared: Arc<Shared>,
    stream: ChangeStream<ChangeStreamEvent<Document>>,
    token: Option<ResumeToken>,
    /// Fallback start point when the server gives no token.
    time: Option<Timestamp>,
    saved: Option<ResumeToken>,
    saved_at: Instant,
    /// Failed resumes in a row: reset once the stream moves past the position where it
    /// last failed (an empty first batch of a reopened stream is no proof of health).
    failures: u32,
    failed_at: Option<ResumeToken>,
}

/// Opens the stream. With `resume`, a token saved by an earlier process is tried first;
/// one the server no longer knows is dropped (the caller's snapshot covers the gap).
pub(crate) async fn open(shared: Arc<Shared>, resume: bool) -> Result<Follower, Error> {
    let saved = match (&shared.token_file, resume) {
        (Some(file), true) => file.load(),
        _ => None,
    };
    if let Some(token) = saved {
        match catch_up(&shared, token.clone()).await {
            Ok((stream, time)) => {
                return Ok(Follower::new(shared, stream, time, Some(token)));
            }
            // Any refusal by the server (history lost, unknown or malformed token, the
            // collection dropped meanwhile): a saved token is an optimisation, never a
            // reason not to start.
            Err(e)
                if is_lost(&e)
                    || matches!(
                        e.kind.as_ref(),
                        ErrorKind::Command(_) | ErrorKind::Custom(_)
                    ) =>
            {
                tracing::warn!(source = %shared.shown, error = %e,
                    "the saved resume token no longer works; starting from now with a full reload");
                if let Some(file) = &shared.token_file {
                    file.clear();
                }
            }
            Err(e) => return Err(e),
        }
    }
    let (stream, time) = open_stream(&shared, Start::Now).await?;
    Ok(Follower::new(shared, stream, time, None))
}

/// Opens the stream after `token` and reads it up to the present, logging (not applying)
/// what changed while the worker was stopped. See the module doc.
async fn catch_up(
    shared: &Shared,
    token: ResumeToken,
) -> Result<(ChangeStream<ChangeStreamEvent<Document>>, Option<Timestamp>), Error> {
    let (mut stream, mut time) = open_stream(shared, Start::After(token)).await?;
    let mut replayed = 0u64;
    loop {
        match stream.next_if_any().await? {
            Some(event) => {
                time = event.cluster_time.or(time);
                match translate(event) {
                    Step::Ended(why) => {
                        // Surfaces as "token no longer works": start from now.
                        return Err(Error::custom(format!("while catching up: {why}")));
                    }
                    step => {
                        replayed += 1;
                        tracing::debug!(?step, "changed while the worker was stopped");
                    }
                }
            }
            None if stream.is_alive() => break,
            None => return Err(Error::custom("the server closed the change stream")),
        }
    }
    tracing::info!(source = %shared.shown, replayed,
        "change stream resumed from the saved token; changes made while stopped are covered by the snapshot");
    Ok((stream, time))
}

async fn open_stream(
    shared: &Shared,
    start: Start,
) -> Result<(ChangeStream<ChangeStreamEvent<Document>>, Option<Timestamp>), Error> {
    let db = shared.client.database(&shared.db);
    let mut time = None;
    let watch = shared
        .collection
        .watch()
        .pipeline([match_stage()])
        .full_document(FullDocumentType::UpdateLookup);
    let watch = match start {
        Start::Now => {
            // A start point for servers that return no resume token.
            time = operation_time(&db.run_command(doc! {"ping": 1}).await?);
            watch
        }
        Start::After(token) => watch.resume_after(token),
        Start::At(ts) => {
            time = Some(ts);
            watch.start_at_operation_time(ts)
        }
    };
    Ok((watch.await?, time))
}

impl Follower {
    fn new(
        shared: Arc<Shared>,
        stream: ChangeStream<ChangeStreamEvent<Document>>,
        time: Option<Timestamp>,
        saved: Option<ResumeToken>,
    ) -> Self {
        let token = stream.resume_token();
        let mut me = Self {
            shared,
            stream,
            token,
            time,
            saved,
            saved_at: Instant::now(),
            failures: 0,
            failed_at: None,
        };
        me.save(true);
        me
    }

    /// Follows the stream until the receiving side of `tx` is dropped.
    pub(crate) async fn run(mut self, tx: mpsc::Sender<Change>) {
        loop {
            let next = tokio::select! {
                _ = tx.closed() => break,
                next = self.stream.next_if_any() => next,
            };
            let ok = match next {
                Ok(Some(event)) => {
                    self.token = self.stream.resume_token().or(Some(event.id.clone()));
                    self.time = event.cluster_time.or(self.time);
                    self.moved_on();
                    let ok = match translate(event) {
                        Step::Apply(change) => tx.send(change).await.is_ok(),
                        Step::Ignore => true,
                        Step::Ended(why) => self.restart_fresh(&tx, why).await,
                    };
                    self.save(true);
                    ok
                }
                Ok(None) if self.stream.is_alive() => {
                    if let Some(token) = self.stream.resume_token() {
                        self.token = Some(token);
                    }
                    self.moved_on();
                    self.save(false);
                    true
                }
                Ok(None) => {
                    self.resume(&tx, "the server closed the change stream")
                        .await
                }
                Err(e) if is_lost(&e) => {
                    self.restart_fresh(&tx, format!("cannot resume: {e}")).await
                }
                Err(e) => self.resume(&tx, &e.to_string()).await,
            };
            if !ok {
                break;
            }
        }
        self.save(true);
    }

    /// Reopens after the last position, with backoff; falls back to a fresh start and a
    /// reload when the position is gone or resuming keeps failing. Returns false when the
    /// feed was dropped.
    async fn resume(&mut self, tx: &mpsc::Sender<Change>, error: &str) -> bool {
        self.failures += 1;
        self.failed_at = self.token.clone();
        tracing::warn!(source = %self.shared.shown, error, failures = self.failures, "change stream failed; resuming");
        if !mark_down(tx, error).await {
            return false;
        }
        if self.failures > MAX_RESUMES {
            let why = format!("{MAX_RESUMES} resumes in a row failed; last error: {error}");
            return self.restart_fresh(tx, why).await;
        }
        // The first resume is prompt; each further one in a row waits longer.
        if let Some(pause) = (self.failures >= 2)
            .then(|| retry_policy().build().nth(self.failures as usize - 2))
            .flatten()
        {
            tokio::select! {
                _ = tx.closed() => return false,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        let start = match (&self.token, self.time) {
            (Some(token), _) => Start::After(token.clone()),
            (None, Some(time)) => Start::At(time),
            (None, None) => return self.restart_fresh(tx, "no resume point".to_string()).await,
        };
        let shared = self.shared.clone();
        let attempt = (|| open_stream(&shared, start.clone()))
            .retry(retry_policy().with_max_times(MAX_RESUMES as usize))
            .sleep(tokio::time::sleep)
            .when(|e| !is_lost(e))
            .notify(|e, wait| tracing::warn!(error = %e, retry_in = ?wait, "resuming the change stream failed"));
        let result = tokio::select! {
            _ = tx.closed() => return false,
            r = attempt => r,
        };
        match result {
            Ok((stream, _)) => {
                self.stream = stream;
                if let Some(token) = self.stream.resume_token() {
                    self.token = Some(token);
                }
                tracing::info!(source = %self.shared.shown, "change stream resumed");
                tx.send(Change::Resumed).await.is_ok()
            }
            Err(e) => self.restart_fresh(tx, format!("cannot resume: {e}")).await,
        }
    }

    /// Opens a new stream from now, then asks for a full reload (in that order, so the
    /// reload's snapshot is read after the new start point).
    async fn restart_fresh(&mut self, tx: &mpsc::Sender<Change>, why: String) -> bool {
        tracing::warn!(source = %self.shared.shown, why, "change stream restarting from now; all configs will be reloaded");
        if !mark_down(tx, &why).await {
            return false;
        }
        let shared = self.shared.clone();
        let attempt = (|| open_stream(&shared, Start::Now))
            .retry(retry_policy())
            .sleep(tokio::time::sleep)
            .notify(|e, wait| tracing::warn!(error = %e, retry_in = ?wait, "reopening the change stream failed"));
        let opened = tokio::select! {
            _ = tx.closed() => return false,
            r = attempt => r,
        };
        let Ok((stream, time)) = opened else {
            unreachable!("retried without limit")
        };
        self.stream = stream;
        self.token = self.stream.resume_token();
        self.time = time;
        self.failures = 0;
        match (&self.token, &self.shared.token_file) {
            (None, Some(file)) => file.clear(),
            _ => self.save(true),
        }
        tx.send(Change::Reload).await.is_ok()
            && tx
                .send(Change::Status {
                    active: true,
                    error: None,
                })
                .await
                .is_ok()
    }

    /// Forgets past failures once the position has moved beyond the last one.
    fn moved_on(&mut self) {
        if self.failures > 0 && self.token != self.failed_at {
            self.failures = 0;
        }
    }

    /// Persists the token when it changed: always with `now`, else at most every
    /// [`SAVE_EVERY`].
    fn save(&mut self, now: bool) {
        let Some(file) = &self.shared.token_file else {
            return;
        };
        let Some(token) = &self.token else { return };
        if self.saved.as_ref() == Some(token) || (!now && self.saved_at.elapsed() < SAVE_EVERY) {
            return;
        }
        file.save(token);
        self.saved = Some(token.clone());
        self.saved_at = Instant::now();
    }
}

/// Tells the cache the feed is down (it may miss changes until further notice). False
/// when the feed was dropped.
async fn mark_down(tx: &mpsc::Sender<Change>, why: &str) -> bool {
    let down = Change::Status {
        active: false,
        error: Some(format!("change stream: {why}")),
    };
    tx.send(down).await.is_ok()
}

/// Errors after which the old position is useless: reload instead of resuming.
pub fn is_lost(e: &Error) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => matches!(
            c.code,
            codes::CHANGE_STREAM_HISTORY_LOST
                | codes::CHANGE_STREAM_FATAL
                | codes::INVALID_RESUME_TOKEN
                | codes::CAPPED_POSITION_LOST
                | codes::RESUME_TOKEN_NOT_FOUND_4_0
                | codes::UUID_NOT_FOUND_4_0
        ),
        _ => false,
    }
}

/// What one change event means for the cache.
#[derive(Debug, PartialEq)]
pub enum Step {
    Apply(Change),
    Ignore,
    /// The stream is over (invalidate, drop, rename, dropDatabase): reload and reopen.
    Ended(String),
}

/// Maps a change event to a cache change. A document that is gone by the time of the
/// update lookup (`fullDocument: null`) is a delete, and so is a disabled one.
pub fn translate(event: ChangeStreamEvent<Document>) -> Step {
    let key_id = || event.document_key.clone().and_then(|k| doc_id(&to_json(k)));
    match event.operation_type {
        OperationType::Insert | OperationType::Update | OperationType::Replace => {
            match event.full_document.clone() {
                Some(doc) if doc.get_bool("enabled") == Ok(false) => match key_id() {
                    Some(id) => Step::Apply(Change::Delete(id)),
                    None => Step::Ended("a change event without a document key".into()),
                },
                Some(doc) => Step::Apply(Change::Upsert(to_json(doc))),
                None => match key_id() {
                    Some(id) => Step::Apply(Change::Delete(id)),
                    None => Step::Ended("a change event without a document key".into()),
                },
            }
        }
        OperationType::Delete => match key_id() {
            Some(id) => Step::Apply(Change::Delete(id)),
            None => Step::Ended("a delete event without a document key".into()),
        },
        OperationType::Invalidate => Step::Ended("the change stream was invalidated".into()),
        OperationType::Drop => Step::Ended("the collection was dropped".into()),
        OperationType::Rename => Step::Ended("the collection was renamed".into()),
        OperationType::DropDatabase => Step::Ended("the database was dropped".into()),
        OperationType::Other(kind) => {
            tracing::debug!(kind, "ignoring change event");
            Step::Ignore
        }
        _ => Step::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{self, Bson};
    use serde_json::json;

    fn event(
        op: &str,
        key: Option<Document>,
        full: Option<Document>,
    ) -> ChangeStreamEvent<Document> {
        let mut d = doc! {"_id": {"_data": "01"}, "operationType": op};
        if let Some(k) = key {
            d.insert("documentKey", k);
        }
        if let Some(f) = full {
            d.insert("fullDocument", f);
        } else {
            d.insert("fullDocument", Bson::Null);
        }
        bson::from_document(d).unwrap()
    }

    #[test]
    fn document_changes_become_upserts_and_deletes() {
        let full = doc! {"_id": "a", "enabled": true, "ingestion": {"landing_container": "c"}};
        for op in ["insert", "update", "replace"] {
            assert_eq!(
                translate(event(op, Some(doc! {"_id": "a"}), Some(full.clone()))),
                Step::Apply(Change::Upsert(
                    json!({"_id": "a", "enabled": true, "ingestion": {"landing_container": "c"}})
                ))
            );
        }
        assert_eq!(
            translate(event("delete", Some(doc! {"_id": "a"}), None)),
            Step::Apply(Change::Delete("a".into()))
        );
    }

    #[test]
    fn an_update_of_a_vanished_or_disabled_document_is_a_delete() {
        assert_eq!(
            translate(event("update", Some(doc! {"_id": "a"}), None)),
            Step::Apply(Change::Delete("a".into()))
        );
        assert_eq!(
            translate(event(
                "update",
                Some(doc! {"_id": "a"}),
                Some(doc! {"_id": "a", "enabled": false})
            )),
            Step::Apply(Change::Delete("a".into()))
        );
        let oid = bson::oid::ObjectId::parse_str("65f0c0ffee0000000000abcd").unwrap();
        assert_eq!(
            translate(event("delete", Some(doc! {"_id": oid}), None)),
            Step::Apply(Change::Delete("65f0c0ffee0000000000abcd".into()))
        );
    }

    #[test]
    fn stream_ending_events_ask_for_a_reload() {
        for op in ["invalidate", "drop", "rename", "dropDatabase"] {
            assert!(
                matches!(translate(event(op, None, None)), Step::Ended(_)),
                "{op}"
            );
        }
        assert!(matches!(
            translate(event("delete", None, None)),
            Step::Ended(_)
        ));
    }

    #[test]
    fn the_match_stage_names_every_event_that_matters() {
        let stage = match_stage();
        let ops = stage
            .get_document("$match")
            .unwrap()
            .get_document("operationType")
            .unwrap()
            .get_array("$in")
            .unwrap();
        assert_eq!(ops.len(), 8);
    }
}
