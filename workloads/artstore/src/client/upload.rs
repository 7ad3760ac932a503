//! `artstore upload PATH...`: files streamed from disk, several at once, one idempotency key
//! per file, retried on passing failures, a line per file and a summary at the end.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use artstore_client::{ClientError, IngesterClient, UploadMeta, UploadOptions};
use futures::StreamExt;

use super::output::{error_record, human_size, json_line, report_error};
use super::progress::Bars;
use super::{Connection, EXIT_FAILED, EXIT_OK, Usage, wait_text};

#[derive(Debug, Clone, clap::Args)]
pub struct UploadArgs {
    /// Files, or directories with --recursive.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Upload the files under directories (symbolic links are not followed).
    #[arg(short, long)]
    pub recursive: bool,
    /// A tag for every file (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    #[arg(long)]
    pub description: Option<String>,
    #[arg(long, value_parser = ["temporary", "permanent"])]
    pub retention: Option<String>,
    /// Days a temporary file is kept.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub retention_days: Option<u32>,
    /// Files uploaded at the same time.
    #[arg(short, long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    /// One JSON object per line on stdout: the file record, or {path, error}.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: Connection,
}

struct Item {
    path: PathBuf,
    name: String,
    size: u64,
}

/// The files to upload, in a stable order; a path that cannot be read is a usage error.
fn collect(paths: &[PathBuf], recursive: bool) -> Result<Vec<Item>, Usage> {
    let mut items = Vec::new();
    for path in paths {
        let meta =
            std::fs::metadata(path).map_err(|e| Usage(format!("{}: {e}", path.display())))?;
        if meta.is_dir() {
            if !recursive {
                return Err(Usage(format!(
                    "{} is a directory: add --recursive to upload the files under it",
                    path.display()
                )));
            }
            let mut found = Vec::new();
            for entry in walkdir::WalkDir::new(path).sort_by_file_name() {
                let entry = entry.map_err(|e| Usage(format!("{}: {e}", path.display())))?;
                if entry.file_type().is_file() {
                    let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                    found.push(item(entry.path(), size));
                }
            }
            items.extend(found);
        } else {
            items.push(item(path, meta.len()));
        }
    }
    Ok(items)
}

fn item(path: &Path, size: u64) -> Item {
    Item {
        path: path.to_path_buf(),
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into()),
        size,
    }
}

pub async fn run(args: UploadArgs) -> Result<i32, Usage> {
    let ingester = args.connection.ingester()?;
    let items = collect(&args.paths, args.recursive)?;
    if items.is_empty() {
        return Err(Usage("no files found under the given paths".into()));
    }
    let meta = UploadMeta {
        description: args.description.clone(),
        tags: args.tags.clone(),
        retention: args.retention.clone(),
        retention_days: args.retention_days,
    };
    let bars = Bars::for_stderr();
    let total_bytes: u64 = items.iter().map(|i| i.size).sum();
    let total = bars.total(total_bytes, &format!("{} files", items.len()));
    let started = Instant::now();
    let count = items.len();

    let results = futures::stream::iter(items)
        .map(|item| upload_one(&ingester, item, &meta, &bars, &total))
        .buffer_unordered(usize::from(args.jobs));
    let mut stored = 0usize;
    let mut replayed = 0usize;
    let mut failed = 0usize;
    let mut bytes = 0u64;
    futures::pin_mut!(results);
    while let Some((item, result)) = results.next().await {
        match result {
            Ok(up) => {
                stored += 1;
                replayed += usize::from(up.replayed);
                bytes += up.record.size;
                if args.json {
                    json_line(&serde_json::to_value(&up.record).unwrap_or_default());
                } else {
                    let line = format!(
                        "{}  {}  {}  {}",
                        if up.replayed { "replayed" } else { "stored  " },
                        up.record.file_id,
                        human_size(up.record.size),
                        item.path.display()
                    );
                    if bars.drawn() {
                        bars.note(&line);
                    } else {
                        println!("{line}");
                    }
                }
            }
            Err(e) => {
                failed += 1;
                if args.json {
                    json_line(&error_record("path", &item.path.display().to_string(), &e));
                }
                report_error(Some(&item.path.display().to_string()), &e);
            }
        }
    }
    total.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let summary = format!(
        "{stored} of {count} files stored ({}{}) in {elapsed:.1} s, {:.1} files/s; {failed} failed",
        human_size(bytes),
        if replayed > 0 {
            format!(", {replayed} replayed")
        } else {
            String::new()
        },
        stored as f64 / elapsed.max(1e-9),
    );
    if args.json {
        eprintln!("{summary}");
    } else {
        println!("{summary}");
    }
    Ok(if failed == 0 { EXIT_OK } else { EXIT_FAILED })
}

async fn upload_one(
    ingester: &IngesterClient,
    item: Item,
    meta: &UploadMeta,
    bars: &Bars,
    total: &indicatif::ProgressBar,
) -> (Item, Result<artstore_client::Uploaded, ClientError>) {
    let bar = bars.file(&item.name, item.size, total);
    let notes = bars.clone();
    let label = item.path.display().to_string();
    let options = UploadOptions {
        progress: bar.clone(),
        on_retry: Arc::new(move |e: &ClientError, wait| {
            notes.note(&format!(
                "retrying {label} in {}: {} [{}]",
                wait_text(wait),
                e,
                e.code()
            ));
        }),
        ..UploadOptions::default()
    };
    let result = ingester
        .upload(&item.path, &item.name, meta, &options)
        .await;
    bars.remove(&bar.bar);
    (item, result)
}
