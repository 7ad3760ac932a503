//! The consume loop: one step at a time — inspect the group when due, fetch a batch from where
//! the [`ReadPosition`] says, hand it to the applier, acknowledge or dead-letter — with
//! back-off on Redis errors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use artstore_contract::stream::StreamId;
use redis::Value;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::watch;

use super::inspect::read_group_info;
use super::machine::{Event, GapMemory, Phase, ReadPosition};
use super::reply::{RawEntry, parse_xautoclaim, parse_xpending_counts, parse_xreadgroup, to_entry};
use super::{
    Applier, ApplyError, ConsumerConfig, ConsumerError, ConsumerObserver, Entry, Gap, NoopObserver,
    dead_letter_fields,
};
use crate::groups::ensure_group;

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
    position: ReadPosition,
    next_info: Instant,
    gaps: GapMemory,
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
            position: ReadPosition::start(now, self.config.claim_interval),
            next_info: now,
            gaps: GapMemory::default(),
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
                state.position.on(Event::GroupRecreated, Instant::now());
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
        if let Phase::Recovering { after } = &state.position.phase {
            let reply: Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&cfg.group)
                .arg(&cfg.consumer)
                .arg("COUNT")
                .arg(cfg.batch_size)
                .arg("STREAMS")
                .arg(&cfg.stream)
                .arg(after)
                .query_async(&mut state.writer)
                .await?;
            let raw = parse_xreadgroup(&reply, &cfg.stream)?;
            let last = raw.last().map(|r| r.id.clone());
            let found = last.is_some();
            state
                .position
                .on(Event::OwnPendingRead { last }, Instant::now());
            if found {
                tracing::info!(entries = raw.len(), "re-reading own pending entries");
                return self.with_counts(state, raw).await;
            }
        }
        if state.position.claim_due(Instant::now()) {
            let reply: Value = redis::cmd("XAUTOCLAIM")
                .arg(&cfg.stream)
                .arg(&cfg.group)
                .arg(&cfg.consumer)
                .arg(cfg.claim_min_idle.as_millis() as u64)
                .arg(&state.position.claim_cursor)
                .arg("COUNT")
                .arg(cfg.batch_size)
                .query_async(&mut state.writer)
                .await?;
            let reply = parse_xautoclaim(&reply)?;
            let next_cursor = reply.next_cursor.clone();
            state
                .position
                .on(Event::Claimed { next_cursor }, Instant::now());
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
        let counts = parse_xpending_counts(&reply);
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
            .inspect_err(|_| state.position.on(Event::AckFailed, Instant::now()))?;
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
            StreamId::parse(&info.last_generated_id)
                .unwrap_or_default()
                .ms,
        );
        if info.trimmed_past() && state.gaps.first_time(position) {
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

async fn sleep_or_shutdown(delay: Duration, shutdown: &mut watch::Receiver<bool>) -> Outcome<()> {
    if *shutdown.borrow() {
        return Outcome::Shutdown;
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => Outcome::Done(()),
        _ = shutdown.changed() => Outcome::Shutdown,
    }
}
