//! Object layout: `YYYY/MM/DD/HH/<stem>_<user>_<timestamp>_<uuid>.<ext>`, its sidecar at
//! `<same>.attr.json`. Only the original filename keeps the user's characters; every key part is
//! sanitised to `[A-Za-z0-9.-]` so no name can escape its directory.

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub const SIDECAR_SUFFIX: &str = ".attr.json";
/// Where sidecar packs live (outside the dated tree, so no pack is ever taken for a file).
pub const PACK_PREFIX: &str = "packs/";
const MAX_FILENAME_BYTES: usize = 255;
const MAX_STEM_CHARS: usize = 64;
const MAX_USER_CHARS: usize = 32;
const MAX_EXT_CHARS: usize = 16;

/// Why a filename is refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FilenameError {
    #[error("filename is empty")]
    Empty,
    #[error("filename is longer than {MAX_FILENAME_BYTES} bytes")]
    TooLong,
    #[error("filename must not contain path separators")]
    PathSeparator,
    #[error("filename must not be . or ..")]
    DotName,
    #[error("filename must not contain control characters")]
    ControlCharacter,
}

/// Checks a user-supplied filename: a plain name, no directories, no control characters.
pub fn validate_filename(name: &str) -> Result<(), FilenameError> {
    if name.trim().is_empty() {
        return Err(FilenameError::Empty);
    }
    if name.len() > MAX_FILENAME_BYTES {
        return Err(FilenameError::TooLong);
    }
    if name.contains('/') || name.contains('\\') {
        return Err(FilenameError::PathSeparator);
    }
    if name == "." || name == ".." {
        return Err(FilenameError::DotName);
    }
    if name.chars().any(char::is_control) {
        return Err(FilenameError::ControlCharacter);
    }
    Ok(())
}

fn sanitise(part: &str, max_chars: usize, allow_dot: bool) -> String {
    let cleaned: String = part
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || (allow_dot && c == '.') {
                c
            } else {
                '-'
            }
        })
        .take(max_chars)
        .collect();
    let trimmed = cleaned.trim_matches(|c| c == '.' || c == '-');
    if trimmed.is_empty() {
        "file".to_string()
    } else {
        trimmed.to_string()
    }
}

/// Splits `name.ext` into its stem and extension (the extension only when short and plain).
fn split_name(filename: &str) -> (&str, Option<&str>) {
    match filename.rsplit_once('.') {
        Some((stem, ext))
            if !stem.is_empty()
                && !ext.is_empty()
                && ext.len() <= MAX_EXT_CHARS
                && ext.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            (stem, Some(ext))
        }
        _ => (filename, None),
    }
}

/// The blob key of a new file.
pub fn blob_key(filename: &str, user: &str, at: DateTime<Utc>, file_id: Uuid) -> String {
    let (stem, ext) = split_name(filename);
    let stem = sanitise(stem, MAX_STEM_CHARS, true);
    let user = sanitise(user, MAX_USER_CHARS, false);
    let dir = at.format("%Y/%m/%d/%H");
    let stamp = at.format("%Y%m%dT%H%M%S");
    match ext {
        Some(ext) => format!(
            "{dir}/{stem}_{user}_{stamp}_{file_id}.{}",
            ext.to_ascii_lowercase()
        ),
        None => format!("{dir}/{stem}_{user}_{stamp}_{file_id}"),
    }
}

pub fn sidecar_key(blob_key: &str) -> String {
    format!("{blob_key}{SIDECAR_SUFFIX}")
}

/// The key of a new sidecar pack: written once, never changed, sorted by when it was made.
pub fn pack_key(at: DateTime<Utc>, id: Uuid) -> String {
    format!(
        "{PACK_PREFIX}{}-{}.ndjson",
        at.format("%Y%m%dT%H%M%S"),
        id.simple()
    )
}

pub fn is_pack_key(key: &str) -> bool {
    key.starts_with(PACK_PREFIX)
}

/// The file id inside a blob key (the 36 characters after the last `_` of the file name).
pub fn file_id_of_blob_key(key: &str) -> Option<Uuid> {
    let name = key.rsplit('/').next()?;
    let (_, tail) = name.rsplit_once('_')?;
    tail.get(..36)?.parse().ok()
}

/// The blob key a sidecar key describes, when `key` is a sidecar's.
pub fn blob_key_of_sidecar(key: &str) -> Option<&str> {
    key.strip_suffix(SIDECAR_SUFFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sanitised_and_ids_parse_back() {
        let at = DateTime::parse_from_rfc3339("2026-11-23T20:05:06Z")
            .expect("time")
            .with_timezone(&Utc);
        let id = Uuid::now_v7();
        let key = blob_key("Quarterly report_final.v2.PDF", "alice@example", at, id);
        assert_eq!(
            key,
            format!(
                "2026/11/23/20/Quarterly-report-final.v2_alice-example_20261123T200506_{id}.pdf"
            )
        );
        assert_eq!(file_id_of_blob_key(&key), Some(id));
        let odd = blob_key("..weird name", "../../etc", at, id);
        assert!(!odd.contains(".."), "{odd}");
        assert_eq!(odd.matches('/').count(), 4, "{odd}");
        assert_eq!(file_id_of_blob_key(&odd), Some(id));
        let no_ext = blob_key("README", "bob", at, id);
        assert!(no_ext.ends_with(&id.to_string()));
        assert_eq!(file_id_of_blob_key(&sidecar_key(&no_ext)), Some(id));
    }

    #[test]
    fn filenames_are_checked() {
        assert!(validate_filename("report.pdf").is_ok());
        assert!(validate_filename("отчёт 2026.pdf").is_ok());
        assert_eq!(validate_filename(""), Err(FilenameError::Empty));
        assert_eq!(
            validate_filename("../etc/passwd"),
            Err(FilenameError::PathSeparator)
        );
        assert_eq!(
            validate_filename("..\\x"),
            Err(FilenameError::PathSeparator)
        );
        assert_eq!(validate_filename(".."), Err(FilenameError::DotName));
        assert_eq!(
            validate_filename("a\nb"),
            Err(FilenameError::ControlCharacter)
        );
        assert_eq!(
            validate_filename(&"a".repeat(300)),
            Err(FilenameError::TooLong)
        );
    }
}
