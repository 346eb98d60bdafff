//! JSON Schema checks: the generated schemas of flow, connections and lookup files, and the
//! diagnostics a document that does not conform gets.

use std::sync::OnceLock;

use serde_json::Value;

use crate::diag::{Diagnostic, did_you_mean};
use crate::model::{RawConnections, RawFlow, RawLookup};
use crate::yaml::SourceDoc;

/// The generated JSON Schema of flow files.
pub fn flow_schema() -> Value {
    schema_value(schemars::schema_for!(RawFlow))
}

/// The generated JSON Schema of connections files.
pub fn connections_schema() -> Value {
    schema_value(schemars::schema_for!(RawConnections))
}

/// The generated JSON Schema of lookup files.
pub fn lookup_schema() -> Value {
    schema_value(schemars::schema_for!(RawLookup))
}

fn schema_value(s: schemars::Schema) -> Value {
    s.to_value()
}

fn validator(which: &'static str) -> &'static jsonschema::Validator {
    static FLOW: OnceLock<jsonschema::Validator> = OnceLock::new();
    static CONN: OnceLock<jsonschema::Validator> = OnceLock::new();
    static LOOKUP: OnceLock<jsonschema::Validator> = OnceLock::new();
    let (cell, schema): (_, fn() -> Value) = match which {
        "flow" => (&FLOW, flow_schema),
        "connections" => (&CONN, connections_schema),
        _ => (&LOOKUP, lookup_schema),
    };
    cell.get_or_init(|| {
        #[allow(clippy::expect_used)]
        jsonschema::validator_for(&schema()).expect("generated schemas are valid JSON Schema")
    })
}

/// Validates `doc` against the schema `which`, then deserializes it.
pub(super) fn schema_checked<T: serde::de::DeserializeOwned>(
    doc: &SourceDoc,
    which: &'static str,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    let before = diags.len();
    for err in validator(which).iter_errors(&doc.value) {
        diags.extend(schema_diagnostics(doc, which, &err));
    }
    if diags.len() > before {
        return None;
    }
    // read from the value in place (a copy of it cost as much as the value)
    match T::deserialize(&doc.value) {
        Ok(v) => Some(v),
        Err(e) => {
            diags.push(Diagnostic::error("schema", e.to_string()).at(doc, ""));
            None
        }
    }
}

/// The generated schema of `which` as a JSON value (for looking fields up in it).
fn schema_doc(which: &'static str) -> &'static Value {
    static FLOW: OnceLock<Value> = OnceLock::new();
    static CONN: OnceLock<Value> = OnceLock::new();
    static LOOKUP: OnceLock<Value> = OnceLock::new();
    match which {
        "flow" => FLOW.get_or_init(flow_schema),
        "connections" => CONN.get_or_init(connections_schema),
        _ => LOOKUP.get_or_init(lookup_schema),
    }
}

/// The property names a schema node allows, following `$ref`, `anyOf`, `oneOf`, `allOf`.
fn schema_properties(root: &Value, node: &Value, depth: usize) -> Vec<String> {
    if depth > 8 {
        return Vec::new();
    }
    let mut out: Vec<String> = node
        .get("properties")
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    if let Some(r) = node.get("$ref").and_then(Value::as_str)
        && let Some(target) = r.strip_prefix('#').and_then(|p| root.pointer(p))
    {
        out.extend(schema_properties(root, target, depth + 1));
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        for branch in node
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.extend(schema_properties(root, branch, depth + 1));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The schema of property `name` of a schema node, following `$ref` and branches.
fn schema_property<'v>(
    root: &'v Value,
    node: &'v Value,
    name: &str,
    depth: usize,
) -> Option<&'v Value> {
    if depth > 8 {
        return None;
    }
    if let Some(p) = node.get("properties").and_then(|p| p.get(name)) {
        return Some(p);
    }
    if let Some(r) = node.get("$ref").and_then(Value::as_str)
        && let Some(target) = r.strip_prefix('#').and_then(|p| root.pointer(p))
        && let Some(p) = schema_property(root, target, name, depth + 1)
    {
        return Some(p);
    }
    ["anyOf", "oneOf", "allOf"].iter().find_map(|key| {
        node.get(*key)?
            .as_array()?
            .iter()
            .find_map(|b| schema_property(root, b, name, depth + 1))
    })
}

/// Each stray field of an object, with where it belongs when a neighbouring map takes it
/// (a field indented one level too little) or the field it probably misspells.
fn unknown_fields(
    doc: &SourceDoc,
    which: &'static str,
    err: &jsonschema::ValidationError<'_>,
    unexpected: &[String],
) -> Vec<Diagnostic> {
    let ptr = err.instance_path().as_str().to_string();
    let root = schema_doc(which);
    let keyword = err.schema_path().as_str();
    let object_schema = keyword
        .strip_suffix("/additionalProperties")
        .and_then(|p| root.pointer(p));
    let known = object_schema
        .map(|o| schema_properties(root, o, 0))
        .unwrap_or_default();
    let here = doc.value.pointer(&ptr);
    unexpected
        .iter()
        .map(|name| {
            let mut d = Diagnostic::error("unknown-field", format!("unknown field '{name}'"))
                .at_key(doc, &format!("{ptr}/{}", crate::yaml::escape_segment(name)));
            // a neighbouring map that takes this field
            let belongs = object_schema.and_then(|o| {
                here?.as_object()?.iter().find_map(|(k, v)| {
                    v.is_object().then_some(())?;
                    let sub = schema_property(root, o, k, 0)?;
                    schema_properties(root, sub, 0)
                        .contains(name)
                        .then(|| k.clone())
                })
            });
            d.hint = if let Some(parent) = belongs {
                Some(format!(
                    "'{name}' belongs in `{parent}`: indent it under `{parent}:`"
                ))
            } else if let Some(h) = did_you_mean(name, known.iter().map(String::as_str)) {
                Some(h)
            } else if !known.is_empty() {
                Some(format!("expected one of: {}", known.join(", ")))
            } else {
                None
            };
            d
        })
        .collect()
}

fn schema_diagnostics(
    doc: &SourceDoc,
    which: &'static str,
    err: &jsonschema::ValidationError<'_>,
) -> Vec<Diagnostic> {
    use jsonschema::error::ValidationErrorKind as K;
    match err.kind() {
        K::AdditionalProperties { unexpected } => unknown_fields(doc, which, err, unexpected),
        K::OneOfNotValid { context } | K::AnyOf { context } => {
            let best = context
                .iter()
                .filter(|errs| !errs.iter().any(|e| matches!(e.kind(), K::Constant { .. })))
                .min_by_key(|errs| errs.len());
            match best {
                // every problem of the closest branch: a stray field beside a missing one
                Some(errs) if !errs.is_empty() => errs
                    .iter()
                    .flat_map(|inner| schema_diagnostics(doc, which, inner))
                    .collect(),
                _ => vec![schema_diagnostic(doc, err)],
            }
        }
        K::Type { .. } => {
            let ptr = err.instance_path().as_str();
            let mut d = schema_diagnostic(doc, err);
            if let Some(v @ (Value::Bool(_) | Value::Number(_))) = doc.value.pointer(ptr)
                && err.to_string().contains("\"string\"")
            {
                d = d.hint(format!("quote it to keep it text: \"{v}\""));
            }
            vec![d]
        }
        _ => vec![schema_diagnostic(doc, err)],
    }
}

fn schema_diagnostic(doc: &SourceDoc, err: &jsonschema::ValidationError<'_>) -> Diagnostic {
    use jsonschema::error::ValidationErrorKind as K;
    let ptr = err.instance_path().as_str().to_string();
    match err.kind() {
        K::Required { property } => {
            let name = property.as_str().unwrap_or_default().to_string();
            Diagnostic::error("missing-field", format!("missing field '{name}'")).at_key(doc, &ptr)
        }
        K::OneOfNotValid { context } | K::AnyOf { context } => {
            // Tagged enums: report the branch that came closest (fewest errors, none about
            // the tag), else say what the tag may be.
            let best = context
                .iter()
                .filter(|errs| !errs.iter().any(|e| matches!(e.kind(), K::Constant { .. })))
                .min_by_key(|errs| errs.len());
            match best.and_then(|errs| errs.first()) {
                Some(inner) => schema_diagnostic(doc, inner),
                None => {
                    let tags: Vec<String> = context
                        .iter()
                        .flatten()
                        .filter_map(|e| match e.kind() {
                            K::Constant { expected_value } => {
                                expected_value.as_str().map(str::to_string)
                            }
                            _ => None,
                        })
                        .collect();
                    // a plain enum (`run_on: allways`): the value and the field it is for
                    if let Some(Value::String(got)) = doc.value.pointer(&ptr) {
                        let field = ptr.rsplit('/').next().unwrap_or_default();
                        let mut d = Diagnostic::error(
                            "unknown-value",
                            format!(
                                "unknown value '{got}' for `{field}` (expected one of: {})",
                                tags.join(", ")
                            ),
                        )
                        .at(doc, &ptr);
                        d.hint = did_you_mean(got, tags.iter().map(String::as_str));
                        return d;
                    }
                    let got = doc
                        .value
                        .pointer(&format!("{ptr}/kind"))
                        .cloned()
                        .unwrap_or(Value::Null);
                    let mut d = Diagnostic::error("unknown-kind", format!("unknown kind {got}"))
                        .at(doc, &format!("{ptr}/kind"));
                    if !tags.is_empty() {
                        d = d.hint(format!("expected one of: {}", tags.join(", ")));
                    }
                    d
                }
            }
        }
        _ => Diagnostic::error("schema", err.to_string()).at(doc, &ptr),
    }
}
