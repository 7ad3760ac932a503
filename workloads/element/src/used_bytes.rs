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
    known: Mutex<Known>,
}

#[derive(Default)]
struct Known {
    figure: Option<(Instant, i64)>,
    /// Counts every add and forget: a database read that one of them overtook is stale.
    changes: u64,
}

impl UsedBytes {
    /// The figure, if it was read from the database less than [`FRESH`] ago.
    pub fn fresh(&self) -> Option<i64> {
        let known = self.known.lock().ok()?;
        known
            .figure
            .and_then(|(read_at, bytes)| (read_at.elapsed() < FRESH).then_some(bytes))
    }

    /// Taken before reading the database, and handed to [`UsedBytes::set`] with what it said.
    pub fn changes(&self) -> u64 {
        self.known.lock().map(|known| known.changes).unwrap_or(0)
    }

    /// What the database said in a read that started at `changes_before`. Kept only if no
    /// commit or forget came meanwhile: a commit the read missed would otherwise go uncounted
    /// (its upload's reservation ends when it returns).
    pub fn set(&self, bytes: i64, changes_before: u64) {
        if let Ok(mut known) = self.known.lock()
            && known.changes == changes_before
        {
            known.figure = Some((Instant::now(), bytes));
        }
    }

    /// A file of `bytes` this process has just committed.
    pub fn add(&self, bytes: u64) {
        if let Ok(mut known) = self.known.lock() {
            known.changes += 1;
            if let Some((_, used)) = known.figure.as_mut() {
                *used = used.saturating_add(i64::try_from(bytes).unwrap_or(i64::MAX));
            }
        }
    }

    /// Rows went or changed in ways not counted here: the next check reads the database.
    pub fn forget(&self) {
        if let Ok(mut known) = self.known.lock() {
            known.changes += 1;
            known.figure = None;
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
        used.set(100, used.changes());
        used.add(900);
        assert_eq!(used.fresh(), Some(1000));
        used.forget();
        assert_eq!(used.fresh(), None);
    }

    #[test]
    fn a_read_overtaken_by_a_commit_or_a_forget_is_not_kept() {
        let used = UsedBytes::default();
        let before = used.changes();
        used.add(900);
        used.set(100, before);
        assert_eq!(used.fresh(), None, "the read missed a commit");
        let before = used.changes();
        used.forget();
        used.set(100, before);
        assert_eq!(used.fresh(), None, "the read missed a forget");
    }

    #[test]
    fn a_figure_goes_stale() {
        let used = UsedBytes::default();
        used.known.lock().unwrap().figure = Some((Instant::now() - FRESH, 5));
        assert_eq!(used.fresh(), None);
    }
}
