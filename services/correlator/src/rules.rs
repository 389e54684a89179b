//! Detection rules as data (TOML), validated on load: a bad file is
//! refused with an error naming the rule and the field.
//!
//! ```toml
//! [[rule]]
//! id = "brute-force"
//! title = "Brute force: repeated failed logins from one source"
//! kind = "threshold"            # or "sequence", "distinct_count"
//! severity = "high"
//! technique = "T1110"           # MITRE ATT&CK
//! window = "5m"                 # event-time window
//! hop = "30s"                   # optional: how often the window slides
//! group_by = ["src_endpoint.ip"]
//! threshold = 5
//! suppress = "30m"              # optional: merge repeats into one finding
//! match = { class_uid = 3002, status_id = 2 }
//! ```
//!
//! A `sequence` rule has `steps = [{ match = {...}, at_least = 5 }, { match = {...} }]`
//! instead of `match`/`threshold`; a `distinct_count` rule adds
//! `distinct = "dst_endpoint.port"`.
//!
//! Windows slide by `hop` (it must divide `window`; by default a tenth of
//! it when that is a whole number of milliseconds, else the whole window):
//! every pattern whose events all fall within `window` of each other is
//! found wherever it lies in time (see [`crate::engine`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use vigil_proto::event::v1::SecurityEvent;

use crate::fields;

/// The largest `threshold` or `at_least` a rule may ask for: the engine
/// keeps up to that many event marks per key and time slice.
pub const MAX_COUNT: i64 = 1000;

/// A field test: every listed field must equal its value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Matcher(pub Vec<(String, String)>);

impl Matcher {
    pub fn matches(&self, event: &SecurityEvent) -> bool {
        self.0
            .iter()
            .all(|(path, want)| fields::get(event, path).is_some_and(|v| v.equals(want)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub matcher: Matcher,
    pub at_least: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// At least `threshold` matching events per key and window.
    Threshold { matcher: Matcher, threshold: usize },
    /// The steps in order (each at least `at_least` times) per key and window.
    Sequence { steps: Vec<Step> },
    /// At least `threshold` distinct values of `field` per key and window.
    DistinctCount {
        matcher: Matcher,
        field: String,
        threshold: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub id: String,
    pub title: String,
    pub severity_id: i32,
    pub technique: String,
    pub window_ms: i64,
    /// How far the window slides; divides `window_ms`.
    pub hop_ms: i64,
    pub suppress_ms: i64,
    pub group_by: Vec<String>,
    pub kind: Kind,
}

impl Rule {
    /// Which step (0 for single-step rules) `event` matches, if any.
    pub fn step_of(&self, event: &SecurityEvent) -> Option<usize> {
        match &self.kind {
            Kind::Threshold { matcher, .. } | Kind::DistinctCount { matcher, .. } => {
                matcher.matches(event).then_some(0)
            }
            Kind::Sequence { steps } => steps.iter().position(|s| s.matcher.matches(event)),
        }
    }
}

/// A rule file that cannot be used, naming the rule and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RuleError {
    /// The rule's id, or its position when it has none.
    pub rule: String,
    pub field: String,
    pub reason: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule {}: {}: {}", self.rule, self.field, self.reason)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    rule: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: Option<String>,
    title: Option<String>,
    kind: Option<String>,
    severity: Option<String>,
    technique: Option<String>,
    window: Option<String>,
    hop: Option<String>,
    suppress: Option<String>,
    #[serde(default)]
    group_by: Vec<String>,
    threshold: Option<i64>,
    distinct: Option<String>,
    #[serde(rename = "match")]
    matcher: Option<BTreeMap<String, toml::Value>>,
    steps: Option<Vec<RawStep>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    #[serde(rename = "match")]
    matcher: BTreeMap<String, toml::Value>,
    at_least: Option<i64>,
}

/// Parses `90s`, `5m`, `2h`, `1d` into milliseconds.
pub fn parse_duration_ms(s: &str) -> Option<i64> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().ok()?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(unit_ms).filter(|ms| *ms > 0)
}

fn severity(s: &str) -> Option<i32> {
    Some(match s.to_ascii_lowercase().as_str() {
        "informational" => 1,
        "low" => 2,
        "medium" => 3,
        "high" => 4,
        "critical" => 5,
        "fatal" => 6,
        _ => return None,
    })
}

/// Parses and validates a whole rule file.
pub fn parse(text: &str) -> Result<Vec<Rule>, RuleError> {
    let file: File = toml::from_str(text).map_err(|e| RuleError {
        rule: "-".into(),
        field: e
            .span()
            .map(|s| format!("at byte {}", s.start))
            .unwrap_or_else(|| "file".into()),
        reason: e.message().to_owned(),
    })?;
    let mut seen = std::collections::HashSet::new();
    let mut rules = Vec::new();
    for (i, raw) in file.rule.into_iter().enumerate() {
        let name = raw.id.clone().unwrap_or_else(|| format!("#{}", i + 1));
        let err = |field: &str, reason: String| RuleError {
            rule: name.clone(),
            field: field.into(),
            reason,
        };
        let id = raw.id.clone().ok_or_else(|| err("id", "required".into()))?;
        if !vigil_common::identity::is_valid_name(&id) {
            return Err(err(
                "id",
                "must be 1-64 of [A-Za-z0-9_-] (it is a NATS subject token)".into(),
            ));
        }
        if !seen.insert(id.clone()) {
            return Err(err("id", "duplicate rule id".into()));
        }
        let title = raw
            .title
            .clone()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| err("title", "required".into()))?;
        let severity_id = raw
            .severity
            .as_deref()
            .ok_or_else(|| err("severity", "required".into()))
            .and_then(|s| {
                severity(s).ok_or_else(|| {
                    err(
                        "severity",
                        format!("{s:?} is not informational, low, medium, high, critical or fatal"),
                    )
                })
            })?;
        let technique = raw.technique.clone().unwrap_or_default();
        let valid_technique = technique.strip_prefix('T').is_some_and(|rest| {
            !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit() || c == '.')
        });
        if !technique.is_empty() && !valid_technique {
            return Err(err(
                "technique",
                format!("{technique:?} is not an ATT&CK technique id like T1110"),
            ));
        }
        let window_ms = raw
            .window
            .as_deref()
            .ok_or_else(|| err("window", "required".into()))
            .and_then(|w| {
                parse_duration_ms(w)
                    .ok_or_else(|| err("window", format!("{w:?} is not a duration like 5m")))
            })?;
        let hop_ms = match raw.hop.as_deref() {
            None if window_ms % 10 == 0 => window_ms / 10,
            None => window_ms,
            Some(h) => parse_duration_ms(h)
                .filter(|h| window_ms % h == 0)
                .ok_or_else(|| {
                    err(
                        "hop",
                        format!("{h:?} is not a duration that divides the window"),
                    )
                })?,
        };
        let suppress_ms = match raw.suppress.as_deref() {
            None => 0,
            Some(s) => parse_duration_ms(s)
                .ok_or_else(|| err("suppress", format!("{s:?} is not a duration like 30m")))?,
        };
        if raw.group_by.is_empty() {
            return Err(err("group_by", "at least one field".into()));
        }
        for g in &raw.group_by {
            if !fields::is_known(g) {
                return Err(err("group_by", format!("unknown field {g:?}")));
            }
        }
        let matcher = |m: &BTreeMap<String, toml::Value>, at: &str| -> Result<Matcher, RuleError> {
            let mut tests = Vec::new();
            for (path, v) in m {
                if !fields::is_known(path) {
                    return Err(err(&format!("{at}.{path}"), "unknown field".into()));
                }
                let text = match v {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(n) => n.to_string(),
                    other => {
                        return Err(err(
                            &format!("{at}.{path}"),
                            format!("expected a string or integer, got {}", other.type_str()),
                        ));
                    }
                };
                tests.push((path.clone(), text));
            }
            Ok(Matcher(tests))
        };
        let threshold = |raw: &RawRule| -> Result<usize, RuleError> {
            match raw.threshold {
                Some(n) if (1..=MAX_COUNT).contains(&n) => Ok(n as usize),
                Some(n) => Err(err("threshold", format!("{n} must be 1 to {MAX_COUNT}"))),
                None => Err(err("threshold", "required".into())),
            }
        };
        let kind = match raw.kind.as_deref() {
            Some("threshold") => Kind::Threshold {
                matcher: matcher(
                    raw.matcher
                        .as_ref()
                        .ok_or_else(|| err("match", "required".into()))?,
                    "match",
                )?,
                threshold: threshold(&raw)?,
            },
            Some("distinct_count") => {
                let field = raw
                    .distinct
                    .clone()
                    .ok_or_else(|| err("distinct", "required".into()))?;
                if !fields::is_known(&field) {
                    return Err(err("distinct", format!("unknown field {field:?}")));
                }
                Kind::DistinctCount {
                    matcher: matcher(
                        raw.matcher
                            .as_ref()
                            .ok_or_else(|| err("match", "required".into()))?,
                        "match",
                    )?,
                    field,
                    threshold: threshold(&raw)?,
                }
            }
            Some("sequence") => {
                let raw_steps = raw
                    .steps
                    .as_ref()
                    .ok_or_else(|| err("steps", "required".into()))?;
                if raw_steps.len() < 2 {
                    return Err(err("steps", "a sequence needs at least two steps".into()));
                }
                let mut steps = Vec::new();
                for (n, s) in raw_steps.iter().enumerate() {
                    let at_least = match s.at_least {
                        None => 1,
                        Some(k) if (1..=MAX_COUNT).contains(&k) => k as usize,
                        Some(k) => {
                            return Err(err(
                                &format!("steps[{n}].at_least"),
                                format!("{k} must be 1 to {MAX_COUNT}"),
                            ));
                        }
                    };
                    steps.push(Step {
                        matcher: matcher(&s.matcher, &format!("steps[{n}].match"))?,
                        at_least,
                    });
                }
                Kind::Sequence { steps }
            }
            Some(other) => {
                return Err(err(
                    "kind",
                    format!("{other:?} is not threshold, sequence or distinct_count"),
                ));
            }
            None => return Err(err("kind", "required".into())),
        };
        rules.push(Rule {
            id,
            title,
            severity_id,
            technique,
            window_ms,
            hop_ms,
            suppress_ms,
            group_by: raw.group_by.clone(),
            kind,
        });
    }
    Ok(rules)
}

/// The rule set vigil ships (`deploy/rules.toml`).
pub const DEFAULT_RULES: &str = include_str!("../../../deploy/rules.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_rules_parse() {
        let rules = parse(DEFAULT_RULES).map_err(|e| e.to_string());
        let ids: Vec<String> = rules
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["brute-force", "credential-compromise", "port-scan"]);
    }

    #[test]
    fn errors_name_the_rule_and_the_field() {
        let base = "id = \"r1\"\ntitle = \"t\"\nkind = \"threshold\"\nseverity = \"high\"\nwindow = \"5m\"\ngroup_by = [\"src_endpoint.ip\"]\nthreshold = 5\nmatch = { class_uid = 3002 }\n";
        let cases = [
            (
                base.replace("window = \"5m\"", "window = \"5 minutes\""),
                "r1",
                "window",
            ),
            (
                base.replace("severity = \"high\"", "severity = \"urgent\""),
                "r1",
                "severity",
            ),
            (base.replace("src_endpoint.ip", "src.ip"), "r1", "group_by"),
            (
                base.replace("class_uid = 3002", "clas_uid = 3002"),
                "r1",
                "match.clas_uid",
            ),
            (
                base.replace("threshold = 5", "threshold = 0"),
                "r1",
                "threshold",
            ),
            (
                base.replace("kind = \"threshold\"", "kind = \"frequency\""),
                "r1",
                "kind",
            ),
            (base.replace("id = \"r1\"\n", ""), "#1", "id"),
            (base.replace("id = \"r1\"", "id = \"r 1\""), "r 1", "id"),
        ];
        for (body, rule, field) in cases {
            let text = format!("[[rule]]\n{body}");
            match parse(&text) {
                Err(e) => assert_eq!((e.rule.as_str(), e.field.as_str()), (rule, field), "{e}"),
                Ok(_) => panic!("accepted: {text}"),
            }
        }
        let twice = format!("[[rule]]\n{base}\n[[rule]]\n{base}");
        assert_eq!(
            parse(&twice).map_err(|e| e.reason),
            Err("duplicate rule id".into())
        );
        assert!(parse("[[rule]]\nid = \"x\"\nbogus = 1").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("5m"), Some(300_000));
        assert_eq!(parse_duration_ms("90s"), Some(90_000));
        assert_eq!(parse_duration_ms("0s"), None);
        assert_eq!(parse_duration_ms("m"), None);
    }
}
