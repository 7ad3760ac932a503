//! `artstore`: the one binary of every workload role, and the archive's command-line client
//! (`login`, `upload`, `search`, `download`, `info`, `edit`, `rm`). The operator only knows its
//! command line and environment (`artstore_contract`), never this code.

use clap::{Parser, Subcommand};

mod client;
mod openapi;
mod stack;

#[derive(Parser)]
#[command(name = "artstore", version, about = "ArtStore file archive workloads")]
struct Cli {
    /// Log format: `json` (clusters) or `text`.
    #[arg(long, global = true, env = artstore_contract::env::LOG_FORMAT, default_value = "text")]
    log_format: String,
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// A storage element: stores files, their sidecars and its cache; publishes events.
    #[command(subcommand)]
    StorageElement(artstore_element::cli::Command),
    /// A query node: consumes events into its search index; serves search and download.
    #[command(subcommand)]
    QueryNode(artstore_query::cli::Command),
    /// The ingester: the authenticated upload gateway.
    #[command(subcommand)]
    Ingester(artstore_ingester::cli::Command),
    /// Run the whole archive locally (two storage elements, a query node, an ingester) against
    /// the services `scripts/services.sh` started; writes `stack.json`. For development.
    DevStack(stack::StackArgs),
    /// Print a signed token for the shared secret.
    Token(TokenArgs),
    /// Write the roles' OpenAPI documents to docs/openapi/ (or check them with `--check`).
    Openapi(openapi::OpenapiArgs),
    #[command(flatten)]
    Client(client::Command),
}

#[derive(clap::Args)]
struct TokenArgs {
    #[arg(long)]
    role: artstore_common::auth::Role,
    #[arg(long)]
    sub: String,
    /// Validity in seconds.
    #[arg(long, default_value_t = 86_400)]
    ttl: u64,
    #[arg(long, env = artstore_contract::env::JWT_SECRET_FILE)]
    secret_file: std::path::PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let log_format = cli.log_format;
    let init_logs = || artstore_common::telemetry::init(&log_format);
    match cli.role {
        // Client commands keep stdout for their output and exit with their own status (0, 1, 2).
        Role::Client(command) => std::process::exit(client::dispatch(command).await),
        Role::StorageElement(cmd) => {
            init_logs();
            artstore_element::cli::run(cmd).await
        }
        Role::QueryNode(cmd) => {
            init_logs();
            artstore_query::cli::run(cmd).await
        }
        Role::Ingester(cmd) => {
            init_logs();
            artstore_ingester::cli::run(cmd).await
        }
        Role::DevStack(args) => {
            init_logs();
            stack::run(args).await
        }
        Role::Openapi(args) => openapi::run(args),
        Role::Token(args) => {
            let secret = artstore_common::auth::read_secret_file(&args.secret_file)?;
            println!(
                "{}",
                artstore_common::auth::mint(&secret, &args.sub, args.role, args.ttl)?
            );
            Ok(())
        }
    }
}
