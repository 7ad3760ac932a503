//! Redis side of an EventStream: create the stream and its groups, trim by age without losing
//! an entry any group still needs, and read the figures for status. Plain functions over a
//! connection, so they are tested against a real Redis.

use artstore_contract::stream::ensure_group;
use redis::AsyncCommands;
use redis::aio::ConnectionLike;
use redis::streams::{StreamInfoGroupsReply, StreamPendingReply};

pub use artstore_contract::stream::StreamId;

/// A consumer group's position, as far as trimming is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupPosition {
    pub name: String,
    pub last_delivered: StreamId,
    /// Oldest delivered-but-unacknowledged entry, if any.
    pub oldest_pending: Option<StreamId>,
}

/// The lowest id an age trim may keep: entries older than `cutoff` go, except that nothing a
/// group has not yet delivered (ids after its last-delivered id) and nothing still pending may
/// go. Redis 7 has no `ACKED` trim option: `XTRIM MINID` deletes pending entries too, so the
/// floor is computed here. Pure, so the rule is tested on its own.
pub fn trim_floor(cutoff: StreamId, groups: &[GroupPosition]) -> StreamId {
    groups.iter().fold(cutoff, |floor, g| {
        let mut floor = floor.min(g.last_delivered);
        if let Some(p) = g.oldest_pending {
            floor = floor.min(p);
        }
        floor
    })
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("{0}")]
    Reply(String),
}

fn reply(e: artstore_contract::stream::BadStreamId) -> StreamError {
    StreamError::Reply(e.to_string())
}

const PLACEHOLDER_GROUP: &str = "artstore-operator-create";

/// Creates the stream (if missing) and every group (if missing). Returns the groups it created.
/// `BUSYGROUP` (the group exists) is success: running it twice changes nothing.
pub async fn ensure_stream_and_groups<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    stream: &str,
    groups: &[(String, String)],
) -> Result<Vec<String>, StreamError> {
    let mut created = Vec::new();
    for (name, start) in groups {
        if ensure_group(conn, stream, name, start).await? {
            created.push(name.clone());
        }
    }
    // A stream without declared groups still exists from the start: producers and consumers
    // that come later must never race its creation.
    let exists: bool = conn.exists(stream).await?;
    if !exists {
        let res: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(PLACEHOLDER_GROUP)
            .arg("$")
            .arg("MKSTREAM")
            .query_async(conn)
            .await;
        match res {
            // Someone created it meanwhile: it exists, which is all we wanted.
            Err(e) if e.code() == Some("BUSYGROUP") => return Ok(created),
            other => other?,
        }
        let _: i64 = redis::cmd("XGROUP")
            .arg("DESTROY")
            .arg(stream)
            .arg(PLACEHOLDER_GROUP)
            .query_async(conn)
            .await?;
    }
    Ok(created)
}

/// Every group's position on the stream (empty when the stream does not exist).
pub async fn group_positions<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    stream: &str,
) -> Result<(Vec<GroupPosition>, StreamInfoGroupsReply), StreamError> {
    let info: StreamInfoGroupsReply = conn.xinfo_groups(stream).await?;
    let mut out = Vec::with_capacity(info.groups.len());
    for g in &info.groups {
        let last_delivered: StreamId = g.last_delivered_id.parse().map_err(reply)?;
        let oldest_pending = if g.pending > 0 {
            let p: StreamPendingReply = conn.xpending(stream, &g.name).await?;
            match p {
                StreamPendingReply::Data(d) => Some(d.start_id.parse().map_err(reply)?),
                // Pending but no summary: trim nothing rather than guess.
                _ => Some(StreamId::ZERO),
            }
        } else {
            None
        };
        out.push(GroupPosition {
            name: g.name.clone(),
            last_delivered,
            oldest_pending,
        });
    }
    Ok((out, info))
}

/// Result of one age trim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrimOutcome {
    /// The `MINID` used: entries below it were removed.
    pub min_id: StreamId,
    pub removed: u64,
}

/// Removes entries older than `max_age_ms` (relative to `now_ms`) that every group has
/// delivered and acknowledged.
pub async fn trim_by_age<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    stream: &str,
    max_age_ms: u64,
    now_ms: u64,
) -> Result<TrimOutcome, StreamError> {
    let cutoff = StreamId {
        ms: now_ms.saturating_sub(max_age_ms),
        seq: 0,
    };
    let (groups, _) = group_positions(conn, stream).await?;
    let min_id = trim_floor(cutoff, &groups);
    if min_id == StreamId::ZERO {
        return Ok(TrimOutcome { min_id, removed: 0 });
    }
    let removed: u64 = redis::cmd("XTRIM")
        .arg(stream)
        .arg("MINID")
        .arg("=")
        .arg(min_id.to_string())
        .query_async(conn)
        .await?;
    Ok(TrimOutcome { min_id, removed })
}

/// Figures for status.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct StreamStats {
    pub length: u64,
    pub groups: Vec<GroupStats>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupStats {
    pub name: String,
    pub consumers: u64,
    pub pending: u64,
    pub lag: Option<u64>,
    pub last_delivered_id: String,
}

pub async fn stats<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    stream: &str,
) -> Result<StreamStats, StreamError> {
    let length: u64 = conn.xlen(stream).await?;
    let info: StreamInfoGroupsReply = conn.xinfo_groups(stream).await?;
    let mut groups: Vec<GroupStats> = info
        .groups
        .into_iter()
        .map(|g| GroupStats {
            name: g.name,
            consumers: g.consumers as u64,
            pending: g.pending as u64,
            lag: g.lag.map(|l| l as u64),
            last_delivered_id: g.last_delivered_id,
        })
        .collect();
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(StreamStats { length, groups })
}

/// Deletes the stream and its dead-letter stream (deletion policy `Delete`).
pub async fn delete_streams<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    streams: &[String],
) -> Result<(), StreamError> {
    let _: i64 = conn.del(streams).await?;
    Ok(())
}

/// Parses a retention duration such as `168h`, `90m`, `1h30m`, `45s` into milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: u64 = digits.parse().map_err(|_| format!("bad duration {s:?}"))?;
        digits.clear();
        let unit = match c {
            'h' => 3_600_000,
            'm' => 60_000,
            's' => 1_000,
            _ => return Err(format!("bad duration {s:?}: unit {c:?}")),
        };
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("duration {s:?} is too large"))?;
    }
    if !digits.is_empty() || s.is_empty() {
        return Err(format!("bad duration {s:?}: expected like 168h or 30m"));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> StreamId {
        s.parse().unwrap()
    }

    #[test]
    fn floor_never_passes_a_groups_last_delivered_or_oldest_pending_entry() {
        let cutoff = id("1000-0");
        assert_eq!(trim_floor(cutoff, &[]), cutoff);
        let ahead = GroupPosition {
            name: "a".into(),
            last_delivered: id("2000-0"),
            oldest_pending: None,
        };
        assert_eq!(trim_floor(cutoff, std::slice::from_ref(&ahead)), cutoff);
        let lagging = GroupPosition {
            name: "b".into(),
            last_delivered: id("500-3"),
            oldest_pending: None,
        };
        assert_eq!(trim_floor(cutoff, &[ahead.clone(), lagging]), id("500-3"));
        let unacked = GroupPosition {
            name: "c".into(),
            last_delivered: id("2000-0"),
            oldest_pending: Some(id("300-1")),
        };
        assert_eq!(trim_floor(cutoff, &[ahead, unacked]), id("300-1"));
        let fresh = GroupPosition {
            name: "d".into(),
            last_delivered: StreamId::ZERO,
            oldest_pending: None,
        };
        assert_eq!(trim_floor(cutoff, &[fresh]), StreamId::ZERO);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("168h"), Ok(168 * 3_600_000));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("45s"), Ok(45_000));
        assert!(parse_duration_ms("7d").is_err());
        assert!(parse_duration_ms("10").is_err());
        assert!(parse_duration_ms("").is_err());
    }
}
