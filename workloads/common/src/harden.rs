//! The layer every role's router gets last: security headers on every response, request-head
//! limits answered in JSON, and the contract's JSON error body on every error status — including
//! the ones axum or tower produce themselves (404 of an unknown route, 405, 413 of a body limit),
//! which come with an empty or plain-text body.

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::ApiError;

/// Limits on a request's head, checked before any handler runs.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Path plus query string, in bytes (414 above).
    pub max_uri_bytes: usize,
    /// Number of header fields (431 above).
    pub max_headers: usize,
    /// Names plus values of every header field, in bytes (431 above).
    pub max_header_bytes: usize,
}

impl HeadLimits {
    /// For the public APIs (ingester, query node): no route needs a long URI.
    pub const PUBLIC: HeadLimits = HeadLimits {
        max_uri_bytes: 8 * 1024,
        max_headers: 100,
        max_header_bytes: 32 * 1024,
    };
    /// For storage elements: the ingester passes an upload's metadata as query parameters
    /// (percent-encoded, so up to three bytes per byte of text), which needs a longer URI. Just
    /// under the HTTP server's own hard limit of 65534 bytes, so the JSON answer comes first.
    pub const ELEMENT: HeadLimits = HeadLimits {
        max_uri_bytes: 64_000,
        max_headers: 100,
        max_header_bytes: 32 * 1024,
    };
}

/// Header fields for a JSON API that is never meant to be rendered or framed by a browser.
/// Set only when the handler did not set its own (a download keeps its `Cache-Control`).
const SECURITY_HEADERS: [(&str, &str); 5] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
];

/// Wraps `router` (the role's whole router, merged) in the shared layers.
pub fn harden(router: Router, limits: HeadLimits) -> Router {
    let mut router =
        router
            .layer(middleware::map_response(json_errors))
            .layer(middleware::from_fn(move |request: Request, next: Next| {
                check_head(limits, request, next)
            }));
    for (name, value) in SECURITY_HEADERS {
        router = router.layer(SetResponseHeaderLayer::if_not_present(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        ));
    }
    router
}

async fn check_head(limits: HeadLimits, request: Request, next: Next) -> Response {
    let uri_bytes = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if uri_bytes > limits.max_uri_bytes {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!(
                "the request URI is longer than {} bytes",
                limits.max_uri_bytes
            ),
        )
        .into_response();
    }
    let headers = request.headers();
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > limits.max_headers || header_bytes > limits.max_header_bytes {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "at most {} header fields of {} bytes in all are accepted",
                limits.max_headers, limits.max_header_bytes
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// The stable code of an error status whose body did not say.
fn code_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        406 => "not_acceptable",
        408 => "request_timeout",
        411 => "length_required",
        413 => "payload_too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        422 => "unprocessable_entity",
        429 => "rate_limited",
        431 => "headers_too_large",
        500 => "internal",
        501 => "not_implemented",
        502 => "bad_gateway",
        503 => "unavailable",
        504 => "gateway_timeout",
        _ if status.is_client_error() => "client_error",
        _ => "server_error",
    }
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"))
}

/// Headers of the original error worth keeping on the JSON one.
const KEPT: [HeaderName; 3] = [header::RETRY_AFTER, header::ALLOW, header::WWW_AUTHENTICATE];

async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    // The original body (empty or plain text from a framework layer) is dropped unread: it may
    // be large, and the status says what happened.
    let message = match status.canonical_reason() {
        Some(reason) => reason.to_string(),
        None => format!("HTTP {}", status.as_u16()),
    };
    let mut json = ApiError::new(status, code_for(status), message).into_response();
    for name in KEPT {
        if let Some(value) = response.headers().get(&name) {
            json.headers_mut().insert(name, value.clone());
        }
    }
    json
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::extract::DefaultBodyLimit;
    use axum::routing::{get, post};
    use tower::ServiceExt;

    fn app() -> Router {
        let router = Router::new()
            .route("/ok", get(|| async { "fine" }))
            .route("/echo", post(|body: axum::body::Bytes| async move { body }))
            .route(
                "/fails",
                get(|| async { ApiError::bad_request("own_code", "its own message") }),
            )
            .layer(DefaultBodyLimit::max(16));
        harden(router, HeadLimits::PUBLIC)
    }

    async fn call(request: Request) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let response = app().oneshot(request).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, headers, json)
    }

    fn get_request(uri: &str) -> Request {
        Request::get(uri).body(Body::empty()).expect("request")
    }

    #[tokio::test]
    async fn every_response_has_the_security_headers() {
        for uri in ["/ok", "/fails", "/nowhere"] {
            let (_, headers, _) = call(get_request(uri)).await;
            assert_eq!(headers["x-content-type-options"], "nosniff", "{uri}");
            assert_eq!(headers["x-frame-options"], "DENY", "{uri}");
            assert_eq!(headers["cache-control"], "no-store", "{uri}");
            assert!(headers.contains_key("content-security-policy"), "{uri}");
        }
    }

    #[tokio::test]
    async fn framework_errors_get_the_json_body() {
        let (status, _, body) = call(get_request("/nowhere")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["code"], "not_found");

        let (status, headers, body) =
            call(Request::delete("/ok").body(Body::empty()).expect("request")).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(body["code"], "method_not_allowed");
        assert!(headers.contains_key(header::ALLOW), "Allow is kept");

        let (status, _, body) = call(
            Request::post("/echo")
                .body(Body::from(vec![b'x'; 64]))
                .expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["code"], "payload_too_large");

        // A handler's own JSON error is left as it is.
        let (status, _, body) = call(get_request("/fails")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["code"], "own_code");
        assert_eq!(body["message"], "its own message");
    }

    #[tokio::test]
    async fn oversized_heads_get_414_and_431_in_json() {
        let long = format!("/ok?q={}", "a".repeat(9000));
        let (status, _, body) = call(get_request(&long)).await;
        assert_eq!(status, StatusCode::URI_TOO_LONG);
        assert_eq!(body["code"], "uri_too_long");

        let mut many = Request::get("/ok");
        for i in 0..101 {
            many = many.header(format!("x-h{i}"), "v");
        }
        let (status, _, body) = call(many.body(Body::empty()).expect("request")).await;
        assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(body["code"], "headers_too_large");

        let big = Request::get("/ok")
            .header("x-big", "b".repeat(40 * 1024))
            .body(Body::empty())
            .expect("request");
        let (status, _, body) = call(big).await;
        assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(body["code"], "headers_too_large");

        let (status, _, _) = call(get_request("/ok")).await;
        assert_eq!(status, StatusCode::OK);
    }
}
