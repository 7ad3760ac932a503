//! A short-lived admin token for the operator's own calls to a storage element.

use serde::Serialize;

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    role: &'a str,
    iat: u64,
    exp: u64,
}

/// HS256 token, role `admin`, valid for five minutes.
pub fn admin_token(secret: &str) -> Result<String, String> {
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
    let claims = Claims {
        sub: "artstore-operator",
        role: "admin",
        iat: now,
        exp: now + 300,
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| e.to_string())
}
