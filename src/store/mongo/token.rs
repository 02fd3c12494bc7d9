//! The resume token kept on disk (`--resume-token-file`), so a restarted worker continues
//! the change stream where the previous process stopped.
//!
//! The file is JSON: the namespace it belongs to and the token as extended JSON. It is
//! written to a temporary file and renamed, so a crash never leaves half a token. A file
//! that cannot be read, belongs to another collection or holds a token the server no
//! longer knows is never fatal: the stream opens from "now" and the cache is fully
//! reloaded, which is what happens at every start anyway.

use std::path::PathBuf;

use mongodb::bson::{self, Bson};
use mongodb::change_stream::event::ResumeToken;
use serde_json::{json, Value};

/// One token file, bound to one `database.collection`.
#[derive(Debug, Clone)]
pub struct TokenFile {
    path: PathBuf,
    namespace: String,
}

impl TokenFile {
    pub fn new(path: PathBuf, namespace: String) -> Self {
        Self { path, namespace }
    }

    /// The saved token, if there is a usable one. Problems are logged, not returned.
    pub fn load(&self) -> Option<ResumeToken> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "resume token file unreadable; starting the change stream from now");
                return None;
            }
        };
        match self.parse(&text) {
            Ok(token) => Some(token),
            Err(problem) => {
                tracing::warn!(path = %self.path.display(), problem, "resume token file not usable; starting the change stream from now");
                None
            }
        }
    }

    fn parse(&self, text: &str) -> Result<ResumeToken, String> {
        let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let ns = value.get("namespace").and_then(Value::as_str);
        if ns != Some(self.namespace.as_str()) {
            return Err(format!(
                "it belongs to {}, not {}",
                ns.unwrap_or("no namespace"),
                self.namespace
            ));
        }
        let token = value.get("token").cloned().ok_or("no token field")?;
        let token = Bson::try_from(token).map_err(|e| e.to_string())?;
        bson::from_bson(token).map_err(|e| e.to_string())
    }

    /// Saves `token` atomically. Failures are logged: losing the file only costs a replay.
    pub fn save(&self, token: &ResumeToken) {
        if let Err(e) = self.try_save(token) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not save the resume token");
        }
    }

    fn try_save(&self, token: &ResumeToken) -> anyhow::Result<()> {
        let token = bson::to_bson(token)?.into_relaxed_extjson();
        let body = json!({"namespace": self.namespace, "token": token});
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&body)?)?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(())
    }

    /// Forgets the token (it no longer works).
    pub fn clear(&self) {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove the resume token file")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    fn token(data: &str) -> ResumeToken {
        bson::from_bson(Bson::Document(doc! {"_data": data})).unwrap()
    }

    #[test]
    fn a_saved_token_loads_back_for_the_same_namespace_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.json");
        let file = TokenFile::new(path.clone(), "db.c".into());
        assert_eq!(file.load(), None, "no file yet");
        file.save(&token("8265AB"));
        assert_eq!(file.load(), Some(token("8265AB")));
        file.save(&token("8265AC"));
        assert_eq!(file.load(), Some(token("8265AC")), "overwritten");
        let other = TokenFile::new(path.clone(), "db.other".into());
        assert_eq!(other.load(), None, "another collection's token is ignored");
        file.clear();
        assert!(!path.exists());
        file.clear(); // idempotent
    }

    #[test]
    fn a_corrupt_file_is_ignored_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.json");
        std::fs::write(&path, "{not json").unwrap();
        assert_eq!(TokenFile::new(path, "db.c".into()).load(), None);
    }
}
