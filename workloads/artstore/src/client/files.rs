//! `artstore info`, `artstore edit`, `artstore rm`: one file's record, its metadata, its end.

use artstore_client::MetadataPatch;

use super::output::{error_record, json_line, record_view, report_error};
use super::{Connection, EXIT_FAILED, EXIT_OK, Usage};

#[derive(Debug, Clone, clap::Args)]
pub struct InfoArgs {
    pub file_id: String,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Clone, clap::Args)]
pub struct EditArgs {
    pub file_id: String,
    #[arg(long)]
    pub description: Option<String>,
    /// Add a tag (repeatable).
    #[arg(long = "add-tag")]
    pub add_tags: Vec<String>,
    /// Remove a tag (repeatable).
    #[arg(long = "remove-tag")]
    pub remove_tags: Vec<String>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RmArgs {
    #[arg(required = true)]
    pub file_ids: Vec<String>,
    /// One `{file_id, deleted}` (or `{file_id, error}`) per line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: Connection,
}

fn failed(json: bool, id: &str, e: &artstore_client::ClientError) -> i32 {
    if json {
        json_line(&error_record("file_id", id, e));
    }
    report_error(Some(id), e);
    EXIT_FAILED
}

pub async fn info(args: InfoArgs) -> Result<i32, Usage> {
    let query = args.connection.query()?;
    match query.file(&args.file_id).await {
        Ok(record) => {
            if args.json {
                json_line(&serde_json::to_value(&record).unwrap_or_default());
            } else {
                println!("{}", record_view(&record));
            }
            Ok(EXIT_OK)
        }
        Err(e) => Ok(failed(args.json, &args.file_id, &e)),
    }
}

/// Tags are a set on the server; adding and removing reads the current set from the query node
/// first, then writes the whole set back through the ingester.
pub async fn edit(args: EditArgs) -> Result<i32, Usage> {
    if args.description.is_none() && args.add_tags.is_empty() && args.remove_tags.is_empty() {
        return Err(Usage(
            "nothing to change: pass --description, --add-tag or --remove-tag".into(),
        ));
    }
    let ingester = args.connection.ingester()?;
    let mut patch = MetadataPatch {
        description: args.description.clone(),
        tags: None,
    };
    if !args.add_tags.is_empty() || !args.remove_tags.is_empty() {
        let query = args.connection.query()?;
        let record = match query.file(&args.file_id).await {
            Ok(r) => r,
            Err(e) => return Ok(failed(args.json, &args.file_id, &e)),
        };
        let mut tags: Vec<String> = record
            .tags
            .into_iter()
            .filter(|t| !args.remove_tags.contains(t))
            .collect();
        for t in &args.add_tags {
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
        patch.tags = Some(tags);
    }
    match ingester.update(&args.file_id, &patch).await {
        Ok(record) => {
            if args.json {
                json_line(&serde_json::to_value(&record).unwrap_or_default());
            } else {
                println!("{}", record_view(&record));
            }
            Ok(EXIT_OK)
        }
        Err(e) => Ok(failed(args.json, &args.file_id, &e)),
    }
}

pub async fn rm(args: RmArgs) -> Result<i32, Usage> {
    let ingester = args.connection.ingester()?;
    let mut code = EXIT_OK;
    for id in &args.file_ids {
        match ingester.delete(id).await {
            Ok(()) => {
                if args.json {
                    json_line(&serde_json::json!({"file_id": id, "deleted": true}));
                } else {
                    println!("deleted {id}");
                }
            }
            Err(e) => code = failed(args.json, id, &e),
        }
    }
    Ok(code)
}
