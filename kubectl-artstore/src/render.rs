//! The `status` screen: one per archive, problems first, then each part of the archive.

use std::fmt::Write;

use comfy_table::{ContentArrangement, Table, presets};

use crate::view::{Archive, Readiness};

/// Binary-unit sizes. Four lines of arithmetic; not worth a dependency in a plugin binary.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `[######----] 60%` for used of capacity.
pub fn usage_bar(used: Option<u64>, capacity: Option<u64>) -> String {
    match (used, capacity) {
        (Some(used), Some(cap)) if cap > 0 => {
            let share = (used as f64 / cap as f64).clamp(0.0, 1.0);
            let filled = (share * 10.0).round() as usize;
            format!(
                "[{}{}] {:>3.0}% {} of {}",
                "#".repeat(filled),
                "-".repeat(10 - filled),
                share * 100.0,
                human_bytes(used),
                human_bytes(cap)
            )
        }
        _ => "-".into(),
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

fn ready_cell(r: &Readiness) -> String {
    match (r.ready, r.paused) {
        (true, false) => "Ready".into(),
        (true, true) => "Ready (paused)".into(),
        (false, paused) => {
            let p = if paused { ", paused" } else { "" };
            format!(
                "{} ({}{p})",
                if r.status == "Pending" {
                    "Pending"
                } else {
                    "Not ready"
                },
                r.reason
            )
        }
    }
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    t
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| {
            format!(
                "  {}",
                l.trim_end().strip_prefix(' ').unwrap_or(l.trim_end())
            )
            .trim_end()
            .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The whole screen of one archive.
pub fn archive(a: &Archive) -> String {
    let mut out = String::new();
    let title = if a.event_stream.is_empty() {
        format!("Archive in {} (no EventStream)", a.namespace)
    } else {
        format!("Archive {}/{}", a.namespace, a.event_stream)
    };
    let healthy = a.problems.is_empty();
    let _ = writeln!(
        out,
        "{title}: {}",
        if healthy {
            "healthy"
        } else {
            "NEEDS ATTENTION"
        }
    );

    if !healthy {
        let _ = writeln!(out, "\nNot ready");
        let mut t = table(&["KIND", "NAME", "REASON", "MESSAGE"]);
        for p in &a.problems {
            t.add_row([
                p.kind.as_str(),
                p.name.as_str(),
                p.reason.as_str(),
                p.message.as_str(),
            ]);
        }
        let _ = writeln!(out, "{}", indent(&t.to_string()));
    }

    if let Some(s) = &a.stream {
        let _ = writeln!(
            out,
            "\nEventStream {} ({})",
            s.name,
            ready_cell(&s.readiness)
        );
        let dead = match s.max_deliveries {
            Some(n) => format!("{} (after {n} deliveries)", s.dead_letter_stream),
            None => format!("{} (no dead-letter policy)", s.dead_letter_stream),
        };
        let rows = [
            ("Stream", s.stream.clone()),
            ("Length", opt(s.length)),
            ("Pending", opt(s.pending)),
            ("Lag", opt(s.lag)),
            ("Dead letters", dead),
        ];
        for (k, v) in rows {
            let _ = writeln!(out, "  {k:<14}{v}");
        }
        if !s.groups.is_empty() {
            let mut t = table(&["GROUP", "CONSUMERS", "PENDING", "LAG"]);
            for g in &s.groups {
                t.add_row([
                    g.name.clone(),
                    g.consumers.to_string(),
                    g.pending.to_string(),
                    opt(g.lag),
                ]);
            }
            let _ = writeln!(out, "{}", indent(&t.to_string()));
        }
    }

    if !a.storage_elements.is_empty() {
        let _ = writeln!(out, "\nStorage elements");
        let mut t = table(&[
            "NAME",
            "MODE",
            "PRIORITY",
            "USED",
            "FILES",
            "INCONSISTENT",
            "LAST REBUILD",
            "STATUS",
        ]);
        for e in &a.storage_elements {
            t.add_row([
                e.name.clone(),
                e.mode.clone(),
                e.priority.to_string(),
                usage_bar(e.used_bytes, e.capacity_bytes),
                opt(e.file_count),
                e.inconsistency_percentage
                    .map(|p| format!("{p:.1}%"))
                    .unwrap_or_else(|| "-".into()),
                e.last_rebuild.clone().unwrap_or_else(|| "-".into()),
                ready_cell(&e.readiness),
            ]);
        }
        let _ = writeln!(out, "{}", indent(&t.to_string()));
    }

    if !a.query_nodes.is_empty() {
        let _ = writeln!(out, "\nQuery nodes");
        let mut t = table(&["NAME", "REPLICAS", "LAG", "INDEXED", "BACKFILL", "STATUS"]);
        for q in &a.query_nodes {
            t.add_row([
                q.name.clone(),
                format!("{}/{}", q.ready_replicas.unwrap_or(0), q.replicas),
                opt(q.lag),
                opt(q.indexed_files),
                q.backfill.clone().unwrap_or_else(|| "-".into()),
                ready_cell(&q.readiness),
            ]);
        }
        let _ = writeln!(out, "{}", indent(&t.to_string()));
    }

    if !a.ingesters.is_empty() {
        let _ = writeln!(out, "\nIngesters");
        let mut t = table(&["NAME", "REPLICAS", "WRITABLE TARGETS", "STATUS"]);
        for i in &a.ingesters {
            t.add_row([
                i.name.clone(),
                format!("{}/{}", i.ready_replicas.unwrap_or(0), i.replicas),
                if i.writable_targets.is_empty() {
                    "none".into()
                } else {
                    i.writable_targets.join(", ")
                },
                ready_cell(&i.readiness),
            ]);
        }
        let _ = writeln!(out, "{}", indent(&t.to_string()));
    }
    out
}

/// Every archive, separated by a blank line.
pub fn screens(archives: &[Archive]) -> String {
    archives.iter().map(archive).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_bars() {
        assert_eq!(human_bytes(812), "812 B");
        assert_eq!(human_bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(
            usage_bar(Some(6 << 30), Some(10 << 30)),
            "[######----]  60% 6.0 GiB of 10.0 GiB"
        );
        assert_eq!(usage_bar(None, Some(1)), "-");
        assert_eq!(
            usage_bar(Some(20), Some(10)).get(..12),
            Some("[##########]")
        );
    }
}
