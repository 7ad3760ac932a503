//! The custom resources (group `artstore.io`, version `v1alpha1`).

pub mod common;
pub mod event_stream;
pub mod ingester;
pub mod query_node;
pub mod storage_element;

pub use common::*;
pub use event_stream::*;
pub use ingester::*;
pub use query_node::*;
pub use storage_element::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Every CRD with the file name `crdgen` writes it to under `crds/`.
pub fn all() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        ("eventstreams.artstore.io.yaml", EventStream::crd()),
        ("storageelements.artstore.io.yaml", StorageElement::crd()),
        ("querynodes.artstore.io.yaml", QueryNode::crd()),
        ("ingesters.artstore.io.yaml", Ingester::crd()),
    ]
}

/// A CRD as the YAML committed in `crds/`.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::SerializeError> {
    serde_saphyr::to_string(crd)
}

/// Files under `dir` that are missing or differ from what the types generate now.
pub fn stale_files(dir: &std::path::Path) -> Result<Vec<String>, serde_saphyr::SerializeError> {
    let mut stale = Vec::new();
    for (file, crd) in all() {
        let want = to_yaml(&crd)?;
        let have = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        if have != want {
            stale.push(file.to_string());
        }
    }
    Ok(stale)
}
