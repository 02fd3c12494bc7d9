//! The three JetStream streams the worker uses: input, routed output, dead letters.
//! With `--create-streams` (the default) missing ones are created; otherwise their
//! absence is an error that `check` and startup report by name.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

/// One stream's name and subjects.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    pub name: String,
    pub subjects: Vec<String>,
}

/// Names and subjects of everything the worker reads and writes.
#[derive(Debug, Clone)]
pub struct Topology {
    pub input: StreamSpec,
    pub routed: StreamSpec,
    pub dlq: StreamSpec,
    pub consumer: String,
    /// Dead letters go to `<dlq_prefix>.<reason>`.
    pub dlq_prefix: String,
    /// Publish de-duplication window of created streams; redeliveries within it never
    /// produce a second copy downstream.
    pub duplicate_window: Duration,
}

impl Topology {
    pub fn streams(&self) -> [&StreamSpec; 3] {
        [&self.input, &self.routed, &self.dlq]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("stream {0} does not exist (start with --create-streams to create it)")]
    Missing(String),
    #[error("stream {name}")]
    Api {
        name: String,
        #[source]
        source: anyhow::Error,
    },
}

/// Makes sure every stream exists; returns the names of those it created.
pub async fn ensure(
    js: &jetstream::Context,
    topology: &Topology,
    create: bool,
) -> Result<Vec<String>, StreamError> {
    let mut created = Vec::new();
    for spec in topology.streams() {
        match js.get_stream(&spec.name).await {
            Ok(_) => continue,
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(StreamError::Api {
                    name: spec.name.clone(),
                    source: e.into(),
                })
            }
        }
        if !create {
            return Err(StreamError::Missing(spec.name.clone()));
        }
        js.create_stream(stream::Config {
            name: spec.name.clone(),
            subjects: spec.subjects.clone(),
            storage: stream::StorageType::File,
            duplicate_window: topology.duplicate_window,
            ..Default::default()
        })
        .await
        .map_err(|e| StreamError::Api {
            name: spec.name.clone(),
            source: e.into(),
        })?;
        tracing::info!(stream = %spec.name, subjects = ?spec.subjects, "created stream");
        created.push(spec.name.clone());
    }
    Ok(created)
}

fn is_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(
        e.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(err)
            if err.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}
