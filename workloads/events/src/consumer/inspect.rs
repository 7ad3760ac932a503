//! Inspecting the stream and the group (XINFO): pending count and lag for metrics, and whether
//! entries this group never read were trimmed away.

use artstore_contract::stream::StreamId;
use redis::Value;

use super::ConsumerError;
use super::reply::parse_group_info;

/// An id from XINFO; unreadable counts as the start of the stream.
fn id(s: &str) -> StreamId {
    StreamId::parse(s).unwrap_or_default()
}

/// The group as XINFO sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupInfo {
    pub pending: u64,
    /// Entries not yet delivered to the group; `None` when Redis cannot tell (after deletions).
    pub lag: Option<u64>,
    pub last_delivered_id: String,
    /// Entries the group has read, counted from the first entry ever added (`None`: unknown).
    pub entries_read: Option<u64>,
    pub stream_length: u64,
    /// Entries ever added to the stream.
    pub entries_added: Option<u64>,
    pub first_entry_id: Option<String>,
    pub last_generated_id: String,
    pub max_deleted_id: String,
}

impl GroupInfo {
    /// Whether entries this group never read were deleted (trimmed) from the stream.
    ///
    /// Deletions from the head: `entries_added - length` entries are gone; the group has read
    /// `entries_read` of the oldest. More gone than read means some went unread. When Redis
    /// cannot count (`entries_read` unknown), an empty stream whose last id is past the group's
    /// last delivered id lost entries too; and newer servers report the highest deleted id
    /// (Redis 7.0 does so only for XDEL, not for trimming).
    pub fn trimmed_past(&self) -> bool {
        let delivered = id(&self.last_delivered_id);
        if id(&self.max_deleted_id) > delivered {
            return true;
        }
        if let (Some(read), Some(added)) = (self.entries_read, self.entries_added) {
            return added.saturating_sub(self.stream_length) > read;
        }
        self.stream_length == 0 && id(&self.last_generated_id) > delivered
    }
}

/// The group's state from XINFO GROUPS and XINFO STREAM; `None` when the stream or the group
/// does not exist.
pub async fn read_group_info<C: redis::aio::ConnectionLike + Send>(
    conn: &mut C,
    stream: &str,
    group: &str,
) -> Result<Option<GroupInfo>, ConsumerError> {
    let stream_reply: redis::RedisResult<Value> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(stream)
        .query_async(conn)
        .await;
    let stream_reply = match stream_reply {
        Ok(v) => v,
        // "ERR no such key"
        Err(e) if e.code() == Some("ERR") => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let groups: Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(conn)
        .await?;
    parse_group_info(&stream_reply, &groups, group)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimmed_past_is_told_from_counters_or_ids() {
        let base = GroupInfo {
            last_delivered_id: "100-0".into(),
            last_generated_id: "200-0".into(),
            max_deleted_id: "0-0".into(),
            ..Default::default()
        };
        // 10 added, 4 retained, 6 gone; the group read 6: nothing missed.
        let caught_up = GroupInfo {
            entries_read: Some(6),
            entries_added: Some(10),
            stream_length: 4,
            ..base.clone()
        };
        assert!(!caught_up.trimmed_past());
        assert!(
            GroupInfo {
                entries_read: Some(5),
                ..caught_up.clone()
            }
            .trimmed_past()
        );
        // Counters unknown: an emptied stream past the group's position lost entries.
        let emptied = GroupInfo {
            entries_added: Some(10),
            ..base.clone()
        };
        assert!(emptied.trimmed_past());
        assert!(
            !GroupInfo {
                stream_length: 3,
                ..emptied.clone()
            }
            .trimmed_past()
        );
        assert!(
            GroupInfo {
                max_deleted_id: "150-0".into(),
                stream_length: 3,
                ..base
            }
            .trimmed_past()
        );
    }
}
