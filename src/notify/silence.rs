//! Silences, as Alertmanager's `silence` package: label matchers and a time window during which
//! matching alerts are not notified. Kept in `state.dir` across restarts, expired ones kept for
//! the retention (Alertmanager's `--data.retention`, 120h) so `amtool silence query --expired`
//! still shows them.

use super::nflog::SnapshotWriter;
use crate::storage::Labels;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// How long an expired silence is kept (Alertmanager's `--data.retention` default).
pub const RETENTION_MS: i64 = 120 * 3600 * 1000;

/// One matcher of a silence, as Alertmanager's API spells it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SilenceMatcher {
    pub name: String,
    pub value: String,
    pub is_regex: bool,
    /// `false` for `!=` and `!~`; optional in the API, where it defaults to `true`.
    #[serde(default = "equal_by_default")]
    pub is_equal: bool,
}

fn equal_by_default() -> bool {
    true
}

/// A silence; times in Unix milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<SilenceMatcher>,
    pub starts_at: i64,
    pub ends_at: i64,
    pub updated_at: i64,
    pub created_by: String,
    pub comment: String,
}

/// Alertmanager's silence states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SilenceState {
    Pending,
    Active,
    Expired,
}

impl SilenceState {
    pub fn as_str(self) -> &'static str {
        match self {
            SilenceState::Pending => "pending",
            SilenceState::Active => "active",
            SilenceState::Expired => "expired",
        }
    }
}

impl Silence {
    /// Alertmanager's `getState`: both ends of the window count as active.
    pub fn state(&self, now_ms: i64) -> SilenceState {
        if now_ms < self.starts_at {
            SilenceState::Pending
        } else if now_ms > self.ends_at {
            SilenceState::Expired
        } else {
            SilenceState::Active
        }
    }
}

/// Why a silence was refused; the messages are Alertmanager's.
#[derive(Debug, PartialEq)]
pub enum SetError {
    /// The silence is invalid (400).
    Invalid(String),
    /// An update names an id that does not exist (404).
    NotFound,
}

impl std::fmt::Display for SetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetError::Invalid(e) => f.write_str(e),
            SetError::NotFound => f.write_str("silence not found"),
        }
    }
}

/// A matcher ready to match: the value or the fully anchored regex, and whether it is negated.
struct Compiled {
    name: String,
    pattern: Pattern,
    negated: bool,
}

enum Pattern {
    Equal(String),
    Regex(regex::Regex),
}

impl Compiled {
    fn new(m: &SilenceMatcher) -> Result<Compiled, String> {
        if !valid_label_name(&m.name) {
            return Err(format!("invalid label name {:?}", m.name));
        }
        let pattern = if m.is_regex {
            // Fully anchored, as Alertmanager's labels.NewMatcher.
            regex::Regex::new(&format!("^(?:{})$", m.value))
                .map(Pattern::Regex)
                .map_err(|e| format!("invalid regular expression {:?}: {e}", m.value))?
        } else {
            Pattern::Equal(m.value.clone())
        };
        Ok(Compiled {
            name: m.name.clone(),
            pattern,
            negated: !m.is_equal,
        })
    }

    fn matches_value(&self, value: &str) -> bool {
        let hit = match &self.pattern {
            Pattern::Equal(v) => v == value,
            Pattern::Regex(r) => r.is_match(value),
        };
        hit != self.negated
    }
}

/// Prometheus' label name syntax, which Alertmanager 0.25 requires.
pub(super) fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Alertmanager's `validateSilence`; the matchers compiled on success.
fn validate(s: &Silence) -> Result<Vec<Compiled>, String> {
    if s.matchers.is_empty() {
        return Err("at least one matcher required".into());
    }
    let compiled = s
        .matchers
        .iter()
        .enumerate()
        .map(|(i, m)| Compiled::new(m).map_err(|e| format!("invalid label matcher {i}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    // Only `=` and `=~` can match the empty string here, as Alertmanager's matchesEmpty.
    if compiled.iter().all(|c| !c.negated && c.matches_value("")) {
        return Err("at least one matcher must not match the empty string".into());
    }
    if s.ends_at < s.starts_at {
        return Err("end time must not be before start time".into());
    }
    Ok(compiled)
}

struct Stored {
    silence: Silence,
    matchers: Vec<Compiled>,
}

impl Stored {
    fn matches(&self, labels: &Labels) -> bool {
        self.matchers
            .iter()
            .all(|m| m.matches_value(labels.get(&m.name)))
    }
}

/// The silences, shared by the dispatcher (muting) and the API (changes).
pub struct Silences {
    state: Mutex<HashMap<String, Stored>>,
    writer: Option<SnapshotWriter<Vec<Silence>>>,
}

impl Silences {
    /// Loads `file` (a missing or corrupt one starts empty, with one warning) and writes every
    /// change back to it; `None` keeps silences in memory only. Needs the async runtime when a
    /// file is given (the writer is a task).
    pub fn open(file: Option<std::path::PathBuf>) -> Silences {
        let loaded: Vec<Silence> = file
            .as_deref()
            .and_then(|f| crate::state::load(f, "silences"))
            .unwrap_or_default();
        let mut state = HashMap::new();
        for silence in loaded {
            match validate(&silence) {
                Ok(matchers) => {
                    state.insert(silence.id.clone(), Stored { silence, matchers });
                }
                Err(e) => tracing::warn!(event = "state_unreadable", silence = %silence.id,
                    error = %e, "saved silence is invalid; dropped"),
            }
        }
        Silences {
            state: Mutex::new(state),
            writer: file.map(SnapshotWriter::start),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Stored>> {
        crate::sync::lock(&self.state)
    }

    fn save(&self, state: &HashMap<String, Stored>) {
        if let Some(writer) = &self.writer {
            writer.save(&state.values().map(|s| s.silence.clone()).collect());
        }
    }

    /// Drops silences that ended more than the retention ago (Alertmanager's GC); whether any.
    fn collect_garbage(&self, state: &mut HashMap<String, Stored>, now_ms: i64) -> bool {
        let before = state.len();
        state.retain(|_, s| s.silence.ends_at + RETENTION_MS > now_ms);
        state.len() != before
    }

    /// Creates or updates a silence as Alertmanager's API and `Silences.Set` do: an update that
    /// would rewrite history (other matchers, or an active silence's start) expires the old
    /// silence and creates a new one. Returns the id in effect.
    pub fn set(&self, mut silence: Silence, now_ms: i64) -> Result<String, SetError> {
        if silence.starts_at >= silence.ends_at {
            return Err(SetError::Invalid(
                "Failed to create silence: start time must be before end time".into(),
            ));
        }
        if silence.ends_at < now_ms {
            return Err(SetError::Invalid(
                "Failed to create silence: end time can't be in the past".into(),
            ));
        }
        let matchers =
            validate(&silence).map_err(|e| SetError::Invalid(format!("invalid silence: {e}")))?;
        let mut state = self.lock();
        self.collect_garbage(&mut state, now_ms);
        let prev = if silence.id.is_empty() {
            None
        } else {
            Some(
                state
                    .get(&silence.id)
                    .map(|s| s.silence.clone())
                    .ok_or(SetError::NotFound)?,
            )
        };
        match &prev {
            Some(prev) if can_update(prev, &silence, now_ms) => {}
            _ => {
                silence.id = uuid::Uuid::new_v4().to_string();
                silence.starts_at = silence.starts_at.max(now_ms);
                if let Some(prev) = prev.filter(|p| p.state(now_ms) != SilenceState::Expired) {
                    expire_in(&mut state, &prev.id, now_ms);
                }
            }
        }
        silence.updated_at = now_ms;
        let id = silence.id.clone();
        state.insert(id.clone(), Stored { silence, matchers });
        self.save(&state);
        Ok(id)
    }

    /// Ends a silence now (a pending one also starts now, so it is expired at once); an
    /// expired one stays as it is. `false` when there is no such silence.
    pub fn expire(&self, id: &str, now_ms: i64) -> bool {
        let mut state = self.lock();
        let found = expire_in(&mut state, id, now_ms);
        if found {
            self.save(&state);
        }
        found
    }

    /// Every silence kept, expired ones included.
    pub fn all(&self, now_ms: i64) -> Vec<Silence> {
        let mut state = self.lock();
        if self.collect_garbage(&mut state, now_ms) {
            self.save(&state);
        }
        state.values().map(|s| s.silence.clone()).collect()
    }

    /// One silence by id.
    pub fn get(&self, id: &str, now_ms: i64) -> Option<Silence> {
        self.all(now_ms).into_iter().find(|s| s.id == id)
    }

    /// The ids of the active silences that match `labels`, sorted (the API's `silencedBy`).
    pub fn silenced_by(&self, labels: &Labels, now_ms: i64) -> Vec<String> {
        let mut ids: Vec<String> = self
            .lock()
            .values()
            .filter(|s| s.silence.state(now_ms) == SilenceState::Active && s.matches(labels))
            .map(|s| s.silence.id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Whether an active silence mutes an alert with `labels` (the mute stage).
    pub fn mutes(&self, labels: &Labels, now_ms: i64) -> bool {
        self.lock()
            .values()
            .any(|s| s.silence.state(now_ms) == SilenceState::Active && s.matches(labels))
    }
}

/// Alertmanager's `canUpdate`: same matchers, and times changed only where the past stays
/// as it was.
fn can_update(prev: &Silence, next: &Silence, now_ms: i64) -> bool {
    if prev.matchers != next.matchers {
        return false;
    }
    match prev.state(now_ms) {
        // Alertmanager compares the starts in whole seconds.
        SilenceState::Active => {
            prev.starts_at.div_euclid(1000) == next.starts_at.div_euclid(1000)
                && next.ends_at >= now_ms
        }
        SilenceState::Pending => next.starts_at >= now_ms,
        SilenceState::Expired => false,
    }
}

fn expire_in(state: &mut HashMap<String, Stored>, id: &str, now_ms: i64) -> bool {
    let Some(stored) = state.get_mut(id) else {
        return false;
    };
    let s = &mut stored.silence;
    match s.state(now_ms) {
        SilenceState::Expired => return true,
        SilenceState::Active => s.ends_at = now_ms,
        SilenceState::Pending => {
            s.starts_at = now_ms;
            s.ends_at = now_ms;
        }
    }
    s.updated_at = now_ms;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;
    const HOUR: i64 = 3_600_000;

    fn matcher(name: &str, value: &str, is_regex: bool, is_equal: bool) -> SilenceMatcher {
        SilenceMatcher {
            name: name.into(),
            value: value.into(),
            is_regex,
            is_equal,
        }
    }

    fn silence(matchers: Vec<SilenceMatcher>, starts_at: i64, ends_at: i64) -> Silence {
        Silence {
            id: String::new(),
            matchers,
            starts_at,
            ends_at,
            updated_at: 0,
            created_by: "me".into(),
            comment: "maintenance".into(),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn matchers_are_alertmanagers_four_operators_with_anchored_regexes() {
        let s = Silences::open(None);
        let id = s
            .set(
                silence(
                    vec![
                        matcher("alertname", "Hot", false, true),
                        matcher("instance", "web-.*", true, true),
                        matcher("env", "prod", false, false),
                        matcher("team", "ml|data", true, false),
                    ],
                    NOW,
                    NOW + HOUR,
                ),
                NOW,
            )
            .unwrap();
        let base = [
            ("alertname", "Hot"),
            ("instance", "web-1"),
            ("env", "dev"),
            ("team", "infra"),
        ];
        assert_eq!(s.silenced_by(&labels(&base), NOW + 1), vec![id]);
        for (name, value) in [
            ("alertname", "Cold"),
            ("instance", "db-web-1"),
            ("env", "prod"),
            ("team", "ml"),
        ] {
            let mut changed = base;
            changed.iter_mut().find(|(n, _)| *n == name).unwrap().1 = value;
            assert!(
                !s.mutes(&labels(&changed), NOW + 1),
                "{name}={value} must not be silenced"
            );
        }
        // `team!~"ml|data"` is anchored: "mlops" is not "ml".
        let mut mlops = base;
        mlops[3].1 = "mlops";
        assert!(s.mutes(&labels(&mlops), NOW + 1));
    }

    #[test]
    fn validation_is_alertmanagers() {
        let s = Silences::open(None);
        let invalid = |sil: Silence| match s.set(sil, NOW) {
            Err(SetError::Invalid(e)) => e,
            other => panic!("accepted: {other:?}"),
        };
        assert_eq!(
            invalid(silence(vec![], NOW, NOW + HOUR)),
            "invalid silence: at least one matcher required"
        );
        assert_eq!(
            invalid(silence(
                vec![
                    matcher("a", "", false, true),
                    matcher("b", ".*", true, true)
                ],
                NOW,
                NOW + HOUR
            )),
            "invalid silence: at least one matcher must not match the empty string"
        );
        assert_eq!(
            invalid(silence(
                vec![matcher("1a", "x", false, true)],
                NOW,
                NOW + HOUR
            )),
            "invalid silence: invalid label matcher 0: invalid label name \"1a\""
        );
        assert!(
            invalid(silence(
                vec![matcher("a", "(", true, true)],
                NOW,
                NOW + HOUR
            ))
            .starts_with(
                "invalid silence: invalid label matcher 0: invalid regular expression \"(\""
            )
        );
        let a = vec![matcher("a", "x", false, true)];
        assert_eq!(
            invalid(silence(a.clone(), NOW + HOUR, NOW)),
            "Failed to create silence: start time must be before end time"
        );
        assert_eq!(
            invalid(silence(a.clone(), NOW - 2 * HOUR, NOW - HOUR)),
            "Failed to create silence: end time can't be in the past"
        );
        // A negative matcher on the empty value does not match the empty string.
        assert!(
            s.set(
                silence(vec![matcher("a", "", false, false)], NOW, NOW + HOUR),
                NOW
            )
            .is_ok()
        );
        let mut unknown = silence(a, NOW, NOW + HOUR);
        unknown.id = "no-such-id".into();
        assert_eq!(s.set(unknown, NOW), Err(SetError::NotFound));
    }

    #[test]
    fn updates_and_expiry_follow_alertmanagers_set() {
        let s = Silences::open(None);
        let a = vec![matcher("alertname", "Hot", false, true)];
        // A start in the past becomes now.
        let id = s
            .set(silence(a.clone(), NOW - HOUR, NOW + HOUR), NOW)
            .unwrap();
        let created = s.get(&id, NOW).unwrap();
        assert_eq!((created.starts_at, created.updated_at), (NOW, NOW));
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
        // Active: a new end and comment are updated in place.
        let mut longer = created.clone();
        longer.ends_at = NOW + 2 * HOUR;
        longer.comment = "longer".into();
        assert_eq!(s.set(longer, NOW + 10).unwrap(), id);
        let updated = s.get(&id, NOW + 10).unwrap();
        assert_eq!(
            (
                updated.ends_at,
                updated.comment.as_str(),
                updated.updated_at
            ),
            (NOW + 2 * HOUR, "longer", NOW + 10)
        );
        // Active: other matchers expire the old silence and create a new one.
        let mut other = updated.clone();
        other.matchers = vec![matcher("alertname", "Cold", false, true)];
        let new_id = s.set(other, NOW + 20).unwrap();
        assert_ne!(new_id, id);
        assert_eq!(s.get(&id, NOW + 20).unwrap().ends_at, NOW + 20);
        assert_eq!(
            s.get(&id, NOW + 21).unwrap().state(NOW + 21),
            SilenceState::Expired
        );
        // Active: a later start also makes a new silence.
        let mut moved = s.get(&new_id, NOW + 30).unwrap();
        moved.starts_at = NOW + HOUR;
        let moved_id = s.set(moved, NOW + 30).unwrap();
        assert_ne!(moved_id, new_id);
        let pending = s.get(&moved_id, NOW + 30).unwrap();
        assert_eq!(pending.state(NOW + 30), SilenceState::Pending);
        // Pending: a start still in the future is updated in place.
        let mut later = pending.clone();
        later.starts_at = NOW + 2 * HOUR - 1;
        assert_eq!(s.set(later, NOW + 40).unwrap(), moved_id);
        // Expire: a pending silence starts and ends now; expiring again changes nothing.
        assert!(s.expire(&moved_id, NOW + 50));
        let expired = s.get(&moved_id, NOW + 50).unwrap();
        assert_eq!((expired.starts_at, expired.ends_at), (NOW + 50, NOW + 50));
        assert!(s.expire(&moved_id, NOW + 60));
        assert_eq!(s.get(&moved_id, NOW + 60).unwrap().updated_at, NOW + 50);
        assert!(!s.expire("no-such-id", NOW));
        // Expired: an update makes a new silence, the old one stays expired.
        let mut again = s.get(&moved_id, NOW + 70).unwrap();
        again.starts_at = NOW + 70;
        again.ends_at = NOW + HOUR;
        assert_ne!(s.set(again, NOW + 70).unwrap(), moved_id);
    }

    #[test]
    fn expired_silences_are_kept_for_the_retention_and_states_follow_the_clock() {
        let s = Silences::open(None);
        let id = s
            .set(
                silence(
                    vec![matcher("alertname", "Hot", false, true)],
                    NOW + HOUR,
                    NOW + 2 * HOUR,
                ),
                NOW,
            )
            .unwrap();
        let hot = labels(&[("alertname", "Hot")]);
        assert!(!s.mutes(&hot, NOW), "pending");
        assert!(s.mutes(&hot, NOW + HOUR), "active from its start");
        assert!(s.mutes(&hot, NOW + 2 * HOUR), "active up to its end");
        assert!(!s.mutes(&hot, NOW + 2 * HOUR + 1), "expired");
        assert!(s.get(&id, NOW + 2 * HOUR + RETENTION_MS - 1).is_some());
        assert!(s.get(&id, NOW + 2 * HOUR + RETENTION_MS).is_none());
    }

    #[tokio::test]
    async fn saved_silences_load_and_a_corrupt_file_starts_empty() {
        let dir = std::env::temp_dir().join(format!("torchwatch-silences-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("silences.json");
        let kept = silence(
            vec![matcher("alertname", "Hot", false, true)],
            NOW,
            NOW + HOUR,
        );
        crate::state::save(
            &file,
            &vec![
                Silence {
                    id: "a".into(),
                    ..kept.clone()
                },
                Silence {
                    id: "bad".into(),
                    matchers: vec![],
                    ..kept
                },
            ],
        )
        .unwrap();
        let s = Silences::open(Some(file.clone()));
        assert_eq!(
            s.all(NOW).iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            ["a"],
            "the invalid one is dropped"
        );
        std::fs::write(&file, b"[{").unwrap();
        assert!(Silences::open(Some(file)).all(NOW).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
