//! The documented JSON output schemas (docs/json.md) and a checker for the
//! subset of JSON Schema they use: type, properties, required,
//! additionalProperties, items, enum, minimum, anyOf and local $ref.
//!
//! Test support: it reads the schemas from the documentation itself, so a
//! test that passes proves the page is true.

use serde_json::Value;

/// The schema under `## {section}` in docs/json.md (its first ```json
/// block).
pub fn documented(section: &str) -> Value {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/json.md"))
        .expect("docs/json.md");
    let heading = format!("\n## {section}\n");
    let at = page
        .find(&heading)
        .unwrap_or_else(|| panic!("no section {section:?} in docs/json.md"));
    let rest = &page[at + heading.len()..];
    let next_section = rest.find("\n## ").unwrap_or(rest.len());
    let rest = &rest[..next_section];
    let start = rest.find("```json\n").expect("a json block") + "```json\n".len();
    let end = start + rest[start..].find("```").expect("the block's end");
    serde_json::from_str(&rest[start..end])
        .unwrap_or_else(|err| panic!("section {section}: the schema is not JSON: {err}"))
}

/// Panics with every place where `value` does not fit `schema`.
#[track_caller]
pub fn assert_fits(section: &str, value: &Value) {
    let schema = documented(section);
    let mut problems = Vec::new();
    check(&schema, &schema, value, "$", &mut problems);
    assert!(
        problems.is_empty(),
        "the output of {section} does not fit docs/json.md:\n{}\n\noutput: {value}",
        problems.join("\n")
    );
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(wanted: &str, value: &Value) -> bool {
    let actual = type_name(value);
    actual == wanted || (wanted == "number" && actual == "integer")
}

pub fn check(root: &Value, schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference
            .strip_prefix("#/$defs/")
            .unwrap_or_else(|| panic!("unsupported $ref {reference}"));
        return check(root, &root["$defs"][name], value, at, problems);
    }
    if let Some(options) = schema.get("anyOf").and_then(Value::as_array) {
        let fits = options.iter().any(|option| {
            let mut inner = Vec::new();
            check(root, option, value, at, &mut inner);
            inner.is_empty()
        });
        if !fits {
            problems.push(format!("{at}: fits none of anyOf"));
        }
        return;
    }
    if let Some(wanted) = schema.get("type") {
        let names: Vec<&str> = match wanted {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            _ => panic!("bad type in schema at {at}"),
        };
        if !names.iter().any(|name| type_matches(name, value)) {
            problems.push(format!("{at}: {} is not {names:?}", type_name(value)));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        problems.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let (Some(minimum), Some(number)) = (
        schema.get("minimum").and_then(Value::as_f64),
        value.as_f64(),
    ) && number < minimum
    {
        problems.push(format!("{at}: {number} is below {minimum}"));
    }
    if let Value::Object(fields) = value {
        let properties = schema.get("properties").and_then(Value::as_object);
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !fields.contains_key(required) {
                problems.push(format!("{at}: missing {required}"));
            }
        }
        for (name, field) in fields {
            match properties.and_then(|p| p.get(name)) {
                Some(field_schema) => {
                    check(root, field_schema, field, &format!("{at}.{name}"), problems)
                }
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    problems.push(format!("{at}: {name} is not documented"))
                }
                None => {}
            }
        }
    }
    if let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) {
        for (index, item) in items.iter().enumerate() {
            check(root, item_schema, item, &format!("{at}[{index}]"), problems);
        }
    }
}
