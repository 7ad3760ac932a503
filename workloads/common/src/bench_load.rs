//! The closed loop the benchmark programs drive a service with: a fixed number of workers, each
//! starting its next operation as soon as its last one ended, for a fixed time.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a [`closed_loop`] did.
#[derive(Debug)]
pub struct Ran {
    pub done: u64,
    pub errors: u64,
    /// The first error, as text.
    pub first_error: Option<String>,
    pub elapsed: Duration,
}

impl Ran {
    /// Operations done per second.
    pub fn rate(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `op` with `concurrency` workers for `seconds`, each operation numbered apart from every
/// other (worker `w` numbers from `w << 40`); failed operations are counted, not retried.
pub async fn closed_loop<F, Fut, E>(concurrency: usize, seconds: u64, op: F) -> Ran
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: std::fmt::Display,
{
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None));
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let (op, done, errors, first_error) = (
                op.clone(),
                done.clone(),
                errors.clone(),
                first_error.clone(),
            );
            tokio::spawn(async move {
                let mut n = (w as u64) << 40;
                while Instant::now() < end {
                    n += 1;
                    match op(n).await {
                        Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            if let Ok(mut first) = first_error.lock() {
                                first.get_or_insert_with(|| e.to_string());
                            }
                            errors.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
    let first_error = first_error.lock().ok().and_then(|mut first| first.take());
    Ran {
        done: done.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        first_error,
        elapsed: start.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_worker_runs_until_the_time_is_up_and_failures_are_counted() {
        let ran = closed_loop(4, 1, |n: u64| async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if n.is_multiple_of(2) {
                Err(format!("even {n}"))
            } else {
                Ok(())
            }
        })
        .await;
        assert!(ran.elapsed >= Duration::from_secs(1));
        // 4 workers, ~100 operations each, every other one failing.
        assert!(ran.done >= 100 && ran.errors >= 100, "{ran:?}");
        assert!(ran.first_error.is_some_and(|e| e.starts_with("even ")));
    }
}
