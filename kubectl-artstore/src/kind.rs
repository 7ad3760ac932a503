//! `KIND/NAME` as users type it (`storageelement/se-a`, `se/se-a`, `ase/se-a`, …).

use artstore_operator::crd::{EventStream, Ingester, QueryNode, StorageElement};
use kube::core::{ApiResource, DynamicObject};
use kube::{Api, Client, Resource};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    EventStream,
    StorageElement,
    QueryNode,
    Ingester,
}

impl Kind {
    pub fn api_resource(self) -> ApiResource {
        match self {
            Kind::EventStream => ApiResource::erase::<EventStream>(&()),
            Kind::StorageElement => ApiResource::erase::<StorageElement>(&()),
            Kind::QueryNode => ApiResource::erase::<QueryNode>(&()),
            Kind::Ingester => ApiResource::erase::<Ingester>(&()),
        }
    }

    pub fn name(self) -> String {
        match self {
            Kind::EventStream => EventStream::kind(&()).to_lowercase(),
            Kind::StorageElement => StorageElement::kind(&()).to_lowercase(),
            Kind::QueryNode => QueryNode::kind(&()).to_lowercase(),
            Kind::Ingester => Ingester::kind(&()).to_lowercase(),
        }
    }

    pub fn api(self, client: &Client, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(client.clone(), ns, &self.api_resource())
    }
}

/// The resource a command acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: Kind,
    pub name: String,
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, name) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected KIND/NAME, like storageelement/se-a"))?;
        let kind = kind.to_ascii_lowercase();
        let kind = kind.split('.').next().unwrap_or_default();
        let kind = match kind {
            "eventstream" | "eventstreams" | "aes" | "es" => Kind::EventStream,
            "storageelement" | "storageelements" | "ase" | "se" => Kind::StorageElement,
            "querynode" | "querynodes" | "aqn" | "qn" => Kind::QueryNode,
            "ingester" | "ingesters" | "aing" | "ing" => Kind::Ingester,
            other => {
                return Err(format!(
                    "unknown kind {other:?}: expected eventstream, storageelement, querynode or ingester"
                ));
            }
        };
        if name.is_empty() {
            return Err(format!("{s:?}: the name after / is missing"));
        }
        Ok(Target {
            kind,
            name: name.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_by_name_plural_and_short_name() {
        for (text, kind) in [
            ("storageelement/se-a", Kind::StorageElement),
            ("ase/se-a", Kind::StorageElement),
            ("QueryNodes/q", Kind::QueryNode),
            ("ingester.artstore.io/i", Kind::Ingester),
            ("aes/files", Kind::EventStream),
        ] {
            assert_eq!(text.parse::<Target>().map(|t| t.kind), Ok(kind), "{text}");
        }
        assert!("pod/x".parse::<Target>().is_err());
        assert!("se-a".parse::<Target>().is_err());
        assert!("se/".parse::<Target>().is_err());
    }
}
