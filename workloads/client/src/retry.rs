//! Exponential back-off with jitter (`backon`), waiting at least what `Retry-After` asks.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use crate::error::ClientError;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts after the first; 0 turns retries off.
    pub retries: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// A `Retry-After` longer than this is cut to it, so a wrong header cannot park the client.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 8,
            min_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    pub fn none() -> Self {
        RetryPolicy {
            retries: 0,
            ..Self::default()
        }
    }

    /// Runs `op` until it succeeds, fails for good, or the attempts are spent. `notify` hears of
    /// each retry and the wait before it.
    pub async fn run<T, F, Fut>(
        &self,
        op: F,
        notify: &(dyn Fn(&ClientError, Duration) + Send + Sync),
    ) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.retries)
            .with_jitter();
        let cap = self.max_retry_after;
        op.retry(backoff)
            .sleep(tokio::time::sleep)
            .when(ClientError::is_transient)
            .adjust(move |e, planned| {
                // The server knows when its window reopens: wait what it asks instead of guessing.
                // `None` means the attempts are spent; a Retry-After never adds attempts.
                planned.map(|d| e.retry_after().map_or(d, |asked| asked.min(cap)))
            })
            .notify(|e, wait| notify(e, wait))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Service;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn limited(secs: u64) -> ClientError {
        ClientError::Api {
            service: Service::Ingester,
            status: 429,
            code: "rate_limited".into(),
            message: "slow down".into(),
            retry_after: Some(Duration::from_secs(secs)),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_and_permanent_errors_stop_at_once() {
        let policy = RetryPolicy::default();
        let calls = AtomicUsize::new(0);
        let waits = Mutex::new(Vec::new());
        let out = policy
            .run(
                || async {
                    if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                        Err(limited(7))
                    } else {
                        Ok(42)
                    }
                },
                &|_, wait| waits.lock().map(|mut w| w.push(wait)).unwrap_or_default(),
            )
            .await;
        assert_eq!(out.ok(), Some(42));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(
            *waits.lock().expect("lock"),
            vec![Duration::from_secs(7), Duration::from_secs(7)]
        );

        let calls = AtomicUsize::new(0);
        let out: Result<(), _> = policy
            .run(
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err(ClientError::Api {
                        service: Service::Ingester,
                        status: 401,
                        code: "unauthorized".into(),
                        message: "invalid token".into(),
                        retry_after: None,
                    })
                },
                &|_, _| {},
            )
            .await;
        assert_eq!(
            out.err().map(|e| e.code().to_string()).as_deref(),
            Some("unauthorized")
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let calls = AtomicUsize::new(0);
        let out: Result<(), _> = RetryPolicy {
            retries: 2,
            ..policy
        }
        .run(
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(limited(1))
            },
            &|_, _| {},
        )
        .await;
        assert_eq!(
            out.err().map(|e| e.code().to_string()).as_deref(),
            Some("rate_limited")
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "one attempt and two retries"
        );
    }
}
