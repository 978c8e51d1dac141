//! The field rules in effect (SPEC section 8), as `/v1/status` shows them.

use serde::{Deserialize, Serialize};

/// One masked field and its method, as `/v1/status` shows it.
pub type MaskedFields = std::collections::BTreeMap<String, String>;

/// The rules in effect, for `/v1/status` and `redmirror status`: field
/// names, methods and the fingerprint, never the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulesSummary {
    /// Fields never copied.
    pub excluded_fields: Vec<String>,
    /// The allow-list: only these fields are copied; empty = every field.
    pub included_fields: Vec<String>,
    /// Masked fields: field name → method (`hash`, `email`, `redact`).
    pub masked_fields: MaskedFields,
    /// The fingerprint every event carries (header `redmirror-rules`).
    pub fingerprint: String,
}

impl RulesSummary {
    /// One line for people: `rules 3f2a… : excluded a; only a,b; masked email:email`.
    pub fn line(&self) -> String {
        let included = if self.included_fields.is_empty() {
            "all fields".to_string()
        } else {
            format!("only {}", self.included_fields.join(","))
        };
        let excluded = if self.excluded_fields.is_empty() {
            "none".to_string()
        } else {
            self.excluded_fields.join(",")
        };
        let masked = if self.masked_fields.is_empty() {
            "none".to_string()
        } else {
            self.masked_fields
                .iter()
                .map(|(f, m)| format!("{f}:{m}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            "{included}, excluded {excluded}, masked {masked} (fingerprint {})",
            self.fingerprint
        )
    }
}
