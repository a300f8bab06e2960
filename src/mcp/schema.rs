//! Tool schemas as a model reads them, and a call's arguments checked
//! against them, for every tool at once (the server applies both to each
//! entry of the registry, so a new tool gets them without code of its own).
//!
//! - [`compact`]: schemars' output made small enough that tools/list costs a
//!   model little: no titles, formats or `$schema`; descriptions only on the
//!   arguments (an output's field names and the tool's description say the
//!   rest; not `trace` and `window`, which the instructions explain once);
//!   no `required` in outputs; no `null` alternatives in inputs (an absent
//!   argument says it);
//!   enums of constants as one `enum` (an input's without a `type`: its
//!   strings say it), unions of plain types as one `type`;
//!   definitions inlined where that is shorter.
//! - [`listed`]: an input schema as tools/list shows it: `window`'s shape
//!   said by its types alone (the instructions give its forms once).
//! - [`check_args`]: an argument the schema does not declare is an error
//!   naming it and the valid ones (serde would ignore it and answer for no
//!   filter), and integers sent as strings ("3") or integral floats (3.0),
//!   as clients do, become integers where the schema takes one.

use serde_json::{Map, Value};

/// Which contract a schema describes: an input keeps the descriptions of its
/// arguments (they are how a model learns what to send) and drops `null`
/// alternatives (an optional argument is one left out); an output keeps
/// `null` where the answer may hold it, and no descriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Input,
    Output,
}

/// The schema `schema` (schemars' draft 2020-12 output) made compact; it
/// accepts what the original accepts, except `null` for an input's
/// optional arguments (the arguments' parsing still takes it).
pub fn compact(schema: &Map<String, Value>, side: Side) -> Map<String, Value> {
    let mut root = schema.clone();
    root.remove("$schema");
    let mut defs = match root.remove("$defs") {
        Some(Value::Object(defs)) => defs,
        _ => Map::new(),
    };
    if side == Side::Output {
        let described = to_depth(&Value::Object(root), &defs, 0);
        root = described.as_object().cloned().unwrap_or_default();
        defs.clear();
    }
    for def in defs.values_mut() {
        shrink(def, side, false);
    }
    // The arguments (or the answer's fields) apart: only they may keep a description.
    let mut props = match root.remove("properties") {
        Some(Value::Object(props)) => props,
        _ => Map::new(),
    };
    for field in props.values_mut() {
        shrink(field, side, side == Side::Input);
    }
    if side == Side::Input {
        terse_shared_args(&mut props);
    }
    let mut root = Value::Object(root);
    shrink(&mut root, side, false);
    // No arguments: `{"type": "object"}` says it.
    if !props.is_empty() {
        root["properties"] = Value::Object(props);
    }
    inline_defs(&mut root, &mut defs);
    let Value::Object(mut root) = root else {
        unreachable!("a schema object stays an object")
    };
    if !defs.is_empty() {
        root.insert("$defs".into(), Value::Object(defs));
    }
    root
}

/// The `trace` and `window` arguments most tools take, without their
/// descriptions (the server's instructions say once how to name a trace and
/// write a window), and `window` (schemars' `anyOf` of a range string and a
/// `{start, end}` object) as one schema that accepts the same.
fn terse_shared_args(props: &mut Map<String, Value>) {
    if let Some(Value::Object(trace)) = props.get_mut("trace") {
        trace.remove("description");
    }
    if let Some(window) = props.get_mut("window") {
        let time = serde_json::json!({"type": ["integer", "string"]});
        *window = serde_json::json!({
            "type": ["string", "object"],
            "properties": {"start": time, "end": time},
        });
    }
}

/// The compact input schema `checked` as tools/list shows it: `window` as
/// its two types, without the fields of its object form, which the server's
/// instructions name once for the nine tools that take one. Calls are still
/// checked against `checked`, so an unknown field of a window object is
/// still an error.
pub fn listed(checked: &Map<String, Value>) -> Map<String, Value> {
    let mut shown = checked.clone();
    if let Some(Value::Object(window)) = shown
        .get_mut("properties")
        .and_then(|p| p.get_mut("window"))
    {
        window.remove("properties");
    }
    shown
}

/// How deep an output schema describes an answer: its fields, what they
/// hold (an object's fields, a list's items) and the fields of that; a value
/// deeper down is described by its type alone. The answers show the rest, and
/// tools/list stays affordable however many tools there are.
const OUTPUT_DEPTH: usize = 1;

/// `schema` with its references followed, described down to `OUTPUT_DEPTH`
/// from `depth`.
fn to_depth(schema: &Value, defs: &Map<String, Value>, depth: usize) -> Value {
    let Value::Object(s) = schema else {
        return schema.clone();
    };
    if let Some(def) = s
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(def_name)
        .and_then(|name| defs.get(name))
    {
        let mut merged = s.clone();
        merged.remove("$ref");
        if let Value::Object(d) = def {
            for (k, v) in d {
                merged.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        return to_depth(&Value::Object(merged), defs, depth);
    }
    if depth >= OUTPUT_DEPTH {
        let mut types = Vec::new();
        types_of(schema, defs, &mut types);
        return match types.len() {
            0 => Value::Object(Map::new()),
            1 => serde_json::json!({"type": types[0]}),
            _ => serde_json::json!({"type": types}),
        };
    }
    let mut out = Map::new();
    for (key, value) in s {
        let value = match (key.as_str(), value) {
            ("properties", Value::Object(props)) => Value::Object(
                props
                    .iter()
                    .map(|(k, v)| (k.clone(), to_depth(v, defs, depth + 1)))
                    .collect(),
            ),
            ("items", item) => to_depth(item, defs, depth + 1),
            ("anyOf" | "oneOf", Value::Array(alts)) => {
                Value::Array(alts.iter().map(|a| to_depth(a, defs, depth)).collect())
            }
            // A model reads an answer's field names, not which are required.
            ("required", _) => continue,
            _ => value.clone(),
        };
        out.insert(key.clone(), value);
    }
    Value::Object(out)
}

/// The JSON types `schema` allows, its references and alternatives followed.
fn types_of(schema: &Value, defs: &Map<String, Value>, types: &mut Vec<Value>) {
    let mut add = |t: &Value| {
        if !types.contains(t) {
            types.push(t.clone());
        }
    };
    match schema.get("type") {
        Some(Value::Array(ts)) => ts.iter().for_each(&mut add),
        Some(t) => add(t),
        None => {}
    }
    if let Some(def) = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(def_name)
        .and_then(|name| defs.get(name))
    {
        types_of(def, defs, types);
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(alts)) = schema.get(key) {
            alts.iter().for_each(|a| types_of(a, defs, types));
        }
    }
}

/// Keywords whose value is a map of names to schemas.
const SCHEMA_MAPS: [&str; 3] = ["properties", "$defs", "patternProperties"];
/// Keywords whose value is a schema.
const SCHEMA_VALUES: [&str; 5] = ["items", "additionalProperties", "not", "if", "then"];
/// Keywords whose value is a list of schemas.
const SCHEMA_LISTS: [&str; 4] = ["anyOf", "oneOf", "allOf", "prefixItems"];

/// Calls `f` on every schema directly inside `schema`.
fn for_each_child(schema: &mut Map<String, Value>, f: &mut dyn FnMut(&mut Value)) {
    for (key, value) in schema.iter_mut() {
        let key = key.as_str();
        if SCHEMA_MAPS.contains(&key) {
            if let Value::Object(map) = value {
                map.values_mut().for_each(&mut *f);
            }
        } else if SCHEMA_VALUES.contains(&key) {
            f(value);
        } else if SCHEMA_LISTS.contains(&key)
            && let Value::Array(list) = value
        {
            list.iter_mut().for_each(&mut *f);
        }
    }
}

/// Drops what a model does not need from one schema and those inside it;
/// `described` keeps its own description (not those inside it).
fn shrink(schema: &mut Value, side: Side, described: bool) {
    let Value::Object(s) = schema else { return };
    s.remove("title");
    // "uint", "int64", "double": the type says enough, and clients warn on
    // formats they do not know.
    s.remove("format");
    if !described {
        s.remove("description");
    }
    if side == Side::Output && s.get("minimum") == Some(&Value::from(0)) {
        s.remove("minimum");
    }
    for_each_child(s, &mut |child| shrink(child, side, false));
    if side == Side::Input {
        drop_null(s);
    }
    collapse_constants(s);
    if side == Side::Input {
        untyped_enum(s);
    }
    collapse_types(s);
    merge_null(s);
}

/// An input's enum of strings without its `type`: the values say it.
fn untyped_enum(s: &mut Map<String, Value>) {
    if matches!(s.get("enum"), Some(Value::Array(v)) if v.iter().all(Value::is_string)) {
        s.remove("type");
    }
}

/// `anyOf: [X, {"type": "null"}]` as X with `null` among its types: the
/// same values, without the wrapping.
fn merge_null(s: &mut Map<String, Value>) {
    let Some(Value::Array(alts)) = s.get("anyOf") else {
        return;
    };
    let [Value::Object(x), null] = alts.as_slice() else {
        return;
    };
    let plain_null = null.as_object().is_some_and(|n| n.len() == 1) && null["type"] == "null";
    let Some(Value::String(ty)) = x.get("type") else {
        return;
    };
    if !plain_null || x.keys().any(|k| s.contains_key(k)) {
        return;
    }
    let mut x = x.clone();
    x.insert("type".into(), serde_json::json!([ty, "null"]));
    s.remove("anyOf");
    s.extend(x);
}

/// An input's optional argument without its `null` alternative (in its
/// types, its `enum` or its `anyOf`).
fn drop_null(s: &mut Map<String, Value>) {
    let is_null = |t: &Value| t == "null";
    if let Some(Value::Array(types)) = s.get_mut("type") {
        types.retain(|t| !is_null(t));
        if types.len() == 1 {
            let only = types.remove(0);
            s.insert("type".into(), only);
        }
    }
    if let Some(Value::Array(values)) = s.get_mut("enum") {
        values.retain(|v| !v.is_null());
    }
    let Some(Value::Array(alts)) = s.get_mut("anyOf") else {
        return;
    };
    alts.retain(|a| {
        a.as_object()
            .is_none_or(|a| a.len() != 1 || !a.get("type").is_some_and(is_null))
    });
    if alts.len() == 1
        && let Some(Value::Object(only)) = alts.pop()
    {
        s.remove("anyOf");
        for (k, v) in only {
            s.entry(k).or_insert(v);
        }
    }
}

/// `anyOf` of plain types (`{"type": "integer"}`, `{"type": "string"}`) as
/// one `type` list.
fn collapse_types(s: &mut Map<String, Value>) {
    if s.contains_key("type") {
        return;
    }
    let Some(Value::Array(alts)) = s.get("anyOf") else {
        return;
    };
    let mut types = Vec::new();
    for a in alts {
        match a
            .as_object()
            .filter(|a| a.len() == 1)
            .and_then(|a| a.get("type"))
        {
            Some(Value::String(t)) => types.push(Value::String(t.clone())),
            Some(Value::Array(ts)) => types.extend(ts.iter().cloned()),
            _ => return,
        }
    }
    s.remove("anyOf");
    types.dedup();
    s.insert("type".into(), Value::Array(types));
}

/// `oneOf` of string constants (a Rust enum's variants, each with its doc)
/// as one `enum`: the field's own description names the choices.
fn collapse_constants(s: &mut Map<String, Value>) {
    let Some(Value::Array(variants)) = s.get("oneOf").or_else(|| s.get("anyOf")) else {
        return;
    };
    let constants: Option<Vec<Value>> = variants
        .iter()
        .map(|v| match v.get("const") {
            Some(c @ Value::String(_)) => Some(c.clone()),
            _ => match v.get("enum") {
                Some(Value::Array(e)) if e.len() == 1 && e[0].is_string() => Some(e[0].clone()),
                _ => None,
            },
        })
        .collect();
    let Some(constants) = constants else { return };
    s.remove("oneOf");
    s.remove("anyOf");
    s.insert("type".into(), "string".into());
    s.insert("enum".into(), Value::Array(constants));
}

/// The name of the definition `"#/$defs/NAME"` refers to.
fn def_name(reference: &str) -> Option<&str> {
    reference.strip_prefix("#/$defs/")
}

fn count_refs(schema: &Value, counts: &mut std::collections::HashMap<String, usize>) {
    match schema {
        Value::Object(s) => {
            if let Some(name) = s.get("$ref").and_then(Value::as_str).and_then(def_name) {
                *counts.entry(name.to_string()).or_default() += 1;
            }
            s.values().for_each(|v| count_refs(v, counts));
        }
        Value::Array(list) => list.iter().for_each(|v| count_refs(v, counts)),
        _ => {}
    }
}

/// Replaces references by the definition they name wherever that makes the
/// whole shorter (a definition used once, or one smaller than the references
/// to it), and drops the definitions no longer used. A definition that
/// refers to itself, directly or not, stays.
fn inline_defs(root: &mut Value, defs: &mut Map<String, Value>) {
    loop {
        let mut counts = std::collections::HashMap::new();
        count_refs(root, &mut counts);
        for def in defs.values() {
            count_refs(def, &mut counts);
        }
        defs.retain(|name, _| counts.contains_key(name));
        let worth = defs.iter().find_map(|(name, def)| {
            let uses = counts[name];
            let size = def.to_string().len();
            let reference = format!("{{\"$ref\":\"#/$defs/{name}\"}}").len();
            let self_referent = refers_to(def, name, defs, &mut Vec::new());
            (!self_referent && uses * size <= size + uses * reference).then(|| name.clone())
        });
        let Some(name) = worth else { return };
        let def = defs.remove(&name).expect("found above");
        replace_refs(root, &name, &def);
        for other in defs.values_mut() {
            replace_refs(other, &name, &def);
        }
    }
}

/// True when `schema` reaches the definition `name` through its references.
fn refers_to(
    schema: &Value,
    name: &str,
    defs: &Map<String, Value>,
    seen: &mut Vec<String>,
) -> bool {
    match schema {
        Value::Object(s) => {
            if let Some(target) = s.get("$ref").and_then(Value::as_str).and_then(def_name) {
                if target == name {
                    return true;
                }
                if !seen.iter().any(|n| n == target) {
                    seen.push(target.to_string());
                    if defs
                        .get(target)
                        .is_some_and(|d| refers_to(d, name, defs, seen))
                    {
                        return true;
                    }
                }
            }
            s.values().any(|v| refers_to(v, name, defs, seen))
        }
        Value::Array(list) => list.iter().any(|v| refers_to(v, name, defs, seen)),
        _ => false,
    }
}

/// Puts `def` in place of every reference to `name`; keywords beside the
/// reference (its field's description) win over the definition's.
fn replace_refs(schema: &mut Value, name: &str, def: &Value) {
    match schema {
        Value::Object(s) => {
            if s.get("$ref").and_then(Value::as_str).and_then(def_name) == Some(name) {
                s.remove("$ref");
                if let Value::Object(d) = def {
                    for (k, v) in d {
                        if !s.contains_key(k) {
                            s.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            s.values_mut().for_each(|v| replace_refs(v, name, def));
        }
        Value::Array(list) => list.iter_mut().for_each(|v| replace_refs(v, name, def)),
        _ => {}
    }
}

// ------------------------------------------------------------- arguments

/// Checks `args` against the input schema `schema` of `tool` before they are
/// parsed: an argument (or a field of an object argument) the schema does not
/// declare is an error naming it and the valid ones; an integer sent as a
/// string or an integral float becomes an integer where the schema takes an
/// integer. Everything else is left to the arguments' own parsing.
pub fn check_args(
    tool: &str,
    schema: &Map<String, Value>,
    args: &mut Map<String, Value>,
) -> Result<(), String> {
    let root = Value::Object(schema.clone());
    check_object(tool, &root, schema, args, None)
}

/// The schema `s` with its reference, if any, followed.
fn resolve<'a>(root: &'a Value, s: &'a Value) -> &'a Value {
    match s.get("$ref").and_then(Value::as_str).and_then(def_name) {
        Some(name) => root
            .get("$defs")
            .and_then(|d| d.get(name))
            .map_or(s, |d| resolve(root, d)),
        None => s,
    }
}

/// The alternatives a schema allows: itself, or each of its anyOf/oneOf.
fn alternatives<'a>(root: &'a Value, s: &'a Value) -> Vec<&'a Value> {
    let s = resolve(root, s);
    match s.get("anyOf").or_else(|| s.get("oneOf")) {
        Some(Value::Array(list)) => list.iter().flat_map(|a| alternatives(root, a)).collect(),
        _ => vec![s],
    }
}

/// True when the schema `s` allows the JSON type `ty`.
fn allows(s: &Value, ty: &str) -> bool {
    match s.get("type") {
        Some(Value::String(t)) => t == ty,
        Some(Value::Array(types)) => types.iter().any(|t| t == ty),
        _ => false,
    }
}

fn check_object(
    tool: &str,
    root: &Value,
    schema: &Map<String, Value>,
    object: &mut Map<String, Value>,
    field: Option<&str>,
) -> Result<(), String> {
    let empty = Map::new();
    let props = schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let open = schema
        .get("additionalProperties")
        .is_some_and(|a| a != false);
    if !open && let Some(unknown) = object.keys().find(|k| !props.contains_key(*k)) {
        let valid: Vec<&str> = props.keys().map(String::as_str).collect();
        let valid = if valid.is_empty() {
            "it takes none".to_string()
        } else {
            format!("valid ones: {}", valid.join(", "))
        };
        return Err(match field {
            None => format!("unknown argument {unknown:?} for {tool}: {valid}"),
            Some(f) => format!("unknown field {unknown:?} in {f} of {tool}: {valid}"),
        });
    }
    for (name, value) in object.iter_mut() {
        if let Some(s) = props.get(name) {
            check_value(tool, root, s, value, name)?;
        }
    }
    Ok(())
}

fn check_value(
    tool: &str,
    root: &Value,
    s: &Value,
    value: &mut Value,
    field: &str,
) -> Result<(), String> {
    let alts = alternatives(root, s);
    match value {
        Value::Object(object) => {
            // The one alternative that is an object with declared fields.
            let mut objects = alts.iter().filter(|a| a.get("properties").is_some());
            if let (Some(Value::Object(a)), None) = (objects.next(), objects.next()) {
                check_object(tool, root, a, object, Some(field))?;
            }
        }
        Value::Array(items) => {
            if let Some(item) = alts.iter().find_map(|a| a.get("items")) {
                for v in items {
                    check_value(tool, root, item, v, field)?;
                }
            }
        }
        Value::Number(n) if n.as_i64().is_none() && alts.iter().any(|a| allows(a, "integer")) => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() < 2f64.powi(63)
            {
                *value = Value::from(f as i64);
            }
        }
        Value::String(text)
            if alts.iter().any(|a| allows(a, "integer"))
                && !alts.iter().any(|a| allows(a, "string")) =>
        {
            if let Ok(n) = text.trim().parse::<i64>() {
                *value = Value::from(n);
            } else if let Ok(f) = text.trim().parse::<f64>()
                && f.fract() == 0.0
                && f.abs() < 2f64.powi(63)
            {
                *value = Value::from(f as i64);
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn compacts_and_inlines() {
        let s = obj(json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "Args",
            "type": "object",
            "properties": {
                "n": {"type": ["integer", "null"], "format": "uint", "minimum": 0,
                      "description": "Count. More words."},
                "by": {"$ref": "#/$defs/By", "description": "Order."},
                "kind": {"type": ["string", "null"], "enum": ["x", "y", null]},
                "title": {"type": "string"}
            },
            "$defs": {"By": {"oneOf": [
                {"const": "a", "description": "A.", "type": "string"},
                {"const": "b", "type": "string"}
            ]}}
        }));
        // An output: its fields' types, nothing deeper, no descriptions.
        let out = compact(&s, Side::Output);
        assert_eq!(
            Value::Object(out),
            json!({
                "type": "object",
                "properties": {
                    "n": {"type": ["integer", "null"]},
                    "by": {"type": "string"},
                    "kind": {"type": ["string", "null"]},
                    "title": {"type": "string"}
                }
            })
        );
        // An input: its arguments with their descriptions, no null, enums as one.
        let input = compact(&s, Side::Input);
        assert_eq!(
            Value::Object(input),
            json!({
                "type": "object",
                "properties": {
                    "n": {"type": "integer", "minimum": 0, "description": "Count. More words."},
                    "by": {"enum": ["a", "b"], "description": "Order."},
                    "kind": {"enum": ["x", "y"]},
                    "title": {"type": "string"}
                }
            })
        );
    }

    #[test]
    fn keeps_recursive_and_often_used_definitions() {
        let big = json!({"type": "object", "properties": {
            "ns": {"type": "integer", "description": "Nanoseconds from the trace start."},
            "human": {"type": "string", "description": "The same, for people."}}});
        let s = obj(json!({
            "type": "object",
            "properties": {
                "a": {"$ref": "#/$defs/T"}, "b": {"$ref": "#/$defs/T"},
                "c": {"$ref": "#/$defs/T"}, "tree": {"$ref": "#/$defs/Node"}
            },
            "$defs": {
                "T": big,
                "Node": {"type": "object", "properties": {
                    "kids": {"type": "array", "items": {"$ref": "#/$defs/Node"}}}}
            }
        }));
        let out = compact(&s, Side::Input);
        let defs = out["$defs"].as_object().unwrap();
        assert!(
            defs.contains_key("T") && defs.contains_key("Node"),
            "{out:?}"
        );
    }

    #[test]
    fn unknown_arguments_name_the_valid_ones() {
        let s = obj(json!({
            "type": "object",
            "properties": {
                "limit": {"type": ["integer", "null"]},
                "window": {"anyOf": [{"type": "string"}, {"type": "object", "properties": {
                    "start": {"anyOf": [{"type": "integer"}, {"type": "string"}]}}}]}
            }
        }));
        let mut args = obj(json!({"tid": 3}));
        let e = check_args("top_tasks", &s, &mut args).unwrap_err();
        assert_eq!(
            e,
            "unknown argument \"tid\" for top_tasks: valid ones: limit, window"
        );
        let mut args = obj(json!({"window": {"begin": 1}}));
        let e = check_args("t", &s, &mut args).unwrap_err();
        assert!(
            e.contains("\"begin\" in window") && e.contains("start"),
            "{e}"
        );
        let none = obj(json!({"type": "object", "properties": {}}));
        let e = check_args("t", &none, &mut obj(json!({"x": 1}))).unwrap_err();
        assert!(e.ends_with("it takes none"), "{e}");
    }

    #[test]
    fn shared_arguments_are_terse_and_still_checked() {
        let s = obj(json!({
            "type": "object",
            "properties": {
                "trace": {"type": ["string", "null"], "description": "Trace name."},
                "window": {"description": "Window.", "anyOf": [
                    {"type": "string"},
                    {"type": "object", "properties": {
                        "start": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                        "end": {"anyOf": [{"type": "integer"}, {"type": "string"}]}}},
                    {"type": "null"}]}
            }
        }));
        let input = compact(&s, Side::Input);
        assert_eq!(input["properties"]["trace"], json!({"type": "string"}));
        assert!(input["properties"]["window"].get("description").is_none());
        let shown = listed(&input);
        assert_eq!(
            shown["properties"]["window"],
            json!({"type": ["string", "object"]})
        );
        let mut args = obj(json!({"window": {"start": "3", "end": 4.0}}));
        check_args("t", &input, &mut args).unwrap();
        // A time may be a string ("3" is 3 ns to the parser); 4.0 becomes 4.
        assert_eq!(args["window"], json!({"start": "3", "end": 4}));
        let e = check_args("t", &input, &mut obj(json!({"window": {"begin": 1}}))).unwrap_err();
        assert!(e.contains("\"begin\" in window"), "{e}");
    }

    #[test]
    fn integers_from_strings_and_integral_floats() {
        let s = obj(json!({
            "type": "object",
            "properties": {
                "limit": {"type": ["integer", "null"]},
                "name": {"type": ["string", "null"]},
                "at": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                "pids": {"type": "array", "items": {"type": "integer"}}
            }
        }));
        let mut args = obj(json!({"limit": " 3", "name": "7", "at": 2.0, "pids": ["4", 5.0, 1.5]}));
        check_args("t", &s, &mut args).unwrap();
        assert_eq!(
            Value::Object(args),
            json!({"limit": 3, "name": "7", "at": 2, "pids": [4, 5, 1.5]})
        );
        let mut args = obj(json!({"limit": "many"}));
        check_args("t", &s, &mut args).unwrap();
        assert_eq!(args["limit"], "many", "left for the parser to reject");
    }
}
