//! `POST /api/v1/search`: full-text (websearch syntax) plus trigram matching on filenames,
//! filters, sort, keyset pagination and a capped total count.

use artstore_common::ApiError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::store::{CachedRecord, RECORD_COLUMNS};

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 200;
/// `total_count` counts at most this many rows; above it the count says "at least".
pub const TOTAL_COUNT_CAP: i64 = 10_000;
/// Relevance ranks at most this many matches (the newest); keeps broad queries fast. One more
/// than the count cap, so the same set also gives the capped count.
pub const RANK_CANDIDATES: i64 = TOTAL_COUNT_CAP + 1;
pub const MAX_QUERY_CHARS: usize = 256;
pub const MAX_FILTER_VALUES: usize = 32;
pub const MAX_FILTER_CHARS: usize = 256;
/// Partial filename matching needs at least one trigram.
pub const MIN_TRIGRAM_CHARS: usize = 3;
pub const STATEMENT_TIMEOUT_MS: u64 = 5_000;

/// `POST /api/v1/search`: every field is optional; `{}` lists the newest files.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// Web-search syntax (`"exact phrase"`, `-word`, `or`) over name, description, tags and
    /// owner; three or more characters also match part of a name.
    #[serde(default)]
    #[schema(max_length = 256, pattern = r"^[^\u0000]*$")]
    pub query: Option<String>,
    #[serde(default)]
    pub filters: Filters,
    #[serde(default)]
    pub sort: Option<Sort>,
    /// Page size, 1 to 200 (default 20).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page, with the same query, filters and sort.
    #[serde(default)]
    pub cursor: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    /// Exact (`application/pdf`) or a whole family (`image/*`).
    #[serde(default)]
    #[schema(max_length = 256, pattern = r"^[^\u0000]*$")]
    pub mime_type: Option<String>,
    /// Files carrying every one of these tags.
    #[serde(default)]
    #[schema(value_type = Vec<FilterText>, max_items = 32)]
    pub tags_all: Vec<String>,
    /// Files carrying at least one of these tags.
    #[serde(default)]
    #[schema(value_type = Vec<FilterText>, max_items = 32)]
    pub tags_any: Vec<String>,
    /// Bytes, inclusive; not above `size_max`.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub size_min: Option<i64>,
    /// Bytes, inclusive.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub size_max: Option<i64>,
    /// Inclusive lower bound.
    #[serde(default)]
    pub created_after: Option<DateTime<Utc>>,
    /// Exclusive upper bound.
    #[serde(default)]
    pub created_before: Option<DateTime<Utc>>,
    #[serde(default)]
    #[schema(max_length = 256, pattern = r"^[^\u0000]*$")]
    pub storage_element_id: Option<String>,
    /// The `sub` of the token that uploaded the file.
    #[serde(default)]
    #[schema(max_length = 256, pattern = r"^[^\u0000]*$")]
    pub owner: Option<String>,
}

/// A filter value: at most 256 characters, no NUL.
#[derive(utoipa::ToSchema)]
#[schema(max_length = 256, pattern = r"^[^\u0000]*$")]
#[allow(dead_code)]
pub struct FilterText(String);

/// `relevance` needs a query and sorts descending only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SortField {
    Relevance,
    #[serde(alias = "created")]
    CreatedAt,
    Size,
    #[serde(alias = "filename")]
    Name,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    Asc,
    Desc,
}

/// Default: relevance with a query, else newest first; `name` defaults to ascending.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Sort {
    pub field: SortField,
    #[serde(default)]
    pub order: Option<Order>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchResponse {
    /// Indexed records; with a query each also has its relevance `score`.
    #[schema(value_type = Vec<crate::store::CachedRecord>)]
    pub results: Vec<serde_json::Value>,
    pub total_count: i64,
    /// True when there are more matches than `total_count` says (the count stops at a cap).
    pub total_count_capped: bool,
    pub next_cursor: Option<String>,
}

/// The sort position of the last row of a page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", content = "v", rename_all = "snake_case")]
enum SortKey {
    /// f64 bits: exact, whatever JSON does to floats.
    Relevance(u64),
    CreatedAt(DateTime<Utc>),
    Size(i64),
    Name(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct Cursor {
    /// Fingerprint of the query, filters and sort the cursor belongs to.
    f: String,
    k: SortKey,
    id: Uuid,
}

/// A validated request.
struct Plan {
    query: Option<String>,
    /// `%query%`, LIKE's metacharacters literal: the name term of relevance, and for queries of
    /// `MIN_TRIGRAM_CHARS` or more also a match of its own (partial names).
    name_pattern: Option<String>,
    /// `%word%` for the query's words, when it has other characters too (see `word_patterns`).
    word_patterns: Vec<String>,
    filters: Filters,
    field: SortField,
    order: Order,
    limit: i64,
    after: Option<(SortKey, Uuid)>,
    fingerprint: String,
}

/// Longest cursor text accepted (hex of a small JSON object; file names are at most 255 bytes).
const MAX_CURSOR_CHARS: usize = 4096;

/// Refuses sort positions no real row can have: text PostgreSQL cannot hold (NUL), times outside
/// its range, scores that are not numbers.
fn check_sort_key(key: &SortKey) -> Result<(), ApiError> {
    let valid = match key {
        SortKey::Relevance(bits) => f64::from_bits(*bits).is_finite(),
        SortKey::CreatedAt(t) => (1..=9999).contains(&chrono::Datelike::year(t)),
        SortKey::Size(size) => *size >= 0,
        SortKey::Name(name) => name.len() <= 1024 && !name.contains('\0'),
    };
    if valid {
        Ok(())
    } else {
        Err(bad(
            "invalid_cursor",
            "cursor is not one this service issued",
        ))
    }
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request(code, message)
}

fn check_text(what: &str, value: &str) -> Result<(), ApiError> {
    if value.contains('\0') {
        return Err(bad(
            "invalid_filter",
            format!("{what} contains a NUL character"),
        ));
    }
    if value.chars().count() > MAX_FILTER_CHARS {
        return Err(bad(
            "invalid_filter",
            format!("{what} is longer than {MAX_FILTER_CHARS} characters"),
        ));
    }
    Ok(())
}

/// `%`, `_` and `\` taken literally in a LIKE pattern.
fn like_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Most words of a query ANDed into its name match (any subset is correct; a few are enough).
const MAX_WORD_PATTERNS: usize = 8;

/// `%word%` for each distinct run of letters and digits in `query` at least
/// `MIN_TRIGRAM_CHARS` long, when the query is more than one such run. A name holding the whole
/// query holds each of them, so ANDing them into the name match changes no result; it changes
/// the trigram scan: a phrase's own trigrams include those at its spaces (` w0` is in nearly
/// every name), whose long posting lists the index then reads, while the words' trigrams alone
/// are rare (two words at ten million files: 38 ms → 4 ms, docs/performance.md).
///
/// ASCII queries only: ILIKE lowercases the whole name and the whole pattern, and outside a
/// libc locale lowercasing can depend on the neighbouring characters (ICU lowercases a Greek
/// `Σ` to `ς` at a word's end and to `σ` before `.` and a letter), so a word cut out of a
/// non-ASCII query could lowercase otherwise than inside it and miss a name the query matches.
fn word_patterns(query: &str) -> Vec<String> {
    if !query.is_ascii() {
        return Vec::new();
    }
    let mut words: Vec<&str> = Vec::new();
    for word in query.split(|c: char| !c.is_alphanumeric()) {
        if word.chars().count() >= MIN_TRIGRAM_CHARS && !words.contains(&word) {
            words.push(word);
        }
    }
    if words.len() == 1 && words[0] == query {
        return Vec::new();
    }
    words
        .into_iter()
        .take(MAX_WORD_PATTERNS)
        .map(|word| format!("%{}%", like_escape(word)))
        .collect()
}

fn plan(request: SearchRequest) -> Result<Plan, ApiError> {
    let query = request
        .query
        .map(|q| q.trim().to_string())
        .filter(|q| !q.is_empty());
    if let Some(q) = &query {
        if q.contains('\0') {
            return Err(bad("invalid_query", "query contains a NUL character"));
        }
        if q.chars().count() > MAX_QUERY_CHARS {
            return Err(bad(
                "invalid_query",
                format!("query is longer than {MAX_QUERY_CHARS} characters"),
            ));
        }
    }
    let f = &request.filters;
    for (what, value) in [
        ("mime_type", &f.mime_type),
        ("storage_element_id", &f.storage_element_id),
        ("owner", &f.owner),
    ] {
        if let Some(v) = value {
            check_text(what, v)?;
        }
    }
    for (what, list) in [("tags_all", &f.tags_all), ("tags_any", &f.tags_any)] {
        if list.len() > MAX_FILTER_VALUES {
            return Err(bad(
                "invalid_filter",
                format!("{what} has more than {MAX_FILTER_VALUES} values"),
            ));
        }
        for tag in list {
            check_text(what, tag)?;
        }
    }
    if f.size_min.is_some_and(|s| s < 0) || f.size_max.is_some_and(|s| s < 0) {
        return Err(bad("invalid_filter", "sizes cannot be negative"));
    }
    if let (Some(min), Some(max)) = (f.size_min, f.size_max)
        && min > max
    {
        return Err(bad("invalid_filter", "size_min is greater than size_max"));
    }
    if let (Some(after), Some(before)) = (f.created_after, f.created_before)
        && after > before
    {
        return Err(bad(
            "invalid_filter",
            "created_after is later than created_before",
        ));
    }
    let limit = request.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(bad(
            "invalid_limit",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let (field, order) = match request.sort {
        Some(Sort {
            field: SortField::Relevance,
            ..
        }) if query.is_none() => {
            return Err(bad("invalid_sort", "sorting by relevance needs a query"));
        }
        Some(sort) => (
            sort.field,
            sort.order.unwrap_or(match sort.field {
                SortField::Name => Order::Asc,
                _ => Order::Desc,
            }),
        ),
        None if query.is_some() => (SortField::Relevance, Order::Desc),
        None => (SortField::CreatedAt, Order::Desc),
    };
    if field == SortField::Relevance && order == Order::Asc {
        return Err(bad("invalid_sort", "relevance sorts descending only"));
    }
    let fingerprint = {
        let canonical = serde_json::json!({
            "q": query, "f": request.filters, "s": field, "o": order,
        });
        let digest = Sha256::digest(canonical.to_string().as_bytes());
        hex::encode(&digest[..8])
    };
    let after = match request.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(text) if text.len() > MAX_CURSOR_CHARS => {
            return Err(bad(
                "invalid_cursor",
                "cursor is not one this service issued",
            ));
        }
        Some(text) => {
            let cursor: Cursor = hex::decode(text)
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                .ok_or_else(|| bad("invalid_cursor", "cursor is not one this service issued"))?;
            if cursor.f != fingerprint {
                return Err(bad(
                    "invalid_cursor",
                    "cursor belongs to a different query, filter or sort",
                ));
            }
            let matches_field = matches!(
                (&cursor.k, field),
                (SortKey::Relevance(_), SortField::Relevance)
                    | (SortKey::CreatedAt(_), SortField::CreatedAt)
                    | (SortKey::Size(_), SortField::Size)
                    | (SortKey::Name(_), SortField::Name)
            );
            if !matches_field {
                return Err(bad("invalid_cursor", "cursor belongs to a different sort"));
            }
            // A cursor is plain JSON, so a client can forge one: its values must be ones the
            // database can compare, or the search would fail with a server error.
            check_sort_key(&cursor.k)?;
            Some((cursor.k, cursor.id))
        }
    };
    let name_pattern = query.as_ref().map(|q| format!("%{}%", like_escape(q)));
    let word_patterns = query.as_deref().map(word_patterns).unwrap_or_default();
    Ok(Plan {
        query,
        name_pattern,
        word_patterns,
        filters: request.filters,
        field,
        order,
        limit,
        after,
        fingerprint,
    })
}

/// `NOT deleted AND <match> AND <filters>`.
fn push_where(qb: &mut QueryBuilder<Postgres>, plan: &Plan) {
    qb.push(" WHERE NOT deleted");
    if let Some(q) = &plan.query {
        qb.push(" AND (search_vector @@ websearch_to_tsquery('simple', ");
        qb.push_bind(q.clone());
        qb.push(")");
        if let Some(pattern) = plan
            .name_pattern
            .as_ref()
            .filter(|_| q.chars().count() >= MIN_TRIGRAM_CHARS)
        {
            // The words first: GIN's scan follows the order of its conditions, and the
            // phrase's common trigrams read first cost as much as the phrase alone.
            qb.push(" OR (");
            for word in &plan.word_patterns {
                qb.push("original_filename ILIKE ");
                qb.push_bind(word.clone());
                qb.push(" AND ");
            }
            qb.push("original_filename ILIKE ");
            qb.push_bind(pattern.clone());
            qb.push(")");
        }
        qb.push(")");
    }
    let f = &plan.filters;
    if let Some(mime) = &f.mime_type {
        if let Some(family) = mime.strip_suffix("/*") {
            qb.push(" AND mime_type LIKE ");
            qb.push_bind(format!("{}/%", like_escape(family)));
        } else {
            qb.push(" AND mime_type = ");
            qb.push_bind(mime.clone());
        }
    }
    if !f.tags_all.is_empty() {
        qb.push(" AND tags @> ");
        qb.push_bind(f.tags_all.clone());
    }
    if !f.tags_any.is_empty() {
        qb.push(" AND tags && ");
        qb.push_bind(f.tags_any.clone());
    }
    if let Some(min) = f.size_min {
        qb.push(" AND size >= ");
        qb.push_bind(min);
    }
    if let Some(max) = f.size_max {
        qb.push(" AND size <= ");
        qb.push_bind(max);
    }
    if let Some(after) = f.created_after {
        qb.push(" AND created_at >= ");
        qb.push_bind(after);
    }
    if let Some(before) = f.created_before {
        qb.push(" AND created_at < ");
        qb.push_bind(before);
    }
    if let Some(element) = &f.storage_element_id {
        qb.push(" AND storage_element_id = ");
        qb.push_bind(element.clone());
    }
    if let Some(owner) = &f.owner {
        qb.push(" AND created_by = ");
        qb.push_bind(owner.clone());
    }
}

/// Relevance: `ts_rank` (filename words weigh most, then tags, owner, description) plus, when the
/// name contains the query (any case), the share of the name the query makes up. Trigram
/// `similarity()` cost ten times more per candidate and was most of a broad query's time
/// (docs/performance.md). LIKE first: it compares bytes, and most names that hold the query
/// hold it in the case it was typed; ILIKE lowercases a copy of every name it is asked about.
fn push_score(qb: &mut QueryBuilder<Postgres>, plan: &Plan) {
    let query = plan.query.clone().unwrap_or_default();
    let query_chars = query.chars().count() as f64;
    let pattern = plan.name_pattern.clone().unwrap_or_default();
    qb.push("(ts_rank(search_vector, websearch_to_tsquery('simple', ");
    qb.push_bind(query);
    qb.push("))::float8 + CASE WHEN original_filename LIKE ");
    qb.push_bind(pattern.clone());
    qb.push(" OR original_filename ILIKE ");
    qb.push_bind(pattern);
    qb.push(" THEN ");
    qb.push_bind(query_chars);
    qb.push(" / greatest(char_length(original_filename), 1) ELSE 0 END)");
}

fn sort_expr(field: SortField) -> &'static str {
    match field {
        SortField::Relevance => "score",
        SortField::CreatedAt => "created_at",
        SortField::Size => "size",
        SortField::Name => "(original_filename COLLATE \"C\")",
    }
}

#[derive(sqlx::FromRow)]
struct Hit {
    #[sqlx(flatten)]
    record: CachedRecord,
    score: Option<f64>,
    /// Relevance only: how many candidates matched (the capped count, from the same scan).
    matched: Option<i64>,
}

fn page_query(plan: &Plan) -> QueryBuilder<Postgres> {
    let mut qb = QueryBuilder::new("");
    let dir = match plan.order {
        Order::Asc => "ASC",
        Order::Desc => "DESC",
    };
    let cmp = match plan.order {
        Order::Asc => ">",
        Order::Desc => "<",
    };
    if plan.field == SortField::Relevance {
        // Rank at most RANK_CANDIDATES matches (the newest), then page through them. The
        // candidates carry only their id and score (narrow rows stay in memory; whole records
        // would spill to disk); the page's records are read after the page is chosen.
        qb.push("WITH candidates AS (SELECT file_id, ");
        push_score(&mut qb, plan);
        qb.push(" AS score FROM file_cache");
        push_where(&mut qb, plan);
        qb.push(" ORDER BY created_at DESC, file_id DESC LIMIT ");
        qb.push_bind(RANK_CANDIDATES);
        qb.push("), page AS (SELECT file_id, score FROM candidates");
        if let Some((SortKey::Relevance(bits), id)) = &plan.after {
            qb.push(format!(" WHERE (score, file_id) {cmp} ("));
            qb.push_bind(f64::from_bits(*bits));
            qb.push(", ");
            qb.push_bind(*id);
            qb.push(")");
        }
        qb.push(format!(" ORDER BY score {dir}, file_id {dir} LIMIT "));
        qb.push_bind(plan.limit + 1);
        qb.push(format!(
            ") SELECT {}, page.score, (SELECT count(*) FROM candidates) AS matched \
             FROM page JOIN file_cache f ON f.file_id = page.file_id \
             ORDER BY page.score {dir}, page.file_id {dir}",
            prefixed_record_columns("f")
        ));
        return qb;
    }
    qb.push(format!(
        "SELECT {RECORD_COLUMNS}, NULL::float8 AS score, NULL::int8 AS matched FROM file_cache"
    ));
    push_where(&mut qb, plan);
    if let Some((key, id)) = &plan.after {
        qb.push(format!(" AND ({}, file_id) {cmp} (", sort_expr(plan.field)));
        match key {
            SortKey::CreatedAt(t) => qb.push_bind(*t),
            SortKey::Size(s) => qb.push_bind(*s),
            SortKey::Name(n) => qb.push_bind(n.clone()).push(" COLLATE \"C\""),
            SortKey::Relevance(bits) => qb.push_bind(f64::from_bits(*bits)),
        };
        qb.push(", ");
        qb.push_bind(*id);
        qb.push(")");
    }
    qb.push(format!(
        " ORDER BY {} {dir}, file_id {dir} LIMIT ",
        sort_expr(plan.field)
    ));
    qb.push_bind(plan.limit + 1);
    qb
}

/// `RECORD_COLUMNS`, each qualified with `alias`.
fn prefixed_record_columns(alias: &str) -> String {
    RECORD_COLUMNS
        .split(',')
        .map(|c| format!("{alias}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn count_query(plan: &Plan) -> QueryBuilder<Postgres> {
    let mut qb = QueryBuilder::new("SELECT count(*) FROM (SELECT 1 FROM file_cache");
    push_where(&mut qb, plan);
    qb.push(" LIMIT ");
    qb.push_bind(TOTAL_COUNT_CAP + 1);
    qb.push(") AS capped");
    qb
}

fn key_of(field: SortField, hit: &Hit) -> SortKey {
    match field {
        SortField::Relevance => SortKey::Relevance(hit.score.unwrap_or(0.0).to_bits()),
        SortField::CreatedAt => SortKey::CreatedAt(hit.record.created_at),
        SortField::Size => SortKey::Size(hit.record.size),
        SortField::Name => SortKey::Name(hit.record.original_filename.clone()),
    }
}

fn db_error(e: sqlx::Error) -> ApiError {
    if let sqlx::Error::Database(db) = &e
        && db.code().as_deref() == Some("57014")
    {
        return ApiError::unavailable(
            "search_timeout",
            "the search took too long; narrow it with filters",
        )
        .with_retry_after(1);
    }
    if crate::store::is_unavailable(&e) {
        tracing::warn!(error = %e, "search database unavailable");
        ApiError::unavailable("database_unavailable", "the search database is unavailable")
            .with_retry_after(1)
    } else {
        ApiError::internal(e)
    }
}

pub async fn search(pool: &PgPool, request: SearchRequest) -> Result<SearchResponse, ApiError> {
    let plan = plan(request)?;
    // BEGIN and the settings as one simple query: one round trip. No parallel workers and no
    // JIT: both pay off for long scans, a search is a short one — a worker is a new process
    // (tens of ms before its first row) and compiling a plan costs more than running it.
    let mut tx = pool
        .begin_with(sqlx::AssertSqlSafe(format!(
            "BEGIN; SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}; \
             SET LOCAL max_parallel_workers_per_gather = 0; SET LOCAL jit = off"
        )))
        .await
        .map_err(db_error)?;
    let mut page = page_query(&plan);
    // Unnamed statements, planned for each request's values: a cached generic plan cannot know
    // whether a word is in three files or in all of them, and PostgreSQL switches to one after
    // five runs of a statement (measured: broad queries 1 s instead of 7-15 ms).
    let mut hits: Vec<Hit> = page
        .build_query_as::<Hit>()
        .persistent(false)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
    let more = hits.len() as i64 > plan.limit;
    // A first page that holds every match is its own count; relevance counts its candidates.
    let counted: i64 = if plan.after.is_none() && !more {
        hits.len() as i64
    } else if let Some(matched) = hits.first().and_then(|h| h.matched) {
        matched
    } else {
        count_query(&plan)
            .build_query_scalar::<i64>()
            .persistent(false)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?
    };
    tx.commit().await.map_err(db_error)?;

    hits.truncate(plan.limit as usize);
    let next_cursor = match hits.last() {
        Some(last) if more => {
            let cursor = Cursor {
                f: plan.fingerprint.clone(),
                k: key_of(plan.field, last),
                id: last.record.file_id,
            };
            serde_json::to_vec(&cursor).ok().map(hex::encode)
        }
        _ => None,
    };
    let results = hits
        .iter()
        .map(|hit| {
            let mut value = hit.record.to_json();
            if let (Some(score), Some(obj)) = (hit.score, value.as_object_mut()) {
                obj.insert("score".into(), serde_json::json!(score));
            }
            value
        })
        .collect();
    Ok(SearchResponse {
        results,
        total_count: counted.min(TOTAL_COUNT_CAP),
        total_count_capped: counted > TOTAL_COUNT_CAP,
        next_cursor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: serde_json::Value) -> Result<Plan, ApiError> {
        let request: SearchRequest =
            serde_json::from_value(json).map_err(|e| bad("x", e.to_string()))?;
        plan(request)
    }

    #[test]
    fn bad_requests_are_refused_with_codes() {
        let code = |json| request(json).err().map(|e| e.code).unwrap_or_default();
        assert_eq!(code(serde_json::json!({"limit": 0})), "invalid_limit");
        assert_eq!(code(serde_json::json!({"limit": 201})), "invalid_limit");
        assert_eq!(
            code(serde_json::json!({"sort": {"field": "relevance"}})),
            "invalid_sort"
        );
        assert_eq!(
            code(serde_json::json!({"query": "a\u{0}b"})),
            "invalid_query"
        );
        assert_eq!(
            code(serde_json::json!({"filters": {"size_min": 5, "size_max": 1}})),
            "invalid_filter"
        );
        assert_eq!(code(serde_json::json!({"cursor": "zz"})), "invalid_cursor");
        assert!(request(serde_json::json!({"query": "x".repeat(257)})).is_err());
        assert!(request(serde_json::json!({"query": "  "})).is_ok_and(|p| p.query.is_none()));
    }

    #[test]
    fn a_phrase_adds_its_words_to_the_name_match() {
        assert!(word_patterns("w0074").is_empty());
        assert!(word_patterns("ab").is_empty());
        assert_eq!(word_patterns("w0074 w0111"), vec!["%w0074%", "%w0111%"]);
        // Short runs are left out (no trigram of their own); repeats once; the whole
        // single word again when the query has other characters.
        assert_eq!(word_patterns("a report, report"), vec!["%report%"]);
        assert_eq!(word_patterns("report."), vec!["%report%"]);
        assert_eq!(word_patterns("Report_2026"), vec!["%Report%", "%2026%"]);
        // Not ASCII: the name match as it was (see the function's note on lowercasing).
        assert!(word_patterns("ΟΓΟΣ.PD").is_empty());
        assert!(word_patterns("größe_Ünï").is_empty());
        assert!(word_patterns("%%% __").is_empty());
        let many = (0..20).map(|i| format!("word{i}")).collect::<Vec<_>>();
        assert_eq!(word_patterns(&many.join(" ")).len(), MAX_WORD_PATTERNS);
    }

    #[test]
    fn forged_cursors_are_refused_not_sent_to_the_database() {
        let fingerprint = |json: serde_json::Value| request(json).expect("plan").fingerprint;
        let forged = |base: serde_json::Value, key: serde_json::Value| {
            let f = fingerprint(base.clone());
            let cursor = serde_json::json!({"f": f, "k": key, "id": uuid::Uuid::nil()});
            let mut with = base;
            with["cursor"] = serde_json::Value::String(hex::encode(cursor.to_string()));
            request(with).err().map(|e| e.code).unwrap_or_default()
        };
        let by_name = serde_json::json!({"sort": {"field": "name", "order": "asc"}});
        let by_date = serde_json::json!({});
        let by_size = serde_json::json!({"sort": {"field": "size", "order": "asc"}});
        assert_eq!(
            forged(
                by_name.clone(),
                serde_json::json!({"t": "name", "v": "a\u{0}b"})
            ),
            "invalid_cursor"
        );
        assert_eq!(
            forged(
                by_name.clone(),
                serde_json::json!({"t": "name", "v": "x".repeat(2000)})
            ),
            "invalid_cursor"
        );
        assert_eq!(
            forged(
                by_date.clone(),
                serde_json::json!({"t": "created_at", "v": "-200000-01-01T00:00:00Z"})
            ),
            "invalid_cursor"
        );
        assert_eq!(
            forged(by_size.clone(), serde_json::json!({"t": "size", "v": -1})),
            "invalid_cursor"
        );
        assert_eq!(
            code_of(serde_json::json!({"cursor": "ab".repeat(3000)})),
            "invalid_cursor"
        );
        // A well-formed position is accepted.
        assert_eq!(
            forged(by_name, serde_json::json!({"t": "name", "v": "report.pdf"})),
            ""
        );
        assert_eq!(
            forged(
                by_date,
                serde_json::json!({"t": "created_at", "v": "2026-01-01T00:00:00Z"})
            ),
            ""
        );
    }

    fn code_of(json: serde_json::Value) -> std::borrow::Cow<'static, str> {
        request(json).err().map(|e| e.code).unwrap_or_default()
    }

    #[test]
    fn like_patterns_take_metacharacters_literally() {
        assert_eq!(like_escape("50%_a\\b"), "50\\%\\_a\\\\b");
    }
}
