//! Parsing Redis replies from raw values, command by command, with no I/O: an `XAUTOCLAIM`
//! reply (`[cursor, entries, deleted ids]`) is not an `XREADGROUP` reply (`[[stream,
//! entries]]`), and RESP2 arrays and RESP3 maps are both accepted.

use std::collections::HashMap;

use redis::Value;

use super::inspect::GroupInfo;
use super::{ConsumerError, Entry, reply_error};

/// An entry as read, before UTF-8 checks: `fields` is `None` when the entry was deleted.
#[derive(Debug, Clone, PartialEq)]
pub struct RawEntry {
    pub id: String,
    pub fields: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

fn bytes_of(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.clone().into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        Value::Okay => Some(b"OK".to_vec()),
        _ => None,
    }
}

fn string_of(value: &Value) -> Option<String> {
    bytes_of(value).and_then(|b| String::from_utf8(b).ok())
}

fn int_of(value: &Value) -> Option<u64> {
    match value {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => string_of(other).and_then(|s| s.parse().ok()),
    }
}

/// `[id, [k, v, k, v, …]]` or `[id, nil]` (entry deleted); RESP3 maps are accepted too.
fn parse_entry(command: &'static str, value: &Value) -> Result<RawEntry, ConsumerError> {
    let Value::Array(parts) = value else {
        return Err(reply_error(
            command,
            format!("entry is not an array: {value:?}"),
        ));
    };
    let id = parts
        .first()
        .and_then(string_of)
        .ok_or_else(|| reply_error(command, "entry without an id"))?;
    let fields = match parts.get(1) {
        None | Some(Value::Nil) => None,
        Some(Value::Array(kv)) => Some(
            kv.chunks(2)
                .filter_map(|pair| match pair {
                    [k, v] => Some((bytes_of(k)?, bytes_of(v)?)),
                    _ => None,
                })
                .collect(),
        ),
        Some(Value::Map(kv)) => Some(
            kv.iter()
                .filter_map(|(k, v)| Some((bytes_of(k)?, bytes_of(v)?)))
                .collect(),
        ),
        Some(other) => {
            return Err(reply_error(
                command,
                format!("entry fields are not an array: {other:?}"),
            ));
        }
    };
    Ok(RawEntry { id, fields })
}

fn parse_entry_list(command: &'static str, value: &Value) -> Result<Vec<RawEntry>, ConsumerError> {
    match value {
        Value::Nil => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            // Redis 6 could put a bare nil in place of a deleted entry.
            .filter(|v| !matches!(v, Value::Nil))
            .map(|v| parse_entry(command, v))
            .collect(),
        other => Err(reply_error(
            command,
            format!("entries are not an array: {other:?}"),
        )),
    }
}

/// XREADGROUP: nil (timeout) or `[[stream, entries], …]` (RESP3: a map stream → entries).
pub fn parse_xreadgroup(value: &Value, stream: &str) -> Result<Vec<RawEntry>, ConsumerError> {
    const CMD: &str = "XREADGROUP";
    let streams: Vec<(Value, Value)> = match value {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Array(pair) if pair.len() == 2 => Ok((pair[0].clone(), pair[1].clone())),
                other => Err(reply_error(
                    CMD,
                    format!("not a [stream, entries] pair: {other:?}"),
                )),
            })
            .collect::<Result<_, _>>()?,
        Value::Map(pairs) => pairs.clone(),
        other => return Err(reply_error(CMD, format!("unexpected reply {other:?}"))),
    };
    let mut out = Vec::new();
    for (name, entries) in streams {
        if string_of(&name).as_deref() == Some(stream) {
            out.extend(parse_entry_list(CMD, &entries)?);
        }
    }
    Ok(out)
}

/// XAUTOCLAIM: `[next cursor, entries, deleted ids]` — no stream wrapper around the entries,
/// and (Redis 7) a third element listing pending ids whose entries no longer exist.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoClaimReply {
    pub next_cursor: String,
    pub claimed: Vec<RawEntry>,
    pub deleted: Vec<String>,
}

pub fn parse_xautoclaim(value: &Value) -> Result<AutoClaimReply, ConsumerError> {
    const CMD: &str = "XAUTOCLAIM";
    let Value::Array(parts) = value else {
        return Err(reply_error(CMD, format!("unexpected reply {value:?}")));
    };
    let next_cursor = parts
        .first()
        .and_then(string_of)
        .ok_or_else(|| reply_error(CMD, "missing cursor"))?;
    let entries = parse_entry_list(CMD, parts.get(1).unwrap_or(&Value::Nil))?;
    let mut claimed = Vec::new();
    let mut deleted = Vec::new();
    for entry in entries {
        // Redis 6 reports a deleted entry as [id, nil] among the claimed ones.
        if entry.fields.is_some() {
            claimed.push(entry);
        } else {
            deleted.push(entry.id);
        }
    }
    if let Some(Value::Array(ids)) = parts.get(2) {
        deleted.extend(ids.iter().filter_map(string_of));
    }
    Ok(AutoClaimReply {
        next_cursor,
        claimed,
        deleted,
    })
}

/// Key/value pairs of a flat array (RESP2) or map (RESP3), keys as strings.
fn kv_map(value: &Value) -> HashMap<String, Value> {
    match value {
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|pair| match pair {
                [k, v] => Some((string_of(k)?, v.clone())),
                _ => None,
            })
            .collect(),
        Value::Map(pairs) => pairs
            .iter()
            .filter_map(|(k, v)| Some((string_of(k)?, v.clone())))
            .collect(),
        _ => HashMap::new(),
    }
}

/// XPENDING (extended form): `[[id, consumer, idle ms, deliveries], …]` → deliveries by id.
pub fn parse_xpending_counts(value: &Value) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    if let Value::Array(rows) = value {
        for row in rows {
            if let Value::Array(cols) = row
                && let (Some(id), Some(count)) = (
                    cols.first().and_then(string_of),
                    cols.get(3).and_then(int_of),
                )
            {
                counts.insert(id, count);
            }
        }
    }
    counts
}

/// `group`'s state from the replies of XINFO STREAM and XINFO GROUPS; `None` when the group
/// is not among them.
pub fn parse_group_info(
    stream_reply: &Value,
    groups: &Value,
    group: &str,
) -> Result<Option<GroupInfo>, ConsumerError> {
    let Value::Array(groups) = groups else {
        return Err(reply_error("XINFO GROUPS", "not an array"));
    };
    let Some(group_map) = groups
        .iter()
        .map(kv_map)
        .find(|m| m.get("name").and_then(string_of).as_deref() == Some(group))
    else {
        return Ok(None);
    };
    let s = kv_map(stream_reply);
    let first_entry_id = match s.get("first-entry") {
        Some(Value::Array(parts)) => parts.first().and_then(string_of),
        _ => None,
    };
    Ok(Some(GroupInfo {
        pending: group_map.get("pending").and_then(int_of).unwrap_or(0),
        lag: group_map.get("lag").and_then(int_of),
        last_delivered_id: group_map
            .get("last-delivered-id")
            .and_then(string_of)
            .unwrap_or_else(|| "0-0".into()),
        entries_read: group_map.get("entries-read").and_then(int_of),
        stream_length: s.get("length").and_then(int_of).unwrap_or(0),
        entries_added: s.get("entries-added").and_then(int_of),
        first_entry_id,
        last_generated_id: s
            .get("last-generated-id")
            .and_then(string_of)
            .unwrap_or_else(|| "0-0".into()),
        max_deleted_id: s
            .get("max-deleted-entry-id")
            .and_then(string_of)
            .unwrap_or_else(|| "0-0".into()),
    }))
}

/// An entry with its fields as text (lossy: the applier's decoder refuses what it cannot read).
pub fn to_entry(raw: RawEntry, deliveries: u64) -> Entry {
    let fields = raw
        .fields
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(&k).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect();
    Entry {
        id: raw.id,
        fields,
        deliveries,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn xautoclaim_reply_has_no_stream_wrapper() {
        // [cursor, [[id, [k, v]]], [deleted ids]] — what Redis 7 sends.
        let reply = Value::Array(vec![
            bulk("0-0"),
            Value::Array(vec![Value::Array(vec![
                bulk("5-1"),
                Value::Array(vec![bulk("type"), bulk("file.created")]),
            ])]),
            Value::Array(vec![bulk("4-0")]),
        ]);
        let parsed = parse_xautoclaim(&reply).expect("parses");
        assert_eq!(parsed.next_cursor, "0-0");
        assert_eq!(parsed.claimed.len(), 1);
        assert_eq!(parsed.claimed[0].id, "5-1");
        assert_eq!(parsed.deleted, vec!["4-0".to_string()]);
        // Read as an XREADGROUP reply, the same value must not yield entries silently.
        assert!(parse_xreadgroup(&reply, "s").is_err());
    }

    #[test]
    fn xreadgroup_reply_is_wrapped_by_stream() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![
                Value::Array(vec![bulk("1-0"), Value::Array(vec![bulk("a"), bulk("b")])]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]),
        ])]);
        let parsed = parse_xreadgroup(&reply, "s").expect("parses");
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].fields, Some(vec![(b"a".to_vec(), b"b".to_vec())]));
        assert_eq!(parsed[1].fields, None);
        assert!(parse_xreadgroup(&Value::Nil, "s").expect("nil").is_empty());
    }

    #[test]
    fn xpending_rows_give_delivery_counts_by_id() {
        let row = |id: &str, n: i64| {
            Value::Array(vec![bulk(id), bulk("c1"), Value::Int(10), Value::Int(n)])
        };
        let counts = parse_xpending_counts(&Value::Array(vec![row("1-0", 3), row("2-0", 1)]));
        assert_eq!(counts.get("1-0"), Some(&3));
        assert_eq!(counts.get("2-0"), Some(&1));
        assert!(parse_xpending_counts(&Value::Nil).is_empty());
    }

    #[test]
    fn group_info_comes_from_both_xinfo_replies() {
        let stream = Value::Array(vec![
            bulk("length"),
            Value::Int(4),
            bulk("entries-added"),
            Value::Int(10),
            bulk("last-generated-id"),
            bulk("200-0"),
            bulk("first-entry"),
            Value::Array(vec![bulk("150-0"), Value::Array(vec![])]),
        ]);
        let groups = Value::Array(vec![Value::Array(vec![
            bulk("name"),
            bulk("g"),
            bulk("pending"),
            Value::Int(2),
            bulk("last-delivered-id"),
            bulk("180-0"),
            bulk("entries-read"),
            Value::Int(8),
            bulk("lag"),
            Value::Int(2),
        ])]);
        let info = parse_group_info(&stream, &groups, "g")
            .expect("parses")
            .expect("group found");
        assert_eq!(info.pending, 2);
        assert_eq!(info.lag, Some(2));
        assert_eq!(info.last_delivered_id, "180-0");
        assert_eq!(info.entries_read, Some(8));
        assert_eq!(info.stream_length, 4);
        assert_eq!(info.entries_added, Some(10));
        assert_eq!(info.first_entry_id.as_deref(), Some("150-0"));
        assert_eq!(info.max_deleted_id, "0-0");
        assert_eq!(
            parse_group_info(&stream, &groups, "other").expect("parses"),
            None
        );
        assert!(parse_group_info(&stream, &Value::Nil, "g").is_err());
    }
}
