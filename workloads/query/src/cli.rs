//! `artstore query-node ...`: the role's subcommands and their flags/environment
//! (names from `artstore_contract::env`).

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Serve the role's HTTP API.
    Serve,
}

pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve => anyhow::bail!("the query-node role is not built yet"),
    }
}
