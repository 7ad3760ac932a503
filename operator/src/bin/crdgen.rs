//! Writes the CRDs to `crds/` (default), prints them (`--print`), or fails when the committed
//! files differ from the types (`--check`).

use std::path::PathBuf;

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let arg = std::env::args().nth(1);
    let dir = std::env::var_os("ARTSTORE_CRDS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds"));
    match arg.as_deref() {
        Some("--print") => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            for (_, crd) in artstore_operator::crd::all() {
                let yaml = artstore_operator::crd::to_yaml(&crd)?;
                // A closed pipe (`crdgen --print | head`) is the reader's choice, not an error.
                if let Err(e) = write!(out, "---\n{yaml}") {
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        return Ok(());
                    }
                    return Err(e.into());
                }
            }
        }
        Some("--check") => {
            let stale = artstore_operator::crd::stale_files(&dir)?;
            if !stale.is_empty() {
                bail!(
                    "stale CRDs in {}: {stale:?}; run `cargo run -p artstore-operator --bin crdgen`",
                    dir.display()
                );
            }
        }
        None => {
            std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
            for (file, crd) in artstore_operator::crd::all() {
                let path = dir.join(file);
                std::fs::write(&path, artstore_operator::crd::to_yaml(&crd)?)
                    .with_context(|| format!("write {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
        Some(other) => bail!("unknown argument {other:?}: expected --print or --check"),
    }
    Ok(())
}
