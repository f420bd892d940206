//! `GetNamespaces` of a relay: the union of its peers'.

use std::collections::BTreeSet;

use hubble_api::observer::Namespace;

/// Every `(cluster, namespace)` any peer reported, once, sorted by cluster
/// then namespace.
pub(crate) fn merge_namespaces(
    answers: impl IntoIterator<Item = Vec<Namespace>>,
) -> Vec<Namespace> {
    answers
        .into_iter()
        .flatten()
        .map(|n| (n.cluster, n.namespace))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|(cluster, namespace)| Namespace { cluster, namespace })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(cluster: &str, namespace: &str) -> Namespace {
        Namespace {
            cluster: cluster.into(),
            namespace: namespace.into(),
        }
    }

    #[test]
    fn merged_deduplicated_sorted() {
        let merged = merge_namespaces([
            vec![ns("c2", "default"), ns("c1", "kube-system")],
            vec![ns("c1", "default"), ns("c2", "default")],
            vec![],
        ]);
        assert_eq!(
            merged,
            [
                ns("c1", "default"),
                ns("c1", "kube-system"),
                ns("c2", "default")
            ]
        );
    }
}
