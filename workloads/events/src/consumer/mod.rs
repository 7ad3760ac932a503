//! Consuming a stream with a consumer group, generic over what is done with the entries.
//!
//! One loop per replica, with a stable consumer name:
//! - at start it re-reads its own pending entries (`XREADGROUP … 0`): what a previous run of the
//!   same replica read but did not acknowledge (a crash between commit and XACK);
//! - then reads new entries in batches (`XREADGROUP … >` with BLOCK);
//! - every `claim_interval` it takes over entries idle longer than `claim_min_idle` from any
//!   consumer, itself included (`XAUTOCLAIM`), which is how a failed entry is retried;
//! - a batch is handed to the [`Applier`] in one call (one transaction) and acknowledged only
//!   after it returns `Ok`;
//! - an entry that cannot be decoded, or that was refused `max_deliveries` times, is copied to
//!   the dead-letter stream with the reason and acknowledged, so it never blocks the group;
//! - a missing stream or group (`NOGROUP`) is recreated and the loop carries on;
//! - Redis or the applier's store unavailable: back off and retry the same entries; the
//!   delivery count is not spent on outages;
//! - `XINFO` tells the group's pending count and lag, and whether entries this group never saw
//!   were trimmed away, in which case the applier is told to resync ([`Gap`]).
//!
//! Layers: [`reply`] parses replies (pure), [`inspect`] reads the group's state, [`machine`]
//! holds the read position as a state machine, and the loop in `run` drives them.

mod inspect;
pub mod machine;
pub mod reply;
mod run;

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

pub use inspect::{GroupInfo, read_group_info};
pub use reply::{AutoClaimReply, RawEntry, parse_xautoclaim, parse_xreadgroup};
pub use run::Consumer;

/// Field names the consumer adds to a dead-letter entry. Original fields with these names are
/// not copied, so the reason recorded is always the consumer's own.
pub mod dead_letter_fields {
    pub const REASON: &str = "dead_letter_reason";
    pub const SOURCE_STREAM: &str = "dead_letter_source_stream";
    pub const SOURCE_ID: &str = "dead_letter_source_id";
    pub const GROUP: &str = "dead_letter_group";
    pub const CONSUMER: &str = "dead_letter_consumer";
    pub const DELIVERIES: &str = "dead_letter_deliveries";
    pub const AT: &str = "dead_letter_at";
    pub const PREFIX: &str = "dead_letter_";
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub redis_url: String,
    pub stream: String,
    pub group: String,
    /// Stable per replica (the pod name), so a restarted replica finds its own pending entries.
    pub consumer: String,
    pub batch_size: usize,
    /// How long one XREADGROUP waits for new entries (also bounds shutdown latency).
    pub block: Duration,
    /// Deliveries after which a refused entry is dead-lettered.
    pub max_deliveries: u64,
    pub dead_letter_stream: String,
    /// Idle time after which XAUTOCLAIM takes an entry over; longer than the slowest batch.
    pub claim_min_idle: Duration,
    pub claim_interval: Duration,
    /// How often XINFO is read for lag, pending and trimmed-past detection.
    pub info_interval: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl ConsumerConfig {
    pub fn new(redis_url: &str, stream: &str, group: &str, consumer: &str) -> Self {
        ConsumerConfig {
            redis_url: redis_url.to_string(),
            stream: stream.to_string(),
            group: group.to_string(),
            consumer: consumer.to_string(),
            batch_size: 256,
            block: Duration::from_millis(2000),
            max_deliveries: 5,
            dead_letter_stream: artstore_contract::default_dead_letter_stream(stream),
            claim_min_idle: Duration::from_secs(60),
            claim_interval: Duration::from_secs(10),
            info_interval: Duration::from_secs(15),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
        }
    }
}

/// One stream entry handed to the applier.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: String,
    pub fields: HashMap<String, String>,
    /// How many times the group delivered it (1 on the first read).
    pub deliveries: u64,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ApplyError {
    /// The store is unreachable or busy; nothing was applied. The same entries are retried
    /// after a back-off, without counting a delivery.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The entries were refused (bad data, a constraint). Retried from the pending list after
    /// `claim_min_idle`; dead-lettered after `max_deliveries`.
    #[error("refused: {0}")]
    Rejected(String),
}

/// Why entries may have been missed.
#[derive(Debug, Clone, PartialEq)]
pub enum Gap {
    /// The group (or the whole stream) was gone and has been recreated.
    GroupRecreated,
    /// Entries newer than the group's last delivered id were deleted before it read them.
    TrimmedPast {
        last_delivered_id: String,
        max_deleted_id: String,
    },
    /// Entries this group had read but not acknowledged were trimmed.
    PendingTrimmed { ids: Vec<String> },
}

/// What the consumer does with entries. `apply` gets a whole batch and must apply it
/// atomically: `Ok` means committed.
pub trait Applier: Send + Sync + 'static {
    type Item: Send + Sync;

    /// Decodes one entry. An error is permanent: the entry is dead-lettered at once.
    fn decode(&self, entry: &Entry) -> Result<Self::Item, String>;

    fn apply(&self, items: &[Self::Item]) -> impl Future<Output = Result<(), ApplyError>> + Send;

    /// Entries may have been missed; the applier should resync from the source of truth.
    fn on_gap(&self, gap: Gap) -> impl Future<Output = ()> + Send {
        let _ = gap;
        async {}
    }
}

/// Hooks for metrics. Every method has a no-op default.
pub trait ConsumerObserver: Send + Sync {
    fn applied(&self, entries: usize, elapsed: Duration) {
        let _ = (entries, elapsed);
    }
    fn failed(&self, entries: usize) {
        let _ = entries;
    }
    fn dead_lettered(&self, entries: usize) {
        let _ = entries;
    }
    fn reclaimed(&self, entries: usize) {
        let _ = entries;
    }
    fn group_info(&self, info: &GroupInfo) {
        let _ = info;
    }
    fn redis_error(&self) {}
}

pub struct NoopObserver;
impl ConsumerObserver for NoopObserver {}

#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply to {command}: {detail}")]
    Reply {
        command: &'static str,
        detail: String,
    },
}

fn reply_error(command: &'static str, detail: impl Into<String>) -> ConsumerError {
    ConsumerError::Reply {
        command,
        detail: detail.into(),
    }
}
