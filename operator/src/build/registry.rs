//! The storage-element registry (the `artstore_contract::Registry` JSON) built from
//! StorageElement statuses, and the ConfigMap that carries it to a consumer.

use std::collections::BTreeMap;

use artstore_contract::{Registry, RegistryEntry};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Resource;

use super::BuildError;
use super::common::{child_meta, labels};
use crate::crd::StorageElement;

/// Entries for the elements a consumer may use (`selected` names; all when empty). An element
/// appears once its status has an endpoint and the operator has observed its mode and capacity.
/// Sorted by id, so the file only changes when the registry does.
pub fn registry(elements: &[StorageElement], selected: &[String]) -> Registry {
    let mut entries: Vec<RegistryEntry> = elements
        .iter()
        .filter(|se| {
            selected.is_empty()
                || se
                    .metadata
                    .name
                    .as_ref()
                    .is_some_and(|n| selected.contains(n))
        })
        .filter(|se| se.metadata.deletion_timestamp.is_none())
        .filter_map(|se| {
            let st = se.status.as_ref()?;
            Some(RegistryEntry {
                id: st.element_id.clone().unwrap_or_else(|| se.element_id()),
                url: st.endpoint.clone()?,
                mode: st.mode?.into(),
                priority: st.priority?,
                capacity_bytes: st.capacity_bytes?,
                used_bytes: st.used_bytes.unwrap_or(0),
            })
        })
        .collect();
    entries.sort_by(|a, b| a.id.cmp(&b.id));
    Registry { elements: entries }
}

/// Name of a consumer's registry ConfigMap.
pub fn config_map_name(owner_name: &str) -> String {
    format!("{owner_name}-registry")
}

/// The registry file as a ConfigMap owned by its consumer (Ingester or QueryNode).
pub fn config_map<K: Resource<DynamicType = ()>>(
    owner: &K,
    component: &str,
    registry: &Registry,
) -> Result<ConfigMap, BuildError> {
    let name = owner
        .meta()
        .name
        .clone()
        .ok_or(BuildError::MissingMetadata("name"))?;
    let json = serde_json::to_string_pretty(registry).map_err(|e| BuildError::InvalidField {
        field: "registry".into(),
        message: e.to_string(),
    })?;
    Ok(ConfigMap {
        metadata: child_meta(owner, config_map_name(&name), labels(component, &name))?,
        data: Some(BTreeMap::from([(
            artstore_contract::REGISTRY_FILE_NAME.to_string(),
            json,
        )])),
        ..Default::default()
    })
}
