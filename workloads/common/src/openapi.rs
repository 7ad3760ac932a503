//! What every role's OpenAPI document shares: the bearer-token scheme, the error body with the
//! role's `code` values, the 401/403 every `/api/` route can answer, and the route that serves
//! the document (`GET /api/openapi.json`, no token: it describes the API, it holds no data).
//!
//! Each role derives its document with `utoipa` from its handlers' own types and passes it
//! through [`finish`]; `artstore openapi --check` and a test compare it with `docs/openapi/`.

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{OpenApi, Ref, RefOr};

/// Where every role serves its document.
pub const DOCUMENT_PATH: &str = "/api/openapi.json";
/// Name of the security scheme in the documents.
pub const BEARER: &str = "bearer";
/// Name of the error body's schema in the documents.
pub const ERROR_SCHEMA: &str = "ErrorBody";

/// Codes any route behind the token check may answer, whatever the role: the token's refusals
/// (`auth`), the request-head limits of [`crate::harden`], and an internal failure.
pub const COMMON_CODES: &[&str] = &[
    "unauthorized",
    "token_expired",
    "token_not_yet_valid",
    "invalid_token_subject",
    "forbidden",
    "uri_too_long",
    "headers_too_large",
    "internal",
];

/// Makes a derived document whole: the bearer scheme on every operation, the error body's `code`
/// limited to `codes` (plus [`COMMON_CODES`]), and a 401, 403, 414 and 431 on every operation.
pub fn finish(mut doc: OpenApi, codes: &[&str]) -> OpenApi {
    let components = doc.components.get_or_insert_with(Default::default);
    components.security_schemes.insert(
        BEARER.to_string(),
        RefOr::T(SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "HS256 (or RS256) JWT with claims `sub`, `role` (`admin`, `writer`, `reader`) and `exp`; \
                     `artstore token --role <role> --sub <name>` prints one.",
                ))
                .build(),
        )),
    );
    let mut all: Vec<&str> = COMMON_CODES.iter().chain(codes).copied().collect();
    all.sort_unstable();
    all.dedup();
    if let Some(RefOr::T(Schema::Object(error))) = components.schemas.get_mut(ERROR_SCHEMA)
        && let Some(RefOr::T(Schema::Object(code))) = error.properties.get_mut("code")
        && code.schema_type == Type::String.into()
    {
        code.enum_values = Some(all.iter().map(|c| (*c).into()).collect());
    }
    doc.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
    for (status, description) in [
        (
            "401",
            "Missing, malformed or wrongly signed bearer token (`unauthorized`), expired \
             (`token_expired`), not yet valid (`token_not_yet_valid`) or with an empty `sub` \
             (`invalid_token_subject`).",
        ),
        ("403", "The token's role may not do this (`forbidden`)."),
        (
            "414",
            "The path and query string are longer than the role's limit (`uri_too_long`).",
        ),
        (
            "431",
            "Too many header fields, or too many bytes of them (`headers_too_large`).",
        ),
    ] {
        respond_everywhere(&mut doc, status, description);
    }
    doc
}

/// Adds the error answer `status` to every operation that does not describe it already.
pub fn respond_everywhere(doc: &mut OpenApi, status: &str, description: &str) {
    for item in doc.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.post,
            &mut item.patch,
            &mut item.delete,
            &mut item.put,
        ]
        .into_iter()
        .flatten()
        {
            operation
                .responses
                .responses
                .entry(status.to_string())
                .or_insert_with(|| error_response(description));
        }
    }
}

fn error_response(description: &str) -> RefOr<utoipa::openapi::response::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(ERROR_SCHEMA)))
                    .build(),
            )
            .build(),
    )
}

/// The document as served and committed: pretty JSON with a final newline.
pub fn to_json(doc: &OpenApi) -> String {
    let mut text = doc
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

/// `GET /api/openapi.json`, outside the token check.
pub fn router<S: Clone + Send + Sync + 'static>(doc: &OpenApi) -> Router<S> {
    let body: Arc<str> = to_json(doc).into();
    Router::new().route(
        DOCUMENT_PATH,
        get(move || {
            let body = body.clone();
            async move {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    body.to_string(),
                )
                    .into_response()
            }
        }),
    )
}
