//! Redis Streams primitives both sides share (feature `redis`): the entry-id type and the one
//! idempotent way to create a consumer group. The operator creates groups before any consumer
//! starts; a consumer recreates its group when it finds it missing. Both must agree on what
//! "exists" means (`BUSYGROUP` is success), so there is one function.

use std::fmt;
use std::str::FromStr;

use redis::aio::ConnectionLike;

/// A stream entry id `<ms>-<seq>`, ordered numerically (`"5-0"` < `"10-0"`, which string order
/// gets wrong). A bare `<ms>` means `<ms>-0`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub const ZERO: StreamId = StreamId { ms: 0, seq: 0 };

    /// The id, or `None` when `s` is not one.
    pub fn parse(s: &str) -> Option<StreamId> {
        s.parse().ok()
    }
}

/// Text that is not a stream id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadStreamId(pub String);

impl fmt::Display for BadStreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad stream id {:?}", self.0)
    }
}

impl std::error::Error for BadStreamId {}

impl FromStr for StreamId {
    type Err = BadStreamId;
    fn from_str(s: &str) -> Result<Self, BadStreamId> {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        let bad = |_| BadStreamId(s.to_string());
        Ok(StreamId {
            ms: ms.parse().map_err(bad)?,
            seq: seq.parse().map_err(bad)?,
        })
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Creates `group` on `stream` (and the stream itself, MKSTREAM) starting at `start_id`
/// (`$` = only new entries, `0` = everything retained). An existing group is success:
/// `Ok(true)` when this call created it, `Ok(false)` when it was there.
pub async fn ensure_group<C: ConnectionLike + Send>(
    conn: &mut C,
    stream: &str,
    group: &str,
    start_id: &str,
) -> redis::RedisResult<bool> {
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg(start_id)
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Ok(()) => Ok(true),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> StreamId {
        s.parse().unwrap()
    }

    #[test]
    fn ids_order_by_time_then_sequence() {
        assert!(id("5-10") > id("5-9"));
        assert!(id("6-0") > id("5-99"));
        assert!(id("10-0") > id("9-5"));
        assert_eq!(id("7").to_string(), "7-0");
        assert!("x-1".parse::<StreamId>().is_err());
        assert_eq!(StreamId::parse("garbage"), None);
    }
}
