//! JSON paths into payloads: `a`, `a.b`, `a[].b`, `a[0].b`, `"quoted key".c`.
//!
//! Semantics follow Qdrant's: reading a path yields every value it selects (a selected array
//! is flattened one level for matching), setting merges an object at the path (creating
//! intermediate objects), deleting removes the key at the path.

use crate::types::Payload;
use serde_json::Value;

/// Upper bound on path length, to keep recursion bounded.
pub const MAX_PATH_ITEMS: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PathItem {
    Key(String),
    Index(usize),
    Wildcard,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JsonPath(pub Vec<PathItem>);

impl JsonPath {
    pub fn parse(s: &str) -> Result<JsonPath, String> {
        let err = || format!("Invalid JSON path: {s:?}");
        let mut items = Vec::new();
        let mut rest = s;
        if rest.is_empty() {
            return Err(err());
        }
        while !rest.is_empty() {
            // key: quoted or [A-Za-z0-9_-]+ (unicode alphanumerics allowed)
            if let Some(r) = rest.strip_prefix('"') {
                let end = r.find('"').ok_or_else(err)?;
                items.push(PathItem::Key(r[..end].to_string()));
                rest = &r[end + 1..];
            } else {
                let end = rest
                    .char_indices()
                    .find(|(_, c)| !(c.is_alphanumeric() || *c == '_' || *c == '-'))
                    .map(|(i, _)| i)
                    .unwrap_or(rest.len());
                if end == 0 {
                    return Err(err());
                }
                items.push(PathItem::Key(rest[..end].to_string()));
                rest = &rest[end..];
            }
            while let Some(r) = rest.strip_prefix('[') {
                let end = r.find(']').ok_or_else(err)?;
                let inner = &r[..end];
                if inner.is_empty() {
                    items.push(PathItem::Wildcard);
                } else if inner.bytes().all(|b| b.is_ascii_digit()) {
                    items.push(PathItem::Index(inner.parse().map_err(|_| err())?));
                } else {
                    return Err(err());
                }
                rest = &r[end + 1..];
            }
            if rest.is_empty() {
                break;
            }
            rest = rest.strip_prefix('.').ok_or_else(err)?;
            if rest.is_empty() {
                return Err(err());
            }
        }
        if items.len() > MAX_PATH_ITEMS {
            return Err(format!(
                "JSON path {s:?} is longer than {MAX_PATH_ITEMS} items"
            ));
        }
        Ok(JsonPath(items))
    }

    /// Strip a trailing `[]` (used by nested conditions where `a` and `a[]` are the same).
    pub fn without_trailing_wildcard(&self) -> JsonPath {
        let mut v = self.0.clone();
        if v.len() > 1 && v.last() == Some(&PathItem::Wildcard) {
            v.pop();
        }
        JsonPath(v)
    }

    /// Values selected by the path. With `flat`, a selected array contributes its elements.
    pub fn values<'a>(&self, payload: &'a Payload, flat: bool) -> Vec<&'a Value> {
        let mut out = Vec::new();
        let Some((PathItem::Key(first), rest)) = self.0.split_first() else {
            return out;
        };
        if let Some(v) = payload.get(first) {
            collect(v, rest, flat, &mut out);
        }
        out
    }

    /// Merge `value` into the object at this path (Qdrant's `set_payload` with `key`).
    pub fn set(&self, payload: &mut Payload, value: &Payload) {
        let Some((PathItem::Key(first), rest)) = self.0.split_first() else {
            return;
        };
        let entry = payload
            .entry(first.clone())
            .or_insert_with(|| Value::Object(Default::default()));
        if rest.is_empty() {
            merge_into_value(entry, value);
        } else {
            set_in(entry, rest, value);
        }
    }

    /// Remove what the path selects (a trailing index is a no-op; a trailing `[]` clears).
    pub fn delete(&self, payload: &mut Payload) {
        let Some((PathItem::Key(first), rest)) = self.0.split_first() else {
            return;
        };
        if rest.is_empty() {
            payload.remove(first);
        } else if let Some(v) = payload.get_mut(first) {
            delete_in(v, rest);
        }
    }

    pub fn first_key(&self) -> Option<&str> {
        match self.0.first() {
            Some(PathItem::Key(k)) => Some(k),
            _ => None,
        }
    }
}

fn collect<'a>(v: &'a Value, rest: &[PathItem], flat: bool, out: &mut Vec<&'a Value>) {
    let Some((head, tail)) = rest.split_first() else {
        match v {
            Value::Array(a) if flat => out.extend(a.iter()),
            _ => out.push(v),
        }
        return;
    };
    match (head, v) {
        (PathItem::Key(k), Value::Object(m)) => {
            if let Some(x) = m.get(k) {
                collect(x, tail, flat, out)
            }
        }
        (PathItem::Index(i), Value::Array(a)) => {
            if let Some(x) = a.get(*i) {
                collect(x, tail, flat, out)
            }
        }
        (PathItem::Wildcard, Value::Array(a)) => {
            for x in a {
                collect(x, tail, flat, out)
            }
        }
        _ => {}
    }
}

/// Merge `src` into a payload object; a `null` value removes the key.
pub fn merge_payload(dest: &mut Payload, src: &Payload) {
    for (k, v) in src {
        if v.is_null() {
            dest.remove(k);
        } else {
            dest.insert(k.clone(), v.clone());
        }
    }
}

fn merge_into_value(target: &mut Value, src: &Payload) {
    if let Value::Object(m) = target {
        merge_payload(m, src);
    } else {
        let mut m = Payload::new();
        merge_payload(&mut m, src);
        *target = Value::Object(m);
    }
}

fn set_in(data: &mut Value, path: &[PathItem], value: &Payload) {
    let Some((head, tail)) = path.split_first() else {
        return;
    };
    match head {
        PathItem::Key(k) => {
            if !data.is_object() {
                *data = Value::Object(Default::default());
            }
            let m = data.as_object_mut().expect("just made an object");
            let entry = m
                .entry(k.clone())
                .or_insert_with(|| Value::Object(Default::default()));
            if tail.is_empty() {
                merge_into_value(entry, value);
            } else {
                set_in(entry, tail, value);
            }
        }
        PathItem::Index(i) => match data {
            Value::Array(a) => {
                if let Some(item) = a.get_mut(*i) {
                    if tail.is_empty() {
                        merge_into_value(item, value);
                    } else {
                        set_in(item, tail, value);
                    }
                }
            }
            _ => *data = Value::Array(vec![]),
        },
        PathItem::Wildcard => match data {
            Value::Array(a) => {
                for item in a.iter_mut() {
                    if tail.is_empty() {
                        merge_into_value(item, value);
                    } else {
                        set_in(item, tail, value);
                    }
                }
            }
            _ => *data = Value::Array(vec![]),
        },
    }
}

fn delete_in(data: &mut Value, path: &[PathItem]) {
    let Some((head, tail)) = path.split_first() else {
        return;
    };
    if tail.is_empty() {
        match (head, data) {
            (PathItem::Key(k), Value::Object(m)) => {
                m.remove(k);
            }
            (PathItem::Wildcard, Value::Array(a)) => a.clear(),
            _ => {}
        }
        return;
    }
    match (head, data) {
        (PathItem::Key(k), Value::Object(m)) => {
            if let Some(x) = m.get_mut(k) {
                delete_in(x, tail)
            }
        }
        (PathItem::Index(i), Value::Array(a)) => {
            if let Some(x) = a.get_mut(*i) {
                delete_in(x, tail)
            }
        }
        (PathItem::Wildcard, Value::Array(a)) => {
            for x in a.iter_mut() {
                delete_in(x, tail)
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(v: Value) -> Payload {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn parse_paths() {
        assert_eq!(
            JsonPath::parse("a[].b[2].c").unwrap().0,
            vec![
                PathItem::Key("a".into()),
                PathItem::Wildcard,
                PathItem::Key("b".into()),
                PathItem::Index(2),
                PathItem::Key("c".into())
            ]
        );
        assert_eq!(JsonPath::parse("\"x.y\".z").unwrap().0.len(), 2);
        for bad in ["", ".a", "a.", "a[", "a[x]", "a..b", "a b"] {
            assert!(JsonPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn read_values() {
        let pl = p(json!({"a": [{"b": 1}, {"b": [2, 3]}], "c": {"d": "x"}}));
        let vals = |s: &str, flat| {
            JsonPath::parse(s)
                .unwrap()
                .values(&pl, flat)
                .into_iter()
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(vals("a[].b", true), vec![json!(1), json!(2), json!(3)]);
        assert_eq!(vals("a[].b", false), vec![json!(1), json!([2, 3])]);
        assert_eq!(vals("c.d", true), vec![json!("x")]);
        assert_eq!(vals("a.b", true), Vec::<Value>::new());
        assert_eq!(vals("a[1].b", true), vec![json!(2), json!(3)]);
    }

    #[test]
    fn set_and_delete() {
        let mut pl = p(json!({"a": {"x": 1}, "arr": [{"k": 1}, 5]}));
        JsonPath::parse("a")
            .unwrap()
            .set(&mut pl, &p(json!({"y": 2, "x": null})));
        assert_eq!(pl["a"], json!({"y": 2}));
        JsonPath::parse("arr[]")
            .unwrap()
            .set(&mut pl, &p(json!({"z": 0})));
        assert_eq!(pl["arr"], json!([{"k": 1, "z": 0}, {"z": 0}]));
        JsonPath::parse("n.m")
            .unwrap()
            .set(&mut pl, &p(json!({"q": 1})));
        assert_eq!(pl["n"], json!({"m": {"q": 1}}));
        JsonPath::parse("n.m.q").unwrap().delete(&mut pl);
        assert_eq!(pl["n"], json!({"m": {}}));
        JsonPath::parse("arr[]").unwrap().delete(&mut pl);
        assert_eq!(pl["arr"], json!([]));
    }
}
