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
//! Replies are parsed here from raw values, command by command: an `XAUTOCLAIM` reply
//! (`[cursor, entries, deleted ids]`) is not an `XREADGROUP` reply (`[[stream, entries]]`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::Value;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::watch;

use crate::groups::ensure_group;

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
            dead_letter_stream: format!("{stream}:dead-letter"),
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

/// The group as XINFO sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupInfo {
    pub pending: u64,
    /// Entries not yet delivered to the group; `None` when Redis cannot tell (after deletions).
    pub lag: Option<u64>,
    pub last_delivered_id: String,
    /// Entries the group has read, counted from the first entry ever added (`None`: unknown).
    pub entries_read: Option<u64>,
    pub stream_length: u64,
    /// Entries ever added to the stream.
    pub entries_added: Option<u64>,
    pub first_entry_id: Option<String>,
    pub last_generated_id: String,
    pub max_deleted_id: String,
}

impl GroupInfo {
    /// Whether entries this group never read were deleted (trimmed) from the stream.
    ///
    /// Deletions from the head: `entries_added - length` entries are gone; the group has read
    /// `entries_read` of the oldest. More gone than read means some went unread. When Redis
    /// cannot count (`entries_read` unknown), an empty stream whose last id is past the group's
    /// last delivered id lost entries too; and newer servers report the highest deleted id
    /// (Redis 7.0 does so only for XDEL, not for trimming).
    pub fn trimmed_past(&self) -> bool {
        let delivered = parse_stream_id(&self.last_delivered_id).unwrap_or((0, 0));
        if parse_stream_id(&self.max_deleted_id).unwrap_or((0, 0)) > delivered {
            return true;
        }
        if let (Some(read), Some(added)) = (self.entries_read, self.entries_added) {
            return added.saturating_sub(self.stream_length) > read;
        }
        self.stream_length == 0
            && parse_stream_id(&self.last_generated_id).unwrap_or((0, 0)) > delivered
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

/// A stream id as two numbers, for ordering (`"5-0"` < `"10-0"`, which string order gets wrong).
pub fn parse_stream_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// An entry as read, before UTF-8 checks: `fields` is `None` when the entry was deleted.
#[derive(Debug, Clone, PartialEq)]
pub struct RawEntry {
    pub id: String,
    pub fields: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

fn bytes_of(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.clone().into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        Value::Okay => Some(b"OK".to_vec()),
        _ => None,
    }
}

fn string_of(value: &Value) -> Option<String> {
    bytes_of(value).and_then(|b| String::from_utf8(b).ok())
}

fn int_of(value: &Value) -> Option<u64> {
    match value {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => string_of(other).and_then(|s| s.parse().ok()),
    }
}

/// `[id, [k, v, k, v, …]]` or `[id, nil]` (entry deleted); RESP3 maps are accepted too.
fn parse_entry(command: &'static str, value: &Value) -> Result<RawEntry, ConsumerError> {
    let Value::Array(parts) = value else {
        return Err(reply_error(
            command,
            format!("entry is not an array: {value:?}"),
        ));
    };
    let id = parts
        .first()
        .and_then(string_of)
        .ok_or_else(|| reply_error(command, "entry without an id"))?;
    let fields = match parts.get(1) {
        None | Some(Value::Nil) => None,
        Some(Value::Array(kv)) => Some(
            kv.chunks(2)
                .filter_map(|pair| match pair {
                    [k, v] => Some((bytes_of(k)?, bytes_of(v)?)),
                    _ => None,
                })
                .collect(),
        ),
        Some(Value::Map(kv)) => Some(
            kv.iter()
                .filter_map(|(k, v)| Some((bytes_of(k)?, bytes_of(v)?)))
                .collect(),
        ),
        Some(other) => {
            return Err(reply_error(
                command,
                format!("entry fields are not an array: {other:?}"),
            ));
        }
    };
    Ok(RawEntry { id, fields })
}

fn parse_entry_list(command: &'static str, value: &Value) -> Result<Vec<RawEntry>, ConsumerError> {
    match value {
        Value::Nil => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            // Redis 6 could put a bare nil in place of a deleted entry.
            .filter(|v| !matches!(v, Value::Nil))
            .map(|v| parse_entry(command, v))
            .collect(),
        other => Err(reply_error(
            command,
            format!("entries are not an array: {other:?}"),
        )),
    }
}

/// XREADGROUP: nil (timeout) or `[[stream, entries], …]` (RESP3: a map stream → entries).
pub fn parse_xreadgroup(value: &Value, stream: &str) -> Result<Vec<RawEntry>, ConsumerError> {
    const CMD: &str = "XREADGROUP";
    let streams: Vec<(Value, Value)> = match value {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Array(pair) if pair.len() == 2 => Ok((pair[0].clone(), pair[1].clone())),
                other => Err(reply_error(
                    CMD,
                    format!("not a [stream, entries] pair: {other:?}"),
                )),
            })
            .collect::<Result<_, _>>()?,
        Value::Map(pairs) => pairs.clone(),
        other => return Err(reply_error(CMD, format!("unexpected reply {other:?}"))),
    };
    let mut out = Vec::new();
    for (name, entries) in streams {
        if string_of(&name).as_deref() == Some(stream) {
            out.extend(parse_entry_list(CMD, &entries)?);
        }
    }
    Ok(out)
}

/// XAUTOCLAIM: `[next cursor, entries, deleted ids]` — no stream wrapper around the entries,
/// and (Redis 7) a third element listing pending ids whose entries no longer exist.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoClaimReply {
    pub next_cursor: String,
    pub claimed: Vec<RawEntry>,
    pub deleted: Vec<String>,
}

pub fn parse_xautoclaim(value: &Value) -> Result<AutoClaimReply, ConsumerError> {
    const CMD: &str = "XAUTOCLAIM";
    let Value::Array(parts) = value else {
        return Err(reply_error(CMD, format!("unexpected reply {value:?}")));
    };
    let next_cursor = parts
        .first()
        .and_then(string_of)
        .ok_or_else(|| reply_error(CMD, "missing cursor"))?;
    let entries = parse_entry_list(CMD, parts.get(1).unwrap_or(&Value::Nil))?;
    let mut claimed = Vec::new();
    let mut deleted = Vec::new();
    for entry in entries {
        // Redis 6 reports a deleted entry as [id, nil] among the claimed ones.
        if entry.fields.is_some() {
            claimed.push(entry);
        } else {
            deleted.push(entry.id);
        }
    }
    if let Some(Value::Array(ids)) = parts.get(2) {
        deleted.extend(ids.iter().filter_map(string_of));
    }
    Ok(AutoClaimReply {
        next_cursor,
        claimed,
        deleted,
    })
}

/// Key/value pairs of a flat array (RESP2) or map (RESP3), keys as strings.
fn kv_map(value: &Value) -> HashMap<String, Value> {
    match value {
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|pair| match pair {
                [k, v] => Some((string_of(k)?, v.clone())),
                _ => None,
            })
            .collect(),
        Value::Map(pairs) => pairs
            .iter()
            .filter_map(|(k, v)| Some((string_of(k)?, v.clone())))
            .collect(),
        _ => HashMap::new(),
    }
}

/// Exponential back-off, capped.
struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            current: min,
        }
    }
    fn reset(&mut self) {
        self.current = self.min;
    }
    fn next_delay(&mut self) -> Duration {
        let delay = self.current;
        self.current = (self.current * 2).min(self.max);
        delay
    }
}

enum Outcome<T> {
    Done(T),
    Shutdown,
}

/// The consumer loop. Build it, then [`Consumer::run`] it on a task.
pub struct Consumer<A: Applier> {
    config: ConsumerConfig,
    applier: Arc<A>,
    observer: Arc<dyn ConsumerObserver>,
}

struct LoopState {
    reader: ConnectionManager,
    writer: ConnectionManager,
    recover_own: bool,
    /// Where the next read of the own pending list starts (exclusive of what was handled).
    own_cursor: String,
    claim_cursor: String,
    next_claim: Instant,
    next_info: Instant,
    /// The stream position (entries added, last id) a resync was already asked for.
    gap_handled_until: Option<(u64, u64)>,
}

impl<A: Applier> Consumer<A> {
    pub fn new(config: ConsumerConfig, applier: Arc<A>) -> Self {
        Consumer {
            config,
            applier,
            observer: Arc::new(NoopObserver),
        }
    }

    pub fn with_observer(mut self, observer: Arc<dyn ConsumerObserver>) -> Self {
        self.observer = observer;
        self
    }

    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    /// Runs until `shutdown` turns true. Entries being applied at that moment are finished and
    /// acknowledged, or left pending for the next run; nothing is lost either way.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), ConsumerError> {
        let client = redis::Client::open(self.config.redis_url.as_str())?;
        let connect = |response_timeout: Duration| {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(response_timeout))
                .set_number_of_retries(1)
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(Duration::from_secs(1));
            ConnectionManager::new_lazy_with_config(client.clone(), config)
        };
        // Blocking reads get their own connection so they never hold up acks and claims.
        let now = Instant::now();
        let mut state = LoopState {
            reader: connect(self.config.block + Duration::from_secs(10))?,
            writer: connect(Duration::from_secs(10))?,
            recover_own: true,
            own_cursor: "0".to_string(),
            claim_cursor: "0-0".to_string(),
            next_claim: now,
            next_info: now,
            gap_handled_until: None,
        };
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max);
        tracing::info!(
            stream = %self.config.stream,
            group = %self.config.group,
            consumer = %self.config.consumer,
            "consumer started"
        );
        while !*shutdown.borrow() {
            match self.step(&mut state, &mut shutdown).await {
                Ok(()) => backoff.reset(),
                Err(e) => {
                    self.observer.redis_error();
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, delay_ms = delay.as_millis() as u64, "consumer step failed; backing off");
                    if let Outcome::Shutdown = sleep_or_shutdown(delay, &mut shutdown).await {
                        break;
                    }
                }
            }
        }
        tracing::info!(consumer = %self.config.consumer, "consumer stopped");
        Ok(())
    }

    async fn step(
        &self,
        state: &mut LoopState,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), ConsumerError> {
        if Instant::now() >= state.next_info {
            state.next_info = Instant::now() + self.config.info_interval;
            self.check_group(state).await?;
        }

        let batch = match self.fetch(state).await {
            Ok(batch) => batch,
            Err(ConsumerError::Redis(e)) if e.code() == Some("NOGROUP") => {
                let created = ensure_group(
                    &mut state.writer,
                    &self.config.stream,
                    &self.config.group,
                    "0",
                )
                .await?;
                tracing::warn!(
                    stream = %self.config.stream,
                    group = %self.config.group,
                    created,
                    "stream or group was missing; recreated from the start of the stream"
                );
                state.recover_own = false;
                state.claim_cursor = "0-0".into();
                self.applier.on_gap(Gap::GroupRecreated).await;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if batch.is_empty() {
            return Ok(());
        }
        self.process(state, batch, shutdown).await
    }

    /// The next batch: own pending entries first (after a restart), then entries idle long
    /// enough to take over, then new entries.
    async fn fetch(&self, state: &mut LoopState) -> Result<Vec<Entry>, ConsumerError> {
        let cfg = &self.config;
        if state.recover_own {
            let reply: Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&cfg.group)
                .arg(&cfg.consumer)
                .arg("COUNT")
                .arg(cfg.batch_size)
                .arg("STREAMS")
                .arg(&cfg.stream)
                .arg(&state.own_cursor)
                .query_async(&mut state.writer)
                .await?;
            let raw = parse_xreadgroup(&reply, &cfg.stream)?;
            match raw.last() {
                None => {
                    state.recover_own = false;
                    state.own_cursor = "0".into();
                }
                Some(last) => {
                    tracing::info!(entries = raw.len(), "re-reading own pending entries");
                    // An entry refused again stays pending; the next history read starts after
                    // it, so it is retried through XAUTOCLAIM after its idle time, not at once.
                    state.own_cursor = last.id.clone();
                    return self.with_counts(state, raw).await;
                }
            }
        }
        if Instant::now() >= state.next_claim {
            let reply: Value = redis::cmd("XAUTOCLAIM")
                .arg(&cfg.stream)
                .arg(&cfg.group)
                .arg(&cfg.consumer)
                .arg(cfg.claim_min_idle.as_millis() as u64)
                .arg(&state.claim_cursor)
                .arg("COUNT")
                .arg(cfg.batch_size)
                .query_async(&mut state.writer)
                .await?;
            let reply = parse_xautoclaim(&reply)?;
            if reply.next_cursor == "0-0" {
                state.next_claim = Instant::now() + cfg.claim_interval;
            }
            state.claim_cursor = reply.next_cursor;
            if !reply.deleted.is_empty() {
                tracing::warn!(
                    ids = ?reply.deleted,
                    "pending entries were trimmed before being acknowledged"
                );
                self.applier
                    .on_gap(Gap::PendingTrimmed {
                        ids: reply.deleted.clone(),
                    })
                    .await;
            }
            if !reply.claimed.is_empty() {
                tracing::info!(
                    entries = reply.claimed.len(),
                    "took over idle pending entries"
                );
                self.observer.reclaimed(reply.claimed.len());
                return self.with_counts(state, reply.claimed).await;
            }
        }
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&cfg.group)
            .arg(&cfg.consumer)
            .arg("COUNT")
            .arg(cfg.batch_size)
            .arg("BLOCK")
            .arg(cfg.block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&cfg.stream)
            .arg(">")
            .query_async(&mut state.reader)
            .await?;
        let raw = parse_xreadgroup(&reply, &cfg.stream)?;
        Ok(raw.into_iter().map(|r| to_entry(r, 1)).collect::<Vec<_>>())
    }

    /// Looks up delivery counts (XPENDING) of entries that were delivered before.
    async fn with_counts(
        &self,
        state: &mut LoopState,
        raw: Vec<RawEntry>,
    ) -> Result<Vec<Entry>, ConsumerError> {
        let cfg = &self.config;
        let (Some(first), Some(last)) = (raw.first(), raw.last()) else {
            return Ok(Vec::new());
        };
        let reply: Value = redis::cmd("XPENDING")
            .arg(&cfg.stream)
            .arg(&cfg.group)
            .arg(&first.id)
            .arg(&last.id)
            .arg(raw.len() * 4 + 16)
            .arg(&cfg.consumer)
            .query_async(&mut state.writer)
            .await?;
        let mut counts = HashMap::new();
        if let Value::Array(rows) = &reply {
            for row in rows {
                if let Value::Array(cols) = row
                    && let (Some(id), Some(count)) = (
                        cols.first().and_then(string_of),
                        cols.get(3).and_then(int_of),
                    )
                {
                    counts.insert(id, count);
                }
            }
        }
        let mut out = Vec::with_capacity(raw.len());
        let mut trimmed = Vec::new();
        for r in raw {
            if r.fields.is_none() {
                trimmed.push(r.id);
                continue;
            }
            let count = counts.get(&r.id).copied().unwrap_or(1).max(1);
            out.push(to_entry(r, count));
        }
        if !trimmed.is_empty() {
            // Own pending entries whose content is gone: nothing to apply, acknowledge them.
            self.ack(state, &trimmed).await?;
            self.applier
                .on_gap(Gap::PendingTrimmed { ids: trimmed })
                .await;
        }
        Ok(out)
    }

    async fn process(
        &self,
        state: &mut LoopState,
        batch: Vec<Entry>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), ConsumerError> {
        let started = Instant::now();
        let mut decoded = Vec::with_capacity(batch.len());
        let mut good = Vec::with_capacity(batch.len());
        for entry in batch {
            match self.applier.decode(&entry) {
                Ok(item) => {
                    decoded.push(item);
                    good.push(entry);
                }
                Err(reason) => {
                    self.dead_letter(state, &entry, &format!("undecodable: {reason}"))
                        .await?;
                }
            }
        }
        if good.is_empty() {
            return Ok(());
        }
        match self.apply_retrying(&decoded, shutdown).await {
            Outcome::Shutdown => return Ok(()),
            Outcome::Done(Ok(())) => {
                let ids: Vec<String> = good.iter().map(|e| e.id.clone()).collect();
                self.ack(state, &ids).await?;
                self.observer.applied(ids.len(), started.elapsed());
                return Ok(());
            }
            Outcome::Done(Err(reason)) if good.len() == 1 => {
                self.refused(state, &good[0], &reason).await?;
                return Ok(());
            }
            Outcome::Done(Err(reason)) => {
                tracing::warn!(
                    entries = good.len(),
                    reason = %reason,
                    "batch refused; applying its entries one by one"
                );
            }
        }
        // Isolate the entry that made the batch fail; the others go through.
        for (entry, item) in good.iter().zip(decoded.iter()) {
            let one_started = Instant::now();
            match self
                .apply_retrying(std::slice::from_ref(item), shutdown)
                .await
            {
                Outcome::Shutdown => return Ok(()),
                Outcome::Done(Ok(())) => {
                    self.ack(state, std::slice::from_ref(&entry.id)).await?;
                    self.observer.applied(1, one_started.elapsed());
                }
                Outcome::Done(Err(reason)) => self.refused(state, entry, &reason).await?,
            }
        }
        Ok(())
    }

    /// Applies, retrying with back-off while the store is unavailable.
    async fn apply_retrying(
        &self,
        items: &[A::Item],
        shutdown: &mut watch::Receiver<bool>,
    ) -> Outcome<Result<(), String>> {
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max);
        loop {
            match self.applier.apply(items).await {
                Ok(()) => return Outcome::Done(Ok(())),
                Err(ApplyError::Rejected(reason)) => return Outcome::Done(Err(reason)),
                Err(ApplyError::Unavailable(reason)) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(reason = %reason, delay_ms = delay.as_millis() as u64, "store unavailable; retrying the batch");
                    if let Outcome::Shutdown = sleep_or_shutdown(delay, shutdown).await {
                        return Outcome::Shutdown;
                    }
                }
            }
        }
    }

    /// A refused entry stays pending (retried via XAUTOCLAIM) until its last delivery.
    async fn refused(
        &self,
        state: &mut LoopState,
        entry: &Entry,
        reason: &str,
    ) -> Result<(), ConsumerError> {
        self.observer.failed(1);
        if entry.deliveries >= self.config.max_deliveries {
            self.dead_letter(
                state,
                entry,
                &format!("refused after {} deliveries: {reason}", entry.deliveries),
            )
            .await
        } else {
            tracing::warn!(
                entry_id = %entry.id,
                deliveries = entry.deliveries,
                reason = %reason,
                "entry refused; it stays pending and will be retried"
            );
            Ok(())
        }
    }

    async fn dead_letter(
        &self,
        state: &mut LoopState,
        entry: &Entry,
        reason: &str,
    ) -> Result<(), ConsumerError> {
        use dead_letter_fields as d;
        let cfg = &self.config;
        let mut xadd = redis::cmd("XADD");
        xadd.arg(&cfg.dead_letter_stream).arg("*");
        let mut fields: Vec<(&String, &String)> = entry.fields.iter().collect();
        fields.sort();
        for (k, v) in fields {
            if !k.starts_with(d::PREFIX) {
                xadd.arg(k).arg(v);
            }
        }
        xadd.arg(d::REASON)
            .arg(reason)
            .arg(d::SOURCE_STREAM)
            .arg(&cfg.stream)
            .arg(d::SOURCE_ID)
            .arg(&entry.id)
            .arg(d::GROUP)
            .arg(&cfg.group)
            .arg(d::CONSUMER)
            .arg(&cfg.consumer)
            .arg(d::DELIVERIES)
            .arg(entry.deliveries)
            .arg(d::AT)
            .arg(chrono::Utc::now().to_rfc3339());
        let mut xack = redis::cmd("XACK");
        xack.arg(&cfg.stream).arg(&cfg.group).arg(&entry.id);
        // Both or neither: a crash cannot leave a dead-lettered entry pending (or acked and lost).
        let mut pipe = redis::pipe();
        pipe.atomic().add_command(xadd).add_command(xack);
        let _: Value = pipe.query_async(&mut state.writer).await?;
        tracing::error!(
            entry_id = %entry.id,
            deliveries = entry.deliveries,
            reason = %reason,
            dead_letter_stream = %cfg.dead_letter_stream,
            "entry dead-lettered"
        );
        self.observer.dead_lettered(1);
        Ok(())
    }

    async fn ack(&self, state: &mut LoopState, ids: &[String]) -> Result<(), ConsumerError> {
        if ids.is_empty() {
            return Ok(());
        }
        // A failed XACK is returned as an error: the step backs off and the entries are
        // re-read from the own pending list; the applier's version rule makes that harmless.
        let _: u64 = redis::cmd("XACK")
            .arg(&self.config.stream)
            .arg(&self.config.group)
            .arg(ids)
            .query_async(&mut state.writer)
            .await
            .inspect_err(|_| {
                state.recover_own = true;
                state.own_cursor = "0".into();
            })?;
        Ok(())
    }

    /// XINFO GROUPS / XINFO STREAM: metrics, and whether the group was trimmed past.
    async fn check_group(&self, state: &mut LoopState) -> Result<(), ConsumerError> {
        let Some(info) =
            read_group_info(&mut state.writer, &self.config.stream, &self.config.group).await?
        else {
            return Ok(());
        };
        self.observer.group_info(&info);
        // One resync per loss: remember the stream position (entries ever added) it covered.
        let position = (
            info.entries_added.unwrap_or(0),
            parse_stream_id(&info.last_generated_id).unwrap_or((0, 0)).0,
        );
        let already = state.gap_handled_until.is_some_and(|h| h >= position);
        if info.trimmed_past() && !already {
            state.gap_handled_until = Some(position);
            tracing::warn!(
                last_delivered_id = %info.last_delivered_id,
                entries_read = ?info.entries_read,
                entries_added = ?info.entries_added,
                stream_length = info.stream_length,
                "entries were trimmed before this group read them; resyncing"
            );
            self.applier
                .on_gap(Gap::TrimmedPast {
                    last_delivered_id: info.last_delivered_id.clone(),
                    max_deleted_id: info.max_deleted_id.clone(),
                })
                .await;
        }
        Ok(())
    }
}

fn to_entry(raw: RawEntry, deliveries: u64) -> Entry {
    let fields = raw
        .fields
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(&k).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect();
    Entry {
        id: raw.id,
        fields,
        deliveries,
    }
}

async fn sleep_or_shutdown(delay: Duration, shutdown: &mut watch::Receiver<bool>) -> Outcome<()> {
    if *shutdown.borrow() {
        return Outcome::Shutdown;
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => Outcome::Done(()),
        _ = shutdown.changed() => Outcome::Shutdown,
    }
}

/// The group's state from XINFO GROUPS and XINFO STREAM; `None` when the stream or the group
/// does not exist.
pub async fn read_group_info<C: redis::aio::ConnectionLike + Send>(
    conn: &mut C,
    stream: &str,
    group: &str,
) -> Result<Option<GroupInfo>, ConsumerError> {
    let stream_reply: redis::RedisResult<Value> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(stream)
        .query_async(conn)
        .await;
    let stream_reply = match stream_reply {
        Ok(v) => v,
        // "ERR no such key"
        Err(e) if e.code() == Some("ERR") => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let groups: Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(conn)
        .await?;
    let Value::Array(groups) = groups else {
        return Err(reply_error("XINFO GROUPS", "not an array"));
    };
    let Some(group_map) = groups
        .iter()
        .map(kv_map)
        .find(|m| m.get("name").and_then(string_of).as_deref() == Some(group))
    else {
        return Ok(None);
    };
    let s = kv_map(&stream_reply);
    let first_entry_id = match s.get("first-entry") {
        Some(Value::Array(parts)) => parts.first().and_then(string_of),
        _ => None,
    };
    Ok(Some(GroupInfo {
        pending: group_map.get("pending").and_then(int_of).unwrap_or(0),
        lag: group_map.get("lag").and_then(int_of),
        last_delivered_id: group_map
            .get("last-delivered-id")
            .and_then(string_of)
            .unwrap_or_else(|| "0-0".into()),
        entries_read: group_map.get("entries-read").and_then(int_of),
        stream_length: s.get("length").and_then(int_of).unwrap_or(0),
        entries_added: s.get("entries-added").and_then(int_of),
        first_entry_id,
        last_generated_id: s
            .get("last-generated-id")
            .and_then(string_of)
            .unwrap_or_else(|| "0-0".into()),
        max_deleted_id: s
            .get("max-deleted-entry-id")
            .and_then(string_of)
            .unwrap_or_else(|| "0-0".into()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn xautoclaim_reply_has_no_stream_wrapper() {
        // [cursor, [[id, [k, v]]], [deleted ids]] — what Redis 7 sends.
        let reply = Value::Array(vec![
            bulk("0-0"),
            Value::Array(vec![Value::Array(vec![
                bulk("5-1"),
                Value::Array(vec![bulk("type"), bulk("file.created")]),
            ])]),
            Value::Array(vec![bulk("4-0")]),
        ]);
        let parsed = parse_xautoclaim(&reply).expect("parses");
        assert_eq!(parsed.next_cursor, "0-0");
        assert_eq!(parsed.claimed.len(), 1);
        assert_eq!(parsed.claimed[0].id, "5-1");
        assert_eq!(parsed.deleted, vec!["4-0".to_string()]);
        // Read as an XREADGROUP reply, the same value must not yield entries silently.
        assert!(parse_xreadgroup(&reply, "s").is_err());
    }

    #[test]
    fn xreadgroup_reply_is_wrapped_by_stream() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![
                Value::Array(vec![bulk("1-0"), Value::Array(vec![bulk("a"), bulk("b")])]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]),
        ])]);
        let parsed = parse_xreadgroup(&reply, "s").expect("parses");
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].fields, Some(vec![(b"a".to_vec(), b"b".to_vec())]));
        assert_eq!(parsed[1].fields, None);
        assert!(parse_xreadgroup(&Value::Nil, "s").expect("nil").is_empty());
    }

    #[test]
    fn trimmed_past_is_told_from_counters_or_ids() {
        let base = GroupInfo {
            last_delivered_id: "100-0".into(),
            last_generated_id: "200-0".into(),
            max_deleted_id: "0-0".into(),
            ..Default::default()
        };
        // 10 added, 4 retained, 6 gone; the group read 6: nothing missed.
        let caught_up = GroupInfo {
            entries_read: Some(6),
            entries_added: Some(10),
            stream_length: 4,
            ..base.clone()
        };
        assert!(!caught_up.trimmed_past());
        assert!(
            GroupInfo {
                entries_read: Some(5),
                ..caught_up.clone()
            }
            .trimmed_past()
        );
        // Counters unknown: an emptied stream past the group's position lost entries.
        let emptied = GroupInfo {
            entries_added: Some(10),
            ..base.clone()
        };
        assert!(emptied.trimmed_past());
        assert!(
            !GroupInfo {
                stream_length: 3,
                ..emptied.clone()
            }
            .trimmed_past()
        );
        assert!(
            GroupInfo {
                max_deleted_id: "150-0".into(),
                stream_length: 3,
                ..base
            }
            .trimmed_past()
        );
    }

    #[test]
    fn stream_ids_order_numerically() {
        assert!(parse_stream_id("10-0") > parse_stream_id("9-5"));
        assert!(parse_stream_id("5-10") > parse_stream_id("5-9"));
        assert_eq!(parse_stream_id("garbage"), None);
    }
}
