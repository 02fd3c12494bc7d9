//! Publishes event files to the input stream, for trying the worker by hand:
//!
//! ```text
//! cargo run --example publish -- fixtures/events/eventgrid.json
//! cargo run --example publish -- --header eventType=OBJECT_FINALIZE fixtures/events/gcs.json
//! ```
//!
//! Each file goes to `blob.events.<file stem>` on `$NATS_URL` (default
//! nats://127.0.0.1:4222) and waits for the JetStream ack.

use async_nats::HeaderMap;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let mut headers = HeaderMap::new();
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--header" {
            let kv = args
                .next()
                .ok_or_else(|| anyhow::anyhow!("--header needs NAME=VALUE"))?;
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--header needs NAME=VALUE"))?;
            headers.insert(k, v);
        } else {
            files.push(arg);
        }
    }
    anyhow::ensure!(
        !files.is_empty(),
        "usage: publish [--header NAME=VALUE] FILE..."
    );
    let js = async_nats::jetstream::new(async_nats::connect(&url).await?);
    for file in files {
        let body = std::fs::read(&file)?;
        let stem = std::path::Path::new(&file)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("event")
            .replace(['.', ' ', '*', '>'], "-");
        let subject = format!("blob.events.{stem}");
        let ack = js
            .publish_with_headers(subject.clone(), headers.clone(), body.into())
            .await?
            .await?;
        println!(
            "{file} -> {subject} (stream {}, seq {})",
            ack.stream, ack.sequence
        );
    }
    Ok(())
}
