//! `artstore download FILE_ID`: resumes an interrupted download, verifies the SHA-256, never
//! leaves a corrupt file behind.

use std::path::{Path, PathBuf};

use artstore_client::ClientError;

use super::output::{error_record, human_size, json_line, report_error};
use super::progress::Bars;
use super::{Connection, EXIT_FAILED, EXIT_OK, Usage, wait_text};

#[derive(Debug, Clone, clap::Args)]
pub struct DownloadArgs {
    pub file_id: String,
    /// Where to write: a file, or a directory to put it in under its name (default: here).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Replace an existing file.
    #[arg(long)]
    pub force: bool,
    /// One JSON object on stdout: the file record plus `path`.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: Connection,
}

/// The server's file name without any directory part, so a record cannot write elsewhere.
fn safe_name(original: &str) -> String {
    let name = original
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default()
        .trim();
    if name.is_empty() || name == "." || name == ".." {
        "download".into()
    } else {
        name.to_string()
    }
}

fn destination(output: Option<&Path>, original: &str) -> PathBuf {
    match output {
        Some(p) if p.is_dir() => p.join(safe_name(original)),
        Some(p) => p.to_path_buf(),
        None => PathBuf::from(safe_name(original)),
    }
}

pub async fn run(args: DownloadArgs) -> Result<i32, Usage> {
    let query = args.connection.query()?;
    let fail = |e: &ClientError| {
        if args.json {
            json_line(&error_record("file_id", &args.file_id, e));
        }
        report_error(Some(&args.file_id), e);
        Ok(EXIT_FAILED)
    };
    let record = match query.file(&args.file_id).await {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let dest = destination(args.output.as_deref(), &record.original_filename);
    if dest.exists() && !args.force {
        eprintln!(
            "error: {} already exists: pass --force to replace it, or -o to write elsewhere",
            dest.display()
        );
        return Ok(EXIT_FAILED);
    }
    let bars = Bars::for_stderr();
    let total = bars.total(record.size, &safe_name(&record.original_filename));
    let bar = std::sync::Arc::new(super::progress::Single(total.clone()));
    let notes = bars.clone();
    let label = args.file_id.clone();
    let on_retry = move |e: &ClientError, wait| {
        notes.note(&format!(
            "resuming {label} in {}: {e} [{}]",
            wait_text(wait),
            e.code()
        ));
    };
    let done = query.download_to(&record, &dest, bar, &on_retry).await;
    total.finish_and_clear();
    match done {
        Ok(d) => {
            if args.json {
                let mut value = serde_json::to_value(&record).unwrap_or_default();
                value["path"] = serde_json::json!(d.path.display().to_string());
                json_line(&value);
            } else {
                let resumed = if d.resumed_from > 0 {
                    format!(", resumed at {}", human_size(d.resumed_from))
                } else {
                    String::new()
                };
                println!(
                    "downloaded {} ({}{resumed}) to {}; SHA-256 verified",
                    record.file_id,
                    human_size(record.size),
                    d.path.display()
                );
            }
            Ok(EXIT_OK)
        }
        Err(e) => fail(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_cannot_escape_the_directory() {
        assert_eq!(safe_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_name("a\\b.txt"), "b.txt");
        assert_eq!(safe_name(".."), "download");
        assert_eq!(safe_name("report.pdf"), "report.pdf");
        assert_eq!(destination(None, "x/y.bin"), PathBuf::from("y.bin"));
    }
}
