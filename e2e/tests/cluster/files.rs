//! The data path through the cluster's Services: upload through the ingester, search and
//! download on the query node and the element, PATCH and DELETE, and where uploads land.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{cluster, content, eventually};

const SYNC: Duration = Duration::from_secs(120);

#[tokio::test]
async fn a_file_goes_through_ingester_stream_and_query_node() {
    let c = cluster().await;
    let filename = format!("e2e-report-{}.bin", c.run);
    // Above the ingester's 8 MiB memory spool, so the temporary-file path runs in the image too.
    let body = content(9 * 1024 * 1024 + 17, uuid::Uuid::new_v4().as_u128());
    // The search word starts with letters: a bare hex run id is not one word to the index.
    let word = format!("report{}", c.run);
    let record = c
        .upload_ok(&filename, &body, &format!("cluster run {word}"))
        .await;
    let file_id = record["file_id"].as_str().expect("file_id").to_string();
    assert_eq!(record["size"], json!(body.len()));
    assert_eq!(record["original_filename"], json!(filename));

    // The highest-priority writable element takes it.
    let first = c
        .stack
        .storage_elements
        .iter()
        .filter(|e| e.mode == "rw" || e.mode == "edit")
        .max_by_key(|e| e.priority)
        .unwrap();
    assert_eq!(record["storage_element_id"], json!(first.id));

    c.wait_searchable(&word, std::slice::from_ref(&file_id), SYNC)
        .await;

    let download = |base: String, range: Option<&'static str>| {
        let mut request = c
            .http
            .get(format!("{base}/api/v1/files/{file_id}/download"))
            .bearer_auth(&c.stack.tokens.reader);
        if let Some(range) = range {
            request = request.header("Range", range);
        }
        request.send()
    };
    for base in [c.stack.query_url.clone(), first.url.clone()] {
        let response = download(base.clone(), None).await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "download from {base}");
        assert!(
            response.headers().contains_key("etag"),
            "an ETag from {base}"
        );
        let bytes = response.bytes().await.unwrap();
        assert!(bytes[..] == body[..], "bytes downloaded from {base} differ");
        let response = download(base.clone(), Some("bytes=1000-1999"))
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 206, "range from {base}");
        assert_eq!(response.bytes().await.unwrap()[..], body[1000..2000]);
    }

    // Files change only on an element in mode `edit`: the element holding it switches (its
    // pod restarts with the new mode), then PATCH through the ingester reaches it and, through
    // the stream, search.
    c.merge_patch(
        "StorageElement",
        &first.id,
        json!({"spec": {"mode": "edit"}}),
    )
    .await;
    let new_word = format!("patched{}", c.run);
    eventually(
        "PATCH accepted once the element is in mode edit",
        SYNC,
        || async {
            let response = c
                .http
                .patch(format!("{}/api/v1/files/{file_id}", c.stack.ingester_url))
                .bearer_auth(&c.stack.tokens.writer)
                .json(
                    &json!({"description": format!("now {new_word}"), "tags": ["e2e", "patched"]}),
                )
                .send()
                .await
                .ok()?;
            let status = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            assert!(
                matches!(status, 200 | 404 | 409) || status >= 500,
                "PATCH: {status} {body}"
            );
            (status == 200).then_some(())
        },
    )
    .await;
    c.wait_searchable(&new_word, std::slice::from_ref(&file_id), SYNC)
        .await;
    let on_element: Value = c
        .http
        .get(format!("{}/api/v1/files/{file_id}", first.url))
        .bearer_auth(&c.stack.tokens.reader)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        on_element["tags"],
        json!(["e2e", "patched"]),
        "{on_element}"
    );

    // DELETE removes it from the element and, through the stream, from search.
    let response = c
        .http
        .delete(format!("{}/api/v1/files/{file_id}", c.stack.ingester_url))
        .bearer_auth(&c.stack.tokens.writer)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "DELETE: {}",
        response.status()
    );
    c.wait_searchable(&new_word, &[], SYNC).await;
    let response = c
        .http
        .get(format!("{}/api/v1/files/{file_id}", first.url))
        .bearer_auth(&c.stack.tokens.reader)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
}

#[tokio::test]
async fn a_read_only_element_sends_uploads_to_the_next_by_priority() {
    let c = cluster().await;
    let mut writable: Vec<_> = c
        .stack
        .storage_elements
        .iter()
        .filter(|e| e.mode == "rw")
        .collect();
    writable.sort_by_key(|e| -e.priority);
    assert!(
        writable.len() >= 2,
        "the examples have two writable elements"
    );
    let (first, second) = (writable[0].clone(), writable[1].clone());
    // The resource is named like the element in examples/ (se-s3, se-volume).
    let first_resource = first.id.clone();

    c.merge_patch(
        "StorageElement",
        &first_resource,
        json!({"spec": {"mode": "ro"}}),
    )
    .await;
    let targets = |want_first: bool| {
        let c = &c;
        let first = first.id.clone();
        async move {
            eventually(
                "the Ingester's writable targets follow the mode",
                Duration::from_secs(90),
                || async {
                    let ingester = c.get("Ingester", "upload").await;
                    let targets: Vec<String> =
                        serde_json::from_value(ingester["status"]["writableTargets"].clone())
                            .ok()?;
                    (targets.contains(&first) == want_first).then_some(())
                },
            )
            .await
        }
    };
    targets(false).await;
    // The registry file reaches the ingester's pod through its ConfigMap volume: the kubelet
    // syncs it within a minute, so the next uploads may still go to the first element.
    let record = eventually(
        "an upload lands on the second element",
        Duration::from_secs(120),
        || async {
            let record = c
                .upload_ok(&format!("ro-{}.txt", c.run), b"while read-only", "ro")
                .await;
            (record["storage_element_id"] == json!(second.id)).then_some(record)
        },
    )
    .await;
    assert_eq!(record["storage_element_id"], json!(second.id));

    c.merge_patch(
        "StorageElement",
        &first_resource,
        json!({"spec": {"mode": "rw"}}),
    )
    .await;
    targets(true).await;
    eventually(
        "uploads return to the first element",
        Duration::from_secs(120),
        || async {
            let record = c
                .upload_ok(&format!("rw-{}.txt", c.run), b"writable again", "rw")
                .await;
            (record["storage_element_id"] == json!(first.id)).then_some(())
        },
    )
    .await;
}
