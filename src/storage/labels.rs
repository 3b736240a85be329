//! Label sets: the identity of a series.

use std::fmt;
use std::sync::Arc;

/// The label that carries a series' metric name.
pub const METRIC_NAME: &str = "__name__";

/// One label pair.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label {
    /// Label name.
    pub name: String,
    /// Label value; never empty in a stored set (an empty value means "absent").
    pub value: String,
}

/// An immutable label set sorted by name, cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Labels(Arc<[Label]>);

impl Labels {
    /// Builds a set from pairs in any order. Empty values are dropped and a later
    /// duplicate name wins, as Prometheus' label builder does.
    pub fn from_pairs<N: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        let mut labels: Vec<Label> = Vec::new();
        for (name, value) in pairs {
            let (name, value) = (name.into(), value.into());
            labels.retain(|l| l.name != name);
            if !value.is_empty() {
                labels.push(Label { name, value });
            }
        }
        labels.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        Labels(labels.into())
    }

    /// The value of `name`, or "" when absent (PromQL treats both alike).
    pub fn get(&self, name: &str) -> &str {
        self.0
            .binary_search_by(|l| l.name.as_str().cmp(name))
            .map(|i| self.0[i].value.as_str())
            .unwrap_or("")
    }

    /// The metric name, or "" when the set has none.
    pub fn metric_name(&self) -> &str {
        self.get(METRIC_NAME)
    }

    /// Iterates the pairs in name order.
    pub fn iter(&self) -> std::slice::Iter<'_, Label> {
        self.0.iter()
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for the empty set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Starts a modified copy.
    pub fn builder(&self) -> LabelsBuilder {
        LabelsBuilder(self.0.to_vec())
    }

    /// A copy without the metric name.
    pub fn without_metric_name(&self) -> Labels {
        if self.get(METRIC_NAME).is_empty() {
            return self.clone();
        }
        let mut b = self.builder();
        b.delete(METRIC_NAME);
        b.build()
    }

    /// True when both are the same allocation (cheap identity check for caches).
    pub fn same_allocation(&self, other: &Labels) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Alertmanager's fingerprint of a label set: FNV-1a 64 over each name and
    /// value, each followed by 0xff, in name order.
    pub fn fingerprint(&self) -> u64 {
        fnv1a(
            self.0
                .iter()
                .flat_map(|l| [l.name.as_bytes(), &[0xff], l.value.as_bytes(), &[0xff]]),
        )
    }

    /// Approximate heap bytes held by this set (for the storage's size report).
    pub fn heap_bytes(&self) -> usize {
        self.0
            .iter()
            .map(|l| std::mem::size_of::<Label>() + l.name.len() + l.value.len())
            .sum()
    }
}

/// Edits a label set; `build` sorts once at the end.
pub struct LabelsBuilder(Vec<Label>);

impl LabelsBuilder {
    /// Sets `name` to `value`; an empty value deletes the label.
    pub fn set(&mut self, name: &str, value: &str) -> &mut Self {
        if value.is_empty() {
            return self.delete(name);
        }
        match self.0.iter_mut().find(|l| l.name == name) {
            Some(l) => l.value = value.to_string(),
            None => self.0.push(Label {
                name: name.to_string(),
                value: value.to_string(),
            }),
        }
        self
    }

    /// Removes `name` if present.
    pub fn delete(&mut self, name: &str) -> &mut Self {
        self.0.retain(|l| l.name != name);
        self
    }

    /// Keeps only the listed names.
    pub fn keep(&mut self, names: &[String]) -> &mut Self {
        self.0.retain(|l| names.contains(&l.name));
        self
    }

    /// The finished, sorted set.
    pub fn build(mut self) -> Labels {
        self.0.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        Labels(self.0.into())
    }
}

impl fmt::Display for Labels {
    /// Prometheus' `labels.Labels.String()` form: `{a="1", b="2"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, l) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}={}", l.name, quote(&l.value))?;
        }
        f.write_str("}")
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// FNV-1a 64 over the concatenated chunks: stable across runs and platforms.
pub fn fnv1a<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for chunk in chunks {
        for b in chunk {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// Go's `strconv.Quote` for the characters label values contain in practice.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// True for a legal label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
pub fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// True for a legal metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
pub fn is_valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_deduplicated_and_empty_values_dropped() {
        let l = Labels::from_pairs([("b", "2"), ("a", "1"), ("c", ""), ("b", "3")]);
        assert_eq!(l.to_string(), r#"{a="1", b="3"}"#);
        assert_eq!(l.get("c"), "");
        let mut b = l.builder();
        b.set("a", "").set("z", "q\"x");
        assert_eq!(b.build().to_string(), r#"{b="3", z="q\"x"}"#);
    }
}
