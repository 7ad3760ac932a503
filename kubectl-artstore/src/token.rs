//! `kubectl artstore token`: a bearer token signed with the archive's JWT Secret, in the
//! claims the contract fixes (`artstore_contract::token`).

use artstore_contract::token::{ALGORITHM, Claims};

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("signing failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
    #[error("the JWT Secret's key is empty")]
    EmptySecret,
}

/// The secret as workloads read it (`read_secret_file`): trailing whitespace is not part of it.
pub fn secret_bytes(raw: &[u8]) -> Result<&[u8], TokenError> {
    let trimmed = raw.trim_ascii_end();
    if trimmed.is_empty() {
        Err(TokenError::EmptySecret)
    } else {
        Ok(trimmed)
    }
}

pub fn mint(
    secret: &[u8],
    role: &str,
    sub: &str,
    ttl: std::time::Duration,
    now: u64,
) -> Result<String, TokenError> {
    debug_assert_eq!(ALGORITHM, "HS256");
    let claims = Claims {
        sub: sub.to_string(),
        role: role.to_string(),
        iat: now,
        exp: now + ttl.as_secs(),
    };
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )?)
}
