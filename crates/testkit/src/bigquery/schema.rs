//! Table schemas of the fake BigQuery: reading `schema.fields` (names, types, modes, nested
//! records) and checking a JSON row against it the way `insertAll` does, with BigQuery's
//! per-field error messages.

use std::collections::HashSet;

use chrono::NaiveDate;
use serde_json::{Map, Value, json};

use super::state::Field;
use super::timestamp::{parse_datetime, parse_timestamp};

pub(super) fn row_error(reason: &str, location: &str, message: &str) -> Value {
    json!({"reason": reason, "location": location, "debugInfo": "", "message": message})
}

const TYPES: &[&str] = &[
    "STRING",
    "BYTES",
    "INTEGER",
    "INT64",
    "FLOAT",
    "FLOAT64",
    "NUMERIC",
    "BIGNUMERIC",
    "BOOLEAN",
    "BOOL",
    "TIMESTAMP",
    "DATE",
    "TIME",
    "DATETIME",
    "GEOGRAPHY",
    "JSON",
    "RECORD",
    "STRUCT",
];

pub(super) fn parse_fields(v: &Value) -> Result<Vec<Field>, String> {
    let Value::Array(items) = v else {
        return Err("schema.fields must be an array".into());
    };
    let mut out = Vec::with_capacity(items.len());
    let mut names = HashSet::new();
    for f in items {
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let first_ok = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if !first_ok
            || name.len() > 300
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(format!(
                "Invalid field name \"{name}\". Fields must contain only letters, numbers, and underscores, start with a letter or underscore, and be at most 300 characters long."
            ));
        }
        if !names.insert(name.to_ascii_lowercase()) {
            return Err(format!("Field {name} already exists in schema"));
        }
        let ty = f
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_ascii_uppercase();
        if !TYPES.contains(&ty.as_str()) {
            return Err(format!("Invalid value for type: {ty} is not a valid value"));
        }
        let mode = match f.get("mode") {
            None | Some(Value::Null) => "NULLABLE".to_string(),
            Some(m) => m.as_str().unwrap_or("").to_ascii_uppercase(),
        };
        if !["NULLABLE", "REQUIRED", "REPEATED"].contains(&mode.as_str()) {
            return Err(format!(
                "Invalid value for mode: {mode} is not a valid value"
            ));
        }
        let fields = match f.get("fields") {
            Some(sub @ Value::Array(_)) => parse_fields(sub)?,
            _ => Vec::new(),
        };
        if (ty == "RECORD" || ty == "STRUCT") && fields.is_empty() {
            return Err(format!("Field {name} is type RECORD but has no schema"));
        }
        out.push(Field {
            name,
            ty,
            mode,
            fields,
        });
    }
    Ok(out)
}

/// Checks one row; returns the row as stored (unknown fields dropped when ignored) or its errors.
pub(super) fn validate_row(
    schema: &[Field],
    obj: &Map<String, Value>,
    ignore_unknown: bool,
) -> Result<Map<String, Value>, Vec<Value>> {
    let mut errors = Vec::new();
    let mut out = Map::new();
    validate_object(schema, obj, ignore_unknown, "", &mut errors, &mut out);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn validate_object(
    schema: &[Field],
    obj: &Map<String, Value>,
    ignore_unknown: bool,
    prefix: &str,
    errors: &mut Vec<Value>,
    out: &mut Map<String, Value>,
) {
    for (k, v) in obj {
        let path = format!("{prefix}{k}");
        // BigQuery matches column names case-insensitively.
        let Some(field) = schema.iter().find(|f| f.name.eq_ignore_ascii_case(k)) else {
            if !ignore_unknown {
                errors.push(row_error(
                    "invalid",
                    &path,
                    &format!("no such field: {path}."),
                ));
            }
            continue;
        };
        if v.is_null() {
            if field.mode == "REQUIRED" {
                errors.push(row_error(
                    "invalid",
                    &path,
                    &format!("Missing required field: {path}."),
                ));
            }
            continue;
        }
        if field.mode == "REPEATED" {
            match v {
                Value::Array(items) => {
                    let mut stored = Vec::with_capacity(items.len());
                    for item in items {
                        if let Some(s) = validate_value(field, item, ignore_unknown, &path, errors)
                        {
                            stored.push(s);
                        }
                    }
                    out.insert(field.name.clone(), Value::Array(stored));
                }
                _ => errors.push(row_error(
                    "invalid",
                    &path,
                    &format!("Array specified for non-repeated field: {path}."),
                )),
            }
            continue;
        }
        if let Some(s) = validate_value(field, v, ignore_unknown, &path, errors) {
            out.insert(field.name.clone(), s);
        }
    }
    for f in schema {
        if f.mode == "REQUIRED"
            && !obj
                .iter()
                .any(|(k, v)| k.eq_ignore_ascii_case(&f.name) && !v.is_null())
        {
            let path = format!("{prefix}{}", f.name);
            if !errors.iter().any(|e| e["location"] == json!(path)) {
                errors.push(row_error(
                    "invalid",
                    &path,
                    &format!("Missing required field: {path}."),
                ));
            }
        }
    }
}

fn validate_value(
    field: &Field,
    v: &Value,
    ignore_unknown: bool,
    path: &str,
    errors: &mut Vec<Value>,
) -> Option<Value> {
    match field.ty.as_str() {
        "TIMESTAMP" => match v {
            Value::Number(n) if n.as_f64().is_some() => Some(v.clone()),
            Value::String(s) if parse_timestamp(s).is_some() => Some(v.clone()),
            _ => {
                errors.push(row_error(
                    "invalid",
                    path,
                    &format!(
                        "Could not parse '{}' as a timestamp. Required format is YYYY-MM-DD HH:MM[:SS[.SSSSSS]] or YYYY/MM/DD HH:MM[:SS[.SSSSSS]]",
                        v.as_str().map(str::to_string).unwrap_or_else(|| short(v))
                    ),
                ));
                None
            }
        },
        "RECORD" | "STRUCT" => match v {
            Value::Object(obj) => {
                let mut out = Map::new();
                let before = errors.len();
                validate_object(
                    &field.fields,
                    obj,
                    ignore_unknown,
                    &format!("{path}."),
                    errors,
                    &mut out,
                );
                (errors.len() == before).then_some(Value::Object(out))
            }
            _ => cannot_convert(errors, path, "record", v),
        },
        ty => match scalar_mismatch(ty, v) {
            None => Some(v.clone()),
            Some(what) => cannot_convert(errors, path, what, v),
        },
    }
}

fn cannot_convert(errors: &mut Vec<Value>, path: &str, what: &str, v: &Value) -> Option<Value> {
    errors.push(row_error(
        "invalid",
        path,
        &format!("Cannot convert value to {what} (bad value): {}", short(v)),
    ));
    None
}

/// What a value of a scalar column fails to convert to (`None`: it fits the column's type).
fn scalar_mismatch(ty: &str, v: &Value) -> Option<&'static str> {
    let (fits, what) = match ty {
        "STRING" | "GEOGRAPHY" => (
            matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)),
            "string",
        ),
        "BYTES" => (v.as_str().is_some_and(base64_ok), "bytes"),
        "INTEGER" | "INT64" => (
            match v {
                Value::Number(n) => n.is_i64(),
                Value::String(s) => s.trim().parse::<i64>().is_ok(),
                _ => false,
            },
            "integer",
        ),
        "FLOAT" | "FLOAT64" | "NUMERIC" | "BIGNUMERIC" => (
            match v {
                Value::Number(_) => true,
                Value::String(s) => s.trim().parse::<f64>().is_ok(),
                _ => false,
            },
            "double",
        ),
        "BOOLEAN" | "BOOL" => (
            match v {
                Value::Bool(_) => true,
                Value::String(s) => {
                    ["true", "false", "1", "0"].contains(&s.to_ascii_lowercase().as_str())
                }
                _ => false,
            },
            "boolean",
        ),
        "DATE" => (
            v.as_str()
                .is_some_and(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()),
            "date",
        ),
        "DATETIME" => (
            v.as_str().is_some_and(|s| parse_datetime(s).is_some()),
            "datetime",
        ),
        "TIME" => (
            v.as_str()
                .is_some_and(|s| chrono::NaiveTime::parse_from_str(s, "%H:%M:%S%.f").is_ok()),
            "time",
        ),
        "JSON" => (
            !matches!(v, Value::String(s) if serde_json::from_str::<Value>(s).is_err()),
            "json",
        ),
        _ => (true, ""),
    };
    (!fits).then_some(what)
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 64 {
        format!("{}…", s.chars().take(64).collect::<String>())
    } else {
        s
    }
}

fn base64_ok(s: &str) -> bool {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).is_ok()
}
