//! The grant policy document: what one sealfs-managed IAM policy grants, how
//! it is written as IAM JSON, and how it is read back.
//!
//! A policy holds, per sharer, one statement allowing `s3:GetObject` on a set
//! of object ARNs and one allowing `kms:Decrypt` only when the encryption
//! context's `sealfs:file` is one of a set of file ids. The two sets are kept
//! as sets, not pairs: a file id is bound to exactly one object by the path
//! binding and by KMS, so the cross product grants nothing more than the pairs.
//! The sharer rides in the statement ids (hex, since a Sid is alphanumeric).

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// IAM's limit on a managed policy document, in characters without whitespace.
pub const POLICY_SIZE_LIMIT: usize = 6144;

const OBJECTS_SID: &str = "SealfsObjects";
const KEYS_SID: &str = "SealfsKeys";
/// The encryption-context key a grant's kms:Decrypt is conditioned on.
pub const FILE_CONDITION: &str = "kms:EncryptionContext:sealfs:file";

/// One shared file: the object, the file id its data key is bound to, and
/// the KMS key that wraps it. Made only from an object that verified
/// ([`crate::sealed::SealedStore::verify_header`]), never from metadata alone.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SharedFile {
    pub bucket: String,
    pub key: String,
    /// Hex, as in the KMS encryption context.
    pub file_id: String,
    /// The KMS key ARN the grantee may decrypt with (and pins to).
    pub key_arn: String,
}

impl SharedFile {
    /// The sealed object at `key`, verified with `sealed`'s pinned key: its
    /// file id and key are the ones KMS, the header and the path binding
    /// vouch for. An object that does not verify cannot be shared.
    pub async fn verified(sealed: &crate::sealed::SealedStore, key: &str) -> crate::Result<Self> {
        let v = sealed.verify_header(key, None).await?;
        Ok(Self::of(sealed.store().bucket(), key, &v))
    }

    /// The object at `bucket`/`key` whose version `v` verified.
    pub fn of(bucket: &str, key: &str, v: &crate::sealed::Verified) -> Self {
        SharedFile {
            bucket: bucket.to_string(),
            key: key.to_string(),
            file_id: v.key_ref.file_id.to_hex(),
            key_arn: v.key_ref.key_id.clone(),
        }
    }

    pub fn arn(&self) -> String {
        object_arn(&self.bucket, &self.key)
    }
}

/// The ARN of an object, with IAM's wildcard characters escaped so that a
/// file named `a*` grants exactly that file and not every name starting `a`.
pub fn object_arn(bucket: &str, key: &str) -> String {
    let mut out = format!("arn:aws:s3:::{bucket}/");
    for c in key.chars() {
        match c {
            '*' => out.push_str("${*}"),
            '?' => out.push_str("${?}"),
            '$' => out.push_str("${$}"),
            c => out.push(c),
        }
    }
    out
}

/// The bucket and key of an object ARN written by [`object_arn`].
pub fn parse_object_arn(arn: &str) -> Option<(String, String)> {
    let rest = arn.strip_prefix("arn:aws:s3:::")?;
    let (bucket, escaped) = rest.split_once('/')?;
    let mut key = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(i) = rest.find("${") {
        key.push_str(&rest[..i]);
        let esc = rest[i..].get(..4)?;
        match esc {
            "${*}" | "${?}" | "${$}" => key.push_str(&esc[2..3]),
            _ => return None,
        }
        rest = &rest[i + 4..];
    }
    key.push_str(rest);
    Some((bucket.to_string(), key))
}

/// What one sharer granted in one policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Granted {
    pub objects: BTreeSet<String>,
    pub file_ids: BTreeSet<String>,
    /// The KMS keys of the granted files: the Resource of the kms:Decrypt
    /// statement, and the only keys a grantee unwraps these files with.
    /// Documents written before keys were named hold `*` here.
    pub keys: BTreeSet<String>,
}

/// The content of one grant policy, keyed by sharer (a user or role name).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrantDoc {
    pub by_sharer: BTreeMap<String, Granted>,
}

impl GrantDoc {
    pub fn is_empty(&self) -> bool {
        self.by_sharer
            .values()
            .all(|g| g.objects.is_empty() && g.file_ids.is_empty())
    }

    /// True when `file` is granted (its object and its file id), by anyone.
    pub fn grants(&self, file: &SharedFile) -> bool {
        let arn = file.arn();
        self.by_sharer
            .values()
            .any(|g| g.objects.contains(&arn) && g.file_ids.contains(&file.file_id))
    }

    /// True when the object at `arn` appears in any statement.
    pub fn mentions_object(&self, arn: &str) -> bool {
        self.by_sharer.values().any(|g| g.objects.contains(arn))
    }

    pub fn add(&mut self, sharer: &str, file: &SharedFile) {
        let g = self.by_sharer.entry(sharer.to_string()).or_default();
        g.objects.insert(file.arn());
        g.file_ids.insert(file.file_id.clone());
        g.keys.insert(file.key_arn.clone());
    }

    /// The KMS keys the owner named for the object at `arn` with file id
    /// `file_id` (not `*`): what a grantee pins that file's key to.
    pub fn keys_for(&self, arn: &str, file_id: &str) -> BTreeSet<String> {
        self.by_sharer
            .values()
            .filter(|g| g.objects.contains(arn) && g.file_ids.contains(file_id))
            .flat_map(|g| g.keys.iter().filter(|k| *k != "*").cloned())
            .collect()
    }

    /// Removes the object and the file id wherever they appear; true if anything changed.
    pub fn remove(&mut self, arn: &str, file_id: Option<&str>) -> bool {
        let mut changed = false;
        for g in self.by_sharer.values_mut() {
            changed |= g.objects.remove(arn);
            if let Some(f) = file_id {
                changed |= g.file_ids.remove(f);
            }
        }
        self.by_sharer
            .retain(|_, g| !(g.objects.is_empty() && g.file_ids.is_empty()));
        for g in self.by_sharer.values_mut() {
            if g.file_ids.is_empty() {
                g.keys.clear();
            }
        }
        changed
    }

    /// Replaces object `from` by `to` wherever it appears; true if anything changed.
    pub fn rename_object(&mut self, from: &str, to: &str) -> bool {
        let mut changed = false;
        for g in self.by_sharer.values_mut() {
            if g.objects.remove(from) {
                g.objects.insert(to.to_string());
                changed = true;
            }
        }
        changed
    }

    /// Replaces file id `from` by `to` wherever it appears; true if anything changed.
    pub fn replace_file_id(&mut self, from: &str, to: &str) -> bool {
        let mut changed = false;
        for g in self.by_sharer.values_mut() {
            if g.file_ids.remove(from) {
                g.file_ids.insert(to.to_string());
                changed = true;
            }
        }
        changed
    }

    /// Every (bucket, key, sharer) this document grants.
    pub fn objects(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for (sharer, g) in &self.by_sharer {
            for arn in &g.objects {
                if let Some((b, k)) = parse_object_arn(arn) {
                    out.push((b, k, sharer.clone()));
                }
            }
        }
        out
    }

    /// The IAM policy JSON, compact (IAM does not count whitespace anyway).
    pub fn render(&self) -> String {
        let mut statements = Vec::new();
        for (sharer, g) in &self.by_sharer {
            let tag = hex::encode(sharer.as_bytes());
            if !g.objects.is_empty() {
                statements.push(json!({
                    "Sid": format!("{OBJECTS_SID}{tag}"),
                    "Effect": "Allow",
                    "Action": "s3:GetObject",
                    "Resource": g.objects.iter().collect::<Vec<_>>(),
                }));
            }
            if !g.file_ids.is_empty() {
                statements.push(json!({
                    "Sid": format!("{KEYS_SID}{tag}"),
                    "Effect": "Allow",
                    "Action": "kms:Decrypt",
                    "Resource": resource(&g.keys),
                    "Condition": {"StringEquals": {FILE_CONDITION: g.file_ids.iter().collect::<Vec<_>>()}},
                }));
            }
        }
        json!({"Version": "2012-10-17", "Statement": statements}).to_string()
    }

    /// The size IAM charges against [`POLICY_SIZE_LIMIT`].
    pub fn size(&self) -> usize {
        self.render().chars().filter(|c| !c.is_whitespace()).count()
    }

    /// Reads a document written by [`GrantDoc::render`] (URL-encoded or not,
    /// as IAM returns it). Anything else is refused, so that sealfs never
    /// rewrites a policy it did not write.
    pub fn parse(document: &str) -> Result<Self, String> {
        let v = parse_document(document)?;
        let statements = match &v["Statement"] {
            Value::Array(a) => a.clone(),
            s @ Value::Object(_) => vec![s.clone()],
            _ => return Err("policy has no statements".into()),
        };
        let mut doc = GrantDoc::default();
        for s in statements {
            let sid = s["Sid"].as_str().unwrap_or_default();
            let (kind, tag) = if let Some(t) = sid.strip_prefix(OBJECTS_SID) {
                (OBJECTS_SID, t)
            } else if let Some(t) = sid.strip_prefix(KEYS_SID) {
                (KEYS_SID, t)
            } else {
                return Err(format!("statement {sid:?} was not written by sealfs"));
            };
            let sharer = hex::decode(tag)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| format!("statement {sid:?} has a malformed sharer"))?;
            let g = doc.by_sharer.entry(sharer).or_default();
            if kind == OBJECTS_SID {
                g.objects.extend(strings(&s["Resource"]));
            } else {
                g.file_ids
                    .extend(strings(&s["Condition"]["StringEquals"][FILE_CONDITION]));
                g.keys.extend(strings(&s["Resource"]));
            }
        }
        Ok(doc)
    }
}

/// A set of ARNs as a Resource: one string, or an array; `*` when empty
/// (never written by sealfs, which always knows a granted file's key).
fn resource(keys: &BTreeSet<String>) -> Value {
    match keys.len() {
        0 => json!("*"),
        1 => json!(keys.iter().next()),
        _ => json!(keys.iter().collect::<Vec<_>>()),
    }
}

/// A policy document as IAM returns it (URL-encoded or not), as JSON.
pub fn parse_document(document: &str) -> Result<Value, String> {
    let text = if document.trim_start().starts_with('{') {
        document.to_string()
    } else {
        percent_encoding::percent_decode_str(document)
            .decode_utf8()
            .map_err(|_| "policy document is not UTF-8".to_string())?
            .into_owned()
    };
    serde_json::from_str(&text).map_err(|e| format!("policy is not JSON: {e}"))
}

/// A JSON string or array of strings, as IAM allows for most elements.
fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file(key: &str, n: u8) -> SharedFile {
        SharedFile {
            bucket: "b".into(),
            key: key.into(),
            file_id: hex::encode([n; 16]),
            key_arn: format!("arn:aws:kms:us-east-1:123456789012:key/k{}", n % 2),
        }
    }

    #[test]
    fn wildcards_in_names_are_escaped() {
        let arn = object_arn("b", "dir/a*b?$c");
        assert_eq!(arn, "arn:aws:s3:::b/dir/a${*}b${?}${$}c");
        assert_eq!(
            parse_object_arn(&arn),
            Some(("b".into(), "dir/a*b?$c".into()))
        );
    }

    #[test]
    fn render_has_the_kms_condition_for_exactly_the_file_ids() {
        let mut d = GrantDoc::default();
        d.add("owner", &file("x", 1));
        d.add("owner", &file("y", 2));
        let v: Value = serde_json::from_str(&d.render()).unwrap();
        let st = v["Statement"].as_array().unwrap();
        assert_eq!(st.len(), 2);
        assert_eq!(st[0]["Action"], "s3:GetObject");
        assert_eq!(
            st[0]["Resource"],
            json!(["arn:aws:s3:::b/x", "arn:aws:s3:::b/y"])
        );
        assert_eq!(st[1]["Action"], "kms:Decrypt");
        assert_eq!(
            st[1]["Condition"]["StringEquals"][FILE_CONDITION],
            json!([hex::encode([1u8; 16]), hex::encode([2u8; 16])])
        );
        // The decrypt grant names the files' KMS keys, never `*`.
        assert_eq!(
            st[1]["Resource"],
            json!([
                "arn:aws:kms:us-east-1:123456789012:key/k0",
                "arn:aws:kms:us-east-1:123456789012:key/k1"
            ])
        );
        let x = file("x", 1);
        assert_eq!(
            d.keys_for(&x.arn(), &x.file_id)
                .into_iter()
                .collect::<Vec<_>>(),
            vec![
                "arn:aws:kms:us-east-1:123456789012:key/k0".to_string(),
                "arn:aws:kms:us-east-1:123456789012:key/k1".to_string()
            ]
        );
        assert!(d.keys_for(&x.arn(), &hex::encode([9u8; 16])).is_empty());
    }

    /// A grant written before keys were named (`Resource: *`) pins nothing:
    /// a grantee refuses it rather than trusting the object's key id.
    #[test]
    fn legacy_wildcard_grants_name_no_key() {
        let x = file("x", 1);
        let tag = hex::encode("owner");
        let doc = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"SealfsObjects{tag}","Effect":"Allow","Action":"s3:GetObject","Resource":["{}"]}},{{"Sid":"SealfsKeys{tag}","Effect":"Allow","Action":"kms:Decrypt","Resource":"*","Condition":{{"StringEquals":{{"{FILE_CONDITION}":["{}"]}}}}}}]}}"#,
            x.arn(),
            x.file_id
        );
        let mut d = GrantDoc::parse(&doc).unwrap();
        assert!(d.grants(&x));
        assert!(d.keys_for(&x.arn(), &x.file_id).is_empty());
        // Sharing again names the key beside the old wildcard.
        d.add("owner", &x);
        assert_eq!(d.keys_for(&x.arn(), &x.file_id).len(), 1);
    }

    #[test]
    fn foreign_statements_are_refused() {
        let doc = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Admin","Effect":"Allow","Action":"*","Resource":"*"}]}"#;
        assert!(GrantDoc::parse(doc).is_err());
    }

    #[test]
    fn url_encoded_documents_parse() {
        let mut d = GrantDoc::default();
        d.add("al+ice@x", &file("a b", 3));
        let enc =
            percent_encoding::utf8_percent_encode(&d.render(), percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        assert_eq!(GrantDoc::parse(&enc).unwrap(), d);
    }

    #[test]
    fn remove_and_rename() {
        let mut d = GrantDoc::default();
        let a = file("a", 1);
        d.add("o", &a);
        d.add("o", &file("b", 2));
        assert!(d.rename_object(&a.arn(), &object_arn("b", "a2")));
        assert!(!d.grants(&a));
        let a2 = SharedFile {
            key: "a2".into(),
            ..a.clone()
        };
        assert!(d.grants(&a2));
        assert!(d.remove(&a2.arn(), Some(&a2.file_id)));
        assert!(!d.grants(&a2));
        assert!(!d.is_empty());
        assert!(d.remove(&object_arn("b", "b"), Some(&hex::encode([2u8; 16]))));
        assert!(d.is_empty());
    }

    proptest! {
        /// Grant documents come from IAM (written by anyone with the rights):
        /// any text parses or is refused, never a panic.
        #[test]
        fn any_document_parses_or_is_refused(
            doc in prop_oneof![
                any::<String>(),
                "[{}\\[\\]\":,A-Za-z0-9%*$ ]{0,200}",
                Just(r#"{"Statement":[{"Sid":"SealfsKeys6f","Resource":7,"Condition":{"StringEquals":{"kms:EncryptionContext:sealfs:file":[1,{}]}}}]}"#.to_string()),
                Just(r#"{"Statement":{"Sid":"SealfsObjectszz"}}"#.to_string()),
            ]
        ) {
            let _ = GrantDoc::parse(&doc);
        }

        #[test]
        fn round_trip(entries in proptest::collection::vec(("[a-z]{1,8}", "[ -~]{1,40}", any::<u8>()), 0..20)) {
            let mut d = GrantDoc::default();
            for (sharer, key, n) in &entries {
                d.add(sharer, &file(key, *n));
            }
            let parsed = GrantDoc::parse(&d.render()).unwrap();
            prop_assert_eq!(&parsed, &d);
            for (_, key, n) in &entries {
                prop_assert!(parsed.grants(&file(key, *n)));
            }
            prop_assert!(d.size() <= d.render().len());
        }
    }
}
