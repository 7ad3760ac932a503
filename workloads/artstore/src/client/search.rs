//! `artstore search QUERY`: a table of matches, or JSON Lines; `--all` follows the keyset
//! cursor to the last page.

use artstore_client::{Filters, SearchRequest, Sort, SortField};

use super::output::{json_line, report_error, results_table};
use super::{Connection, EXIT_FAILED, EXIT_OK, Usage};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SortBy {
    Relevance,
    Created,
    Size,
    Name,
}

#[derive(Debug, Clone, clap::Args)]
pub struct SearchArgs {
    /// Words to look for in names, descriptions, tags and owners (empty: every file).
    #[arg(default_value = "")]
    pub query: String,
    /// Only files carrying this tag (repeatable: all of them).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// MIME type, exact (`application/pdf`) or a family (`image/*`).
    #[arg(long = "type")]
    pub mime_type: Option<String>,
    /// Only files on this storage element.
    #[arg(long)]
    pub element: Option<String>,
    #[arg(long)]
    pub min_size: Option<u64>,
    #[arg(long)]
    pub max_size: Option<u64>,
    /// Created on or after: YYYY-MM-DD or an RFC 3339 time.
    #[arg(long, value_parser = parse_since)]
    pub since: Option<String>,
    /// Created before the end of this day (YYYY-MM-DD) or before this RFC 3339 time.
    #[arg(long, value_parser = parse_until)]
    pub until: Option<String>,
    #[arg(long, value_enum)]
    pub sort: Option<SortBy>,
    /// Results (per page with --all); at most 200.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=200))]
    pub limit: Option<u32>,
    /// Every match, page by page.
    #[arg(long)]
    pub all: bool,
    /// One file record per line on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: Connection,
}

fn parse_time(text: &str, day_end: bool) -> Result<String, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&chrono::Utc).to_rfc3339());
    }
    let day = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| format!("{text:?} is not a date: use YYYY-MM-DD or an RFC 3339 time"))?;
    let day = if day_end {
        day.succ_opt().unwrap_or(day)
    } else {
        day
    };
    Ok(day
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().to_rfc3339())
        .unwrap_or_default())
}

fn parse_since(text: &str) -> Result<String, String> {
    parse_time(text, false)
}

fn parse_until(text: &str) -> Result<String, String> {
    parse_time(text, true)
}

pub fn request(args: &SearchArgs) -> SearchRequest {
    SearchRequest {
        query: Some(args.query.trim().to_string()).filter(|q| !q.is_empty()),
        filters: Filters {
            mime_type: args.mime_type.clone(),
            tags_all: args.tags.clone(),
            size_min: args.min_size,
            size_max: args.max_size,
            created_after: args.since.clone(),
            created_before: args.until.clone(),
            storage_element_id: args.element.clone(),
            ..Filters::default()
        },
        sort: args.sort.map(|s| Sort {
            field: match s {
                SortBy::Relevance => SortField::Relevance,
                SortBy::Created => SortField::CreatedAt,
                SortBy::Size => SortField::Size,
                SortBy::Name => SortField::Name,
            },
            order: None,
        }),
        limit: Some(args.limit.unwrap_or(if args.all { 200 } else { 20 })),
        cursor: None,
    }
}

pub async fn run(args: SearchArgs) -> Result<i32, Usage> {
    let query = args.connection.query()?;
    let mut request = request(&args);
    let mut rows = Vec::new();
    loop {
        let page = match query.search(&request).await {
            Ok(page) => page,
            Err(e) => {
                report_error(Some("search"), &e);
                if args.json {
                    json_line(&super::output::error_record("query", &args.query, &e));
                }
                return Ok(EXIT_FAILED);
            }
        };
        if args.json {
            for r in &page.results {
                json_line(&serde_json::to_value(r).unwrap_or_default());
            }
        } else {
            rows.extend(page.results);
        }
        match page.next_cursor {
            Some(cursor) if args.all => request.cursor = Some(cursor),
            next => {
                if !args.json {
                    println!("{}", results_table(&rows));
                    let more = if next.is_some() {
                        "; --all for every page"
                    } else {
                        ""
                    };
                    let of = if page.total_count_capped {
                        format!("at least {}", page.total_count)
                    } else {
                        page.total_count.to_string()
                    };
                    println!("{} of {of} matches{more}", rows.len());
                }
                return Ok(EXIT_OK);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_become_rfc3339_bounds() {
        assert_eq!(
            parse_since("2026-11-03").as_deref(),
            Ok("2026-11-03T00:00:00+00:00")
        );
        assert_eq!(
            parse_until("2026-11-03").as_deref(),
            Ok("2026-11-04T00:00:00+00:00")
        );
        assert_eq!(
            parse_since("2026-11-03T10:00:00+02:00").as_deref(),
            Ok("2026-11-03T08:00:00+00:00")
        );
        assert!(parse_since("yesterday").is_err());
    }
}
