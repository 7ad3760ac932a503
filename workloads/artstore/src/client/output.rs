//! What the client commands print: JSON Lines on stdout with `--json` (nothing else there),
//! readable lines and tables otherwise; every failure explained on stderr with its code and,
//! where one is known, the fix.

use std::io::Write;

use artstore_client::{ClientError, FileRecord, Service};
use serde_json::{Value, json};

/// Sizes as people read them (binary units).
pub fn human_size(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

/// `2026-11-03T10:04:05.123Z` → `2026-11-03 10:04`.
pub fn short_time(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_else(|_| rfc3339.to_string())
}

/// One JSON object on one line of stdout.
pub fn json_line(value: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, value);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// The JSON Lines record of a failed item.
pub fn error_record(key: &str, item: &str, e: &ClientError) -> Value {
    json!({ key: item, "error": { "code": e.code(), "message": e.to_string() } })
}

/// What to do about an error, when we know.
pub fn hint(e: &ClientError) -> Option<String> {
    match e {
        ClientError::Unreachable { service, url, .. } => Some(format!(
            "cannot reach the {service} at {url}: check the URL ({}, or `artstore login`) and that the archive is running",
            match service {
                Service::Ingester => "--ingester-url",
                Service::QueryNode => "--query-url",
                Service::StorageElement => "the storage element's URL",
            }
        )),
        ClientError::Transport { .. } => {
            Some("the connection broke; run the command again (uploads are idempotent, downloads resume)".into())
        }
        ClientError::Api { status: 401, message, .. } if message.contains("Expired") => {
            Some("token expired: run `artstore login` again (or pass a fresh --token)".into())
        }
        ClientError::Api { status: 401, .. } => Some(
            "the token was refused: run `artstore login` with a token of this archive (`kubectl artstore token` mints one)".into(),
        ),
        ClientError::Api { status: 403, .. } => Some(
            "the token's role may not do this: log in with a writer token (upload, edit, rm) or a reader token (search, download)".into(),
        ),
        ClientError::Api { status: 404, .. } => {
            Some("no such file: look the id up with `artstore search`".into())
        }
        ClientError::Api { status: 413, .. } => {
            Some("the file is larger than the ingester accepts (its maxUploadSize)".into())
        }
        ClientError::Api { status: 429, .. } => Some(
            "rate limited and out of retries: wait a minute, upload with fewer --jobs, or raise --retries".into(),
        ),
        ClientError::Api { code, .. } if code == "no_storage_available" => Some(
            "no storage element can take the file: check the archive with `kubectl artstore status`".into(),
        ),
        ClientError::Api { status: 503, .. } => {
            Some("the archive is briefly unavailable: run the command again later".into())
        }
        ClientError::ChecksumMismatch { .. } => {
            Some("the downloaded bytes were corrupt and have been removed: run the download again".into())
        }
        ClientError::InvalidUrl { .. } => {
            Some("fix the URL with --ingester-url/--query-url or `artstore login`".into())
        }
        _ => None,
    }
}

/// Explains one failure on stderr: `error: ITEM: MESSAGE [code]` and a `hint:` line.
pub fn report_error(item: Option<&str>, e: &ClientError) {
    let mut err = std::io::stderr().lock();
    let prefix = item.map(|i| format!("{i}: ")).unwrap_or_default();
    let _ = writeln!(err, "error: {prefix}{e} [{}]", e.code());
    if let Some(h) = hint(e) {
        let _ = writeln!(err, "  hint: {h}");
    }
}

/// The search results table: id, name, size, created, element.
pub fn results_table(records: &[FileRecord]) -> String {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header(["ID", "NAME", "SIZE", "CREATED", "ELEMENT"]);
    for r in records {
        table.add_row([
            r.file_id.clone(),
            r.original_filename.clone(),
            human_size(r.size),
            short_time(&r.created_at),
            r.storage_element_id.clone(),
        ]);
    }
    trim_lines(&table.to_string())
}

/// One file, field by field.
pub fn record_view(r: &FileRecord) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("ID", r.file_id.clone()),
        ("Name", r.original_filename.clone()),
        ("Size", format!("{} ({} bytes)", human_size(r.size), r.size)),
        ("SHA-256", r.sha256.clone()),
        ("Type", r.mime_type.clone().unwrap_or_default()),
        ("Description", r.description.clone().unwrap_or_default()),
        ("Tags", r.tags.join(", ")),
        ("Element", r.storage_element_id.clone()),
        ("Created", r.created_at.clone()),
        ("Created by", r.created_by.clone().unwrap_or_default()),
    ];
    if let Some(expires) = &r.retention_expires_at {
        rows.push(("Expires", expires.clone()));
    }
    if let Some(v) = r.version {
        rows.push(("Version", v.to_string()));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{k:<width$}  {v}").trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn trim_lines(text: &str) -> String {
    text.lines()
        .map(|l| l.trim_end().strip_prefix(' ').unwrap_or(l.trim_end()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u32, name: &str, size: u64, created: &str, element: &str) -> FileRecord {
        serde_json::from_value(json!({
            "file_id": format!("0190a0a0-0000-7000-8000-{id:012}"),
            "original_filename": name, "size": size, "sha256": "00",
            "storage_element_id": element, "created_at": created,
            "tags": ["birds", "survey"], "description": "annual survey", "version": 2,
            "created_by": "dev-writer", "mime_type": "text/csv"
        }))
        .expect("record")
    }

    #[test]
    fn the_results_table_reads_well() {
        let rows = [
            record(
                1,
                "kestrel-survey-2026.csv",
                3_000_000,
                "2026-11-03T10:04:05.123Z",
                "se-a",
            ),
            record(2, "notes.txt", 812, "2026-11-02T23:59:59Z", "se-b"),
            record(
                3,
                "falcon.jpg",
                52_428_800,
                "2026-10-30T08:00:00+02:00",
                "se-a",
            ),
        ];
        insta::assert_snapshot!("search_table", results_table(&rows));
        insta::assert_snapshot!("info_view", record_view(&rows[0]));
    }

    #[test]
    fn hints_name_the_fix() {
        let api = |status, code: &str, message: &str| ClientError::Api {
            service: Service::Ingester,
            status,
            code: code.into(),
            message: message.into(),
            retry_after: None,
        };
        let expired = hint(&api(401, "unauthorized", "invalid token: ExpiredSignature"));
        assert!(expired.is_some_and(|h| h.starts_with("token expired: run `artstore login`")));
        let bad = hint(&api(401, "unauthorized", "invalid token: InvalidSignature"));
        assert!(bad.is_some_and(|h| h.contains("artstore login")));
        assert!(hint(&api(418, "teapot", "no")).is_none());
    }
}
