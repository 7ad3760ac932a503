//! The web console at `/console/`: three static files compiled into the binary (no build step,
//! no CDN, nothing fetched at run time) and `config.json`, which tells the page where the
//! ingester is. The page talks to this node's API on the same origin and to the ingester (which
//! must list this node's origin in its CORS allow-list) for writes.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

const INDEX_HTML: &str = include_str!("../console/index.html");
const APP_JS: &str = include_str!("../console/app.js");
const APP_CSS: &str = include_str!("../console/app.css");

/// What the page learns from `GET /console/config.json`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ConsoleConfig {
    /// Base URL of the ingester as the browser reaches it; empty when writes are not offered.
    pub ingester_url: String,
}

/// Scripts, styles and images from this origin only; fetches to this origin and the ingester's.
fn content_security_policy(ingester_url: &str) -> String {
    let ingester = reqwest::Url::parse(ingester_url)
        .ok()
        .map(|url| url.origin())
        .filter(|origin| origin.is_tuple())
        .map(|origin| format!(" {}", origin.ascii_serialization()))
        .unwrap_or_default();
    format!(
        "default-src 'self'; connect-src 'self'{ingester}; img-src 'self' blob: data:; frame-ancestors 'none'"
    )
}

fn asset(content_type: &'static str, body: &'static str, policy: &str) -> Response {
    let policy = header::HeaderValue::from_str(policy)
        .unwrap_or_else(|_| header::HeaderValue::from_static("default-src 'self'"));
    (
        [
            (
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(content_type),
            ),
            // The files change only with the binary; a short cache keeps upgrades visible.
            (
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-cache"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                header::HeaderValue::from_static("nosniff"),
            ),
            (header::CONTENT_SECURITY_POLICY, policy),
        ],
        body,
    )
        .into_response()
}

/// The console's routes.
pub fn router<S: Clone + Send + Sync + 'static>(config: ConsoleConfig) -> Router<S> {
    let config_json = serde_json::to_string(&ConsoleConfig {
        ingester_url: config.ingester_url.trim_end_matches('/').to_string(),
    })
    .unwrap_or_else(|_| "{}".to_string());
    let policy: std::sync::Arc<str> = content_security_policy(&config.ingester_url).into();
    let (p1, p2, p3) = (policy.clone(), policy.clone(), policy);
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route(
            "/console/",
            get(move || async move { asset("text/html; charset=utf-8", INDEX_HTML, &p1) }),
        )
        .route(
            "/console/app.js",
            get(move || async move { asset("text/javascript; charset=utf-8", APP_JS, &p2) }),
        )
        .route(
            "/console/app.css",
            get(move || async move { asset("text/css; charset=utf-8", APP_CSS, &p3) }),
        )
        .route(
            "/console/config.json",
            get(move || {
                let body = config_json.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], body).into_response() }
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::content_security_policy;

    #[test]
    fn fetches_are_limited_to_this_origin_and_the_ingesters() {
        assert_eq!(
            content_security_policy("https://ingest.example.org:8443/base/"),
            "default-src 'self'; connect-src 'self' https://ingest.example.org:8443; \
             img-src 'self' blob: data:; frame-ancestors 'none'"
        );
        assert!(content_security_policy("").contains("connect-src 'self';"));
    }
}
