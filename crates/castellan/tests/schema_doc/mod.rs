//! Reads the JSON field tables of docs/inventory.md and compares a command's
//! JSON output with them, so the documentation and the output cannot drift
//! apart.

// Each test binary compiles this module and uses only some of its items.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

/// Returns the path of docs/inventory.md in this checkout.
fn doc_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/inventory.md")
}

/// Returns the rows (field path, type) of the table under `heading` in
/// docs/inventory.md, such as `("agents[].name", "string")`.
pub fn documented_fields(heading: &str) -> Vec<(String, String)> {
    let path = doc_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    let start = text
        .lines()
        .position(|line| line.trim() == heading)
        .unwrap_or_else(|| panic!("{} has no heading {heading:?}", path.display()));
    let mut fields = Vec::new();
    for line in text.lines().skip(start + 1) {
        if line.starts_with('#') {
            break;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // A table row is `| `field` | type | meaning |`: 5 pieces.
        if cells.len() < 5 || !cells[1].starts_with('`') {
            continue;
        }
        fields.push((cells[1].trim_matches('`').to_owned(), cells[2].to_owned()));
    }
    assert!(
        !fields.is_empty(),
        "no field table under {heading:?} in {}",
        path.display()
    );
    fields
}

/// Collects every field path of `value` with the JSON type of each
/// occurrence: objects by key (`a.b`), array elements as `a[]`, and the
/// fields of objects in arrays as `a[].b`.
pub fn output_fields(value: &Value) -> BTreeMap<String, Vec<&'static str>> {
    let mut fields = BTreeMap::new();
    collect(value, String::new(), &mut fields);
    fields
}

fn collect(value: &Value, path: String, fields: &mut BTreeMap<String, Vec<&'static str>>) {
    // An array of objects is documented by its elements' fields alone.
    let object_element = path.ends_with("[]") && value.is_object();
    if !path.is_empty() && !object_element {
        fields
            .entry(path.clone())
            .or_default()
            .push(json_type(value));
    }
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                collect(child, child_path, fields);
            }
        }
        Value::Array(items) => {
            for item in items {
                collect(item, format!("{path}[]"), fields);
            }
        }
        _ => {}
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(number) if number.is_i64() || number.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Asserts that `output` has exactly the fields of the table under
/// `heading`, each with a documented type (`T` or `T or null`).
pub fn assert_matches_doc(output: &Value, heading: &str) {
    let documented = documented_fields(heading);
    let actual = output_fields(output);
    let documented_paths: Vec<&str> = documented.iter().map(|(p, _)| p.as_str()).collect();
    for path in actual.keys() {
        assert!(
            documented_paths.contains(&path.as_str()),
            "output field {path} is not documented under {heading:?}"
        );
    }
    for (path, doc_type) in &documented {
        let Some(types) = actual.get(path) else {
            panic!("documented field {path} is missing from the output: {output:#}");
        };
        let allowed: Vec<&str> = doc_type.split(" or ").collect();
        for found in types {
            assert!(
                allowed.contains(found),
                "field {path} is {found} in the output but documented as {doc_type:?}"
            );
        }
    }
}
