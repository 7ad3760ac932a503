//! The bytes the cache holds, as an upload's capacity check reads them: from memory while the
//! figure is fresh, from the database otherwise. Reading the running totals on every upload was
//! a round trip and a statement per upload (docs/performance.md).
//!
//! This process's own commits are added the moment they are made and its own deletes and
//! maintenance runs drop the figure, so only other processes writing to the same cache (a
//! rebuild job) are seen up to [`FRESH`] late. A check the figure would fail is made again
//! from the database before an upload is refused.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a figure read from the database stands in for it.
pub const FRESH: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct UsedBytes {
    known: Mutex<Option<(Instant, i64)>>,
}

impl UsedBytes {
    /// The figure, if it was read from the database less than [`FRESH`] ago.
    pub fn fresh(&self) -> Option<i64> {
        let known = self.known.lock().ok()?;
        known.and_then(|(read_at, bytes)| (read_at.elapsed() < FRESH).then_some(bytes))
    }

    /// What the database said just now.
    pub fn set(&self, bytes: i64) {
        if let Ok(mut known) = self.known.lock() {
            *known = Some((Instant::now(), bytes));
        }
    }

    /// A file of `bytes` this process has just committed.
    pub fn add(&self, bytes: u64) {
        if let Ok(mut known) = self.known.lock()
            && let Some((_, used)) = known.as_mut()
        {
            *used = used.saturating_add(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }

    /// Rows went or changed in ways not counted here: the next check reads the database.
    pub fn forget(&self) {
        if let Ok(mut known) = self.known.lock() {
            *known = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_counts_this_process_commits_until_it_is_forgotten() {
        let used = UsedBytes::default();
        assert_eq!(used.fresh(), None, "nothing read yet");
        used.add(10);
        assert_eq!(used.fresh(), None, "a commit does not make a figure up");
        used.set(100);
        used.add(900);
        assert_eq!(used.fresh(), Some(1000));
        used.forget();
        assert_eq!(used.fresh(), None);
    }

    #[test]
    fn a_figure_goes_stale() {
        let used = UsedBytes::default();
        *used.known.lock().unwrap() = Some((Instant::now() - FRESH, 5));
        assert_eq!(used.fresh(), None);
    }
}
