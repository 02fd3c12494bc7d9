//! `blob-router configs import|export|validate|list`: moving source configs between a
//! file and MongoDB, and looking at them, with the same validation the worker applies.
//!
//! `import` validates the whole file first and writes nothing when any document is
//! refused, so a typo never reaches the collection half-applied. It upserts by `_id`
//! (idempotent: importing the same file twice changes nothing), optionally deletes what
//! the file no longer holds (`--prune`, for GitOps), and creates the index the forced
//! read uses.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson};
use serde_json::Value;

use crate::cli::SourceArgs;
use crate::config::{doc_id, ConfigError, SourceConfig};
use crate::source::file::FileSource;
use crate::source::mongo::{from_json, MongoSource, CONTAINER_FIELD};
use crate::source::{landing_container, ConfigSource};

#[derive(Debug, Args)]
pub struct ConfigsArgs {
    #[command(subcommand)]
    pub action: ConfigsAction,
}

#[derive(Debug, Subcommand)]
pub enum ConfigsAction {
    /// Validate a JSON/YAML file and upsert its configs into MongoDB by `_id`. Nothing is
    /// written when any document is refused.
    Import(ImportArgs),
    /// Write the configs (all of them, disabled too) to a file or stdout.
    Export(ExportArgs),
    /// Validate configs: the given file, else the source the flags select.
    Validate(ValidateArgs),
    /// One line per config: id, state, container, pattern, subject.
    List(ListArgs),
}

/// Validation needs the routed prefix (it completes the default subject).
#[derive(Debug, Clone, Args)]
pub struct PrefixArg {
    /// Prefix of the default routed subject `<prefix>.<source_id>`.
    #[arg(long, env = "BLOB_ROUTER_ROUTED_PREFIX", default_value = "blob.routed")]
    pub routed_prefix: String,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The file to import (a list of config documents, JSON or YAML).
    pub file: PathBuf,
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub prefix: PrefixArg,
    /// Also delete configs that are in the collection but not in the file.
    #[arg(long)]
    pub prune: bool,
    /// Validate and show what would change, write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Write to this file instead of stdout.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Output format [default: json for a `.json` file, else yaml].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// A file to validate; without it, the configs of the selected source.
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub prefix: PrefixArg,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub prefix: PrefixArg,
}

/// Exit code when documents were refused (1 is any other failure, 2 a usage error).
pub const EXIT_INVALID: u8 = 5;

pub async fn run(args: ConfigsArgs) -> ExitCode {
    let result = match args.action {
        ConfigsAction::Import(a) => import(a).await,
        ConfigsAction::Export(a) => export(a).await,
        ConfigsAction::Validate(a) => validate(a).await,
        ConfigsAction::List(a) => list(a).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Every document of the selected source, disabled ones included, and its description.
async fn load(source: &SourceArgs) -> anyhow::Result<(String, Vec<Value>)> {
    if let Some(settings) = source.mongo() {
        let mongo = MongoSource::connect(&settings).await?;
        let docs = mongo.all().await?;
        return Ok((mongo.describe(), docs));
    }
    let file = match &source.configs {
        Some(path) => FileSource::new(path),
        None => FileSource::embedded(),
    };
    Ok((file.describe(), file.snapshot().await?))
}

async fn load_file(path: &Path) -> anyhow::Result<Vec<Value>> {
    let file = FileSource::new(path);
    Ok(file.snapshot().await?)
}

/// The refusals among `docs`, each printed.
fn refusals(docs: &[Value], prefix: &str) -> Vec<ConfigError> {
    docs.iter()
        .filter_map(|d| SourceConfig::from_value(d, prefix).err())
        .collect()
}

fn print_refusals(what: &str, total: usize, refused: &[ConfigError]) {
    eprintln!("{what}: {} of {total} configs refused:", refused.len());
    for e in refused {
        eprintln!("  {e}");
    }
}

async fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let Some(settings) = args.source.mongo() else {
        anyhow::bail!("import writes to MongoDB: give --mongodb-uri (or BLOB_ROUTER_MONGODB_URI)");
    };
    let docs = load_file(&args.file).await?;
    let refused = refusals(&docs, &args.prefix.routed_prefix);
    if !refused.is_empty() {
        print_refusals(&args.file.display().to_string(), docs.len(), &refused);
        eprintln!("nothing was imported");
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    if args.prune && docs.is_empty() {
        anyhow::bail!(
            "{} holds no configs: refusing to --prune, which would delete every config",
            args.file.display()
        );
    }
    let mut bson_docs = Vec::with_capacity(docs.len());
    for d in &docs {
        let id = doc_id(d).unwrap_or_default();
        bson_docs.push(from_json(d).map_err(|e| anyhow::anyhow!("config `{id}`: {e}"))?);
    }
    let file_ids: Vec<Bson> = bson_docs
        .iter()
        .map(|d| d.get("_id").cloned().unwrap_or(Bson::Null))
        .collect();

    let mongo = MongoSource::connect(&settings).await?;
    let coll = mongo.collection();
    let existing = existing_ids(coll)
        .await
        .map_err(|e| anyhow::anyhow!("{}: reading ids: {e}", mongo.describe()))?;

    // `_id`s match by type in MongoDB ("65f0..." is not ObjectId("65f0...")), but the
    // worker keys configs by their text: two documents with one text would collide.
    let existing_keys: HashMap<String, &Bson> = existing.iter().map(|b| (typed(b), b)).collect();
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
    if !collisions.is_empty() {
        eprintln!(
            "{}: _id types differ from the collection's:",
            args.file.display()
        );
        for c in &collisions {
            eprintln!("  {c}");
        }
        eprintln!("nothing was imported (write the _id as the collection has it, e.g. {{\"$oid\": \"...\"}})");
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    let file_keys: HashSet<String> = file_ids.iter().map(typed).collect();
    let new: Vec<String> = file_ids
        .iter()
        .filter(|id| !existing_keys.contains_key(&typed(id)))
        .map(text)
        .collect();
    let stale: Vec<Bson> = existing
        .iter()
        .filter(|b| !file_keys.contains(&typed(b)))
        .cloned()
        .collect();

    if args.dry_run {
        println!("dry run, nothing written: {} valid configs", docs.len());
        println!("  new: {}", list_or_none(new.iter().cloned()));
        println!(
            "  replacing: {}",
            list_or_none(
                file_ids
                    .iter()
                    .filter(|id| existing_keys.contains_key(&typed(id)))
                    .map(text)
            )
        );
        let stale_text = list_or_none(stale.iter().map(text));
        if args.prune {
            println!("  deleting: {stale_text}");
        } else {
            println!("  in the collection only (kept; --prune deletes them): {stale_text}");
        }
        return Ok(ExitCode::SUCCESS);
    }

    let (mut inserted, mut updated, mut unchanged) = (0, 0, 0);
    let total = bson_docs.len();
    for (i, d) in bson_docs.into_iter().enumerate() {
        let id = d.get("_id").cloned().unwrap_or(Bson::Null);
        let r = coll
            .replace_one(doc! {"_id": id.clone()}, d)
            .upsert(true)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "{}: writing `{}` failed after {i} of {total} configs were written \
                     (importing the file again is safe): {e}",
                    mongo.describe(),
                    text(&id)
                )
            })?;
        if r.upserted_id.is_some() {
            inserted += 1;
        } else if r.modified_count > 0 {
            updated += 1;
        } else {
            unchanged += 1;
        }
    }
    let mut deleted = 0;
    if args.prune && !stale.is_empty() {
        // Only what was read above: a config someone adds meanwhile is not touched.
        let r = coll
            .delete_many(doc! {"_id": {"$in": stale.clone()}})
            .await
            .map_err(|e| anyhow::anyhow!("{}: prune: {e}", mongo.describe()))?;
        deleted = r.deleted_count;
    }
    if let Err(e) = mongo.ensure_container_index().await {
        eprintln!("warning: could not create the index on {CONTAINER_FIELD}: {e}");
    }
    println!(
        "imported {total} configs into {}: {inserted} inserted, {updated} updated, {unchanged} unchanged{}",
        mongo.describe(),
        if args.prune { format!(", {deleted} deleted") } else { String::new() }
    );
    if !args.prune && !stale.is_empty() {
        println!(
            "note: {} configs in the collection are not in the file (--prune deletes them): {}",
            stale.len(),
            list_or_none(stale.iter().map(text))
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Every `_id` in the collection, with its BSON type.
async fn existing_ids(
    coll: &mongodb::Collection<mongodb::bson::Document>,
) -> mongodb::error::Result<Vec<Bson>> {
    let docs: Vec<mongodb::bson::Document> = coll
        .find(doc! {})
        .projection(doc! {"_id": 1})
        .await?
        .try_collect()
        .await?;
    Ok(docs
        .into_iter()
        .filter_map(|mut d| d.remove("_id"))
        .collect())
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

fn list_or_none(ids: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = ids.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

async fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let (shown, docs) = load(&args.source).await?;
    let format = args.format.unwrap_or_else(|| match &args.out {
        Some(p) if p.extension().is_some_and(|e| e == "json") => Format::Json,
        _ => Format::Yaml,
    });
    let text = match format {
        Format::Json => serde_json::to_string_pretty(&docs)? + "\n",
        Format::Yaml => serde_yaml_ng::to_string(&docs)?,
    };
    match &args.out {
        Some(path) => {
            std::fs::write(path, text)
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
            eprintln!(
                "exported {} configs from {shown} to {}",
                docs.len(),
                path.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

async fn validate(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let (shown, docs) = match &args.file {
        Some(path) => (path.display().to_string(), load_file(path).await?),
        None => load(&args.source).await?,
    };
    let refused = refusals(&docs, &args.prefix.routed_prefix);
    if refused.is_empty() {
        println!("{shown}: all {} configs valid", docs.len());
        Ok(ExitCode::SUCCESS)
    } else {
        print_refusals(&shown, docs.len(), &refused);
        Ok(ExitCode::from(EXIT_INVALID))
    }
}

async fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let (shown, docs) = load(&args.source).await?;
    let rows: Vec<[String; 6]> = docs
        .iter()
        .map(|d| {
            let id = doc_id(d).unwrap_or_else(|| "(no _id)".into());
            let container = landing_container(d).unwrap_or("-").to_string();
            match SourceConfig::from_value(d, &args.prefix.routed_prefix) {
                Ok(c) => [
                    id,
                    if c.enabled { "enabled" } else { "disabled" }.into(),
                    c.priority.to_string(),
                    container,
                    c.pattern
                        .as_ref()
                        .map_or("(every path)".into(), |p| p.to_string()),
                    c.subject.clone(),
                ],
                Err(e) => [
                    id,
                    "REFUSED".into(),
                    "-".into(),
                    container,
                    e.problems.join("; "),
                    "-".into(),
                ],
            }
        })
        .collect();
    let header = ["ID", "STATE", "PRIORITY", "CONTAINER", "PATTERN", "SUBJECT"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    eprintln!("{} configs in {shown}", rows.len());
    Ok(ExitCode::SUCCESS)
}
