//! A short-lived admin token for the operator's own calls to a storage element, in the shape
//! `artstore_contract::token` writes down.

use artstore_contract::token::{Claims, ROLE_ADMIN};

/// HS256 token, role `admin`, valid for five minutes.
pub fn admin_token(secret: &str) -> Result<String, String> {
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
    let claims = Claims {
        sub: "artstore-operator".into(),
        role: ROLE_ADMIN.into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_carries_the_contract_claims_and_verifies_with_the_secret() {
        let token = admin_token("s3cret").expect("sign");
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.validate_exp = true;
        let data = jsonwebtoken::decode::<Claims>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(b"s3cret"),
            &v,
        )
        .expect("verifies");
        assert_eq!(data.claims.role, "admin");
        assert!(data.claims.exp > data.claims.iat);
        assert!(
            jsonwebtoken::decode::<Claims>(
                &token,
                &jsonwebtoken::DecodingKey::from_secret(b"other"),
                &v
            )
            .is_err()
        );
    }
}
