//! Limits on an upload's metadata, checked while the form is read. They match the storage
//! element's own checks (so what passes here is never refused there as a validation error that
//! would look like a storage failure), plus byte caps that bound what is read at all.

/// Characters of `description` (the element's limit).
pub const MAX_DESCRIPTION_CHARS: usize = 4000;
/// Tags per file (the element's limit).
pub const MAX_TAGS: usize = 50;
/// Characters per tag (the element's limit).
pub const MAX_TAG_CHARS: usize = 100;
/// Bytes of a file name (the element's limit).
pub const MAX_FILENAME_BYTES: usize = 255;
/// Bytes of one text field as sent: a description of 4000 four-byte characters fits.
pub const MAX_TEXT_FIELD_BYTES: usize = 16_000;
/// Bytes of `retention` / `retention_days`.
pub const MAX_SMALL_FIELD_BYTES: usize = 64;
/// Bytes of description and tags together. The ingester hands them to the element in the query
/// string (percent-encoded, up to three bytes per byte), which must stay under the element's URI
/// limit of 64 000 bytes.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
