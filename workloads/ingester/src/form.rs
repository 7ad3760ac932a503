//! Reading an upload form in bounded memory.
//!
//! The multipart parser (`multer`) pulls every chunk the body has ready into its buffer, and
//! buffers a part's headers and the bytes before the first boundary until it finds their end,
//! without a limit of its own. [`FormReader`] feeds it the request body through a meter that
//! counts what the parser took in against what it handed out as field data. When the parser
//! holds more than [`MAX_UNYIELDED_BYTES`] the meter first holds the body back (the parser then
//! hands out what it has: back-pressure for a client faster than the spool); if the parser
//! cannot hand out anything more (a part header or preamble that never ends), the body fails
//! and the request gets 413 `multipart_overhead_too_large`. Text fields are read up to a per-field cap and parts are
//! counted, so no form can make the ingester hold more than a few hundred KiB besides the file
//! being spooled.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;
use futures::{Stream, StreamExt};

use artstore_common::ApiError;

/// Bytes the parser may hold that are not (yet) field data: part headers, boundaries, preamble.
pub const MAX_UNYIELDED_BYTES: u64 = 256 * 1024;
/// Allowance added per part seen, for its boundary and headers (they add up over a form).
const PER_PART_OVERHEAD: u64 = 1024;

/// Per-request limits of a form.
#[derive(Debug, Clone, Copy)]
pub struct FormLimits {
    /// Parts (fields) in one request.
    pub max_parts: usize,
}

impl FormLimits {
    /// `/upload`: one file, a description, up to [`crate::limits::MAX_TAGS`] tag fields, retention.
    pub const UPLOAD: FormLimits = FormLimits { max_parts: 64 };
    /// `/batch`: files and the metadata fields before them.
    pub const BATCH: FormLimits = FormLimits { max_parts: 1024 };
}

#[derive(Default)]
struct Meter {
    /// Bytes the parser pulled from the body.
    pulled: AtomicU64,
    /// Bytes of field data handed to the handler.
    yielded: AtomicU64,
    parts: AtomicU64,
    /// Everything the parser handed out: a new part, a piece of field data, the end of a field.
    /// Between two polls of a body held back, the parser must have done one of these.
    progress: AtomicU64,
    overflowed: AtomicBool,
}

impl Meter {
    fn advance(&self) {
        self.progress.fetch_add(1, Ordering::Relaxed);
    }
}

/// The request body, metered.
struct MeteredBody<S> {
    inner: S,
    meter: Arc<Meter>,
    /// The parser's progress when the body was last held back.
    held_back_at: Option<u64>,
}

impl<S> Stream for MeteredBody<S>
where
    S: Stream<Item = Result<Bytes, axum::Error>> + Unpin,
{
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let meter = self.meter.clone();
        let yielded = meter.yielded.load(Ordering::Relaxed);
        let held = meter.pulled.load(Ordering::Relaxed).saturating_sub(yielded);
        let allowed = MAX_UNYIELDED_BYTES + meter.parts.load(Ordering::Relaxed) * PER_PART_OVERHEAD;
        if held > allowed {
            // Not only field data counts as progress: after a large piece of body that holds
            // several small fields, the parser hands out part headers and field ends between
            // two polls without any field data, and that is no reason to refuse the form.
            let progress = meter.progress.load(Ordering::Relaxed);
            if self.held_back_at == Some(progress) {
                // Held back once and the parser handed out nothing since: it cannot go on
                // without more input it must buffer.
                meter.overflowed.store(true, Ordering::Relaxed);
                return Poll::Ready(Some(Err(std::io::Error::other(
                    "multipart headers or preamble too large",
                ))));
            }
            self.held_back_at = Some(progress);
            // Ask to be polled again: by then the parser has handed out what it holds, or
            // shown that it cannot.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.held_back_at = None;
        match self.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(bytes))) => {
                meter
                    .pulled
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                Poll::Ready(Some(Ok(bytes)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(std::io::Error::other(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A multipart form being read part by part.
pub struct FormReader {
    multipart: multer::Multipart<'static>,
    meter: Arc<Meter>,
    limits: FormLimits,
    parts: usize,
}

/// One part of the form.
pub struct Part {
    field: multer::Field<'static>,
    meter: Arc<Meter>,
}

pub fn multipart_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(
        "invalid_multipart",
        format!("the request is not valid multipart/form-data: {e}"),
    )
}

fn overhead_error() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "multipart_overhead_too_large",
        format!(
            "a part's headers or the text before the first part are longer than {MAX_UNYIELDED_BYTES} bytes"
        ),
    )
}

impl FormReader {
    pub fn new(headers: &HeaderMap, body: Body, limits: FormLimits) -> Result<Self, ApiError> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let boundary = multer::parse_boundary(content_type).map_err(|_| {
            ApiError::bad_request(
                "invalid_multipart",
                "the request must be multipart/form-data with a boundary",
            )
        })?;
        let meter = Arc::new(Meter::default());
        let stream = MeteredBody {
            inner: body.into_data_stream(),
            meter: meter.clone(),
            held_back_at: None,
        };
        Ok(FormReader {
            multipart: multer::Multipart::new(stream, boundary),
            meter,
            limits,
            parts: 0,
        })
    }

    fn error(&self, e: multer::Error) -> ApiError {
        if self.meter.overflowed.load(Ordering::Relaxed) {
            overhead_error()
        } else {
            multipart_error(e)
        }
    }

    /// The next part, or `None` at the end of the form.
    pub async fn next_part(&mut self) -> Result<Option<Part>, ApiError> {
        let next = self.multipart.next_field().await;
        match next {
            Ok(Some(field)) => {
                self.parts += 1;
                self.meter.parts.fetch_add(1, Ordering::Relaxed);
                self.meter.advance();
                if self.parts > self.limits.max_parts {
                    return Err(ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "too_many_parts",
                        format!("the form has more than {} parts", self.limits.max_parts),
                    ));
                }
                Ok(Some(Part {
                    field,
                    meter: self.meter.clone(),
                }))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(self.error(e)),
        }
    }
}

impl Part {
    pub fn name(&self) -> &str {
        self.field.name().unwrap_or_default()
    }

    pub fn file_name(&self) -> Option<&str> {
        self.field.file_name()
    }

    pub fn content_type(&self) -> Option<String> {
        self.field.content_type().map(|m| m.to_string())
    }

    /// The next chunk of the part's data.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ApiError> {
        match self.field.chunk().await {
            Ok(Some(bytes)) => {
                self.meter
                    .yielded
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                self.meter.advance();
                Ok(Some(bytes))
            }
            Ok(None) => {
                self.meter.advance();
                Ok(None)
            }
            Err(e) if self.meter.overflowed.load(Ordering::Relaxed) => {
                let _ = e;
                Err(overhead_error())
            }
            Err(e) => Err(ApiError::bad_request(
                "invalid_multipart",
                format!("reading the {:?} part failed: {e}", clip(self.name())),
            )),
        }
    }

    /// The part as UTF-8 text of at most `max_bytes`; a longer part is refused after reading
    /// `max_bytes`, never buffered whole.
    pub async fn text(mut self, max_bytes: usize) -> Result<String, ApiError> {
        let mut buffer = Vec::new();
        while let Some(chunk) = self.chunk().await? {
            if buffer.len() + chunk.len() > max_bytes {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "field_too_large",
                    format!(
                        "form field {:?} is longer than {max_bytes} bytes",
                        clip(self.name())
                    ),
                ));
            }
            buffer.extend_from_slice(&chunk);
        }
        String::from_utf8(buffer).map_err(|_| {
            ApiError::bad_request(
                "invalid_utf8",
                format!("form field {:?} is not UTF-8 text", clip(self.name())),
            )
        })
    }
}

/// At most 64 characters of a client-supplied name, for error messages (never echo input whole).
pub fn clip(text: &str) -> String {
    const MAX: usize = 64;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        let mut clipped: String = text.chars().take(MAX).collect();
        clipped.push('…');
        clipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDARY: &str = "chaosboundary";

    fn headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={BOUNDARY}")
                .parse()
                .expect("header"),
        );
        h
    }

    fn text_part(name: &str, value: &str) -> String {
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        )
    }

    /// A body sent as the given pieces.
    fn body(pieces: Vec<Vec<u8>>) -> Body {
        Body::from_stream(futures::stream::iter(
            pieces
                .into_iter()
                .map(|p| Ok::<_, std::io::Error>(Bytes::from(p))),
        ))
    }

    async fn read_all(mut form: FormReader) -> Result<Vec<(String, usize)>, ApiError> {
        let mut parts = Vec::new();
        while let Some(mut part) = form.next_part().await? {
            let name = part.name().to_string();
            let mut n = 0;
            while let Some(chunk) = part.chunk().await? {
                n += chunk.len();
            }
            parts.push((name, n));
        }
        Ok(parts)
    }

    /// Seen in the chaos test after the ingester was frozen: the client's small fields and the
    /// start of the file arrived as one piece of body larger than the allowance, and the form
    /// was refused with 413 `multipart_overhead_too_large` because the parser handed out part
    /// headers and field ends, but no field data, between two polls.
    #[tokio::test]
    async fn small_fields_in_one_large_piece_of_body_are_read() {
        let file = vec![b'x'; 3 * MAX_UNYIELDED_BYTES as usize];
        let mut all = Vec::new();
        all.extend(text_part("description", "chaos upload").into_bytes());
        for tag in ["chaos", "c1", "more", "tags"] {
            all.extend(text_part("tags", tag).into_bytes());
        }
        all.extend(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.bin\"\r\n\r\n"
            )
            .into_bytes(),
        );
        all.extend(&file);
        all.extend(format!("\r\n--{BOUNDARY}--\r\n").into_bytes());
        // The first piece holds every small field and more than the allowance of the file.
        let first = 2 * MAX_UNYIELDED_BYTES as usize;
        let rest = all.split_off(first);
        let form =
            FormReader::new(&headers(), body(vec![all, rest]), FormLimits::UPLOAD).expect("form");
        let parts = read_all(form).await.expect("the form is read");
        let names: Vec<&str> = parts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["description", "tags", "tags", "tags", "tags", "file"]
        );
        assert_eq!(parts[5].1, file.len());
    }

    #[tokio::test]
    async fn a_part_header_that_never_ends_is_still_refused() {
        let mut start =
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"\r\nX-Pad: ")
                .into_bytes();
        start.extend(vec![b'a'; 64 * 1024]);
        let pieces: Vec<Vec<u8>> = std::iter::once(start)
            .chain((0..16).map(|_| vec![b'a'; 64 * 1024]))
            .collect();
        let form = FormReader::new(&headers(), body(pieces), FormLimits::UPLOAD).expect("form");
        let err = read_all(form).await.expect_err("refused");
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(err.code, "multipart_overhead_too_large");
    }
}
