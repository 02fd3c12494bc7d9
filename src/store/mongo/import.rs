//! `configs import` as the MongoDB store does it: compare a validated file with the
//! collection ([`MongoStore::plan_import`]), then write it ([`MongoStore::import`]).
//!
//! Upserts go by `_id`, so importing one file twice changes nothing. `_id`s match by
//! type in MongoDB (`"65f0..."` is not `ObjectId("65f0...")`) while the worker keys
//! configs by their text, so a file whose `_id` differs from the collection's only by
//! type is refused: written, it would make two configs with one key. A prune deletes only
//! the stale ids read for the plan: a config someone adds meanwhile is not touched.

use std::collections::{HashMap, HashSet};

use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use serde_json::Value;

use super::{from_json, MongoStore};
use crate::config::doc_id;
use crate::store::StoreError;

/// What importing a file would do, read from the collection.
#[derive(Debug)]
pub struct ImportPlan {
    docs: Vec<Document>,
    /// `_id`s (as the worker keys them) not in the collection yet.
    pub new: Vec<String>,
    /// `_id`s in both: replaced (or left unchanged when identical).
    pub replacing: Vec<String>,
    /// `_id`s in the collection only: kept, or deleted with `--prune`.
    pub stale: Vec<String>,
    stale_ids: Vec<Bson>,
    /// `_id`s whose type differs between the file and the collection; the import is
    /// refused while any is listed.
    pub collisions: Vec<String>,
}

/// What an import wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ImportReport {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub deleted: u64,
}

impl MongoStore {
    /// Compares already validated documents with the collection.
    pub async fn plan_import(&self, docs: &[Value]) -> Result<ImportPlan, StoreError> {
        let mut bson_docs = Vec::with_capacity(docs.len());
        for d in docs {
            let id = doc_id(d).unwrap_or_default();
            bson_docs.push(from_json(d).map_err(|e| {
                StoreError::invalid_because(format!("config `{id}` is not a BSON document: {e}"))
            })?);
        }
        let file_ids: Vec<Bson> = bson_docs
            .iter()
            .map(|d| d.get("_id").cloned().unwrap_or(Bson::Null))
            .collect();
        let existing = self.existing_ids().await?;

        let existing_keys: HashMap<String, &Bson> =
            existing.iter().map(|b| (typed(b), b)).collect();
        let existing_text: HashMap<String, &Bson> = existing.iter().map(|b| (text(b), b)).collect();
        let mut collisions = Vec::new();
        for id in &file_ids {
            if !existing_keys.contains_key(&typed(id)) {
                if let Some(other) = existing_text.get(&text(id)) {
                    collisions.push(format!(
                        "`{}` is {} in the file but {} in the collection",
                        text(id),
                        kind(id),
                        kind(other)
                    ));
                }
            }
        }
        let file_keys: HashSet<String> = file_ids.iter().map(typed).collect();
        let (replacing, new): (Vec<&Bson>, Vec<&Bson>) = file_ids
            .iter()
            .partition(|id| existing_keys.contains_key(&typed(id)));
        let stale_ids: Vec<Bson> = existing
            .iter()
            .filter(|b| !file_keys.contains(&typed(b)))
            .cloned()
            .collect();
        Ok(ImportPlan {
            docs: bson_docs,
            new: new.into_iter().map(text).collect(),
            replacing: replacing.into_iter().map(text).collect(),
            stale: stale_ids.iter().map(text).collect(),
            stale_ids,
            collisions,
        })
    }

    /// Writes a plan: upserts every document by `_id`, deletes the stale ones when
    /// `prune`, and creates the index the forced read uses (a failure there is only
    /// logged: the configs are in).
    pub async fn import(&self, plan: ImportPlan, prune: bool) -> Result<ImportReport, StoreError> {
        let coll = self.collection();
        let mut report = ImportReport::default();
        let total = plan.docs.len();
        for (i, d) in plan.docs.into_iter().enumerate() {
            let id = d.get("_id").cloned().unwrap_or(Bson::Null);
            let r = coll
                .replace_one(doc! {"_id": id.clone()}, d)
                .upsert(true)
                .await
                .map_err(|e| {
                    self.driver_error(
                        &format!(
                            "writing `{}` failed after {i} of {total} configs were written \
                             (importing the file again is safe)",
                            text(&id)
                        ),
                        e,
                    )
                })?;
            if r.upserted_id.is_some() {
                report.inserted += 1;
            } else if r.modified_count > 0 {
                report.updated += 1;
            } else {
                report.unchanged += 1;
            }
        }
        if prune && !plan.stale_ids.is_empty() {
            let r = coll
                .delete_many(doc! {"_id": {"$in": plan.stale_ids}})
                .await
                .map_err(|e| self.driver_error("prune", e))?;
            report.deleted = r.deleted_count;
        }
        if let Err(e) = self.ensure_container_index().await {
            tracing::warn!(error = %crate::telemetry::Chain(&e), "could not create the index on {}", super::CONTAINER_FIELD);
        }
        Ok(report)
    }

    /// Every `_id` in the collection, with its BSON type.
    async fn existing_ids(&self) -> Result<Vec<Bson>, StoreError> {
        let read = async {
            let docs: Vec<Document> = self
                .collection()
                .find(doc! {})
                .projection(doc! {"_id": 1})
                .await?
                .try_collect()
                .await?;
            Ok::<_, mongodb::error::Error>(docs)
        };
        let docs = read
            .await
            .map_err(|e| self.driver_error("reading ids", e))?;
        Ok(docs
            .into_iter()
            .filter_map(|mut d| d.remove("_id"))
            .collect())
    }
}

/// An `_id` as MongoDB compares it: value and type.
fn typed(id: &Bson) -> String {
    id.clone().into_canonical_extjson().to_string()
}

/// An `_id` as the worker keys it (an ObjectId by its hex).
fn text(id: &Bson) -> String {
    doc_id(&serde_json::json!({"_id": id.clone().into_relaxed_extjson()}))
        .unwrap_or_else(|| typed(id))
}

fn kind(id: &Bson) -> &'static str {
    match id {
        Bson::String(_) => "a string",
        Bson::ObjectId(_) => "an ObjectId",
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) => "a number",
        _ => "another type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::oid::ObjectId;

    #[test]
    fn ids_compare_by_type_but_key_by_text() {
        let oid = ObjectId::parse_str("6740a1b2c3d4e5f601234567").unwrap();
        let as_oid = Bson::ObjectId(oid);
        let as_text = Bson::String("6740a1b2c3d4e5f601234567".into());
        assert_ne!(typed(&as_oid), typed(&as_text));
        assert_eq!(text(&as_oid), text(&as_text));
        assert_eq!(kind(&as_oid), "an ObjectId");
        assert_eq!(kind(&as_text), "a string");
    }
}
