//! JWT auth for every `/api/` route: HS256 with a shared secret (or RS256 with a public key),
//! roles `admin` > `writer` > `reader`.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Reader,
    Writer,
    Admin,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "writer" => Ok(Role::Writer),
            "reader" => Ok(Role::Reader),
            other => Err(format!(
                "unknown role {other:?}: expected admin, writer or reader"
            )),
        }
    }
}

/// The token's claims: one definition, shared with the operator through the contract.
pub use artstore_contract::token::Claims;

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => artstore_contract::token::ROLE_ADMIN,
            Role::Writer => artstore_contract::token::ROLE_WRITER,
            Role::Reader => artstore_contract::token::ROLE_READER,
        }
    }
}

/// The caller, put into request extensions by [`require_auth`].
#[derive(Debug, Clone)]
pub struct Caller {
    pub sub: String,
    pub role: Role,
}

impl Caller {
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "role {:?} may not do this; {:?} or higher is required",
                self.role, role
            )))
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("missing bearer token"))
    }
}

/// Clock skew tolerated on `exp` and `nbf` unless configured (`ARTSTORE_JWT_LEEWAY_SECONDS`):
/// enough for hosts kept in step by NTP, short enough that an expired token dies promptly.
pub const DEFAULT_LEEWAY_SECONDS: u64 = 5;

/// Verifies tokens: signature, `exp` (required), `nbf` (when present), both with a small
/// leeway, a known role and a non-empty `sub`. Cheap to clone.
#[derive(Clone)]
pub struct Verifier {
    key: Arc<DecodingKey>,
    validation: Arc<Validation>,
}

fn validation(algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.leeway = DEFAULT_LEEWAY_SECONDS;
    validation
}

impl Verifier {
    pub fn hs256(secret: &[u8]) -> Self {
        Verifier {
            key: Arc::new(DecodingKey::from_secret(secret)),
            validation: Arc::new(validation(Algorithm::HS256)),
        }
    }

    pub fn rs256(public_key_pem: &[u8]) -> Result<Self, jsonwebtoken::errors::Error> {
        Ok(Verifier {
            key: Arc::new(DecodingKey::from_rsa_pem(public_key_pem)?),
            validation: Arc::new(validation(Algorithm::RS256)),
        })
    }

    /// The same verifier with another clock-skew leeway on `exp` and `nbf`.
    pub fn with_leeway(mut self, seconds: u64) -> Self {
        let mut validation = (*self.validation).clone();
        validation.leeway = seconds;
        self.validation = Arc::new(validation);
        self
    }

    pub fn verify(&self, token: &str) -> Result<Caller, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| token_error(&e))?;
        let role = data
            .claims
            .role
            .parse::<Role>()
            .map_err(|e| ApiError::unauthorized(format!("invalid token: {e}")))?;
        if data.claims.sub.trim().is_empty() {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token_subject",
                "the token's `sub` claim is empty",
            ));
        }
        Ok(Caller {
            sub: data.claims.sub,
            role,
        })
    }
}

/// Expired and not-yet-valid tokens get their own codes, so a client knows to fetch a new one
/// (or fix its clock) rather than treat the token as forged.
fn token_error(e: &jsonwebtoken::errors::Error) -> ApiError {
    use jsonwebtoken::errors::ErrorKind;
    let code = match e.kind() {
        ErrorKind::ExpiredSignature => "token_expired",
        ErrorKind::ImmatureSignature => "token_not_yet_valid",
        _ => "unauthorized",
    };
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        code,
        format!("invalid token: {e}"),
    )
}

/// Reads the shared secret file (trailing newline ignored).
pub fn read_secret_file(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let text = std::fs::read(path)?;
    let trimmed = text.trim_ascii_end();
    Ok(trimmed.to_vec())
}

/// Signs an HS256 token valid for `ttl_seconds`.
pub fn mint(
    secret: &[u8],
    sub: &str,
    role: Role,
    ttl_seconds: u64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = chrono::Utc::now().timestamp().max(0) as u64;
    let claims = Claims {
        sub: sub.to_string(),
        role: role.as_str().to_string(),
        iat: now,
        exp: now + ttl_seconds,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
}

/// Middleware: every request must carry a valid `Authorization: Bearer` token; the caller is
/// stored in the request's extensions. Routes check roles with [`Caller::require`].
pub async fn require_auth(
    State(verifier): State<Verifier>,
    mut request: Request,
    next: Next,
) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    let Some(token) = token else {
        return ApiError::unauthorized("missing bearer token").into_response();
    };
    match verifier.verify(token.trim()) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_verify_and_roles_order() {
        let token = mint(b"s3cret", "alice", Role::Writer, 60).expect("mint");
        let caller = Verifier::hs256(b"s3cret").verify(&token).expect("valid");
        assert_eq!(caller.sub, "alice");
        assert!(caller.require(Role::Reader).is_ok());
        assert!(caller.require(Role::Writer).is_ok());
        assert_eq!(
            caller.require(Role::Admin).map_err(|e| e.status.as_u16()),
            Err(403)
        );
        let wrong = Verifier::hs256(b"other").verify(&token);
        assert_eq!(wrong.map_err(|e| e.status.as_u16()).err(), Some(401));
    }

    fn signed(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"s3cret"),
        )
        .expect("sign")
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn code(result: Result<Caller, ApiError>) -> Option<String> {
        result.err().map(|e| {
            assert_eq!(e.status.as_u16(), 401);
            e.code.into_owned()
        })
    }

    #[test]
    fn expiry_is_enforced_with_a_small_leeway() {
        let verifier = Verifier::hs256(b"s3cret");
        // Expired 30 s ago: the library's old 60 s leeway let this through.
        let stale = signed(serde_json::json!({"sub": "a", "role": "reader", "exp": now() - 30}));
        assert_eq!(
            code(verifier.verify(&stale)).as_deref(),
            Some("token_expired")
        );
        // Within the default leeway of 5 s: still accepted.
        let just = signed(serde_json::json!({"sub": "a", "role": "reader", "exp": now() - 1}));
        assert!(verifier.verify(&just).is_ok());
        // The leeway is configurable.
        assert!(verifier.clone().with_leeway(60).verify(&stale).is_ok());
        assert_eq!(
            code(verifier.with_leeway(0).verify(&just)).as_deref(),
            Some("token_expired")
        );
        // A token without `exp` is refused.
        let forever = signed(serde_json::json!({"sub": "a", "role": "reader"}));
        assert!(Verifier::hs256(b"s3cret").verify(&forever).is_err());
    }

    #[test]
    fn not_before_is_honoured() {
        let verifier = Verifier::hs256(b"s3cret");
        let future = signed(serde_json::json!({
            "sub": "a", "role": "writer", "exp": now() + 600, "nbf": now() + 120
        }));
        assert_eq!(
            code(verifier.verify(&future)).as_deref(),
            Some("token_not_yet_valid")
        );
        let started = signed(serde_json::json!({
            "sub": "a", "role": "writer", "exp": now() + 600, "nbf": now() - 1
        }));
        assert!(verifier.verify(&started).is_ok());
    }

    #[test]
    fn an_empty_subject_is_refused() {
        let verifier = Verifier::hs256(b"s3cret");
        for sub in ["", "   "] {
            let token = signed(serde_json::json!({"sub": sub, "role": "admin", "exp": now() + 60}));
            assert_eq!(
                code(verifier.verify(&token)).as_deref(),
                Some("invalid_token_subject"),
                "sub {sub:?}"
            );
        }
    }
}
