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

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // The files change only with the binary; a short cache keeps upgrades visible.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; connect-src *; img-src 'self' blob: data:; frame-ancestors 'none'",
            ),
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
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route(
            "/console/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/console/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/console/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route(
            "/console/config.json",
            get(move || {
                let body = config_json.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], body).into_response() }
            }),
        )
}
