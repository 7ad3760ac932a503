//! Publishing events to the stream (used by the storage element's outbox relay).

use redis::aio::ConnectionLike;

use crate::FileEvent;

/// Appends `event` to `stream` with XADD, trimming the stream to about `max_len` entries
/// (`MAXLEN ~`, cheap for Redis) when given. Returns the entry id Redis assigned.
pub async fn xadd_event<C: ConnectionLike + Send>(
    conn: &mut C,
    stream: &str,
    max_len: Option<u64>,
    event: &FileEvent,
) -> redis::RedisResult<String> {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream);
    if let Some(max_len) = max_len {
        cmd.arg("MAXLEN").arg("~").arg(max_len);
    }
    cmd.arg("*");
    for (name, value) in event.to_fields() {
        cmd.arg(name).arg(value);
    }
    cmd.query_async(conn).await
}
