//! `blob-router configs import|export|validate|list`: moving source configs between a
//! file and MongoDB, and looking at them, with the same validation the worker applies.
//!
//! `import` validates the whole file first and writes nothing when any document is
//! refused, so a typo never reaches the collection half-applied. It upserts by `_id`
//! (idempotent: importing the same file twice changes nothing), optionally deletes what
//! the file no longer holds (`--prune`, for GitOps), and creates the index the forced
//! read uses.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;

use crate::cli::{
    ConfigsAction, ConfigsArgs, ExportArgs, Format, ImportArgs, ListArgs, SourceArgs, ValidateArgs,
};
use crate::config::{doc_id, ConfigError, SourceConfig};
use crate::store::file::FileStore;
use crate::store::{self, landing_container, ConfigStore, Store};
use crate::telemetry::Chain;

/// Exit code when documents were refused (1 is any other failure, 2 a usage error).
pub const EXIT_INVALID: u8 = 5;

/// `blob-router configs ...`: exit 0, [`EXIT_INVALID`] when documents were refused, 1 on
/// any other failure (printed with its cause chain).
pub async fn main(args: ConfigsArgs) -> ExitCode {
    let result = match args.action {
        ConfigsAction::Import(a) => import(a).await,
        ConfigsAction::Export(a) => export(a).await,
        ConfigsAction::Validate(a) => validate(a).await,
        ConfigsAction::List(a) => list(a).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", Chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// Every document of the selected store, disabled ones included, and its description.
async fn load(source: &SourceArgs) -> anyhow::Result<(String, Vec<Value>)> {
    let store = store::open(&source.selection()).await?;
    let docs = store.all().await?;
    Ok((store.describe(), docs))
}

async fn load_file(path: &Path) -> anyhow::Result<Vec<Value>> {
    Ok(FileStore::new(path).snapshot().await?)
}

/// The refusals among `docs`.
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
    let Store::Mongo(mongo) = store::open(&args.source.selection()).await? else {
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
    let plan = mongo.plan_import(&docs).await?;
    if !plan.collisions.is_empty() {
        eprintln!(
            "{}: _id types differ from the collection's:",
            args.file.display()
        );
        for c in &plan.collisions {
            eprintln!("  {c}");
        }
        eprintln!("nothing was imported (write the _id as the collection has it, e.g. {{\"$oid\": \"...\"}})");
        return Ok(ExitCode::from(EXIT_INVALID));
    }

    if args.dry_run {
        println!("dry run, nothing written: {} valid configs", docs.len());
        println!("  new: {}", list_or_none(&plan.new));
        println!("  replacing: {}", list_or_none(&plan.replacing));
        let stale = list_or_none(&plan.stale);
        if args.prune {
            println!("  deleting: {stale}");
        } else {
            println!("  in the collection only (kept; --prune deletes them): {stale}");
        }
        return Ok(ExitCode::SUCCESS);
    }

    let stale = plan.stale.clone();
    let total = docs.len();
    let r = mongo.import(plan, args.prune).await?;
    println!(
        "imported {total} configs into {}: {} inserted, {} updated, {} unchanged{}",
        mongo.describe(),
        r.inserted,
        r.updated,
        r.unchanged,
        if args.prune {
            format!(", {} deleted", r.deleted)
        } else {
            String::new()
        }
    );
    if !args.prune && !stale.is_empty() {
        println!(
            "note: {} configs in the collection are not in the file (--prune deletes them): {}",
            stale.len(),
            list_or_none(&stale)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn list_or_none(ids: &[String]) -> String {
    if ids.is_empty() {
        "none".into()
    } else {
        ids.join(", ")
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
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
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
