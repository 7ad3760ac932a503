//! Convergence: after the faults stop, the system's own repair (what an operator runs) and a
//! bounded wait, then every ledger entry compared with what the elements, the search index and
//! the stores hold.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use artstore_common::auth::Role;
use serde_json::{Value, json};

use crate::archive::{self, Archive};
use crate::ledger::{Answer, Meta, State, Upload};
use crate::workload::sha256_hex;

/// The ledger's verdict.
#[derive(Debug, Default)]
pub struct Totals {
    /// Requests answered 2xx (every kind).
    pub acknowledged: u64,
    /// Requests answered with an error or not answered (every kind).
    pub failed: u64,
    /// Acknowledged writes missing, or with other bytes.
    pub lost: u64,
    /// More than one stored copy of one logical upload.
    pub duplicated: u64,
    /// An element or the search index showing less than what was acknowledged.
    pub stale: u64,
    /// Changes neither old nor new as a whole, or element and search disagreeing on one.
    pub half_applied: u64,
    /// An upload answered with an error that was stored anyway.
    pub phantom: u64,
    /// Stored files nobody uploaded, blobs without a sidecar, unfinished uploads, temp files.
    pub orphaned: u64,
    /// Events not delivered: outbox rows unsent, entries pending or unread in the group, dead
    /// letters.
    pub pending: u64,
    pub problems: Vec<String>,
}

impl Totals {
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.stale == 0
            && self.half_applied == 0
            && self.phantom == 0
            && self.orphaned == 0
            && self.pending == 0
    }

    fn problem(&mut self, what: String) {
        if self.problems.len() < 200 {
            self.problems.push(what);
        }
    }
}

fn admin(archive: &Archive) -> String {
    archive.token(Role::Admin, "chaos-operator")
}

/// The operator's repair: an incremental rebuild of every element (the scheduled CronJob; it
/// repairs cache differences, deletes orphan blobs and unfinished uploads older than the grace
/// period).
pub async fn repair(archive: &Archive) -> Result<Vec<Value>> {
    let http = reqwest::Client::new();
    let mut reports = Vec::new();
    for e in &archive.elements {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let r = http
                .post(format!("{}/api/v1/cache/rebuild/incremental", e.url))
                .bearer_auth(admin(archive))
                .timeout(Duration::from_secs(60))
                .send()
                .await;
            match r {
                Ok(r) if r.status().is_success() => {
                    reports.push(json!({"element": e.id, "report": r.json::<Value>().await?}));
                    break;
                }
                _ if Instant::now() > deadline => bail!("incremental rebuild of {} failed", e.id),
                _ => tokio::time::sleep(Duration::from_secs(2)).await,
            }
        }
    }
    Ok(reports)
}

/// Waits (bounded) until no element has an upload still at work: an upload goes on after its
/// caller left, up to its commit point or rollback, and its writes may land until then. The
/// repair only judges what no upload can still change.
pub async fn wait_uploads_ended(archive: &Archive, within: Duration) -> Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + within;
    for e in &archive.elements {
        loop {
            let in_flight = async {
                let text = http
                    .get(format!("{}/metrics", e.url))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await?
                    .text()
                    .await?;
                Ok::<_, anyhow::Error>(uploads_in_flight(&text))
            }
            .await;
            match in_flight {
                Ok(Some(0)) => break,
                _ if Instant::now() > deadline => {
                    bail!(
                        "uploads still at work on {} after {within:?}: {in_flight:?}",
                        e.id
                    )
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
    Ok(())
}

/// The element's `artstore_element_uploads_in_flight` gauge in a Prometheus text exposition.
fn uploads_in_flight(exposition: &str) -> Option<i64> {
    exposition.lines().find_map(|line| {
        let value = line.strip_prefix("artstore_element_uploads_in_flight ")?;
        value.trim().parse().ok()
    })
}

/// Unsent outbox rows, summed over the elements.
async fn outbox_unsent(archive: &Archive) -> Result<i64> {
    let mut n = 0;
    for e in &archive.elements {
        let pool = sqlx::PgPool::connect(&e.database_url).await?;
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(&pool)
            .await?;
        pool.close().await;
        n += count;
    }
    Ok(n)
}

/// (pending, lag, dead letters) of the query nodes' group.
async fn group_state(redis_url: &str) -> Result<(i64, i64, i64)> {
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let summary: redis::Value = redis::cmd("XPENDING")
        .arg(archive::STREAM)
        .arg(archive::GROUP)
        .query_async(&mut conn)
        .await?;
    let pending = match summary {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::Int(n)) => *n,
            _ => 0,
        },
        _ => 0,
    };
    let groups: redis::Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(archive::STREAM)
        .query_async(&mut conn)
        .await?;
    let mut lag = 0;
    if let redis::Value::Array(groups) = groups {
        for g in groups {
            let fields: Vec<redis::Value> = match g {
                redis::Value::Array(f) => f,
                redis::Value::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
                _ => continue,
            };
            for pair in fields.chunks(2) {
                if let [redis::Value::BulkString(k), v] = pair
                    && k == b"lag"
                {
                    lag += match v {
                        redis::Value::Int(n) => *n,
                        // nil: Redis cannot tell; count it as not converged.
                        _ => 1,
                    };
                }
            }
        }
    }
    let dead: i64 = redis::cmd("XLEN")
        .arg(format!("{}:dead-letter", archive::STREAM))
        .query_async(&mut conn)
        .await?;
    Ok((pending, lag, dead))
}

/// Waits (bounded) until every event is published and consumed.
pub async fn wait_drained(archive: &Archive, redis_url: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let state = async {
            let unsent = outbox_unsent(archive).await?;
            let (pending, lag, dead) = group_state(redis_url).await?;
            anyhow::Ok((unsent, pending, lag, dead))
        }
        .await;
        let done = matches!(state, Ok((0, 0, 0, _)));
        if done || Instant::now() > deadline {
            return format!("{state:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn element_files(archive: &Archive, url: &str) -> Result<Vec<Value>> {
    let http = reqwest::Client::new();
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut req = http
            .get(format!("{url}/api/v1/files"))
            .bearer_auth(admin(archive))
            .query(&[("limit", "500")]);
        if let Some(c) = &cursor {
            req = req.query(&[("cursor", c)]);
        }
        let page: Value = req
            .timeout(Duration::from_secs(30))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        out.extend(page["files"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) if !c.is_empty() => cursor = Some(c.to_string()),
            _ => return Ok(out),
        }
    }
}

async fn indexed_files(archive: &Archive, owner: &str) -> Result<Vec<Value>> {
    let http = reqwest::Client::new();
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let body = json!({
            "filters": {"owner": owner},
            "sort": {"field": "name", "order": "asc"},
            "limit": 200,
            "cursor": cursor,
        });
        let page: Value = http
            .post(format!("{}/api/v1/search", archive.query_url))
            .bearer_auth(admin(archive))
            .json(&body)
            .timeout(Duration::from_secs(30))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        out.extend(page["results"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) if !c.is_empty() => cursor = Some(c.to_string()),
            _ => return Ok(out),
        }
    }
}

fn state_of(record: Option<&Value>) -> State {
    match record.and_then(Meta::from_record) {
        Some(meta) => State::Live(meta),
        None => State::Gone,
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().display().to_string())
        .collect()
}

/// Compares the ledger with the archive. `clients` maps a client index to its token's subject.
pub async fn check(
    archive: &Archive,
    redis_url: &str,
    uploads: &[Upload],
    owners: &[String],
) -> Result<Totals> {
    let mut t = Totals::default();

    // What the elements hold, by file id and by name.
    let mut on_element: HashMap<String, (String, Value)> = HashMap::new();
    let mut by_name: HashMap<String, Vec<String>> = HashMap::new();
    for e in &archive.elements {
        for rec in element_files(archive, &e.url)
            .await
            .with_context(|| format!("listing {}", e.id))?
        {
            let id = rec["file_id"].as_str().unwrap_or_default().to_string();
            let name = rec["original_filename"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            by_name.entry(name).or_default().push(id.clone());
            on_element.insert(id, (e.id.to_string(), rec));
        }
    }
    // What search holds.
    let mut in_index: HashMap<String, Value> = HashMap::new();
    for owner in owners {
        for rec in indexed_files(archive, owner).await? {
            let id = rec["file_id"].as_str().unwrap_or_default().to_string();
            in_index.insert(id, rec);
        }
    }

    let http = reqwest::Client::new();
    let reader = archive.token(Role::Reader, "chaos-checker");
    let mut known_names = std::collections::HashSet::new();
    for u in uploads {
        known_names.insert(u.name.clone());
        let copies = by_name.get(&u.name).cloned().unwrap_or_default();
        if copies.len() > 1 {
            t.duplicated += 1;
            t.problem(format!(
                "duplicated: {} ({} copies: {:?}; answers {:?})",
                u.name,
                copies.len(),
                copies
                    .iter()
                    .map(|id| format!("{id} on {}", on_element[id].0))
                    .collect::<Vec<_>>(),
                u.answers
            ));
        }
        // The copies that must agree with search and have the right bytes.
        let mut verify: Vec<String> = Vec::new();
        if let Some(id) = &u.file_id {
            let found = state_of(on_element.get(id).map(|(_, r)| r));
            if !u.expect.contains(&found) {
                let acked_live = u.expect.iter().any(|s| matches!(s, State::Live(_)));
                let all_gone = u.expect.iter().all(|s| *s == State::Gone);
                let newest = u
                    .expect
                    .iter()
                    .filter_map(|s| match s {
                        State::Live(m) => Some(m.version),
                        State::Gone => None,
                    })
                    .max();
                match &found {
                    State::Gone if acked_live && u.expect.len() == 1 => {
                        t.lost += 1;
                        t.problem(format!("lost: {} ({id}) expected {:?}", u.name, u.expect));
                    }
                    State::Gone => {
                        t.half_applied += 1;
                        t.problem(format!(
                            "half-applied: {} ({id}) gone, expected one of {:?}",
                            u.name, u.expect
                        ));
                    }
                    State::Live(m) if all_gone || newest.is_some_and(|v| m.version < v) => {
                        t.stale += 1;
                        t.problem(format!(
                            "stale on element: {} ({id}) is {m:?}, expected one of {:?}",
                            u.name, u.expect
                        ));
                    }
                    State::Live(m) => {
                        t.half_applied += 1;
                        t.problem(format!(
                            "half-applied on element: {} ({id}) is {m:?}, expected one of {:?}",
                            u.name, u.expect
                        ));
                    }
                }
            }
            if on_element.contains_key(id) {
                verify.push(id.clone());
            } else if in_index.contains_key(id) {
                t.stale += 1;
                t.problem(format!(
                    "stale in search: {} ({id}) gone from its element, still found by search",
                    u.name
                ));
            }
        } else {
            let answered_error = u.answers.iter().all(|a| matches!(a, Answer::Error(..)));
            if answered_error && !copies.is_empty() {
                t.phantom += 1;
                t.problem(format!(
                    "stored although answered with an error: {} ({:?}; answers {:?})",
                    u.name, copies, u.answers
                ));
            }
            verify.extend(copies.iter().take(1).cloned());
        }
        for id in verify {
            let (element, rec) = &on_element[&id];
            if rec["sha256"].as_str() != Some(u.sha256.as_str())
                || rec["size"].as_u64() != Some(u.size)
            {
                t.lost += 1;
                t.problem(format!(
                    "other bytes recorded on {element}: {} ({id}): {rec}",
                    u.name
                ));
                continue;
            }
            let on_el = state_of(Some(rec));
            let indexed = state_of(in_index.get(&id));
            if on_el != indexed {
                let behind = match (&on_el, &indexed) {
                    (State::Live(a), State::Live(b)) => b.version < a.version,
                    _ => true,
                };
                if behind {
                    t.stale += 1;
                } else {
                    t.half_applied += 1;
                }
                t.problem(format!(
                    "search disagrees with {element} on {} ({id}): element {on_el:?}, search {indexed:?}",
                    u.name
                ));
            }
            // The bytes, through the query node as a client reads them.
            let got = http
                .get(format!("{}/api/v1/files/{id}/download", archive.query_url))
                .bearer_auth(&reader)
                .timeout(Duration::from_secs(60))
                .send()
                .await;
            let ok = match got {
                Ok(r) if r.status() == 200 => {
                    r.bytes().await.is_ok_and(|b| sha256_hex(&b) == u.sha256)
                }
                _ => false,
            };
            if !ok {
                t.lost += 1;
                t.problem(format!(
                    "download of {} ({id}) from {element} failed or gave other bytes",
                    u.name
                ));
            }
        }
    }
    for (name, ids) in &by_name {
        if !known_names.contains(name) {
            t.orphaned += ids.len() as u64;
            t.problem(format!("a file nobody uploaded: {name} {ids:?}"));
        }
    }
    // Search never shows a file no element holds.
    for id in in_index.keys() {
        if !on_element.contains_key(id) && !uploads.iter().any(|u| u.file_id.as_ref() == Some(id)) {
            t.stale += 1;
            t.problem(format!("search shows {id}, which no element holds"));
        }
    }

    // Leftovers in the stores.
    let http_admin = admin(archive);
    for e in &archive.elements {
        let report: Value = http
            .get(format!("{}/api/v1/cache/consistency", e.url))
            .bearer_auth(&http_admin)
            .timeout(Duration::from_secs(60))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if report["is_consistent"] != json!(true) {
            let n = report["orphan_cache_count"].as_u64().unwrap_or(0)
                + report["orphan_attr_count"].as_u64().unwrap_or(0)
                + report["details"]["orphan_blob_count"].as_u64().unwrap_or(0)
                + report["details"]["incomplete_upload_count"]
                    .as_u64()
                    .unwrap_or(0);
            t.orphaned += n.max(1);
            t.problem(format!("{} not consistent: {report}", e.id));
        }
    }
    let uploads_in_flight = artstore_element::backend::s3_client(&archive.s3, Default::default())
        .await
        .list_multipart_uploads()
        .bucket(&archive.bucket)
        .send()
        .await?;
    let multipart = uploads_in_flight.uploads().len() as u64;
    if multipart > 0 {
        t.orphaned += multipart;
        t.problem(format!("{multipart} S3 multipart uploads never finished"));
    }
    let temp = files_in(&archive.volume.join(".tmp"));
    let spool = files_in(&archive.spool);
    for f in temp.iter().chain(&spool) {
        t.orphaned += 1;
        t.problem(format!("left-over temporary file {f}"));
    }

    let unsent = outbox_unsent(archive).await?;
    let (pending, lag, dead) = group_state(redis_url).await?;
    if unsent + pending + lag + dead > 0 {
        t.pending += (unsent + pending + lag + dead) as u64;
        t.problem(format!(
            "events not delivered: {unsent} unsent in outboxes, {pending} pending and {lag} unread in group {}, {dead} dead letters",
            archive::GROUP
        ));
    }
    Ok(t)
}

/// Counts of answers by kind, for the report.
pub fn print_tallies(tallies: &BTreeMap<&'static str, crate::ledger::Tally>) {
    for (kind, tally) in tallies {
        println!(
            "  {kind:<9} ok {:>6}  error {:>5}  no answer {:>5}  {:?}",
            tally.ok, tally.error, tally.no_answer, tally.codes
        );
    }
}
