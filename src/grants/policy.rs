//! The grant policy document: what one sealfs-managed IAM policy grants, how
//! it is written as IAM JSON, and how it is read back.
//!
//! A policy holds, per sharer, one statement allowing `s3:GetObject` on a set
//! of object ARNs and one allowing `kms:Decrypt` only when the encryption
//! context's `sealfs:file` is one of a set of file ids. The two sets are kept
//! as sets, not pairs: a file id is bound to exactly one object by the path
//! binding and by KMS, so the cross product grants nothing more than the pairs.
//! The sharer rides in the statement ids (hex, since a Sid is alphanumeric).

use super::expiry::Until;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

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

/// Who granted, and until when: a policy's statements come in pairs (objects,
/// keys), one pair per sharer and end. A grant without an end has `until: None`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GrantKey {
    /// A user name, or a role session's `role/session`.
    pub sharer: String,
    pub until: Option<Until>,
}

/// One grant as listed: the object, who shared it, and until when.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listed {
    pub bucket: String,
    pub key: String,
    pub sharer: String,
    pub until: Option<Until>,
}

/// The content of one grant policy, keyed by sharer and end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrantDoc {
    pub by_sharer: BTreeMap<GrantKey, Granted>,
}

/// What a statement id carries after the sharer's hex when the grant ends
/// (`U` is not a hex digit, so the two never run together).
const UNTIL_TAG: &str = "Until";
/// The condition that ends a statement; AWS evaluates it on every request.
const END_CONDITION: &str = "DateLessThan";
const CURRENT_TIME: &str = "aws:CurrentTime";

impl GrantDoc {
    pub fn is_empty(&self) -> bool {
        self.by_sharer
            .values()
            .all(|g| g.objects.is_empty() && g.file_ids.is_empty())
    }

    /// True when `file` is granted (its object and its file id), by anyone,
    /// ended or not: AWS no longer honours an ended statement, but it is
    /// still in the document until it is pruned.
    pub fn grants(&self, file: &SharedFile) -> bool {
        self.ends_of(file).next().is_some()
    }

    /// When `file`'s grant in this document ends, as of `now`: `None` when
    /// it is not granted or every grant of it has ended, `Some(None)` when a
    /// grant has no end, else the latest end.
    pub fn granted_until(&self, file: &SharedFile, now: SystemTime) -> Option<Option<Until>> {
        let mut best: Option<Option<Until>> = None;
        for until in self.ends_of(file) {
            match until {
                None => return Some(None),
                Some(u) if u.has_passed(now) => {}
                Some(u) => best = Some(best.flatten().max(Some(u))),
            }
        }
        best
    }

    fn ends_of<'a>(&'a self, file: &SharedFile) -> impl Iterator<Item = Option<Until>> + 'a {
        let arn = file.arn();
        let id = file.file_id.clone();
        self.by_sharer
            .iter()
            .filter(move |(_, g)| g.objects.contains(&arn) && g.file_ids.contains(&id))
            .map(|(k, _)| k.until)
    }

    /// True when the object at `arn` appears in any statement.
    pub fn mentions_object(&self, arn: &str) -> bool {
        self.by_sharer.values().any(|g| g.objects.contains(arn))
    }

    /// Grants `file` without an end.
    pub fn add(&mut self, sharer: &str, file: &SharedFile) {
        self.add_until(sharer, file, None);
    }

    /// Grants `file` until `until` (`None`: no end). A grant of the same
    /// file by the same sharer with another end is replaced, so sharing
    /// again changes the end (and `None` makes it lasting).
    pub fn add_until(&mut self, sharer: &str, file: &SharedFile, until: Option<Until>) {
        self.withdraw(sharer, file);
        let g = self
            .by_sharer
            .entry(GrantKey {
                sharer: sharer.to_string(),
                until,
            })
            .or_default();
        g.objects.insert(file.arn());
        g.file_ids.insert(file.file_id.clone());
        g.keys.insert(file.key_arn.clone());
    }

    /// True when `sharer` granted `file` with exactly the end `until`.
    pub fn has_grant(&self, sharer: &str, file: &SharedFile, until: Option<Until>) -> bool {
        let key = GrantKey {
            sharer: sharer.to_string(),
            until,
        };
        self.by_sharer
            .get(&key)
            .is_some_and(|g| g.objects.contains(&file.arn()) && g.file_ids.contains(&file.file_id))
    }

    /// Removes `sharer`'s grants of `file`, whatever their end (another
    /// sharer's grant of it stays); true if anything changed.
    pub fn withdraw(&mut self, sharer: &str, file: &SharedFile) -> bool {
        let arn = file.arn();
        let mut changed = false;
        for (k, g) in self.by_sharer.iter_mut() {
            if k.sharer == sharer {
                changed |= g.objects.remove(&arn);
                changed |= g.file_ids.remove(&file.file_id);
            }
        }
        self.tidy();
        changed
    }

    /// Drops the statements that ended before `now`; true if any did.
    pub fn prune_ended(&mut self, now: SystemTime) -> bool {
        let before = self.by_sharer.len();
        self.by_sharer
            .retain(|k, _| !k.until.is_some_and(|u| u.has_passed(now)));
        self.by_sharer.len() != before
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
        self.tidy();
        changed
    }

    /// Drops empty statement pairs, and the keys of pairs with no file ids left.
    fn tidy(&mut self) {
        self.by_sharer
            .retain(|_, g| !(g.objects.is_empty() && g.file_ids.is_empty()));
        for g in self.by_sharer.values_mut() {
            if g.file_ids.is_empty() {
                g.keys.clear();
            }
        }
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

    /// Every object this document grants, with its sharer and end.
    pub fn listed(&self) -> Vec<Listed> {
        let mut out = Vec::new();
        for (k, g) in &self.by_sharer {
            for arn in &g.objects {
                if let Some((bucket, key)) = parse_object_arn(arn) {
                    out.push(Listed {
                        bucket,
                        key,
                        sharer: k.sharer.clone(),
                        until: k.until,
                    });
                }
            }
        }
        out
    }

    /// The IAM policy JSON, compact (IAM does not count whitespace anyway).
    pub fn render(&self) -> String {
        let mut statements = Vec::new();
        for (k, g) in &self.by_sharer {
            let mut tag = hex::encode(k.sharer.as_bytes());
            let mut end = serde_json::Map::new();
            if let Some(u) = k.until {
                tag.push_str(UNTIL_TAG);
                tag.push_str(&u.tag());
                end.insert(END_CONDITION.into(), json!({CURRENT_TIME: u.iso8601()}));
            }
            if !g.objects.is_empty() {
                let mut st = json!({
                    "Sid": format!("{OBJECTS_SID}{tag}"),
                    "Effect": "Allow",
                    "Action": "s3:GetObject",
                    "Resource": g.objects.iter().collect::<Vec<_>>(),
                });
                if !end.is_empty() {
                    st["Condition"] = Value::Object(end.clone());
                }
                statements.push(st);
            }
            if !g.file_ids.is_empty() {
                let mut condition = end.clone();
                condition.insert(
                    "StringEquals".into(),
                    json!({FILE_CONDITION: g.file_ids.iter().collect::<Vec<_>>()}),
                );
                statements.push(json!({
                    "Sid": format!("{KEYS_SID}{tag}"),
                    "Effect": "Allow",
                    "Action": "kms:Decrypt",
                    "Resource": resource(&g.keys),
                    "Condition": condition,
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
    /// rewrites a policy it did not write: a statement whose end in its id
    /// and in its condition disagree is not sealfs's either.
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
            let (sharer_hex, until) = match tag.split_once(UNTIL_TAG) {
                Some((h, u)) => (
                    h,
                    Some(
                        Until::from_tag(u)
                            .ok_or_else(|| format!("statement {sid:?} has a malformed end"))?,
                    ),
                ),
                None => (tag, None),
            };
            let written_end = s["Condition"][END_CONDITION][CURRENT_TIME].as_str();
            if written_end != until.map(|u| u.iso8601()).as_deref() {
                return Err(format!(
                    "statement {sid:?}: its end and its {END_CONDITION} condition disagree"
                ));
            }
            let sharer = hex::decode(sharer_hex)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| format!("statement {sid:?} has a malformed sharer"))?;
            let g = doc.by_sharer.entry(GrantKey { sharer, until }).or_default();
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

    fn end(text: &str) -> Until {
        Until::parse_date(text).unwrap()
    }

    /// An expiring grant carries IAM's time condition on both statements,
    /// so AWS ends it whether or not sealfs runs.
    #[test]
    fn an_end_is_a_condition_on_both_statements() {
        let mut d = GrantDoc::default();
        let x = file("x", 1);
        d.add_until("owner", &x, Some(end("2027-01-31")));
        let v: Value = serde_json::from_str(&d.render()).unwrap();
        let st = v["Statement"].as_array().unwrap();
        assert_eq!(st.len(), 2);
        for s in st {
            assert_eq!(
                s["Condition"]["DateLessThan"]["aws:CurrentTime"],
                "2027-02-01T00:00:00Z"
            );
            assert!(s["Sid"]
                .as_str()
                .unwrap()
                .ends_with("Until20270201T000000Z"));
        }
        assert_eq!(
            st[1]["Condition"]["StringEquals"][FILE_CONDITION],
            json!([x.file_id])
        );
        assert_eq!(GrantDoc::parse(&d.render()).unwrap(), d);
    }

    #[test]
    fn sharing_again_changes_the_end_and_ended_grants_are_pruned() {
        let x = file("x", 1);
        let y = file("y", 2);
        let mut d = GrantDoc::default();
        d.add_until("owner", &x, Some(end("2027-01-31")));
        d.add_until("owner", &y, Some(end("2027-01-31")));
        let before = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let after = end("2027-02-02").unix() as u64;
        let after = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(after);
        assert_eq!(d.granted_until(&x, before), Some(Some(end("2027-01-31"))));
        assert_eq!(d.granted_until(&x, after), None);
        assert!(d.grants(&x), "ended but not yet pruned");
        // Again with a later end: one grant of x, with the new end; y keeps its own.
        d.add_until("owner", &x, Some(end("2027-06-30")));
        assert_eq!(d.by_sharer.len(), 2);
        assert_eq!(d.granted_until(&x, after), Some(Some(end("2027-06-30"))));
        assert_eq!(d.granted_until(&y, after), None);
        // Without an end: lasting.
        d.add("owner", &x);
        assert_eq!(d.granted_until(&x, after), Some(None));
        assert!(d.prune_ended(after));
        assert!(!d.grants(&y));
        assert!(d.grants(&x));
        assert!(!d.prune_ended(after));
        // Another sharer's grant of the same file is left as it is.
        d.add_until("other", &x, Some(end("2027-01-31")));
        d.add("owner", &x);
        assert_eq!(d.by_sharer.len(), 2);
    }

    /// A statement whose end in its id and in its condition disagree was
    /// not written by sealfs (someone widened the condition): refused.
    #[test]
    fn an_end_that_disagrees_with_its_condition_is_refused() {
        let mut d = GrantDoc::default();
        d.add_until("owner", &file("x", 1), Some(end("2027-01-31")));
        let widened = d
            .render()
            .replace("2027-02-01T00:00:00Z", "2099-01-01T00:00:00Z");
        assert!(GrantDoc::parse(&widened).unwrap_err().contains("disagree"));
        let dropped = d.render().replace(
            r#""Condition":{"DateLessThan":{"aws:CurrentTime":"2027-02-01T00:00:00Z"}},"#,
            "",
        );
        assert_ne!(dropped, d.render());
        assert!(GrantDoc::parse(&dropped).is_err());
        let bad_tag = d
            .render()
            .replace("Until20270201T000000Z", "Until20270231T000000Z");
        assert!(GrantDoc::parse(&bad_tag).is_err());
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
        fn round_trip(entries in proptest::collection::vec(
            ("[a-z]{1,8}", "[ -~]{1,40}", any::<u8>(), proptest::option::of(0i64..4_000_000_000)),
            0..20,
        )) {
            let mut d = GrantDoc::default();
            // One file id per object, as the path binding makes it.
            let keyed = |key: &str, n: u8| SharedFile {
                file_id: hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(key.as_bytes())[..16]),
                ..file(key, n)
            };
            for (sharer, key, n, until) in &entries {
                d.add_until(sharer, &keyed(key, *n), (*until).and_then(Until::from_unix));
            }
            let parsed = GrantDoc::parse(&d.render()).unwrap();
            prop_assert_eq!(&parsed, &d);
            for (_, key, n, _) in &entries {
                prop_assert!(parsed.grants(&keyed(key, *n)));
            }
            prop_assert!(d.size() <= d.render().len());
        }
    }
}
