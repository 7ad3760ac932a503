//! How long the query node waits on what it depends on: PostgreSQL, Redis and the storage
//! elements. Flags and environment mirror the storage element's and the ingester's; the
//! defaults and why are in `docs/query-node.md` and `docs/faults.md`.

use std::time::Duration;

use artstore_contract::env;

pub const DEFAULT_DB_ACQUIRE_SECONDS: u64 = 5;
pub const DEFAULT_DB_STATEMENT_SECONDS: u64 = 30;
pub const DEFAULT_REDIS_CONNECT_SECONDS: u64 = 2;
pub const DEFAULT_REDIS_RESPONSE_SECONDS: u64 = 10;
pub const DEFAULT_ELEMENT_CONNECT_SECONDS: u64 = 3;
pub const DEFAULT_ELEMENT_IDLE_SECONDS: u64 = 10;
pub const DEFAULT_ELEMENT_LISTING_SECONDS: u64 = 60;

/// Every timeout of the query node's outbound calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// To get a pooled PostgreSQL connection (or open one).
    pub db_acquire: Duration,
    /// PostgreSQL cancels a statement running longer (`statement_timeout`); searches have their
    /// own tighter budget (`search::STATEMENT_TIMEOUT_MS`).
    pub db_statement: Duration,
    /// To open a Redis connection (consumer, readiness).
    pub redis_connect: Duration,
    /// For a Redis reply; a blocking read gets this on top of its block time.
    pub redis_response: Duration,
    /// To open a connection to a storage element.
    pub element_connect: Duration,
    /// A storage element's answer head, then each piece of its body (downloads, listings).
    pub element_idle: Duration,
    /// One whole page of a storage element's listing (backfill, resync).
    pub element_listing: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        TimeoutArgs::default().timeouts()
    }
}

/// [`Timeouts`] as flags and environment of `serve` and `backfill`.
#[derive(Debug, Clone, clap::Args)]
pub struct TimeoutArgs {
    /// Seconds to get a database connection from the pool.
    #[arg(long, env = env::DB_ACQUIRE_TIMEOUT_SECONDS, default_value_t = DEFAULT_DB_ACQUIRE_SECONDS)]
    pub db_acquire_timeout_seconds: u64,
    /// Seconds PostgreSQL lets one statement run (`statement_timeout`).
    #[arg(long, env = env::DB_STATEMENT_TIMEOUT_SECONDS, default_value_t = DEFAULT_DB_STATEMENT_SECONDS)]
    pub db_statement_timeout_seconds: u64,
    /// Seconds to open a connection to Redis.
    #[arg(long, env = env::REDIS_CONNECT_TIMEOUT_SECONDS, default_value_t = DEFAULT_REDIS_CONNECT_SECONDS)]
    pub redis_connect_timeout_seconds: u64,
    /// Seconds Redis may take to reply (on top of a blocking read's block time).
    #[arg(long, env = env::REDIS_RESPONSE_TIMEOUT_SECONDS, default_value_t = DEFAULT_REDIS_RESPONSE_SECONDS)]
    pub redis_response_timeout_seconds: u64,
    /// Seconds to open a connection to a storage element.
    #[arg(long, env = env::ELEMENT_CONNECT_TIMEOUT_SECONDS, default_value_t = DEFAULT_ELEMENT_CONNECT_SECONDS)]
    pub element_connect_timeout_seconds: u64,
    /// Seconds a storage element may send nothing: until its answer's head, then between two
    /// pieces of the body (a download from a frozen element fails instead of hanging).
    #[arg(long, env = env::ELEMENT_IDLE_TIMEOUT_SECONDS, default_value_t = DEFAULT_ELEMENT_IDLE_SECONDS)]
    pub element_idle_timeout_seconds: u64,
    /// Seconds for one whole page of a storage element's listing.
    #[arg(long, env = env::ELEMENT_LISTING_TIMEOUT_SECONDS, default_value_t = DEFAULT_ELEMENT_LISTING_SECONDS)]
    pub element_listing_timeout_seconds: u64,
}

impl Default for TimeoutArgs {
    fn default() -> Self {
        TimeoutArgs {
            db_acquire_timeout_seconds: DEFAULT_DB_ACQUIRE_SECONDS,
            db_statement_timeout_seconds: DEFAULT_DB_STATEMENT_SECONDS,
            redis_connect_timeout_seconds: DEFAULT_REDIS_CONNECT_SECONDS,
            redis_response_timeout_seconds: DEFAULT_REDIS_RESPONSE_SECONDS,
            element_connect_timeout_seconds: DEFAULT_ELEMENT_CONNECT_SECONDS,
            element_idle_timeout_seconds: DEFAULT_ELEMENT_IDLE_SECONDS,
            element_listing_timeout_seconds: DEFAULT_ELEMENT_LISTING_SECONDS,
        }
    }
}

impl TimeoutArgs {
    /// The timeouts; zero is read as one second (a zero timeout would fail every call).
    pub fn timeouts(&self) -> Timeouts {
        let seconds = |n: u64| Duration::from_secs(n.max(1));
        Timeouts {
            db_acquire: seconds(self.db_acquire_timeout_seconds),
            db_statement: seconds(self.db_statement_timeout_seconds),
            redis_connect: seconds(self.redis_connect_timeout_seconds),
            redis_response: seconds(self.redis_response_timeout_seconds),
            element_connect: seconds(self.element_connect_timeout_seconds),
            element_idle: seconds(self.element_idle_timeout_seconds),
            element_listing: seconds(self.element_listing_timeout_seconds),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        timeouts: TimeoutArgs,
    }

    #[test]
    fn defaults_and_flags() {
        let parsed = Cli::try_parse_from(["q"]).expect("parse");
        assert_eq!(parsed.timeouts.timeouts(), Timeouts::default());
        assert_eq!(Timeouts::default().db_statement, Duration::from_secs(30));
        assert_eq!(Timeouts::default().element_idle, Duration::from_secs(10));
        let parsed = Cli::try_parse_from([
            "q",
            "--db-acquire-timeout-seconds",
            "7",
            "--db-statement-timeout-seconds",
            "0",
            "--redis-response-timeout-seconds",
            "4",
            "--element-idle-timeout-seconds",
            "2",
        ])
        .expect("parse");
        let t = parsed.timeouts.timeouts();
        assert_eq!(t.db_acquire, Duration::from_secs(7));
        assert_eq!(t.db_statement, Duration::from_secs(1), "zero reads as one");
        assert_eq!(t.redis_response, Duration::from_secs(4));
        assert_eq!(t.element_idle, Duration::from_secs(2));
        assert_eq!(t.element_connect, Duration::from_secs(3));
    }
}
