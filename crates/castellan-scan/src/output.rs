//! Machine-readable output: JSON and SARIF 2.1.0.

use serde_json::{json, Value};

use crate::report::Located;
use crate::rules::RuleSet;

/// Renders findings as a JSON array; secrets are never included.
pub fn to_json(findings: &[Located]) -> Value {
    json!(findings)
}

/// Renders findings as a SARIF 2.1.0 log with one run, listing every rule so
/// code-scanning tools can show descriptions. Columns count code points.
pub fn to_sarif(findings: &[Located], rules: &RuleSet) -> Value {
    let descriptors: Vec<Value> = rules
        .rules()
        .iter()
        .map(|rule| {
            json!({
                "id": rule.id,
                "shortDescription": { "text": rule.description },
                "defaultConfiguration": { "level": "error" },
            })
        })
        .collect();
    let results: Vec<Value> = findings
        .iter()
        .map(|located| sarif_result(located, rules))
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "castellan-scan",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": descriptors,
            }},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    })
}

fn sarif_result(located: &Located, rules: &RuleSet) -> Value {
    let finding = &located.finding;
    let rule_index = rules
        .rules()
        .iter()
        .position(|rule| rule.id == finding.rule_id);
    let mut result = json!({
        "ruleId": finding.rule_id,
        "level": "error",
        "message": { "text": format!("{} ({})", finding.description, finding.preview) },
        "locations": [{ "physicalLocation": {
            "artifactLocation": { "uri": relative_uri(&located.path) },
            "region": { "startLine": finding.line, "startColumn": finding.column },
        }}],
        "partialFingerprints": { "castellanFingerprint/v1": finding.fingerprint },
    });
    if let Some(index) = rule_index {
        result["ruleIndex"] = json!(index);
    }
    if let Some(commit) = &located.commit {
        result["properties"] = json!({
            "commit": commit.id,
            "authorTime": commit.author_time,
        });
    }
    result
}

/// Turns a scanned path into a relative URI reference, as SARIF viewers
/// resolve `uri` against the repository root.
fn relative_uri(path: &str) -> String {
    let path = path.strip_prefix("./").unwrap_or(path);
    let mut uri = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            ' ' => uri.push_str("%20"),
            '%' => uri.push_str("%25"),
            '#' => uri.push_str("%23"),
            '?' => uri.push_str("%3F"),
            '\\' => uri.push('/'),
            c => uri.push(c),
        }
    }
    uri
}

#[cfg(test)]
mod tests {
    use super::relative_uri;

    #[test]
    fn paths_become_relative_uris() {
        let cases = [
            ("./src/main.rs", "src/main.rs"),
            ("a b/c#d?.txt", "a%20b/c%23d%3F.txt"),
            ("100%.txt", "100%25.txt"),
        ];
        for (path, expected) in cases {
            assert_eq!(relative_uri(path), expected);
        }
    }
}
