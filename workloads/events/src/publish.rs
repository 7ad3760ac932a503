//! Publishing events to the stream (used by the storage element's outbox relay).

use redis::aio::ConnectionLike;

use crate::FileEvent;

/// Appends `events` to `stream` in order with XADD, trimming the stream to about `max_len`
/// entries (`MAXLEN ~`, cheap for Redis) when given, in one round trip (a pipeline, not a
/// transaction). Returns the entry ids Redis assigned. On an error some of them may have been
/// appended: a caller publishes them again, which consumers ignore (they apply a version once).
pub async fn xadd_events<C: ConnectionLike + Send>(
    conn: &mut C,
    stream: &str,
    max_len: Option<u64>,
    events: &[FileEvent],
) -> redis::RedisResult<Vec<String>> {
    let mut pipe = redis::pipe();
    for event in events {
        pipe.add_command(xadd_command(stream, max_len, event));
    }
    pipe.query_async(conn).await
}

fn xadd_command(stream: &str, max_len: Option<u64>, event: &FileEvent) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream);
    if let Some(max_len) = max_len {
        cmd.arg("MAXLEN").arg("~").arg(max_len);
    }
    cmd.arg("*");
    for (name, value) in event.to_fields() {
        cmd.arg(name).arg(value);
    }
    cmd
}
