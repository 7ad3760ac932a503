//! Bounded forms: oversized fields, names, tag lists and part headers are refused with a 4xx and
//! a stable code, after reading only a bounded prefix, and never echoed back.

use artstore_common::auth::Role;
use futures::StreamExt;

use crate::support::*;

async fn post_upload(url: &str, form: reqwest::multipart::Form) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{url}/api/v1/files/upload"))
        .header("authorization", token(Role::Writer, "limits-client"))
        .multipart(form)
        .send()
        .await
        .expect("request")
}

/// Status, code and the size of the whole answer.
async fn answer(response: reqwest::Response) -> (u16, String, usize) {
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("body");
    let body: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON error body");
    (
        status,
        body["code"].as_str().unwrap_or_default().to_string(),
        bytes.len(),
    )
}

#[tokio::test]
async fn oversized_metadata_is_a_client_error_never_no_storage() {
    let url = start_without_elements(1000, 1 << 20).await;
    let form = |f: fn(reqwest::multipart::Form) -> reqwest::multipart::Form| {
        f(file_form("a.txt", b"hello".to_vec()))
    };

    let long_description = form(|f| f.text("description", "d".repeat(4001)));
    let (status, code, size) = answer(post_upload(&url, long_description).await).await;
    assert_eq!((status, code.as_str()), (400, "description_too_long"));
    assert!(
        size < 1024,
        "the answer does not echo the input ({size} bytes)"
    );

    // 1 MB of description: refused after the field's byte cap, not stored, not echoed.
    let huge_description = form(|f| f.text("description", "d".repeat(1 << 20)));
    let (status, code, size) = answer(post_upload(&url, huge_description).await).await;
    assert_eq!((status, code.as_str()), (413, "field_too_large"));
    assert!(size < 1024, "{size} bytes");

    let many_tags = form(|f| f.text("tags", vec!["t"; 51].join(",")));
    let (status, code, _) = answer(post_upload(&url, many_tags).await).await;
    assert_eq!((status, code.as_str()), (400, "too_many_tags"));

    let long_tag = form(|f| f.text("tags", "t".repeat(101)));
    let (status, code, _) = answer(post_upload(&url, long_tag).await).await;
    assert_eq!((status, code.as_str()), (400, "tag_too_long"));

    // 20 000 tag parts: the part count stops it long before the tags are collected. (Built by
    // hand: the client library's form nests one stream per part and overflows the stack.)
    let mut raw = Vec::new();
    for i in 0..20_000 {
        raw.extend_from_slice(
            format!("--XyZ\r\nContent-Disposition: form-data; name=\"tags\"\r\n\r\ntag{i}\r\n")
                .as_bytes(),
        );
    }
    raw.extend_from_slice(b"--XyZ--\r\n");
    let parts = reqwest::Client::new()
        .post(format!("{url}/api/v1/files/upload"))
        .header("authorization", token(Role::Writer, "limits-client"))
        .header("content-type", "multipart/form-data; boundary=XyZ")
        .body(raw)
        .send()
        .await
        .expect("request");
    let (status, code, size) = answer(parts).await;
    assert_eq!((status, code.as_str()), (400, "too_many_tags"));
    assert!(size < 1024, "{size} bytes");

    // Parts that each look harmless still count.
    let mut raw = Vec::new();
    for _ in 0..1000 {
        raw.extend_from_slice(
            b"--XyZ\r\nContent-Disposition: form-data; name=\"retention\"\r\n\r\npermanent\r\n",
        );
    }
    raw.extend_from_slice(b"--XyZ--\r\n");
    let parts = reqwest::Client::new()
        .post(format!("{url}/api/v1/files/upload"))
        .header("authorization", token(Role::Writer, "limits-client"))
        .header("content-type", "multipart/form-data; boundary=XyZ")
        .body(raw)
        .send()
        .await
        .expect("request");
    let (status, code, _) = answer(parts).await;
    assert_eq!((status, code.as_str()), (413, "too_many_parts"));

    // A 100 KB file name is refused before the file is read.
    let long_name = file_form(&"n".repeat(100 * 1024), b"x".to_vec());
    let (status, code, size) = answer(post_upload(&url, long_name).await).await;
    assert_eq!((status, code.as_str()), (400, "filename_too_long"));
    assert!(size < 1024, "{size} bytes");

    // An unknown field's name is clipped in the message.
    let unknown = form(|f| f.text("x".repeat(10_000), "v"));
    let (status, code, size) = answer(post_upload(&url, unknown).await).await;
    assert_eq!((status, code.as_str()), (400, "unknown_field"));
    assert!(size < 1024, "{size} bytes");

    // Description and tags together over the metadata budget.
    let budget = form(|f| {
        let mut f = f.text("description", "é".repeat(4000));
        for _ in 0..50 {
            f = f.text("tags", "ü".repeat(100));
        }
        f
    });
    let (status, code, _) = answer(post_upload(&url, budget).await).await;
    assert_eq!((status, code.as_str()), (413, "metadata_too_large"));
}

/// A description that never ends: the answer can only come if the ingester stops reading it.
#[tokio::test]
async fn an_endless_description_is_refused_without_reading_it_all() {
    let url = start_without_elements(1000, 1 << 20).await;
    let endless = futures::stream::repeat_with(|| {
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(&[b'd'; 64 * 1024]))
    });
    let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(endless));
    let form = reqwest::multipart::Form::new().part("description", part);
    let (status, code, size) = answer(post_upload(&url, form).await).await;
    assert_eq!((status, code.as_str()), (413, "field_too_large"));
    assert!(size < 1024, "{size} bytes");
}

/// A part header that never ends is buffered by the multipart parser itself; the meter stops it.
#[tokio::test]
async fn an_endless_part_header_is_refused() {
    let url = start_without_elements(1000, 1 << 20).await;
    let head = futures::stream::once(async {
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(
            b"--XyZ\r\nContent-Disposition: form-data; name=\"description\"; x=\"",
        ))
    });
    let endless = futures::stream::repeat_with(|| {
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(&[b'h'; 64 * 1024]))
    });
    let response = reqwest::Client::new()
        .post(format!("{url}/api/v1/files/upload"))
        .header("authorization", token(Role::Writer, "limits-client"))
        .header("content-type", "multipart/form-data; boundary=XyZ")
        .body(reqwest::Body::wrap_stream(head.chain(endless)))
        .send()
        .await
        .expect("request");
    let (status, code, _) = answer(response).await;
    assert_eq!(
        (status, code.as_str()),
        (413, "multipart_overhead_too_large")
    );
}

/// A large file sent faster than it is spooled is held back, not refused: the meter only fails a
/// form whose parser cannot hand out anything more.
#[tokio::test]
async fn a_large_file_is_read_whole_under_back_pressure() {
    let url = start_without_elements(1000, 64 << 20).await;
    let big = (0..32u32 << 20)
        .map(|i| (i % 253) as u8)
        .collect::<Vec<_>>();
    let form = file_form("big.bin", big).text("description", "large");
    let (status, code, _) = answer(post_upload(&url, form).await).await;
    // Read to the end and validated; only the lack of storage elements stops it.
    assert_eq!((status, code.as_str()), (503, "no_storage_available"));
}
