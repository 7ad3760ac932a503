//! The client commands of `artstore`: `login`, `upload`, `search`, `download`, `info`, `edit`,
//! `rm`. They speak to the archive through `artstore-client` and share one exit-status rule:
//! 0 when everything succeeded, 1 when any item failed (each failure explained on stderr),
//! 2 for usage errors (clap's own, and settings that are missing).

mod download;
mod files;
mod login;
mod output;
mod profile;
mod progress;
mod search;
mod upload;

use std::time::Duration;

use artstore_client::{IngesterClient, QueryClient, RetryPolicy, Timeouts};

pub use download::DownloadArgs;
pub use files::{EditArgs, InfoArgs, RmArgs};
pub use login::LoginArgs;
pub use search::SearchArgs;
pub use upload::UploadArgs;

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

/// Where to talk to and how hard to try; on every client command.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// Profile of the config file (`artstore login` writes it); default: the last one logged in.
    #[arg(long)]
    pub profile: Option<String>,
    /// The ingester's base URL [env: ARTSTORE_INGESTER_URL].
    #[arg(long)]
    pub ingester_url: Option<String>,
    /// The query node's base URL [env: ARTSTORE_QUERY_URL].
    #[arg(long)]
    pub query_url: Option<String>,
    /// Bearer token [env: ARTSTORE_TOKEN].
    #[arg(long)]
    pub token: Option<String>,
    /// Retries of a call that failed for a passing reason (429, 503, lost connection).
    #[arg(long, default_value_t = 5)]
    pub retries: usize,
}

/// A usage problem found after parsing: exit 2 with the message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

impl Connection {
    fn settings(&self) -> Result<profile::Profile, Usage> {
        let path = profile::config_path().map_err(|e| Usage(e.to_string()))?;
        let config = profile::Config::load(&path).map_err(|e| Usage(e.to_string()))?;
        let flags = profile::Flags {
            profile: self.profile.clone(),
            ingester_url: self.ingester_url.clone(),
            query_url: self.query_url.clone(),
            token: self.token.clone(),
        };
        profile::resolve(&flags, &config, |k| std::env::var(k).ok())
            .map_err(|e| Usage(e.to_string()))
    }

    fn retry(&self) -> RetryPolicy {
        RetryPolicy {
            retries: self.retries,
            ..RetryPolicy::default()
        }
    }

    fn token(settings: &profile::Profile) -> Result<String, Usage> {
        settings.token.clone().ok_or_else(|| {
            Usage(format!(
                "no token: pass --token, set {}, or run `artstore login`",
                profile::ENV_TOKEN
            ))
        })
    }

    pub fn ingester(&self) -> Result<IngesterClient, Usage> {
        let s = self.settings()?;
        let url = s.ingester_url.clone().ok_or_else(|| {
            Usage(format!(
                "no ingester URL: pass --ingester-url, set {}, or run `artstore login`",
                profile::ENV_INGESTER_URL
            ))
        })?;
        IngesterClient::new(&url, &Self::token(&s)?, Timeouts::default(), self.retry())
            .map_err(|e| Usage(e.to_string()))
    }

    pub fn query(&self) -> Result<QueryClient, Usage> {
        let s = self.settings()?;
        let url = s.query_url.clone().ok_or_else(|| {
            Usage(format!(
                "no query node URL: pass --query-url, set {}, or run `artstore login`",
                profile::ENV_QUERY_URL
            ))
        })?;
        QueryClient::new(&url, &Self::token(&s)?, Timeouts::default(), self.retry())
            .map_err(|e| Usage(e.to_string()))
    }
}

/// The client subcommands of `artstore`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Save an archive's URLs and token as a named profile.
    Login(LoginArgs),
    /// Upload files and folders.
    Upload(UploadArgs),
    /// Search the archive.
    Search(SearchArgs),
    /// Download a file, resuming an interrupted download and verifying its SHA-256.
    Download(DownloadArgs),
    /// Show a file's record.
    Info(InfoArgs),
    /// Change a file's description or tags.
    Edit(EditArgs),
    /// Delete files.
    Rm(RmArgs),
}

/// Runs a client command to its exit status.
pub async fn dispatch(command: Command) -> i32 {
    let outcome = match command {
        Command::Login(args) => login::run(args).await,
        Command::Upload(args) => upload::run(args).await,
        Command::Search(args) => search::run(args).await,
        Command::Download(args) => download::run(args).await,
        Command::Info(args) => files::info(args).await,
        Command::Edit(args) => files::edit(args).await,
        Command::Rm(args) => files::rm(args).await,
    };
    match outcome {
        Ok(code) => code,
        Err(Usage(message)) => {
            eprintln!("error: {message}");
            EXIT_USAGE
        }
    }
}

/// "in 3 s" / "in 250 ms".
fn wait_text(wait: Duration) -> String {
    if wait >= Duration::from_secs(1) {
        format!("{} s", wait.as_secs_f64().round())
    } else {
        format!("{} ms", wait.as_millis())
    }
}
