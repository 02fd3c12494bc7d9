//! Unit tests of config validation, compilation and extended-JSON normalization.

use super::*;
use serde_json::json;

const PREFIX: &str = "blob.routed";

fn example() -> Value {
    json!({
        "_id": "qc-analyzer-results",
        "enabled": true,
        "priority": 0,
        "ingestion": {
            "mode": "blob_trigger",
            "landing_container": "qc-analyzer-landing",
            "account": null,
            "path_pattern": {
                "pattern": "results/{plantation_id}/{crop}/{batch_id}.json",
                "extract_fields": ["plantation_id", "crop", "batch_id"]
            },
            "file_format": "json"
        },
        "route": { "subject": "ingest.qc-analyzer" },
        "version": 3,
        "updated_at": "2026-11-20T10:00:00Z"
    })
}

fn minimal(id: &str) -> Value {
    json!({
        "_id": id,
        "ingestion": { "mode": "blob_trigger", "landing_container": "landing" }
    })
}

fn build(value: Value) -> SourceConfig {
    SourceConfig::from_value(&value, PREFIX).unwrap_or_else(|e| panic!("{e}"))
}

fn refuse(value: Value) -> ConfigError {
    match SourceConfig::from_value(&value, PREFIX) {
        Ok(c) => panic!("unexpectedly accepted: {c:?}"),
        Err(e) => e,
    }
}

/// Asserts exactly one problem, containing every one of `needles`.
fn assert_one_problem(value: Value, needles: &[&str]) {
    let err = refuse(value);
    assert_eq!(err.problems.len(), 1, "{:?}", err.problems);
    for needle in needles {
        assert!(
            err.problems[0].contains(needle),
            "{:?} lacks {needle:?}",
            err.problems[0]
        );
    }
}

#[test]
fn example_compiles_and_matches() {
    let cfg = build(example());
    assert_eq!(cfg.id, "qc-analyzer-results");
    assert_eq!(cfg.version, 3);
    assert!(cfg.enabled);
    assert!(cfg.blob_trigger);
    assert_eq!(&*cfg.container, "qc-analyzer-landing");
    assert_eq!(cfg.account, None);
    assert_eq!(cfg.subject, "ingest.qc-analyzer");
    assert_eq!(
        cfg.pattern.as_deref().map(PathPattern::as_str),
        Some("results/{plantation_id}/{crop}/{batch_id}.json")
    );
    let doc = parse_doc(&example()).unwrap();
    assert_eq!(doc.updated_at.as_deref(), Some("2026-11-20T10:00:00Z"));
    assert_eq!(doc.ingestion.file_format.as_deref(), Some("json"));
    assert_eq!(cfg.fingerprint, doc.fingerprint());
    assert_eq!(
        cfg.match_path("results/plantation-7/tea/batch-0042.json"),
        Some(vec![
            ("plantation_id", "plantation-7"),
            ("crop", "tea"),
            ("batch_id", "batch-0042"),
        ])
    );
}

#[test]
fn example_rejects_non_matching_paths() {
    let cfg = build(example());
    for path in [
        "results/plantation-7/tea/extra/batch-0042.json",
        "results/plantation-7/batch-0042.json",
        "results/plantation-7/tea/batch-0042.csv",
        "results/plantation-7/tea/batch-0042.json.tmp",
        "other/plantation-7/tea/batch-0042.json",
        "",
    ] {
        assert_eq!(cfg.match_path(path), None, "{path}");
    }
}

#[test]
fn extract_fields_order_and_subset() {
    let mut v = example();
    v["ingestion"]["path_pattern"]["extract_fields"] = json!(["batch_id", "plantation_id"]);
    let cfg = build(v);
    assert_eq!(cfg.extract_fields[..], ["batch_id", "plantation_id"]);
    assert_eq!(
        cfg.match_path("results/p7/tea/b42.json"),
        Some(vec![("batch_id", "b42"), ("plantation_id", "p7")])
    );
}

#[test]
fn defaults_are_resolved() {
    let mut v = example();
    v.as_object_mut().unwrap().remove("route");
    v["ingestion"]["path_pattern"]
        .as_object_mut()
        .unwrap()
        .remove("extract_fields");
    let cfg = build(v);
    assert_eq!(cfg.subject, "blob.routed.qc-analyzer-results");
    assert_eq!(
        cfg.extract_fields[..],
        ["plantation_id", "crop", "batch_id"]
    );

    let cfg = build(minimal("m"));
    assert!(cfg.enabled);
    assert_eq!(cfg.priority, 0);
    assert_eq!(cfg.version, 0);
    assert_eq!(cfg.account, None);
    assert!(cfg.pattern.is_none());
    assert!(cfg.extract_fields.is_empty());
    assert_eq!(cfg.subject, "blob.routed.m");
    let doc = parse_doc(&minimal("m")).unwrap();
    assert_eq!(doc.route, None);
    assert_eq!(doc.updated_at, None);
    // No pattern: every path matches, with no fields.
    assert_eq!(cfg.match_path("any/path/at/all.bin"), Some(vec![]));

    let mut v = minimal("m");
    v["route"] = json!({});
    assert_eq!(build(v).subject, "blob.routed.m");
    let mut v = minimal("m");
    v["route"] = json!({ "subject": null });
    v["ingestion"]["path_pattern"] = json!({ "pattern": "{a}.csv", "extract_fields": null });
    let cfg = build(v);
    assert_eq!(cfg.subject, "blob.routed.m");
    assert_eq!(cfg.extract_fields[..], ["a"]);
}

#[test]
fn other_modes_are_valid_but_not_blob_trigger() {
    let mut v = minimal("pull");
    v["ingestion"]["mode"] = json!("scheduled_pull");
    let cfg = build(v);
    assert!(!cfg.blob_trigger);
    assert!(build(minimal("push")).blob_trigger);
}

#[test]
fn unknown_fields_are_ignored() {
    let mut v = example();
    v["owner"] = json!("team-qc");
    v["ingestion"]["retention_days"] = json!(30);
    v["route"]["headers"] = json!({"x": "y"});
    assert_eq!(build(v).id, "qc-analyzer-results");
}

#[test]
fn disabled_config_compiles() {
    let mut v = minimal("off");
    v["enabled"] = json!(false);
    assert!(!build(v).enabled);
}

#[test]
fn bad_ids() {
    let mut v = minimal("x");
    v["_id"] = json!("");
    let err = refuse(v);
    assert_eq!(err.id, None);
    assert_eq!(err.problems, ["`_id` is empty"]);
    assert!(err.to_string().starts_with("config <no _id> refused: "));

    for (id, shown) in [
        ("a b", "' '"),
        ("a.b", "'.'"),
        ("a*", "'*'"),
        ("a>", "'>'"),
        ("a\tb", "'\\t'"),
    ] {
        let err = refuse(minimal(id));
        assert_eq!(err.id.as_deref(), Some(id));
        assert_eq!(err.problems.len(), 1, "{id:?}: {:?}", err.problems);
        assert!(err.problems[0].starts_with("`_id` "), "{:?}", err.problems);
        assert!(err.problems[0].contains(shown), "{:?}", err.problems);
        assert!(err.problems[0].contains("NATS subject token"));
    }
}

#[test]
fn bad_mode_and_container() {
    let mut v = minimal("x");
    v["ingestion"]["mode"] = json!("");
    assert_one_problem(v, &["`ingestion.mode` is missing or empty"]);

    let mut v = minimal("x");
    v["ingestion"].as_object_mut().unwrap().remove("mode");
    assert_one_problem(v, &["`ingestion.mode` is missing or empty"]);

    let mut v = minimal("x");
    v["ingestion"]["landing_container"] = json!("");
    assert_one_problem(v, &["`ingestion.landing_container` is missing or empty"]);

    let mut v = minimal("x");
    v["ingestion"]["landing_container"] = json!("landing/results");
    assert_one_problem(
        v,
        &["`ingestion.landing_container` \"landing/results\" contains `/`"],
    );
}

#[test]
fn empty_account() {
    let mut v = minimal("x");
    v["ingestion"]["account"] = json!("");
    assert_one_problem(v, &["`ingestion.account` is an empty string"]);

    let mut v = minimal("x");
    v["ingestion"]["account"] = json!("stqcprod");
    assert_eq!(build(v).account.as_deref(), Some("stqcprod"));
}

#[test]
fn bad_subjects() {
    for (subject, why) in [
        ("", "empty"),
        ("a..b", "empty token"),
        (".a", "empty token"),
        ("a.", "empty token"),
        ("a b", "whitespace"),
        ("a.*", "wildcards"),
        ("a.>", "wildcards"),
        ("a*b", "wildcards"),
    ] {
        let mut v = minimal("x");
        v["route"] = json!({ "subject": subject });
        assert_one_problem(
            v,
            &[
                &format!("`route.subject` {subject:?} is not a valid NATS publish subject"),
                why,
            ],
        );
    }
    let mut v = minimal("x");
    v["route"] = json!({ "subject": "ingest.qc-analyzer.v2" });
    assert_eq!(build(v).subject, "ingest.qc-analyzer.v2");
}

#[test]
fn bad_routed_prefix_is_reported() {
    let err = SourceConfig::from_value(&minimal("x"), "blob.>").unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert!(err.problems[0].contains("default subject \"blob.>.x\""));
    // An explicit subject does not depend on the prefix.
    let mut v = minimal("x");
    v["route"] = json!({ "subject": "a.b" });
    assert!(SourceConfig::from_value(&v, "blob.>").is_ok());
}

#[test]
fn pattern_problems() {
    let mut v = minimal("x");
    v["ingestion"]["path_pattern"] = json!({ "pattern": "a//b" });
    assert_one_problem(
        v,
        &["`ingestion.path_pattern.pattern` \"a//b\" is invalid: segment 2 is empty"],
    );

    let mut v = minimal("x");
    v["ingestion"]["path_pattern"] = json!({ "pattern": "" });
    assert_one_problem(v, &["`ingestion.path_pattern.pattern` is missing or empty"]);

    let mut v = minimal("x");
    v["ingestion"]["path_pattern"] = json!({ "extract_fields": ["a"] });
    assert_one_problem(
        v,
        &["`ingestion.path_pattern.extract_fields` (a) is given without a pattern"],
    );
}

#[test]
fn extract_field_not_captured() {
    let mut v = example();
    v["ingestion"]["path_pattern"]["extract_fields"] = json!(["crop", "plant"]);
    assert_one_problem(
        v,
        &[
            "`ingestion.path_pattern.extract_fields` names \"plant\"",
            "does not capture",
            "it captures plantation_id, crop, batch_id",
        ],
    );

    let mut v = minimal("x");
    v["ingestion"]["path_pattern"] = json!({ "pattern": "*.json", "extract_fields": ["a"] });
    assert_one_problem(v, &["names \"a\"", "it captures nothing"]);

    let mut v = example();
    v["ingestion"]["path_pattern"]["extract_fields"] = json!(["crop", "crop"]);
    assert_one_problem(v, &["names \"crop\" more than once"]);
}

#[test]
fn negative_version() {
    let mut v = minimal("x");
    v["version"] = json!(-1);
    assert_one_problem(v, &["`version` is negative (-1)"]);
}

#[test]
fn all_problems_are_reported() {
    let v = json!({
        "_id": "bad id",
        "version": -2,
        "ingestion": {
            "mode": "",
            "landing_container": "a/b",
            "account": "",
            "path_pattern": { "pattern": "{a}{b}" }
        },
        "route": { "subject": "x.*" }
    });
    let err = refuse(v);
    assert_eq!(err.id.as_deref(), Some("bad id"));
    let expected = [
        "`_id`",
        "`version`",
        "`ingestion.mode`",
        "`ingestion.landing_container`",
        "`ingestion.account`",
        "`ingestion.path_pattern.pattern`",
        "`route.subject`",
    ];
    assert_eq!(err.problems.len(), expected.len(), "{:?}", err.problems);
    for (problem, field) in err.problems.iter().zip(expected) {
        assert!(problem.starts_with(field), "{problem:?} vs {field}");
    }
    let shown = err.to_string();
    assert!(
        shown.starts_with("config bad id refused: `_id` "),
        "{shown}"
    );
    assert_eq!(shown.matches("; ").count(), expected.len() - 1, "{shown}");
}

#[test]
fn deserialization_errors_carry_id_and_field() {
    let mut v = example();
    v["priority"] = json!("high");
    let err = refuse(v);
    assert_eq!(err.id.as_deref(), Some("qc-analyzer-results"));
    assert_eq!(err.problems.len(), 1);
    assert!(
        err.problems[0].contains("invalid type"),
        "{:?}",
        err.problems
    );

    let mut v = example();
    v.as_object_mut().unwrap().remove("ingestion");
    let err = refuse(v);
    assert!(
        err.problems[0].contains("missing field `ingestion`"),
        "{:?}",
        err.problems
    );

    let err = refuse(json!({ "ingestion": {} }));
    assert_eq!(err.id, None);
    assert!(err.problems[0].contains("missing field `_id`"));

    let mut v = example();
    v["_id"] = json!({ "$oid": "64b7f0c2a1b2c3d4e5f60718" });
    v["ingestion"]["path_pattern"]["extract_fields"] = json!("crop");
    let err = refuse(v);
    assert_eq!(err.id.as_deref(), Some("64b7f0c2a1b2c3d4e5f60718"));

    let err = refuse(json!([1, 2]));
    assert_eq!(err.id, None);
    assert!(err.to_string().starts_with("config <no _id> refused: "));
}

#[test]
fn oid_ids() {
    let hex = "64b7f0c2a1b2c3d4e5f60718";
    let mut v = minimal("x");
    v["_id"] = json!({ "$oid": hex });
    assert_eq!(doc_id(&v).as_deref(), Some(hex));
    assert_eq!(parse_doc(&v).unwrap().id, hex);
    let cfg = build(v);
    assert_eq!(cfg.id, hex);
    assert_eq!(cfg.subject, format!("blob.routed.{hex}"));

    assert_eq!(doc_id(&minimal("plain")).as_deref(), Some("plain"));
    assert_eq!(doc_id(&json!({ "_id": { "x": 1 } })), None);
    assert_eq!(doc_id(&json!({})), None);
    assert_eq!(doc_id(&json!("not an object")), None);
}

#[test]
fn extended_json_numbers_and_dates() {
    let mut v = minimal("x");
    v["priority"] = json!({ "$numberLong": "7" });
    v["version"] = json!(4.0);
    v["updated_at"] = json!({ "$date": { "$numberLong": "1795168800000" } });
    let doc = parse_doc(&v).unwrap();
    assert_eq!(doc.updated_at.as_deref(), Some("2026-11-20T10:00:00Z"));
    let cfg = build(v);
    assert_eq!(cfg.priority, 7);
    assert_eq!(cfg.version, 4);

    let mut v = minimal("x");
    v["version"] = json!({ "$numberInt": "2" });
    v["updated_at"] = json!({ "$date": "2026-11-20T10:00:00.123Z" });
    assert_eq!(
        parse_doc(&v).unwrap().updated_at.as_deref(),
        Some("2026-11-20T10:00:00.123Z")
    );
    let cfg = build(v);
    assert_eq!(cfg.version, 2);

    let mut v = minimal("x");
    v["version"] = json!(1.5);
    assert!(refuse(v).problems[0].contains("invalid type"));

    // Every stored form of one document parses to one doc: the cache compares these.
    let plain = parse_doc(&json!({
        "_id": "6740a1b2c3d4e5f601234567",
        "ingestion": {"mode": "blob_trigger", "landing_container": "typed"},
        "version": 7, "priority": 2, "updated_at": "2026-11-20T10:00:00Z"
    }))
    .unwrap();
    for updated_at in [
        json!({"$date": "2026-11-20T10:00:00Z"}),
        json!({"$date": {"$numberLong": "1795168800000"}}),
        json!({"$date": 1_795_168_800_000_i64}),
    ] {
        for (version, priority) in [
            (json!({"$numberLong": "7"}), json!({"$numberInt": "2"})),
            (json!(7.0), json!(2.0)),
            (json!(7), json!(2)),
        ] {
            let typed = json!({
                "_id": {"$oid": "6740a1b2c3d4e5f601234567"},
                "ingestion": {"mode": "blob_trigger", "landing_container": "typed"},
                "version": version, "priority": priority, "updated_at": updated_at
            });
            let parsed = parse_doc(&typed).unwrap();
            assert_eq!(parsed, plain, "{typed}");
            assert_eq!(parsed.fingerprint(), plain.fingerprint(), "{typed}");
            // Stored forms differ, so their stored fingerprints do.
            assert_ne!(
                stored_fingerprint(&typed),
                stored_fingerprint(&json!({
                    "_id": "6740a1b2c3d4e5f601234567",
                    "ingestion": {"mode": "blob_trigger", "landing_container": "typed"},
                    "version": 7, "priority": 2, "updated_at": "2026-11-20T10:00:00Z"
                }))
            );
        }
    }
}

#[test]
fn ordering() {
    let mk = |id: &str, priority: i64| {
        let mut v = minimal(id);
        v["priority"] = json!(priority);
        build(v)
    };
    let mut configs = [mk("b", 0), mk("a", 0), mk("z", 5), mk("c", -1), mk("y", 5)];
    configs.sort_by(SourceConfig::order);
    let ids: Vec<&str> = configs.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["y", "z", "a", "b", "c"]);
    assert_eq!(
        SourceConfig::order(&mk("a", 1), &mk("a", 1)),
        Ordering::Equal
    );
}

#[test]
fn doc_round_trips_through_serde() {
    let doc = parse_doc(&example()).unwrap();
    let exported = serde_json::to_value(&doc).unwrap();
    assert_eq!(exported["_id"], "qc-analyzer-results");
    let again: SourceConfigDoc = serde_json::from_value(exported).unwrap();
    assert_eq!(again, doc);
    let err = refuse(minimal(""));
    assert_eq!(
        serde_json::to_value(&err).unwrap(),
        json!({ "id": null, "problems": ["`_id` is empty"] })
    );
}

#[test]
fn from_doc_matches_from_value() {
    let doc: SourceConfigDoc = serde_json::from_value(example()).unwrap();
    let cfg = SourceConfig::from_doc(doc.clone(), PREFIX).unwrap();
    assert_eq!(cfg.fingerprint, doc.fingerprint());
    let from_value = build(example());
    assert_eq!(cfg.fingerprint, from_value.fingerprint);
    assert_eq!(cfg.stored_fingerprint, None);
    assert_eq!(
        from_value.stored_fingerprint,
        Some(stored_fingerprint(&example()))
    );
}

#[test]
fn fingerprints_tell_documents_apart() {
    let base = example();
    let mut seen = HashSet::new();
    assert!(seen.insert(stored_fingerprint(&base)));
    // Any one field changed, a key renamed, a type changed: a new stored fingerprint
    // and, where the parsed document differs, a new document fingerprint.
    let variants = [
        json!({"version": 4}),
        json!({"priority": 1}),
        json!({"enabled": false}),
        json!({"route": {"subject": "ingest.other"}}),
        json!({"updated_at": null}),
    ];
    let mut docs = HashSet::new();
    docs.insert(parse_doc(&base).unwrap().fingerprint());
    for change in variants {
        let mut v = base.clone();
        for (k, val) in change.as_object().unwrap() {
            v[k] = val.clone();
        }
        assert!(seen.insert(stored_fingerprint(&v)), "{v}");
        assert!(docs.insert(parse_doc(&v).unwrap().fingerprint()), "{v}");
    }
    // Same value, other JSON type: stored forms differ, the parsed documents do not.
    let mut float = base.clone();
    float["version"] = json!(3.0);
    assert!(seen.insert(stored_fingerprint(&float)));
    assert_eq!(
        parse_doc(&float).unwrap().fingerprint(),
        parse_doc(&base).unwrap().fingerprint()
    );
    // `["a","b"]` and `["ab"]` must not collide (lengths are hashed).
    assert_ne!(
        stored_fingerprint(&json!(["a", "b"])),
        stored_fingerprint(&json!(["ab"]))
    );
    assert_ne!(
        stored_fingerprint(&json!(1)),
        stored_fingerprint(&json!(1.0))
    );
}
