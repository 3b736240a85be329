//! Secrets in config files: a password, token or URL given inline, in a file or in an
//! environment variable. The value never shows in `Debug` output, logs or errors.

use serde::Deserialize;
use std::path::PathBuf;

/// A secret value; `Debug` prints `<secret>`.
#[derive(Clone, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

/// Reads a secret from the first source given: inline, the first line of a file, an
/// environment variable. `what` names the field in errors, which never hold the value.
pub fn resolve_secret(
    inline: &Option<Secret>,
    file: &Option<PathBuf>,
    env: &Option<String>,
    what: &str,
) -> Result<Option<Secret>, String> {
    if let Some(v) = inline {
        return Ok(Some(v.clone()));
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{what}: cannot read {}: {e}", path.display()))?;
        return Ok(Some(Secret(text.lines().next().unwrap_or("").to_string())));
    }
    if let Some(var) = env {
        return std::env::var(var)
            .map(|v| Some(Secret(v)))
            .map_err(|_| format!("{what}: environment variable {var} is not set"));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_shows_in_debug_output() {
        let secret: Secret = serde_json::from_str("\"hunter2\"").unwrap();
        assert_eq!(format!("{secret:?}"), "<secret>");
        assert_eq!(format!("{:?}", Some(&secret)), "Some(<secret>)");
        assert_eq!(secret.expose(), "hunter2");
        let err = resolve_secret(
            &None,
            &None,
            &Some("TORCHWATCH_UNSET_VAR".into()),
            "x.password",
        )
        .unwrap_err();
        assert_eq!(
            err,
            "x.password: environment variable TORCHWATCH_UNSET_VAR is not set"
        );
    }
}
