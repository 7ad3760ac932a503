//! The generated CRDs: committed files are current, every kind has status and printer columns,
//! and the CEL rules accept the fixtures and reject each kind of bad spec (evaluated locally).

use artstore_operator::crd::{self, EventStream, Ingester, QueryNode, StorageElement};
use kube::CustomResourceExt;
use kube::core::cel::{Validator, compile_schema, estimate_rule_cost};
use serde_json::{Value, json};

use crate::fixture_json;

fn schema<K: CustomResourceExt>() -> Value {
    let crd = K::crd();
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("schema"),
    )
    .expect("schema json")
}

/// Messages of the rules the object breaks (empty when it is valid).
fn violations<K: CustomResourceExt>(obj: &Value, old: Option<&Value>) -> Vec<String> {
    match Validator::new().validate(&schema::<K>(), obj, old) {
        Ok(()) => vec![],
        Err(errors) => errors.iter().map(|e| e.message.clone()).collect(),
    }
}

fn assert_rejects<K: CustomResourceExt>(obj: &Value, old: Option<&Value>, message_part: &str) {
    let v = violations::<K>(obj, old);
    assert!(
        v.iter().any(|m| m.contains(message_part)),
        "expected a violation containing {message_part:?}, got {v:?}"
    );
}

fn with(mut obj: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer");
    let target = obj.pointer_mut(parent).expect("parent exists");
    target
        .as_object_mut()
        .expect("object")
        .insert(key.to_string(), value);
    obj
}

fn without(mut obj: Value, pointer: &str) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer");
    obj.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .expect("parent")
        .remove(key);
    obj
}

#[test]
fn committed_crds_match_the_types() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let stale = crd::stale_files(&dir).expect("serialise CRDs");
    assert!(
        stale.is_empty(),
        "stale CRDs {stale:?}: run `cargo run -p artstore-operator --bin crdgen`"
    );
}

#[test]
fn every_kind_has_status_subresource_printer_columns_and_ready_column() {
    for (file, crd) in crd::all() {
        assert_eq!(crd.spec.group, "artstore.io", "{file}");
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{file}: status subresource"
        );
        let cols = v.additional_printer_columns.as_ref().expect("columns");
        assert!(cols.iter().any(|c| c.name == "Ready"), "{file}");
        let yaml = crd::to_yaml(&crd).expect("yaml");
        assert!(yaml.contains("observedGeneration"), "{file}");
        assert!(yaml.contains("lastTransitionTime"), "{file}");
    }
}

#[test]
fn every_cel_rule_compiles_and_fits_the_cost_budget() {
    fn walk(node: &Value, path: &str, problems: &mut Vec<String>) {
        if let Some(rules) = node
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
        {
            let compiled = compile_schema(node);
            if compiled.has_errors() {
                problems.push(format!("{path}: {:?}", compiled.compilation_errors()));
            }
            for r in rules {
                let rule = r["rule"].as_str().unwrap_or_default();
                for w in estimate_rule_cost(rule, &compiled) {
                    problems.push(format!("{path}: {rule}: {}", w.message));
                }
            }
        }
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                walk(v, &format!("{path}.{k}"), problems);
            }
        }
        if let Some(items) = node.get("items") {
            walk(items, &format!("{path}[]"), problems);
        }
    }
    let mut problems = vec![];
    walk(&schema::<EventStream>(), "EventStream", &mut problems);
    walk(&schema::<StorageElement>(), "StorageElement", &mut problems);
    walk(&schema::<QueryNode>(), "QueryNode", &mut problems);
    walk(&schema::<Ingester>(), "Ingester", &mut problems);
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn fixtures_pass_every_rule() {
    assert_eq!(
        violations::<EventStream>(&fixture_json("eventstream.yaml"), None),
        Vec::<String>::new()
    );
    for f in ["storageelement-s3.yaml", "storageelement-volume.yaml"] {
        assert_eq!(
            violations::<StorageElement>(&fixture_json(f), None),
            Vec::<String>::new(),
            "{f}"
        );
    }
    assert_eq!(
        violations::<QueryNode>(&fixture_json("querynode.yaml"), None),
        Vec::<String>::new()
    );
    assert_eq!(
        violations::<Ingester>(&fixture_json("ingester.yaml"), None),
        Vec::<String>::new()
    );
}

#[test]
fn storage_element_needs_exactly_one_backend() {
    let se = fixture_json("storageelement-s3.yaml");
    let vol = fixture_json("storageelement-volume.yaml");
    let both = with(
        se.clone(),
        "/spec/backend/volume",
        vol["spec"]["backend"]["volume"].clone(),
    );
    assert_rejects::<StorageElement>(&both, None, "exactly one backend");
    let neither = without(se, "/spec/backend/s3");
    assert_rejects::<StorageElement>(&neither, None, "exactly one backend");
}

#[test]
fn storage_element_capacity_must_be_a_positive_quantity() {
    let se = fixture_json("storageelement-s3.yaml");
    assert_rejects::<StorageElement>(
        &with(se.clone(), "/spec/capacity", json!("0")),
        None,
        "capacity must be a quantity greater than 0",
    );
    assert_rejects::<StorageElement>(
        &with(se.clone(), "/spec/capacity", json!("-5Gi")),
        None,
        "capacity must be",
    );
    assert_rejects::<StorageElement>(
        &with(se.clone(), "/spec/capacity", json!("lots")),
        None,
        "capacity must be",
    );
    assert!(
        violations::<StorageElement>(&with(se, "/spec/capacity", json!("1Ti")), None).is_empty()
    );
}

#[test]
fn storage_element_schedules_ids_ttl_and_references_are_checked() {
    let se = fixture_json("storageelement-s3.yaml");
    assert_rejects::<StorageElement>(
        &with(
            se.clone(),
            "/spec/maintenance/consistencyCheck",
            json!("hourly"),
        ),
        None,
        "five-field cron",
    );
    assert_rejects::<StorageElement>(
        &with(se.clone(), "/spec/cacheTtlHours", json!(0)),
        None,
        "cacheTtlHours",
    );
    assert_rejects::<StorageElement>(
        &with(se.clone(), "/spec/eventStreamRef", json!("")),
        None,
        "eventStreamRef must not be empty",
    );
    assert_rejects::<StorageElement>(
        &with(se.clone(), "/spec/database/urlSecretRef/name", json!("")),
        None,
        "secret name must not be empty",
    );
    assert_rejects::<StorageElement>(
        &with(se.clone(), "/spec/elementId", json!("Not_A_Label")),
        None,
        "DNS label",
    );
    assert_rejects::<StorageElement>(
        &with(
            se.clone(),
            "/spec/backend/s3/endpoint",
            json!("seaweedfs:8333"),
        ),
        None,
        "http(s) URL",
    );
    // elementId is immutable once set: it is in every file record.
    let old = with(se.clone(), "/spec/elementId", json!("se-a"));
    let new = with(se, "/spec/elementId", json!("se-b"));
    assert_rejects::<StorageElement>(&new, Some(&old), "elementId is immutable");
}

#[test]
fn event_stream_retention_groups_and_immutability() {
    let es = fixture_json("eventstream.yaml");
    assert_rejects::<EventStream>(
        &with(es.clone(), "/spec/retention/maxAge", json!("30s")),
        None,
        "at least 1m",
    );
    assert_rejects::<EventStream>(
        &with(es.clone(), "/spec/retention/maxAge", json!("a week")),
        None,
        "maxAge must be a duration",
    );
    assert_rejects::<EventStream>(
        &with(es.clone(), "/spec/retention/maxLength", json!(10)),
        None,
        "maxLength must be at least 1000",
    );
    assert_rejects::<EventStream>(
        &with(
            es.clone(),
            "/spec/groups",
            json!([{"name": "a"}, {"name": "a"}]),
        ),
        None,
        "group names must be unique",
    );
    assert_rejects::<EventStream>(
        &with(
            es.clone(),
            "/spec/groups",
            json!([{"name": "a", "startId": "5"}]),
        ),
        None,
        "startId must be 0 or $",
    );
    assert_rejects::<EventStream>(
        &with(es.clone(), "/spec/deadLetter/maxDeliveries", json!(0)),
        None,
        "maxDeliveries",
    );
    assert_rejects::<EventStream>(
        &with(es.clone(), "/spec/stream", json!("")),
        None,
        "stream must be 1 to 256",
    );
    let renamed = with(es.clone(), "/spec/stream", json!("other"));
    assert_rejects::<EventStream>(&renamed, Some(&es), "stream is immutable");
    assert!(violations::<EventStream>(&es, Some(&es)).is_empty());
}

#[test]
fn query_node_and_ingester_bounds() {
    let qn = fixture_json("querynode.yaml");
    assert_rejects::<QueryNode>(
        &with(qn.clone(), "/spec/replicas", json!(-1)),
        None,
        "replicas",
    );
    assert_rejects::<QueryNode>(
        &with(qn.clone(), "/spec/storageElements", json!(["se-a", ""])),
        None,
        "storageElements entries",
    );
    assert_rejects::<QueryNode>(
        &with(qn.clone(), "/spec/eventStreamRef", json!("")),
        None,
        "eventStreamRef",
    );
    let old = with(qn.clone(), "/spec/consumerGroup", json!("g1"));
    assert_rejects::<QueryNode>(
        &with(qn, "/spec/consumerGroup", json!("g2")),
        Some(&old),
        "consumerGroup is immutable",
    );
    let ing = fixture_json("ingester.yaml");
    assert_rejects::<Ingester>(
        &with(ing.clone(), "/spec/limits/maxUploadSize", json!("0")),
        None,
        "maxUploadSize",
    );
    assert_rejects::<Ingester>(
        &with(ing.clone(), "/spec/limits/rateLimitPerMinute", json!(0)),
        None,
        "rateLimitPerMinute",
    );
    assert_rejects::<Ingester>(
        &with(ing, "/spec/limits/idempotencyTtlSeconds", json!(5)),
        None,
        "idempotencyTtlSeconds",
    );
}

#[test]
fn console_url_and_cors_origins_are_checked() {
    let qn = fixture_json("querynode.yaml");
    for bad in [
        "ftp://upload.example.org",
        "upload.example.org",
        "https://a b",
        "https://x/?q=1",
    ] {
        assert_rejects::<QueryNode>(
            &with(qn.clone(), "/spec/console/ingesterUrl", json!(bad)),
            None,
            "console.ingesterUrl",
        );
    }
    for good in [
        "http://localhost:8081",
        "https://upload.example.org/archive/",
    ] {
        let obj = with(qn.clone(), "/spec/console/ingesterUrl", json!(good));
        assert_eq!(
            violations::<QueryNode>(&obj, None),
            Vec::<String>::new(),
            "{good}"
        );
    }
    let ing = fixture_json("ingester.yaml");
    for bad in [
        json!(["https://archive.example.org/console/"]),
        json!(["archive.example.org"]),
        json!(["https://a.example.org,https://b.example.org"]),
        json!([""]),
    ] {
        assert_rejects::<Ingester>(
            &with(ing.clone(), "/spec/cors/allowedOrigins", bad),
            None,
            "cors.allowedOrigins",
        );
    }
    for good in [
        json!(["*"]),
        json!(["http://127.0.0.1:8081", "https://archive.example.org"]),
    ] {
        let obj = with(ing.clone(), "/spec/cors/allowedOrigins", good.clone());
        assert_eq!(
            violations::<Ingester>(&obj, None),
            Vec::<String>::new(),
            "{good}"
        );
    }
}

#[test]
fn modes_and_deletion_policy_are_openapi_enums() {
    let se = schema::<StorageElement>();
    assert_eq!(
        se["properties"]["spec"]["properties"]["mode"]["enum"],
        json!(["edit", "rw", "ro", "ar"])
    );
    let es = schema::<EventStream>();
    assert_eq!(
        es["properties"]["spec"]["properties"]["deletionPolicy"]["enum"],
        json!(["Retain", "Delete"])
    );
}
