//! `Idempotency-Key`: the first request with a key stores the file; a repeat with the same
//! content gets the first record back, a repeat with other content is refused, and concurrent
//! requests with one key store the file once (the others wait for the first to finish).
//! Keys are scoped by client and live in Redis, so every replica sees them.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use artstore_common::ApiError;

/// How long a claim survives an ingester that dies mid-upload: its owner renews it every
/// [`HEARTBEAT`] while storing, so a claim left by a dead ingester is gone within seconds.
const PENDING_TTL_SECONDS: u64 = 15;
const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long a second request waits for the first one with the same key.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(120);

#[derive(Serialize, Deserialize)]
struct Entry {
    fingerprint: String,
    /// `None` while the first request is still storing the file.
    record: Option<serde_json::Value>,
    /// Which request holds a pending claim (renewals and releases touch only their own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
}

/// A pending claim held by this request.
pub struct ClaimToken {
    /// The pending entry exactly as stored.
    pending: String,
}

/// Renews the TTL of a pending entry only if it is still this request's.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 0";

/// Replaces a pending entry with its result, and forgets the key's attempts, only if the entry
/// is still this request's.
const COMPLETE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
redis.call('DEL', KEYS[2])
return 1";

/// Deletes a pending entry only if it is still this request's.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// An upload another request with the same key sent to an element without recording a result.
#[derive(Debug, Clone)]
pub struct EarlierAttempt {
    pub element_id: String,
    pub upload_id: String,
    /// As stored in the attempts set.
    entry: String,
}

pub enum Claim {
    /// This request owns the key: store the file, then `complete` or `release`.
    Owner(ClaimToken),
    /// The key was used with the same content: here is the first result.
    Replay(serde_json::Value),
}

#[derive(Clone)]
pub struct Idempotency {
    redis: ConnectionManager,
    prefix: String,
    ttl_seconds: u64,
}

/// Validates the header value: 1 to 255 visible ASCII characters.
pub fn parse_key(value: &str) -> Result<String, ApiError> {
    let ok = !value.is_empty() && value.len() <= 255 && value.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(value.to_string())
    } else {
        Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        ))
    }
}

fn redis_error(e: redis::RedisError) -> ApiError {
    ApiError::unavailable(
        "redis_unavailable",
        format!("idempotency store unavailable: {e}"),
    )
    .with_retry_after(5)
}

impl Idempotency {
    pub fn new(redis: ConnectionManager, prefix: &str, ttl_seconds: u64) -> Self {
        Idempotency {
            redis,
            prefix: format!("{prefix}:idempotency"),
            ttl_seconds,
        }
    }

    fn redis_key(&self, client: &str, key: &str) -> String {
        format!("{}:{client}:{key}", self.prefix)
    }

    /// The upload ids sent to elements under a key whose result is not recorded yet.
    fn attempts_key(&self, client: &str, key: &str) -> String {
        format!("{}:{client}:{key}:attempts", self.prefix)
    }

    /// Records that upload `upload_id` is about to go to element `element_id` under the key, and
    /// returns the attempts other requests with the key recorded before: their requests failed,
    /// or their ingester died, possibly after the element committed. The caller cancels those
    /// before sending. One round trip.
    pub async fn record_attempt(
        &self,
        client: &str,
        key: &str,
        element_id: &str,
        upload_id: &str,
    ) -> Result<Vec<EarlierAttempt>, ApiError> {
        let attempts = self.attempts_key(client, key);
        let mut conn = self.redis.clone();
        let (members,): (Vec<String>,) = redis::pipe()
            .atomic()
            .smembers(&attempts)
            .sadd(&attempts, format!("{element_id} {upload_id}"))
            .ignore()
            .expire(&attempts, self.ttl_seconds as i64)
            .ignore()
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(members
            .into_iter()
            .filter_map(|entry| {
                let (element_id, id) = entry.split_once(' ')?;
                (id != upload_id).then(|| EarlierAttempt {
                    element_id: element_id.to_string(),
                    upload_id: id.to_string(),
                    entry: entry.clone(),
                })
            })
            .collect())
    }

    /// Forgets earlier attempts once they are cancelled.
    pub async fn forget_attempts(&self, client: &str, key: &str, attempts: &[EarlierAttempt]) {
        if attempts.is_empty() {
            return;
        }
        let entries: Vec<&str> = attempts.iter().map(|a| a.entry.as_str()).collect();
        let mut conn = self.redis.clone();
        let removed: redis::RedisResult<i64> =
            conn.srem(self.attempts_key(client, key), entries).await;
        if let Err(e) = removed {
            // They are cancelled; the next attempt cancels them again (idempotent).
            tracing::warn!(error = %e, key, "could not forget cancelled attempts");
        }
    }

    /// The result recorded under the key, if any.
    pub async fn recorded(
        &self,
        client: &str,
        key: &str,
    ) -> Result<Option<serde_json::Value>, ApiError> {
        let mut conn = self.redis.clone();
        let text: Option<String> = conn
            .get(self.redis_key(client, key))
            .await
            .map_err(redis_error)?;
        Ok(text
            .and_then(|t| serde_json::from_str::<Entry>(&t).ok())
            .and_then(|e| e.record))
    }

    pub async fn claim(
        &self,
        client: &str,
        key: &str,
        fingerprint: &str,
    ) -> Result<Claim, ApiError> {
        let redis_key = self.redis_key(client, key);
        let mut conn = self.redis.clone();
        let pending = serde_json::to_string(&Entry {
            fingerprint: fingerprint.to_string(),
            record: None,
            owner: Some(uuid::Uuid::new_v4().to_string()),
        })
        .map_err(ApiError::internal)?;
        let deadline = Instant::now() + WAIT_FOR_FIRST;
        loop {
            let claimed: Option<String> = redis::cmd("SET")
                .arg(&redis_key)
                .arg(&pending)
                .arg("NX")
                .arg("EX")
                .arg(PENDING_TTL_SECONDS)
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
            if claimed.is_some() {
                return Ok(Claim::Owner(ClaimToken { pending }));
            }
            let existing: Option<String> = conn.get(&redis_key).await.map_err(redis_error)?;
            if let Some(text) = existing {
                let entry: Entry = serde_json::from_str(&text).map_err(ApiError::internal)?;
                if entry.fingerprint != fingerprint {
                    return Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "idempotency_key_reused",
                        "this Idempotency-Key was already used with different content",
                    ));
                }
                if let Some(record) = entry.record {
                    return Ok(Claim::Replay(record));
                }
            }
            if Instant::now() > deadline {
                return Err(ApiError::conflict(
                    "idempotency_in_progress",
                    "a request with this Idempotency-Key is still being processed",
                )
                .with_retry_after(5));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Records `record` as the key's result, if the key is still this request's claim (a claim
    /// that expired while its owner was stalled may have passed to another request, which
    /// cancelled this one's upload); in the same step forgets the key's attempts. `Ok(false)`:
    /// the claim was no longer ours and nothing was written.
    pub async fn complete(
        &self,
        client: &str,
        key: &str,
        claim: &ClaimToken,
        fingerprint: &str,
        record: &serde_json::Value,
    ) -> Result<bool, ApiError> {
        let entry = Entry {
            fingerprint: fingerprint.to_string(),
            record: Some(record.clone()),
            owner: None,
        };
        let text = serde_json::to_string(&entry).map_err(ApiError::internal)?;
        let mut conn = self.redis.clone();
        let written: i64 = redis::Script::new(COMPLETE)
            .key(self.redis_key(client, key))
            .key(self.attempts_key(client, key))
            .arg(&claim.pending)
            .arg(text)
            .arg(self.ttl_seconds)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(written == 1)
    }

    /// Forgets a claim whose request failed, so the client can retry with the same key.
    pub async fn release(&self, client: &str, key: &str, claim: &ClaimToken) {
        let mut conn = self.redis.clone();
        let deleted: redis::RedisResult<i64> = redis::Script::new(RELEASE)
            .key(self.redis_key(client, key))
            .arg(&claim.pending)
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = deleted {
            // The claim then expires on its own within PENDING_TTL_SECONDS.
            tracing::warn!(error = %e, key, "could not release idempotency key");
        }
    }

    /// Renews the claim every few seconds; never returns (drop it when the store is done).
    pub async fn keep_alive(&self, client: &str, key: &str, claim: &ClaimToken) {
        let redis_key = self.redis_key(client, key);
        let mut conn = self.redis.clone();
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            let renewed: redis::RedisResult<i64> = redis::Script::new(RENEW)
                .key(&redis_key)
                .arg(&claim.pending)
                .arg(PENDING_TTL_SECONDS)
                .invoke_async(&mut conn)
                .await;
            if let Err(e) = renewed {
                tracing::warn!(error = %e, key, "could not renew idempotency claim");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn idempotency() -> Idempotency {
        let client = redis::Client::open(artstore_testsupport::services().redis_url.as_str())
            .expect("redis client");
        let conn = ConnectionManager::new(client).await.expect("redis");
        Idempotency::new(conn, &artstore_testsupport::unique_prefix("idem"), 60)
    }

    async fn owner(idem: &Idempotency, key: &str) -> ClaimToken {
        match idem.claim("c", key, "print").await {
            Ok(Claim::Owner(claim)) => claim,
            _ => panic!("expected to own the key"),
        }
    }

    /// A claim that expired while its owner stalled passed to another request: the stalled
    /// owner's result is not written over the new owner's, and its attempt is the new owner's
    /// earlier attempt to cancel.
    #[tokio::test]
    async fn a_stalled_owner_neither_overwrites_nor_hides_its_attempt() {
        let idem = idempotency().await;
        let stalled = owner(&idem, "k").await;
        assert!(
            idem.record_attempt("c", "k", "se-a", "u1")
                .await
                .expect("record")
                .is_empty()
        );
        // Its claim expires.
        let mut conn = idem.redis.clone();
        let () = conn.del(idem.redis_key("c", "k")).await.expect("DEL");

        let next = owner(&idem, "k").await;
        let earlier = idem
            .record_attempt("c", "k", "se-b", "u2")
            .await
            .expect("record");
        assert_eq!(
            earlier
                .iter()
                .map(|a| (a.element_id.as_str(), a.upload_id.as_str()))
                .collect::<Vec<_>>(),
            vec![("se-a", "u1")]
        );
        let theirs = serde_json::json!({"file_id": "stalled"});
        let ours = serde_json::json!({"file_id": "next"});
        assert!(
            !idem
                .complete("c", "k", &stalled, "print", &theirs)
                .await
                .expect("complete")
        );
        assert_eq!(idem.recorded("c", "k").await.expect("read"), None);
        assert!(
            idem.complete("c", "k", &next, "print", &ours)
                .await
                .expect("complete")
        );
        assert_eq!(idem.recorded("c", "k").await.expect("read"), Some(ours));
        // Recording the result forgot the attempts.
        let _ = owner(&idem, "other").await;
        assert!(
            idem.record_attempt("c", "k", "se-c", "u3")
                .await
                .expect("record")
                .is_empty()
        );
    }
}
