//! Per-client sliding-window rate limit kept in Redis, so it holds across replicas.

use redis::aio::ConnectionManager;

// One atomic step: drop hits older than the window, admit if under the limit, else say when the
// oldest hit leaves the window. Redis' own clock, so replicas agree.
const SCRIPT: &str = r"
local key = KEYS[1]
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local count = redis.call('ZCARD', key)
if count < limit then
  redis.call('ZADD', key, now, now .. '-' .. t[2] .. '-' .. math.random(1000000))
  redis.call('PEXPIRE', key, window)
  return {1, 0}
end
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
return {0, tonumber(oldest[2]) + window - now}
";

#[derive(Clone)]
pub struct RateLimiter {
    redis: ConnectionManager,
    script: redis::Script,
    prefix: String,
    limit: u32,
    window_ms: u64,
}

pub enum Decision {
    Allowed,
    Limited { retry_after_ms: u64 },
}

impl RateLimiter {
    pub fn new(redis: ConnectionManager, prefix: &str, limit_per_minute: u32) -> Self {
        RateLimiter {
            redis,
            script: redis::Script::new(SCRIPT),
            prefix: format!("{prefix}:ratelimit"),
            limit: limit_per_minute,
            window_ms: 60_000,
        }
    }

    pub async fn check(&self, client: &str) -> redis::RedisResult<Decision> {
        let mut conn = self.redis.clone();
        let (allowed, retry_after_ms): (i64, i64) = self
            .script
            .key(format!("{}:{client}", self.prefix))
            .arg(self.window_ms)
            .arg(self.limit)
            .invoke_async(&mut conn)
            .await?;
        Ok(if allowed == 1 {
            Decision::Allowed
        } else {
            Decision::Limited {
                retry_after_ms: retry_after_ms.max(1) as u64,
            }
        })
    }
}
