//! `artstore login`: saves where an archive is and a token for it as a named profile.

use std::path::PathBuf;

use artstore_client::{QueryClient, RetryPolicy, Timeouts};

use super::output::report_error;
use super::profile::{self, Config, Profile};
use super::{EXIT_FAILED, EXIT_OK, Usage};

#[derive(Debug, Clone, clap::Args)]
pub struct LoginArgs {
    /// Name of the profile to write; it becomes the default.
    #[arg(long, default_value = "default")]
    pub profile: String,
    #[arg(long)]
    pub ingester_url: Option<String>,
    #[arg(long)]
    pub query_url: Option<String>,
    #[arg(long, conflicts_with = "token_file")]
    pub token: Option<String>,
    /// Read the token from a file (keeps it out of the shell history).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Take URLs and a token from the local stack's `stack.json` (`scripts/dev.sh`).
    #[arg(long)]
    pub from_stack: Option<PathBuf>,
    /// Which of the stack's tokens to use.
    #[arg(long, default_value = "writer", value_parser = ["admin", "writer", "reader"])]
    pub role: String,
    /// Save without checking the token against the query node.
    #[arg(long)]
    pub no_verify: bool,
}

fn from_stack(path: &PathBuf, role: &str) -> Result<Profile, Usage> {
    let text = std::fs::read(path).map_err(|e| {
        Usage(format!(
            "{}: {e}: start the local stack with scripts/dev.sh first",
            path.display()
        ))
    })?;
    let stack: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| Usage(format!("{} is not a stack.json: {e}", path.display())))?;
    let field = |v: &serde_json::Value| v.as_str().map(String::from);
    Ok(Profile {
        ingester_url: field(&stack["ingester_url"]),
        query_url: field(&stack["query_url"]),
        token: field(&stack["tokens"][role]),
    })
}

pub async fn run(args: LoginArgs) -> Result<i32, Usage> {
    let mut new = match &args.from_stack {
        Some(path) => from_stack(path, &args.role)?,
        None => Profile::default(),
    };
    if let Some(url) = args.ingester_url {
        new.ingester_url = Some(url);
    }
    if let Some(url) = args.query_url {
        new.query_url = Some(url);
    }
    if let Some(token) = args.token {
        new.token = Some(token);
    }
    if let Some(file) = &args.token_file {
        let text =
            std::fs::read_to_string(file).map_err(|e| Usage(format!("{}: {e}", file.display())))?;
        new.token = Some(text.trim().to_string());
    }
    if new.ingester_url.is_none() && new.query_url.is_none() {
        return Err(Usage(
            "nothing to save: pass --ingester-url and --query-url (and --token), or --from-stack FILE".into(),
        ));
    }
    if new.token.is_none() {
        return Err(Usage(
            "no token: pass --token, --token-file or --from-stack".into(),
        ));
    }
    if !args.no_verify
        && let (Some(url), Some(token)) = (&new.query_url, &new.token)
    {
        let query = QueryClient::new(url, token, Timeouts::default(), RetryPolicy::none())
            .map_err(|e| Usage(e.to_string()))?;
        if let Err(e) = query.status().await {
            report_error(Some("login"), &e);
            eprintln!("  nothing was saved (--no-verify saves anyway)");
            return Ok(EXIT_FAILED);
        }
    }
    let path = profile::config_path().map_err(|e| Usage(e.to_string()))?;
    let mut config = Config::load(&path).map_err(|e| Usage(e.to_string()))?;
    config.profiles.insert(args.profile.clone(), new);
    config.default_profile = Some(args.profile.clone());
    config.save(&path).map_err(|e| Usage(e.to_string()))?;
    eprintln!(
        "profile {:?} saved to {} and made the default",
        args.profile,
        path.display()
    );
    Ok(EXIT_OK)
}
