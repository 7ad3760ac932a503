//! `POST /api/v1/search`, `GET /api/v1/files/{id}`: matching, filters, sort, keyset pages,
//! bad input, auth.

use std::collections::HashSet;

use artstore_common::auth::Role;
use artstore_events::FileRecord;
use artstore_query::QueryNode;
use artstore_query::store::{CacheRow, upsert_committed};

use crate::support::*;

struct Fixture {
    env: Env,
    node: QueryNode,
    files: Vec<FileRecord>,
}

/// 40 files: ten named reports in three families, the rest numbered; sizes, dates, tags,
/// owners and elements spread so every filter selects a known subset. Many share a created_at
/// so keyset ties are exercised.
async fn fixture(tag: &str) -> Fixture {
    let env = Env::new(tag).await;
    let mut config = env.config("pod-0");
    config.consume = false;
    let node = start(config).await;
    let mut files = Vec::new();
    for i in 0..40u64 {
        let mut r = record(&match i {
            0 => "quarterly_report-2026.pdf".to_string(),
            1 => "annual report 2025.pdf".to_string(),
            2 => "holiday-photo.jpg".to_string(),
            3 => "holiday-video.mp4".to_string(),
            4 => "100%_done_notes.txt".to_string(),
            n => format!("scan-{n:03}.png"),
        });
        r.mime_type = match i {
            0 | 1 => "application/pdf",
            2 => "image/jpeg",
            3 => "video/mp4",
            4 => "text/plain",
            _ => "image/png",
        }
        .into();
        r.size = 100 * (i + 1);
        r.created_at = at(&format!("2026-01-{:02}T12:00:00Z", 1 + (i % 10)));
        r.tags = match i % 4 {
            0 => vec!["finance".into(), "2026".into()],
            1 => vec!["finance".into()],
            2 => vec!["personal".into()],
            _ => vec![],
        };
        r.created_by = if i % 2 == 0 { "alice" } else { "bob" }.into();
        r.storage_element_id = if i < 30 { "se-a" } else { "se-b" }.into();
        if i == 1 {
            r.description = Some("signed by the board of directors".into());
        }
        files.push(r);
    }
    let rows: Vec<CacheRow> = files
        .iter()
        .map(|r| CacheRow::from_record(r, 1, false, None).expect("row"))
        .collect();
    upsert_committed(&env.db.pool, &rows).await.expect("seed");
    Fixture { env, node, files }
}

fn names(f: &Fixture, body: &serde_json::Value) -> Vec<String> {
    let by_id: std::collections::HashMap<String, String> = f
        .files
        .iter()
        .map(|r| (r.file_id.to_string(), r.original_filename.clone()))
        .collect();
    ids(body)
        .iter()
        .filter_map(|id| by_id.get(id).cloned())
        .collect()
}

async fn ok(f: &Fixture, body: serde_json::Value) -> serde_json::Value {
    let (status, response) = search(&f.node, body.clone()).await;
    assert_eq!(status, 200, "{body} → {response}");
    response
}

#[tokio::test]
async fn full_text_partial_names_and_websearch_syntax() {
    let f = fixture("search-text").await;
    // Words of the filename, split at punctuation.
    let r = ok(&f, serde_json::json!({"query": "quarterly"})).await;
    assert_eq!(names(&f, &r), vec!["quarterly_report-2026.pdf"]);
    // Description and tags and owner are searched too.
    let r = ok(&f, serde_json::json!({"query": "directors"})).await;
    assert_eq!(names(&f, &r), vec!["annual report 2025.pdf"]);
    let r = ok(&f, serde_json::json!({"query": "personal", "limit": 200})).await;
    assert_eq!(r["total_count"], 10);
    // A partial filename (trigram match), not a word of its own.
    let r = ok(&f, serde_json::json!({"query": "quarterl"})).await;
    assert_eq!(names(&f, &r), vec!["quarterly_report-2026.pdf"]);
    // No word matches it (ts_rank 0): its score is the name term alone, 8 of 25 characters.
    let score = r["results"][0]["score"].as_f64().expect("score");
    assert!((score - 8.0 / 25.0).abs() < 1e-9, "{r}");
    // Parts of two words of a name, in the name's order: the name match finds it; the same
    // parts in another order are in no name.
    let r = ok(&f, serde_json::json!({"query": "nual repo"})).await;
    assert_eq!(names(&f, &r), vec!["annual report 2025.pdf"]);
    let r = ok(&f, serde_json::json!({"query": "port annu"})).await;
    assert_eq!(r["total_count"], 0, "{r}");
    // websearch: phrase, OR, exclusion.
    let r = ok(&f, serde_json::json!({"query": "\"annual report\""})).await;
    assert_eq!(names(&f, &r), vec!["annual report 2025.pdf"]);
    let mut both = names(
        &f,
        &ok(&f, serde_json::json!({"query": "quarterly or annual"})).await,
    );
    both.sort();
    assert_eq!(
        both,
        vec!["annual report 2025.pdf", "quarterly_report-2026.pdf"]
    );
    let r = ok(&f, serde_json::json!({"query": "holiday -video"})).await;
    assert_eq!(names(&f, &r), vec!["holiday-photo.jpg"]);
    // LIKE metacharacters are literal.
    let r = ok(&f, serde_json::json!({"query": "100%_d"})).await;
    assert_eq!(names(&f, &r), vec!["100%_done_notes.txt"]);
    let r = ok(&f, serde_json::json!({"query": "%%%"})).await;
    assert_eq!(r["total_count"], 0);
    // Relevance: both names hold the word; the one the query is more of comes first.
    let r = ok(&f, serde_json::json!({"query": "report"})).await;
    assert_eq!(r["total_count"], 2);
    assert_eq!(
        names(&f, &r),
        vec!["annual report 2025.pdf", "quarterly_report-2026.pdf"]
    );
    let score = |i: usize| r["results"][i]["score"].as_f64().expect("score");
    assert!(score(0) > score(1), "{r}");
    // Matching a name word as well as a tag outranks matching the tag only.
    let r = ok(
        &f,
        serde_json::json!({"query": "personal holiday OR personal"}),
    )
    .await;
    assert_eq!(names(&f, &r)[0], "holiday-photo.jpg", "{r}");
}

#[tokio::test]
async fn filters_select_exactly_their_subset() {
    let f = fixture("search-filters").await;
    let count = |r: &serde_json::Value| r["total_count"].as_i64().unwrap_or(-1);
    let expect =
        |pred: &dyn Fn(&FileRecord) -> bool| f.files.iter().filter(|r| pred(r)).count() as i64;
    let cases: Vec<(serde_json::Value, i64)> = vec![
        (
            serde_json::json!({"mime_type": "image/*"}),
            expect(&|r| r.mime_type.starts_with("image/")),
        ),
        (serde_json::json!({"mime_type": "application/pdf"}), 2),
        (
            serde_json::json!({"tags_all": ["finance", "2026"]}),
            expect(&|r| r.tags.len() == 2),
        ),
        (
            serde_json::json!({"tags_any": ["finance", "personal"]}),
            expect(&|r| !r.tags.is_empty()),
        ),
        (
            serde_json::json!({"size_min": 1000, "size_max": 2000}),
            expect(&|r| (1000..=2000).contains(&r.size)),
        ),
        (
            serde_json::json!({"created_after": "2026-01-03T00:00:00Z", "created_before": "2026-01-05T00:00:00Z"}),
            expect(&|r| {
                r.created_at >= at("2026-01-03T00:00:00Z")
                    && r.created_at < at("2026-01-05T00:00:00Z")
            }),
        ),
        (serde_json::json!({"storage_element_id": "se-b"}), 10),
        (serde_json::json!({"owner": "alice"}), 20),
        (
            serde_json::json!({"owner": "bob", "tags_any": ["finance"], "storage_element_id": "se-a"}),
            expect(&|r| {
                r.created_by == "bob"
                    && r.tags.contains(&"finance".to_string())
                    && r.storage_element_id == "se-a"
            }),
        ),
    ];
    for (filters, expected) in cases {
        let r = ok(&f, serde_json::json!({"filters": filters, "limit": 200})).await;
        assert_eq!(count(&r), expected, "{filters}");
        assert_eq!(ids(&r).len() as i64, expected, "{filters}");
        assert_eq!(r["total_count_capped"], false);
    }
    // Query and filter together.
    let r = ok(
        &f,
        serde_json::json!({"query": "scan", "filters": {"storage_element_id": "se-b"}}),
    )
    .await;
    assert_eq!(count(&r), 10);
}

/// Walks every page for each sort; pages never overlap or skip, the order holds across page
/// boundaries (ties broken by file id), and a file added mid-walk does not shift later pages.
#[tokio::test]
async fn keyset_pages_are_stable_for_every_sort() {
    let f = fixture("search-pages").await;
    for (sort, query) in [
        (
            serde_json::json!({"field": "created_at", "order": "desc"}),
            None,
        ),
        (
            serde_json::json!({"field": "created_at", "order": "asc"}),
            None,
        ),
        (serde_json::json!({"field": "size", "order": "asc"}), None),
        (serde_json::json!({"field": "name"}), None),
        (serde_json::json!({"field": "relevance"}), Some("scan")),
    ] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut body = serde_json::json!({"sort": sort, "limit": 7});
            if let Some(q) = query {
                body["query"] = q.into();
            }
            if let Some(c) = &cursor {
                body["cursor"] = c.clone().into();
            }
            let r = ok(&f, body).await;
            let results = r["results"].as_array().cloned().unwrap_or_default();
            assert!(results.len() <= 7);
            seen.extend(results);
            pages += 1;
            if pages == 2 && query.is_none() {
                // A new file arriving mid-walk, sorting before everything walked so far.
                let mut late = record("aaa-late.txt");
                late.created_at = at("2025-01-01T00:00:00Z");
                late.size = 1;
                let row = CacheRow::from_record(&late, 1, false, None).expect("row");
                upsert_committed(&f.env.db.pool, &[row])
                    .await
                    .expect("late");
            }
            match r["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        let ids: Vec<String> = seen
            .iter()
            .filter_map(|r| r["file_id"].as_str().map(String::from))
            .collect();
        let unique: HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "{sort}: a file appeared twice");
        let expected = if query.is_some() { 35 } else { 40 };
        let walked_originals = ids
            .iter()
            .filter(|id| f.files.iter().any(|r| r.file_id.to_string() == **id))
            .count();
        assert_eq!(walked_originals, expected, "{sort}: a file was skipped");
        // Sorted as asked, file_id breaking ties.
        let key = |r: &serde_json::Value| -> (String, String) {
            let field = sort["field"].as_str().unwrap_or_default();
            let k = match field {
                "created_at" => r["created_at"].as_str().unwrap_or_default().to_string(),
                "size" => format!("{:020}", r["size"].as_i64().unwrap_or_default()),
                "name" => r["original_filename"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                _ => format!("{:.12}", r["score"].as_f64().unwrap_or_default()),
            };
            (k, r["file_id"].as_str().unwrap_or_default().to_string())
        };
        let keys: Vec<_> = seen.iter().map(key).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        if sort["order"] == "desc" || sort["field"] == "relevance" {
            sorted.reverse();
        }
        assert_eq!(keys, sorted, "{sort}: out of order");
    }
}

#[tokio::test]
async fn bad_requests_are_4xx_with_codes_never_500() {
    let f = fixture("search-bad").await;
    let url = format!("{}/api/v1/search", f.node.url());
    let reader = token(Role::Reader);
    let raw = |body: &'static str| {
        let url = url.clone();
        let reader = reader.clone();
        async move {
            let r = http()
                .post(&url)
                .bearer_auth(&reader)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("send");
            let status = r.status().as_u16();
            let json: serde_json::Value = r.json().await.unwrap_or_default();
            (
                status,
                json["code"].as_str().unwrap_or_default().to_string(),
            )
        }
    };
    assert_eq!(raw("{not json").await, (400, "invalid_request".into()));
    assert_eq!(
        raw(r#"{"qeury": "typo"}"#).await,
        (400, "invalid_request".into())
    );
    assert_eq!(
        raw(r#"{"filters": {"size_min": "big"}}"#).await,
        (400, "invalid_request".into())
    );
    assert_eq!(
        raw(r#"{"sort": {"field": "colour"}}"#).await,
        (400, "invalid_request".into())
    );
    assert_eq!(
        raw(r#"{"filters": {"created_after": "yesterday"}}"#).await,
        (400, "invalid_request".into())
    );
    for (body, code) in [
        (serde_json::json!({"limit": 0}), "invalid_limit"),
        (serde_json::json!({"limit": 10_000}), "invalid_limit"),
        (
            serde_json::json!({"sort": {"field": "relevance"}}),
            "invalid_sort",
        ),
        (
            serde_json::json!({"cursor": "not-a-cursor"}),
            "invalid_cursor",
        ),
        (serde_json::json!({"query": "a\u{0}b"}), "invalid_query"),
        (
            serde_json::json!({"filters": {"owner": "x\u{0}"}}),
            "invalid_filter",
        ),
        (
            serde_json::json!({"filters": {"size_min": -1}}),
            "invalid_filter",
        ),
        (
            serde_json::json!({"query": "q".repeat(1000)}),
            "invalid_query",
        ),
    ] {
        let (status, response) = search(&f.node, body.clone()).await;
        assert_eq!(
            (status, response["code"].as_str()),
            (400, Some(code)),
            "{body}"
        );
    }
    // A cursor is bound to its query.
    let first = ok(&f, serde_json::json!({"query": "scan", "limit": 2})).await;
    let cursor = first["next_cursor"]
        .as_str()
        .expect("more pages")
        .to_string();
    let (status, response) = search(
        &f.node,
        serde_json::json!({"query": "holiday", "cursor": cursor}),
    )
    .await;
    assert_eq!(
        (status, response["code"].as_str()),
        (400, Some("invalid_cursor"))
    );
    // Whatever people type into a search box is a valid query.
    for q in [
        "\"unclosed",
        "!!!",
        "&|:*()",
        "'",
        "or or -",
        "-",
        "\\",
        "日本語",
        "a:*",
    ] {
        let (status, response) = search(&f.node, serde_json::json!({"query": q})).await;
        assert_eq!(status, 200, "{q:?} → {response}");
    }
    // Auth.
    let r = http()
        .post(&url)
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 401);
    let r = http()
        .post(&url)
        .bearer_auth("garbage")
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 401);
    // Record lookup.
    let get = |path: String| async move {
        http()
            .get(path)
            .bearer_auth(token(Role::Reader))
            .send()
            .await
            .expect("get")
            .status()
            .as_u16()
    };
    assert_eq!(
        get(format!("{}/api/v1/files/not-a-uuid", f.node.url())).await,
        400
    );
    assert_eq!(
        get(format!(
            "{}/api/v1/files/{}",
            f.node.url(),
            uuid::Uuid::new_v4()
        ))
        .await,
        404
    );
    assert_eq!(
        get(format!(
            "{}/api/v1/files/{}",
            f.node.url(),
            f.files[0].file_id
        ))
        .await,
        200
    );
    // Ops endpoints.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = http()
            .get(format!("{}{path}", f.node.url()))
            .send()
            .await
            .expect("ops");
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    let metrics = http()
        .get(format!("{}/metrics", f.node.url()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("artstore_query_search_seconds"),
        "{metrics}"
    );
    assert!(
        metrics.contains("artstore_query_events_applied_total"),
        "{metrics}"
    );
}

/// The count stops at its cap on a broad query, and says so.
#[tokio::test]
async fn total_count_is_capped_on_broad_queries() {
    let env = Env::new("search-cap").await;
    let mut config = env.config("pod-0");
    config.consume = false;
    let node = start(config).await;
    sqlx::query(
        "INSERT INTO file_cache (file_id, version, original_filename, storage_key, size, sha256, \
         mime_type, storage_element_id, created_at, created_by, updated_at, retention) \
         SELECT gen_random_uuid(), 1, 'bulk-' || g || '.dat', 'k' || g, g, 'h', \
         'application/octet-stream', 'se-a', now() - g * interval '1 second', 'loader', now(), 'permanent' \
         FROM generate_series(1, 10050) AS g",
    )
    .execute(&env.db.pool)
    .await
    .expect("bulk");
    let (status, r) = search(&node, serde_json::json!({"query": "bulk", "limit": 5})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["total_count"], 10_000);
    assert_eq!(r["total_count_capped"], true);
    assert_eq!(ids(&r).len(), 5);
    let (_, r) = search(&node, serde_json::json!({"filters": {"size_max": 20}})).await;
    assert_eq!(r["total_count"], 20);
    assert_eq!(r["total_count_capped"], false);
}
