//! The consumer loop's read position as an explicit state machine: where the next batch
//! comes from, and every event that moves it. The loop only reports events; the transitions
//! live here, pure, and are tested on their own.

use std::time::{Duration, Instant};

/// Where the next batch comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Re-reading this consumer's own pending entries (`XREADGROUP … <after>`): at start, what
    /// a previous run read but did not acknowledge; after a failed XACK, what this run did.
    Recovering { after: String },
    /// Taking over idle entries when a claim is due (`XAUTOCLAIM`), else reading new ones.
    Consuming,
}

/// What happened, as far as the read position is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Own pending entries were read; `last` is the last id, `None` when none were left.
    OwnPendingRead { last: Option<String> },
    /// An XAUTOCLAIM scan returned `next_cursor` (`0-0`: the scan went round).
    Claimed { next_cursor: String },
    /// An XACK failed: entries handled in this run may still be pending.
    AckFailed,
    /// The stream or the group was missing and has been recreated from the start.
    GroupRecreated,
}

/// The start of the pending list, for XAUTOCLAIM.
const CLAIM_START: &str = "0-0";
/// The start of the own history, for XREADGROUP.
const HISTORY_START: &str = "0";

#[derive(Debug, Clone)]
pub struct ReadPosition {
    pub phase: Phase,
    /// Where the XAUTOCLAIM scan continues.
    pub claim_cursor: String,
    /// When the next scan may start (a scan that went round waits `claim_interval`).
    pub next_claim: Instant,
    claim_interval: Duration,
}

impl ReadPosition {
    /// A starting consumer: its own history first, a claim scan at once.
    pub fn start(now: Instant, claim_interval: Duration) -> Self {
        ReadPosition {
            phase: Phase::Recovering {
                after: HISTORY_START.into(),
            },
            claim_cursor: CLAIM_START.into(),
            next_claim: now,
            claim_interval,
        }
    }

    pub fn claim_due(&self, now: Instant) -> bool {
        now >= self.next_claim
    }

    pub fn on(&mut self, event: Event, now: Instant) {
        match event {
            Event::OwnPendingRead { last: Some(id) } => {
                // An entry refused again stays pending; the next history read starts after it,
                // so it is retried through XAUTOCLAIM after its idle time, not at once.
                if matches!(self.phase, Phase::Recovering { .. }) {
                    self.phase = Phase::Recovering { after: id };
                }
            }
            Event::OwnPendingRead { last: None } => self.phase = Phase::Consuming,
            Event::Claimed { next_cursor } => {
                if next_cursor == CLAIM_START {
                    self.next_claim = now + self.claim_interval;
                }
                self.claim_cursor = next_cursor;
            }
            Event::AckFailed => {
                self.phase = Phase::Recovering {
                    after: HISTORY_START.into(),
                }
            }
            Event::GroupRecreated => {
                self.phase = Phase::Consuming;
                self.claim_cursor = CLAIM_START.into();
            }
        }
    }
}

/// One resync per loss: the stream position (entries ever added, last id's time) a resync was
/// already asked for.
#[derive(Debug, Clone, Default)]
pub struct GapMemory {
    handled_until: Option<(u64, u64)>,
}

impl GapMemory {
    /// Whether a loss seen at `position` is new (and remembers it).
    pub fn first_time(&mut self, position: (u64, u64)) -> bool {
        if self.handled_until.is_some_and(|h| h >= position) {
            return false;
        }
        self.handled_until = Some(position);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_read_to_its_end_then_new_entries() {
        let now = Instant::now();
        let mut p = ReadPosition::start(now, Duration::from_secs(10));
        assert_eq!(p.phase, Phase::Recovering { after: "0".into() });
        p.on(
            Event::OwnPendingRead {
                last: Some("5-0".into()),
            },
            now,
        );
        assert_eq!(
            p.phase,
            Phase::Recovering {
                after: "5-0".into()
            }
        );
        p.on(Event::OwnPendingRead { last: None }, now);
        assert_eq!(p.phase, Phase::Consuming);
        // A failed ack goes back to the start of the own history.
        p.on(Event::AckFailed, now);
        assert_eq!(p.phase, Phase::Recovering { after: "0".into() });
        // A recreated group has no history of this consumer.
        p.on(Event::GroupRecreated, now);
        assert_eq!(p.phase, Phase::Consuming);
    }

    #[test]
    fn a_claim_scan_that_goes_round_waits_the_interval() {
        let now = Instant::now();
        let interval = Duration::from_secs(10);
        let mut p = ReadPosition::start(now, interval);
        assert!(p.claim_due(now));
        p.on(
            Event::Claimed {
                next_cursor: "7-0".into(),
            },
            now,
        );
        assert_eq!(p.claim_cursor, "7-0");
        assert!(p.claim_due(now), "a scan in progress continues");
        p.on(
            Event::Claimed {
                next_cursor: "0-0".into(),
            },
            now,
        );
        assert!(!p.claim_due(now));
        assert!(p.claim_due(now + interval));
        p.on(
            Event::Claimed {
                next_cursor: "9-0".into(),
            },
            now,
        );
        p.on(Event::GroupRecreated, now);
        assert_eq!(p.claim_cursor, "0-0");
    }

    #[test]
    fn a_loss_is_reported_once_per_position() {
        let mut m = GapMemory::default();
        assert!(m.first_time((10, 200)));
        assert!(!m.first_time((10, 200)));
        assert!(!m.first_time((9, 100)));
        assert!(m.first_time((12, 300)));
    }
}
