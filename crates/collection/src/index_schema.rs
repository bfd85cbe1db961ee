//! Payload index schemas (`field_schema` of `PUT /collections/{c}/index`), typed.
//!
//! A schema is a type name (`"keyword"`) or a type with parameters
//! (`{"type": "text", "tokenizer": "word"}`). It is parsed once, by whoever accepts the
//! request (a single node, or the peer proposing it through consensus), into its canonical
//! form ([`IndexSchema::parse`]): parameters that do not apply to the type are dropped, as
//! Qdrant ignores them, and stopword languages given by code are stored by name. Every peer
//! then applies exactly that value. Serialized, it has the API's shape, so `collection.json`
//! and Raft entries written as JSON values by earlier builds read back unchanged. Earlier
//! builds checked only the type of what they stored: a stored value whose parameters do not
//! parse reads back as its type alone (the parameters only describe the index; the store
//! builds it from the type), with a warning, so such a collection still opens.

use segment::payload_index::FieldType;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexType {
    Keyword,
    Integer,
    Float,
    Geo,
    Text,
    Bool,
    Datetime,
    Uuid,
}

impl IndexType {
    pub const ALL: [IndexType; 8] = [
        IndexType::Keyword,
        IndexType::Integer,
        IndexType::Float,
        IndexType::Geo,
        IndexType::Text,
        IndexType::Bool,
        IndexType::Datetime,
        IndexType::Uuid,
    ];

    pub fn name(self) -> &'static str {
        match self {
            IndexType::Keyword => "keyword",
            IndexType::Integer => "integer",
            IndexType::Float => "float",
            IndexType::Geo => "geo",
            IndexType::Text => "text",
            IndexType::Bool => "bool",
            IndexType::Datetime => "datetime",
            IndexType::Uuid => "uuid",
        }
    }

    /// The index the store builds for this type.
    pub fn field_type(self) -> FieldType {
        match self {
            IndexType::Keyword => FieldType::Keyword,
            IndexType::Integer => FieldType::Integer,
            IndexType::Float => FieldType::Float,
            IndexType::Geo => FieldType::Geo,
            IndexType::Text => FieldType::Text,
            IndexType::Bool => FieldType::Bool,
            IndexType::Datetime => FieldType::Datetime,
            IndexType::Uuid => FieldType::Uuid,
        }
    }
}

/// A payload index schema in canonical form.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum IndexSchema {
    Type(IndexType),
    Params(Box<IndexParams>),
}

/// The strict form: what a request may say.
#[derive(Deserialize)]
#[serde(untagged)]
enum Strict {
    Type(IndexType),
    Params(Box<IndexParams>),
}

impl From<Strict> for IndexSchema {
    fn from(s: Strict) -> Self {
        match s {
            Strict::Type(t) => IndexSchema::Type(t),
            Strict::Params(p) => IndexSchema::Params(p),
        }
    }
}

/// Stored values (`collection.json`, Raft entries): the strict form, or else the type alone
/// (see the module docs).
impl<'de> Deserialize<'de> for IndexSchema {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        if let Ok(s) = serde_json::from_value::<Strict>(v.clone()) {
            return Ok(s.into());
        }
        let kind = match &v {
            serde_json::Value::Object(m) => m.get("type"),
            other => Some(other),
        }
        .cloned()
        .and_then(|t| serde_json::from_value::<IndexType>(t).ok())
        .ok_or_else(|| serde::de::Error::custom(format!("invalid payload index schema {v}")))?;
        tracing::warn!(schema = %v, "a stored payload index schema has parameters that do not parse: kept as its type `{}` alone", kind.name());
        Ok(IndexSchema::Type(kind))
    }
}

/// A type and its parameters (the union of Qdrant's `*IndexParams`; only those of `type`
/// are kept).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IndexParams {
    #[serde(rename = "type")]
    pub kind: IndexType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_tenant: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookup: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_principal: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<Tokenizer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_token_len: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_token_len: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lowercase: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ascii_folding: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phrase_matching: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopwords: Option<Stopwords>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stemmer: Option<Stemmer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_disk: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_hnsw: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tokenizer {
    Prefix,
    Whitespace,
    Word,
    Multilingual,
}

/// A stopword language (by name), or a set of languages and custom words.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stopwords {
    Language(String),
    Set {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        languages: Option<Vec<String>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        custom: Option<Vec<String>>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stemmer {
    #[serde(rename = "type")]
    pub kind: StemmerType,
    pub language: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StemmerType {
    Snowball,
}

impl IndexSchema {
    /// Parse a `field_schema` (already checked for its type and stopword languages) into
    /// its canonical form: parameters that do not apply to its type are dropped.
    pub fn parse(v: &serde_json::Value) -> Result<IndexSchema, String> {
        let s: Strict = serde_json::from_value(v.clone())
            .map_err(|e| format!("Format error in JSON body: invalid field_schema: {e}"))?;
        Ok(match s {
            Strict::Type(t) => IndexSchema::Type(t),
            Strict::Params(p) => IndexSchema::Params(Box::new(p.applicable())),
        })
    }

    pub fn kind(&self) -> IndexType {
        match self {
            IndexSchema::Type(t) => *t,
            IndexSchema::Params(p) => p.kind,
        }
    }

    /// The parameters, as the API shows them (`None` for a bare type name).
    pub fn params(&self) -> Option<&IndexParams> {
        match self {
            IndexSchema::Type(_) => None,
            IndexSchema::Params(p) => Some(p),
        }
    }
}

impl IndexParams {
    /// Only the parameters Qdrant defines for `kind`.
    fn applicable(self) -> IndexParams {
        use IndexType::*;
        let k = self.kind;
        let keep = |on: bool, v: Option<bool>| v.filter(|_| on);
        IndexParams {
            kind: k,
            is_tenant: keep(matches!(k, Keyword | Uuid), self.is_tenant),
            lookup: keep(k == Integer, self.lookup),
            range: keep(k == Integer, self.range),
            is_principal: keep(matches!(k, Integer | Float | Datetime), self.is_principal),
            tokenizer: self.tokenizer.filter(|_| k == Text),
            min_token_len: self.min_token_len.filter(|_| k == Text),
            max_token_len: self.max_token_len.filter(|_| k == Text),
            lowercase: keep(k == Text, self.lowercase),
            ascii_folding: keep(k == Text, self.ascii_folding),
            phrase_matching: keep(k == Text, self.phrase_matching),
            stopwords: self.stopwords.filter(|_| k == Text),
            stemmer: self.stemmer.filter(|_| k == Text),
            on_disk: self.on_disk,
            enable_hnsw: keep(k != Text, self.enable_hnsw),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schemas_parse_to_their_canonical_form_and_back() {
        for (input, canonical) in [
            (json!("keyword"), json!("keyword")),
            (json!({"type": "integer"}), json!({"type": "integer"})),
            (
                json!({"type": "integer", "lookup": false, "on_disk": null}),
                json!({"type": "integer", "lookup": false}),
            ),
            // parameters of another type are dropped, as Qdrant ignores them
            (
                json!({"type": "keyword", "tokenizer": "word", "is_tenant": true, "x": 1}),
                json!({"type": "keyword", "is_tenant": true}),
            ),
            (
                json!({"type": "text", "tokenizer": "multilingual", "min_token_len": 2,
                       "stopwords": {"languages": ["english"], "custom": ["foo"]},
                       "stemmer": {"type": "snowball", "language": "english"}}),
                json!({"type": "text", "tokenizer": "multilingual", "min_token_len": 2,
                       "stopwords": {"languages": ["english"], "custom": ["foo"]},
                       "stemmer": {"type": "snowball", "language": "english"}}),
            ),
            (
                json!({"type": "text", "stopwords": "english"}),
                json!({"type": "text", "stopwords": "english"}),
            ),
        ] {
            let s = IndexSchema::parse(&input).unwrap();
            assert_eq!(serde_json::to_value(&s).unwrap(), canonical, "{input}");
            // what was stored reads back as the same value (JSON and MessagePack)
            assert_eq!(IndexSchema::parse(&canonical).unwrap(), s);
            let packed = rmp_serde::to_vec_named(&s).unwrap();
            assert_eq!(rmp_serde::from_slice::<IndexSchema>(&packed).unwrap(), s);
        }
        for bad in [
            json!("vector"),
            json!({"type": "nope"}),
            json!({"on_disk": true}),
            json!({"type": "text", "tokenizer": "letters"}),
            json!(3),
        ] {
            assert!(IndexSchema::parse(&bad).is_err(), "{bad}");
        }
    }

    /// Raft entries and `collection.json` written by earlier builds hold the schema as a
    /// JSON value: they read back as the typed schema.
    #[test]
    fn values_written_by_earlier_builds_read_back() {
        let old = json!({"type": "text", "tokenizer": "word", "lowercase": true});
        let packed = rmp_serde::to_vec_named(&old).unwrap();
        let s: IndexSchema = rmp_serde::from_slice(&packed).unwrap();
        assert_eq!(s.kind(), IndexType::Text);
        assert_eq!(s.params().unwrap().tokenizer, Some(Tokenizer::Word));
        let packed = rmp_serde::to_vec_named(&json!("uuid")).unwrap();
        let s: IndexSchema = rmp_serde::from_slice(&packed).unwrap();
        assert_eq!(s, IndexSchema::Type(IndexType::Uuid));
        // earlier builds stored parameters unchecked: the index is kept, by its type
        for old in [
            json!({"type": "text", "tokenizer": "letters", "lowercase": true}),
            json!({"type": "integer", "range": "yes"}),
            json!({"type": "text", "min_token_len": 2.5}),
        ] {
            let packed = rmp_serde::to_vec_named(&old).unwrap();
            let s: IndexSchema = rmp_serde::from_slice(&packed).unwrap();
            assert_eq!(s.kind().name(), old["type"], "{old}");
            let s: IndexSchema = serde_json::from_value(old.clone()).unwrap();
            assert_eq!(s.kind().name(), old["type"], "{old}");
            assert!(IndexSchema::parse(&old).is_err(), "{old}");
        }
        for never in [json!("vector"), json!({"tokenizer": "word"}), json!(7)] {
            assert!(
                serde_json::from_value::<IndexSchema>(never.clone()).is_err(),
                "{never}"
            );
        }
    }
}
