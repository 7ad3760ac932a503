//! Per-client sliding-window rate limit kept in Redis, so it holds across replicas.
//!
//! Every admitted request is a member of the client's sorted set, scored by its time; a request
//! is admitted while fewer than the limit are scored within the last minute. A replica that a
//! client keeps busy does not ask Redis for each request: it reserves as many hits as the client
//! sent it in the last [`LEASE_HOLD`] (a lease), all scored at the end of the hold, and admits
//! from them locally until the hold ends. A hit is therefore never counted earlier than it
//! happened, so no minute ever admits more than the limit; what a lease did not use goes back
//! when the hold ends (or with the next reservation). The cost: while one replica holds unused
//! hits, another may refuse the same client up to [`LEASE_HOLD`] early.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex as SyncMutex};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use tokio::sync::{Mutex, OwnedMutexGuard};

/// How long a lease's hits may be used, and how far ahead of the reservation they are scored.
pub const LEASE_HOLD: Duration = Duration::from_millis(100);
/// The most hits one lease reserves (also bounds the script's arguments).
const MAX_LEASE: u32 = 1000;
/// After Redis failed to answer, requests of the client pass without asking for this long, so
/// requests queued behind the failed call do not each wait for their own timeout.
const FAIL_OPEN_FOR: Duration = Duration::from_secs(1);
/// Clients remembered before idle ones are forgotten.
const MAX_CLIENTS: usize = 4096;

// Removes the unused hits `<ARGV[1]>:<ARGV[2]>` to `<ARGV[1]>:<ARGV[3] - 1>` of a lease; the
// first step of both scripts, so both take those three arguments first.
macro_rules! give_back_lua {
    () => {
        r"
for i = tonumber(ARGV[2]), tonumber(ARGV[3]) - 1 do
  redis.call('ZREM', KEYS[1], ARGV[1] .. ':' .. i)
end
"
    };
}

// One atomic step: give back the unused hits of the previous lease, drop hits older than the
// window, then reserve up to `want` hits scored `hold` ahead, or, with none left, say when the
// oldest hit leaves the window. Redis' own clock, so replicas agree.
const RESERVE: &str = concat!(
    give_back_lua!(),
    r"
local key = KEYS[1]
local window = tonumber(ARGV[4])
local limit = tonumber(ARGV[5])
local want = tonumber(ARGV[6])
local hold = tonumber(ARGV[7])
local tag = ARGV[8]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local granted = math.min(want, limit - redis.call('ZCARD', key))
if granted > 0 then
  local members = {}
  for i = 0, granted - 1 do
    members[#members + 1] = now + hold
    members[#members + 1] = tag .. ':' .. i
  end
  redis.call('ZADD', key, unpack(members))
  redis.call('PEXPIRE', key, window + hold)
  return {granted, 0}
end
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
if oldest[2] == nil then
  return {0, window}
end
-- A lease's hits are scored ahead; a client is never told to wait more than the window.
return {0, math.min(tonumber(oldest[2]) + window - now, window)}
"
);

// The unused hits of a lease whose hold ended, given back.
const GIVE_BACK: &str = concat!(give_back_lua!(), "return 0\n");

// Loaded once: a limiter is cloned into every reservation and hold-end task.
static RESERVE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RESERVE));
static GIVE_BACK_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(GIVE_BACK));

pub enum Decision {
    Allowed,
    Limited { retry_after_ms: u64 },
}

/// Hits reserved in Redis, members `<tag>:0` to `<tag>:<granted - 1>`.
struct Lease {
    tag: String,
    granted: u32,
    used: u32,
    until: Instant,
}

impl Lease {
    fn take(&mut self, now: Instant) -> bool {
        let free = now < self.until && self.used < self.granted;
        if free {
            self.used += 1;
        }
        free
    }
}

/// What one replica knows of one client.
#[derive(Default)]
struct Client {
    lease: Option<Lease>,
    /// Requests in the current and the previous [`LEASE_HOLD`]: the size of the next lease.
    seen_now: u32,
    seen_before: u32,
    period_start: Option<Instant>,
    failed_at: Option<Instant>,
}

impl Client {
    fn count_request(&mut self, now: Instant) {
        let start = *self.period_start.get_or_insert(now);
        let periods = now.duration_since(start).as_millis() / LEASE_HOLD.as_millis();
        if periods > 0 {
            self.seen_before = if periods == 1 { self.seen_now } else { 0 };
            self.seen_now = 0;
            self.period_start = Some(start + LEASE_HOLD * periods as u32);
        }
        self.seen_now = self.seen_now.saturating_add(1);
    }

    fn wanted(&self) -> u32 {
        self.seen_now.max(self.seen_before).clamp(1, MAX_LEASE)
    }
}

#[derive(Clone)]
pub struct RateLimiter {
    redis: ConnectionManager,
    prefix: String,
    limit: u32,
    window_ms: u64,
    replica: String,
    leases: Arc<AtomicU64>,
    clients: Arc<SyncMutex<HashMap<String, Arc<Mutex<Client>>>>>,
    round_trips: Arc<AtomicU64>,
}

impl RateLimiter {
    pub fn new(redis: ConnectionManager, prefix: &str, limit_per_minute: u32) -> Self {
        RateLimiter {
            redis,
            prefix: format!("{prefix}:ratelimit"),
            limit: limit_per_minute,
            window_ms: 60_000,
            replica: uuid::Uuid::new_v4().simple().to_string(),
            leases: Arc::default(),
            clients: Arc::default(),
            round_trips: Arc::default(),
        }
    }

    /// Calls to Redis so far (reservations and give-backs).
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    fn key(&self, client: &str) -> String {
        format!("{}:{client}", self.prefix)
    }

    fn client(&self, client: &str) -> Arc<Mutex<Client>> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = clients.get(client) {
            return state.clone();
        }
        if clients.len() >= MAX_CLIENTS {
            // A client not being checked now and holding no unused hits is only its request
            // counts: forgetting it costs its next request a round trip.
            clients.retain(|_, state| {
                state.try_lock().map_or(true, |s| {
                    s.lease.as_ref().is_some_and(|l| l.used < l.granted)
                })
            });
        }
        clients.entry(client.to_string()).or_default().clone()
    }

    pub async fn check(&self, client: &str) -> redis::RedisResult<Decision> {
        let mut state = self.client(client).lock_owned().await;
        let now = Instant::now();
        state.count_request(now);
        if state.lease.as_mut().is_some_and(|lease| lease.take(now)) {
            return Ok(Decision::Allowed);
        }
        if state.failed_at.is_some_and(|at| now < at + FAIL_OPEN_FOR) {
            return Ok(Decision::Allowed);
        }
        // The reservation runs to its end even if this request is dropped meanwhile (its client
        // hung up): the hits it takes in Redis are then still known here, and given back.
        let limiter = self.clone();
        let client = client.to_string();
        tokio::spawn(async move { limiter.reserve(&client, state, now).await })
            .await
            .unwrap_or_else(|e| {
                Err(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "rate-limit reservation did not finish",
                    e.to_string(),
                )))
            })
    }

    /// Reserves a new lease for the client (giving back the previous lease's unused hits in the
    /// same call) and admits the request from it.
    async fn reserve(
        &self,
        client: &str,
        mut state: OwnedMutexGuard<Client>,
        now: Instant,
    ) -> redis::RedisResult<Decision> {
        let tag = format!(
            "{}-{}",
            self.replica,
            self.leases.fetch_add(1, Ordering::Relaxed)
        );
        let mut call = RESERVE_SCRIPT.key(self.key(client));
        match &state.lease {
            Some(previous) => call
                .arg(&previous.tag)
                .arg(previous.used)
                .arg(previous.granted),
            None => call.arg("").arg(0).arg(0),
        };
        call.arg(self.window_ms)
            .arg(self.limit)
            .arg(state.wanted())
            .arg(LEASE_HOLD.as_millis() as u64)
            .arg(&tag);
        let mut conn = self.redis.clone();
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let answer: redis::RedisResult<(i64, i64)> = call.invoke_async(&mut conn).await;
        // On an error the previous lease stays: giving its hits back again is harmless.
        let (granted, retry_after_ms) = answer.inspect_err(|_| {
            state.failed_at = Some(Instant::now());
        })?;
        state.failed_at = None;
        state.lease = None;
        if granted <= 0 {
            return Ok(Decision::Limited {
                retry_after_ms: retry_after_ms.max(1) as u64,
            });
        }
        let granted = granted as u32;
        state.lease = Some(Lease {
            tag: tag.clone(),
            granted,
            used: 1,
            until: now + LEASE_HOLD,
        });
        if granted > 1 {
            self.give_back_when_held(client, tag);
        }
        Ok(Decision::Allowed)
    }

    /// Once the hold of lease `tag` ends, gives back what it did not use, unless a reservation
    /// (which gives it back itself) replaced it first.
    fn give_back_when_held(&self, client: &str, tag: String) {
        let limiter = self.clone();
        let client = client.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(LEASE_HOLD).await;
            let state = limiter.client(&client);
            let Some(lease) = state.lock().await.lease.take_if(|lease| lease.tag == tag) else {
                return;
            };
            if lease.used == lease.granted {
                return;
            }
            let mut conn = limiter.redis.clone();
            limiter.round_trips.fetch_add(1, Ordering::Relaxed);
            let given: redis::RedisResult<i64> = GIVE_BACK_SCRIPT
                .key(limiter.key(&client))
                .arg(&lease.tag)
                .arg(lease.used)
                .arg(lease.granted)
                .invoke_async(&mut conn)
                .await;
            if let Err(e) = given {
                // Counted until they leave the window: stricter, never looser.
                tracing::debug!(error = %e, "unused rate-limit hits not given back");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_sized_by_the_requests_of_the_last_hold() {
        let start = Instant::now();
        let mut client = Client::default();
        client.count_request(start);
        assert_eq!(client.wanted(), 1);
        for _ in 0..9 {
            client.count_request(start + Duration::from_millis(10));
        }
        assert_eq!(client.wanted(), 10);
        // In the next hold the previous one's count still sizes the lease ...
        client.count_request(start + LEASE_HOLD + Duration::from_millis(1));
        assert_eq!(client.wanted(), 10);
        // ... but not once a whole hold passed without requests.
        client.count_request(start + LEASE_HOLD * 3);
        assert_eq!(client.wanted(), 1);
    }

    #[test]
    fn a_lease_admits_its_hits_only_within_its_hold() {
        let now = Instant::now();
        let mut lease = Lease {
            tag: "t".into(),
            granted: 2,
            used: 1,
            until: now + LEASE_HOLD,
        };
        assert!(lease.take(now));
        assert!(!lease.take(now), "all used");
        lease.used = 0;
        assert!(!lease.take(now + LEASE_HOLD), "hold over");
    }
}
