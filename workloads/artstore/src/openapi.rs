//! `artstore openapi`: the three roles' OpenAPI documents, written to `docs/openapi/` or
//! compared with the committed copies (`--check`, as `crdgen --check` does for `crds/`).

use std::path::PathBuf;

use anyhow::{Context, bail};

#[derive(Debug, clap::Args)]
pub struct OpenapiArgs {
    /// Fail when a committed document differs from what the code describes now.
    #[arg(long)]
    pub check: bool,
    /// Where the documents live.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi"))]
    pub dir: PathBuf,
}

/// `(file name, document)` of every role.
pub fn documents() -> Vec<(&'static str, String)> {
    use artstore_common::openapi::to_json;
    vec![
        ("ingester.json", to_json(&artstore_ingester::openapi())),
        (
            "storage-element.json",
            to_json(&artstore_element::http::openapi()),
        ),
        ("query-node.json", to_json(&artstore_query::http::openapi())),
    ]
}

pub fn run(args: OpenapiArgs) -> anyhow::Result<()> {
    if args.check {
        let stale: Vec<&str> = documents()
            .into_iter()
            .filter(|(file, want)| {
                std::fs::read_to_string(args.dir.join(file)).ok().as_deref() != Some(want.as_str())
            })
            .map(|(file, _)| file)
            .collect();
        if !stale.is_empty() {
            bail!(
                "stale OpenAPI documents in {}: {stale:?}; run `cargo run -p artstore -- openapi`",
                args.dir.display()
            );
        }
        return Ok(());
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    for (file, text) in documents() {
        let path = args.dir.join(file);
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
