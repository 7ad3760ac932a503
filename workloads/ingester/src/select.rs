//! Sequential fill: which storage elements may take a file, in the order to try them.

use artstore_contract::{Registry, RegistryEntry};

/// Writable elements (`edit`/`rw`) whose known free capacity fits `size`, highest priority first
/// (ties by id, so every replica tries the same order). The registry's capacity figures may lag,
/// so the element's own 507 stays the final word and the caller falls through on it.
pub fn candidates(registry: &Registry, size: u64) -> Vec<RegistryEntry> {
    let mut list: Vec<RegistryEntry> = registry
        .elements
        .iter()
        .filter(|e| e.mode.accepts_writes())
        .filter(|e| e.capacity_bytes.saturating_sub(e.used_bytes) >= size)
        .cloned()
        .collect();
    list.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.id.cmp(&b.id)));
    list
}

#[cfg(test)]
mod tests {
    use super::*;
    use artstore_contract::ElementMode;

    fn element(
        id: &str,
        mode: ElementMode,
        priority: i32,
        capacity: u64,
        used: u64,
    ) -> RegistryEntry {
        RegistryEntry {
            id: id.into(),
            url: format!("http://{id}"),
            mode,
            priority,
            capacity_bytes: capacity,
            used_bytes: used,
        }
    }

    #[test]
    fn writable_by_priority_with_room() {
        let registry = Registry {
            elements: vec![
                element("low", ElementMode::Rw, 1, 100, 0),
                element("high", ElementMode::Edit, 10, 100, 0),
                element("readonly", ElementMode::Ro, 99, 100, 0),
                element("archive", ElementMode::Ar, 98, 100, 0),
                element("full", ElementMode::Rw, 50, 100, 95),
                element("also-high", ElementMode::Rw, 10, 100, 0),
            ],
        };
        let ids: Vec<String> = candidates(&registry, 10)
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, vec!["also-high", "high", "low"]);
        let ids: Vec<String> = candidates(&registry, 5).into_iter().map(|e| e.id).collect();
        assert_eq!(ids, vec!["full", "also-high", "high", "low"]);
        assert!(candidates(&registry, 101).is_empty());
    }
}
