use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::labels::Labels;

/// A Kubernetes-style label selector: every `matchLabels` pair and every
/// `matchExpressions` requirement must hold.
///
/// A key may name its source (`k8s:app`) or not (`app`, any source).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "super::serde_util::string_map::deserialize"
    )]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// Why a [`LabelSelector`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelSelectorError {
    /// A `matchLabels` key is empty once its source (`k8s:`) is removed.
    #[error("matchLabels has an empty key {key:?}")]
    EmptyLabelKey { key: String },
    /// A `matchExpressions` key is empty once its source is removed.
    #[error("a matchExpressions entry has an empty key")]
    EmptyExpressionKey,
    /// `In` and `NotIn` compare against a list that must not be empty.
    #[error("matchExpressions {key:?} {operator:?} needs at least one value")]
    MissingValues { key: String, operator: Operator },
    /// `Exists` and `DoesNotExist` look at the key only.
    #[error("matchExpressions {key:?} {operator:?} takes no values")]
    UnexpectedValues { key: String, operator: Operator },
}

/// The operator of a [`Requirement`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    /// A selector of exactly these labels.
    pub fn labels(pairs: impl IntoIterator<Item = (impl Into<String>, impl Into<String>)>) -> Self {
        Self {
            match_labels: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            match_expressions: Vec::new(),
        }
    }

    /// Whether the selector mentions `key` (in `matchLabels` or an expression).
    pub fn mentions(&self, key: &str) -> bool {
        self.match_labels.keys().any(|k| strip_source(k).1 == key)
            || self
                .match_expressions
                .iter()
                .any(|r| strip_source(&r.key).1 == key)
    }

    /// Whether `labels` satisfy the selector.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| value_of(labels, k) == Some(v.as_str()))
            && self.match_expressions.iter().all(|r| {
                let value = value_of(labels, &r.key);
                match r.operator {
                    Operator::In => value.is_some_and(|v| r.values.iter().any(|x| x == v)),
                    Operator::NotIn => value.is_none_or(|v| !r.values.iter().any(|x| x == v)),
                    Operator::Exists => value.is_some(),
                    Operator::DoesNotExist => value.is_none(),
                }
            })
    }

    /// The (key without source, value) pairs every selected label set
    /// has (from `matchLabels`): for looking candidates up in an index
    /// before [`LabelSelector::matches`] decides.
    pub fn required_labels(&self) -> impl Iterator<Item = (&str, &str)> {
        self.match_labels
            .iter()
            .map(|(k, v)| (strip_source(k).1, v.as_str()))
    }

    /// Checks the selector's shape; the error says what is wrong.
    pub fn validate(&self) -> Result<(), LabelSelectorError> {
        for k in self.match_labels.keys() {
            if strip_source(k).1.is_empty() {
                return Err(LabelSelectorError::EmptyLabelKey { key: k.clone() });
            }
        }
        for r in &self.match_expressions {
            if strip_source(&r.key).1.is_empty() {
                return Err(LabelSelectorError::EmptyExpressionKey);
            }
            match r.operator {
                Operator::In | Operator::NotIn if r.values.is_empty() => {
                    return Err(LabelSelectorError::MissingValues {
                        key: r.key.clone(),
                        operator: r.operator,
                    });
                }
                Operator::Exists | Operator::DoesNotExist if !r.values.is_empty() => {
                    return Err(LabelSelectorError::UnexpectedValues {
                        key: r.key.clone(),
                        operator: r.operator,
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// `k8s:app` → (`Some("k8s")`, `app`); `app` → (`None`, `app`). Sources are
/// short words; a key with dots before the colon is not split.
fn strip_source(key: &str) -> (Option<&str>, &str) {
    match key.split_once(':') {
        Some((source, rest)) if !source.contains('.') && !source.contains('/') => {
            (Some(source), rest)
        }
        _ => (None, key),
    }
}

fn value_of<'a>(labels: &'a Labels, selector_key: &str) -> Option<&'a str> {
    let (source, key) = strip_source(selector_key);
    let label = labels.get(key)?;
    match source {
        Some(s) if s != "any" && s != label.source => None,
        _ => Some(label.value.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::Label;

    fn labels() -> Labels {
        [
            Label::k8s("app", "web"),
            Label::k8s("tier", "front"),
            Label::new("reserved", "host", ""),
        ]
        .into_iter()
        .collect()
    }

    fn expr(key: &str, operator: Operator, values: &[&str]) -> LabelSelector {
        LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![Requirement {
                key: key.into(),
                operator,
                values: values.iter().map(|v| v.to_string()).collect(),
            }],
        }
    }

    #[test]
    fn match_labels_with_and_without_source() {
        assert!(LabelSelector::labels([("app", "web")]).matches(&labels()));
        assert!(LabelSelector::labels([("k8s:app", "web")]).matches(&labels()));
        assert!(LabelSelector::labels([("any:app", "web")]).matches(&labels()));
        assert!(!LabelSelector::labels([("reserved:app", "web")]).matches(&labels()));
        assert!(!LabelSelector::labels([("app", "db")]).matches(&labels()));
        assert!(
            LabelSelector::default().matches(&labels()),
            "empty selector selects everything"
        );
    }

    #[test]
    fn expressions() {
        assert!(expr("app", Operator::In, &["db", "web"]).matches(&labels()));
        assert!(!expr("app", Operator::NotIn, &["web"]).matches(&labels()));
        assert!(expr("missing", Operator::NotIn, &["x"]).matches(&labels()));
        assert!(expr("tier", Operator::Exists, &[]).matches(&labels()));
        assert!(expr("missing", Operator::DoesNotExist, &[]).matches(&labels()));
        assert!(!expr("tier", Operator::DoesNotExist, &[]).matches(&labels()));
    }

    #[test]
    fn validation() {
        let missing = expr("a", Operator::In, &[]).validate().unwrap_err();
        assert_eq!(
            missing,
            LabelSelectorError::MissingValues {
                key: "a".into(),
                operator: Operator::In
            }
        );
        assert_eq!(
            missing.to_string(),
            r#"matchExpressions "a" In needs at least one value"#
        );
        let extra = expr("a", Operator::Exists, &["x"]).validate().unwrap_err();
        assert!(
            matches!(extra, LabelSelectorError::UnexpectedValues { .. }),
            "{extra}"
        );
        assert!(extra.to_string().contains("takes no values"));
        assert_eq!(
            LabelSelector::labels([("k8s:", "x")]).validate(),
            Err(LabelSelectorError::EmptyLabelKey { key: "k8s:".into() })
        );
        assert!(
            serde_json::from_str::<LabelSelector>(r#"{"matchLabel":{"a":"b"}}"#).is_err(),
            "typos are refused"
        );
        let sel: LabelSelector =
            serde_json::from_str(r#"{"matchExpressions":[{"key":"a","operator":"Exists"}]}"#)
                .unwrap();
        assert!(sel.mentions("a"));
    }
}
