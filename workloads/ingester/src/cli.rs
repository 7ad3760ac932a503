//! `artstore ingester serve`.

use artstore_common::registry::RegistryHandle;

use crate::IngesterConfig;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Serve the upload gateway.
    Serve(IngesterConfig),
}

pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(config) => {
            let verifier = artstore_common::serve::verifier(
                &config.jwt_secret_file,
                config.jwt_public_key_file.as_deref(),
            )
            .map_err(anyhow::Error::msg)?
            .with_leeway(config.jwt_leeway_seconds);
            let registry = RegistryHandle::file(config.registry_file.clone());
            // Fail at start, not on the first upload, when the file is missing or broken.
            registry.current().await?;
            let listen = config.listen;
            let timeouts = config.server.timeouts();
            let ingester = crate::build(config, registry, verifier).await?;
            artstore_common::serve::serve(listen, ingester.router, timeouts).await?;
            Ok(())
        }
    }
}
