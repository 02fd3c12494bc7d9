//! The file store: parsing, diffs, and the watcher's idle and symlink-swap behaviour.

use super::*;
use serde_json::json;

#[test]
fn yaml_and_json_lists_parse_to_the_same_documents() {
    let yaml = "- _id: a\n  ingestion: {mode: blob_trigger, landing_container: c}\n";
    let json = r#"[{"_id":"a","ingestion":{"mode":"blob_trigger","landing_container":"c"}}]"#;
    assert_eq!(
        parse_docs(yaml, Kind::Yaml).unwrap(),
        parse_docs(json, Kind::Json).unwrap()
    );
}

#[test]
fn duplicate_ids_and_non_lists_are_refused_with_a_reason() {
    let err = parse_docs("- {_id: a}\n- {_id: a}\n", Kind::Yaml).unwrap_err();
    assert!(err.to_string().contains("duplicate _id `a`"), "{err}");
    let err = parse_docs("{_id: a}", Kind::Yaml).unwrap_err();
    assert!(err.to_string().contains("expected a list"), "{err}");
    assert!(parse_docs("[", Kind::Json).is_err());
}

#[test]
fn documents_without_id_are_kept_for_the_cache_to_refuse() {
    let docs = parse_docs("- {enabled: true}\n", Kind::Yaml).unwrap();
    assert_eq!(docs.keys().collect::<Vec<_>>(), vec!["#1"]);
}

#[test]
fn refresh_yields_upserts_for_new_and_changed_and_deletes_for_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.json");
    let state = Mutex::new(State::default());
    std::fs::write(&path, r#"[{"_id":"a","v":1},{"_id":"b"}]"#).unwrap();
    prime(&path, &state).unwrap();
    std::fs::write(&path, r#"[{"_id":"a","v":2},{"_id":"c"},{"_id":"b"}]"#).unwrap();
    assert_eq!(
        refresh(&path, &state).unwrap(),
        Some(vec![
            Change::Upsert(json!({"_id":"a","v":2})),
            Change::Upsert(json!({"_id":"c"})),
        ]),
        "`b` is unchanged"
    );
    std::fs::write(&path, r#"[{"_id":"c"},{"_id":"b"}]"#).unwrap();
    assert_eq!(
        refresh(&path, &state).unwrap(),
        Some(vec![Change::Delete("a".into())])
    );
}

#[test]
fn a_json_entry_with_its_id_given_twice_is_keyed_as_its_value_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.json");
    let state = Mutex::new(State::default());
    std::fs::write(&path, r#"[{"_id": "a", "_id": "x"}, {"_id": "b"}]"#).unwrap();
    prime(&path, &state).unwrap();
    let snapshot = parse_docs(&std::fs::read_to_string(&path).unwrap(), Kind::Json).unwrap();
    let base = state.lock().unwrap().base.clone().unwrap();
    assert_eq!(
        base.keys().collect::<Vec<_>>(),
        snapshot.keys().collect::<Vec<_>>()
    );
    std::fs::write(&path, r#"[{"_id": "b"}]"#).unwrap();
    assert_eq!(
        refresh(&path, &state).unwrap(),
        Some(vec![Change::Delete("x".into())]),
        "the last `_id` wins, as in the snapshot"
    );
}

#[tokio::test]
async fn snapshot_each_hands_over_what_snapshot_returns_and_refuses_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        (
            "c.json",
            r#"[{"_id": "a"}, {"_id": "b"}, {"enabled": true}]"#,
        ),
        ("c.yaml", "- {_id: a}\n- {_id: b}\n- {enabled: true}\n"),
        ("empty.yaml", ""),
        ("null.json", "null"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let store = FileStore::new(&path);
        let mut each = Vec::new();
        store
            .snapshot_each(&mut |doc| {
                let value = doc.value().unwrap().into_owned();
                // Handed over as text or as a value, a document carries the `_id` and
                // fingerprint its value has.
                assert_eq!(doc.id(), crate::config::doc_id(&value).as_deref());
                assert_eq!(doc.fingerprint(), crate::config::stored_fingerprint(&value));
                each.push(value)
            })
            .await
            .unwrap();
        let mut all = store.snapshot().await.unwrap();
        let key = |v: &serde_json::Value| v.to_string();
        each.sort_by_key(key);
        all.sort_by_key(key);
        assert_eq!(each, all, "{name}");
    }
    for (name, text, why) in [
        (
            "dup.json",
            r#"[{"_id": "a"}, {"_id": "a"}]"#,
            "duplicate _id `a` (entry 2)",
        ),
        (
            "map.yaml",
            "{_id: a}",
            "expected a list of config documents, found a mapping",
        ),
        ("text.json", r#""x""#, "found a string"),
        ("trailing.json", "[] x", "not valid JSON"),
        ("broken.yaml", "- {_id: [", "not valid YAML"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let err = FileStore::new(&path)
            .snapshot_each(&mut |_| {})
            .await
            .unwrap_err();
        let shown = crate::telemetry::Chain(&err).to_string();
        assert!(shown.contains(why), "{name}: {shown}");
    }
}

#[tokio::test]
async fn a_forced_read_of_a_broken_file_answers_from_the_last_good_content() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        "- {_id: a, ingestion: {landing_container: c1}}\n- {_id: b, ingestion: {landing_container: c2}}\n",
    )
    .unwrap();
    let store = FileStore::new(&path);
    let _feed = store.watch().await.unwrap();
    std::fs::write(&path, "- {_id: [broken\n").unwrap();
    let docs = store.read_container("c2").await.unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["_id"], "b");
    // Without a good read before, the error stands.
    let fresh = FileStore::new(&path);
    assert!(fresh.read_container("c2").await.is_err());
}

#[test]
fn refresh_parses_only_changed_bytes_and_diffs_from_the_last_good_content() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    let state = Mutex::new(State::default());
    std::fs::write(&path, "- {_id: a}\n").unwrap();
    assert_eq!(
        refresh(&path, &state).unwrap(),
        Some(vec![Change::Upsert(json!({"_id": "a"}))])
    );
    assert_eq!(
        refresh(&path, &state).unwrap(),
        None,
        "same bytes: nothing to do"
    );
    std::fs::write(&path, "- {_id: [broken\n").unwrap();
    assert!(refresh(&path, &state).is_err());
    assert_eq!(
        refresh(&path, &state).unwrap(),
        None,
        "a broken file is reported once"
    );
    std::fs::write(&path, "- {_id: b}\n").unwrap();
    assert_eq!(
        refresh(&path, &state).unwrap(),
        Some(vec![
            Change::Upsert(json!({"_id": "b"})),
            Change::Delete("a".into())
        ]),
        "diffed against the last good content, not the broken one"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn an_idle_file_is_quiet_and_a_configmap_style_symlink_swap_is_seen() {
    use std::os::unix::fs::symlink;
    // The layout Kubernetes gives a mounted ConfigMap: the file is a symlink through
    // `..data`, and an update re-points `..data` atomically.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("v1")).unwrap();
    std::fs::write(d.join("v1/c.yaml"), "- {_id: a}\n").unwrap();
    symlink("v1", d.join("..data")).unwrap();
    symlink("..data/c.yaml", d.join("c.yaml")).unwrap();

    let source = FileStore::new(d.join("c.yaml"));
    let mut feed = source.watch().await.unwrap();
    source.snapshot().await.unwrap();
    // Reading the file (as snapshots and forced reads do) must not look like an edit.
    source.read_container("c").await.unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(600), feed.recv()).await;
    assert!(quiet.is_err(), "unexpected change: {quiet:?}");

    std::fs::create_dir(d.join("v2")).unwrap();
    std::fs::write(d.join("v2/c.yaml"), "- {_id: b}\n").unwrap();
    symlink("v2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    let mut changes = Vec::new();
    while changes.len() < 2 {
        let c = tokio::time::timeout(Duration::from_secs(5), feed.recv())
            .await
            .unwrap()
            .unwrap();
        changes.push(c);
    }
    assert_eq!(
        changes,
        vec![
            Change::Upsert(json!({"_id": "b"})),
            Change::Delete("a".into())
        ]
    );
}

#[test]
fn embedded_default_parses() {
    let docs = parse_docs(EMBEDDED_CONFIGS, Kind::Yaml).unwrap();
    assert!(!docs.is_empty());
}
