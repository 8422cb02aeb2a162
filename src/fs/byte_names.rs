//! File names are bytes on Linux and UTF-8 in S3 keys: this maps one to the
//! other reversibly, so that every name Linux allows (Latin-1 from an old
//! archive, a name cut in the middle of a character) round-trips.
//!
//! A valid UTF-8 name is its own key, as before, so existing objects keep
//! their keys and `s3://` URLs name files as users see them. Bytes that are
//! not valid UTF-8 are written as runs: `ESC` (U+10FFFD, a private-use code
//! point), two upper-case hex digits per byte, `ESC`. A real `ESC` in a name
//! is written `ESC ESC` (an empty run). A key that does not decode, or whose
//! decoding does not encode back to the same key (say, a run that spells
//! valid UTF-8), names no file and is not listed: so two keys never show as
//! one name. The format is specified in docs/FORMAT.md.

/// The escape code point: private use, valid in S3 keys and XML listings.
pub const ESC: char = '\u{10FFFD}';

/// The key form of a name's bytes.
pub fn encode(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    // Invalid bytes between two valid characters form one run.
    let mut run: Vec<u8> = Vec::new();
    let flush = |out: &mut String, run: &mut Vec<u8>| {
        if !run.is_empty() {
            out.push(ESC);
            for b in run.iter() {
                out.push_str(&format!("{b:02X}"));
            }
            out.push(ESC);
            run.clear();
        }
    };
    for chunk in name.utf8_chunks() {
        if !chunk.valid().is_empty() {
            flush(&mut out, &mut run);
        }
        for c in chunk.valid().chars() {
            out.push(c);
            if c == ESC {
                out.push(ESC);
            }
        }
        run.extend_from_slice(chunk.invalid());
    }
    flush(&mut out, &mut run);
    out
}

/// The bytes of the name whose key form is `key`; `None` when `key` is
/// not the key form of any name.
pub fn decode(key: &str) -> Option<Vec<u8>> {
    if !key.contains(ESC) {
        return Some(key.as_bytes().to_vec());
    }
    let mut out = Vec::with_capacity(key.len());
    let mut rest = key;
    while let Some(at) = rest.find(ESC) {
        out.extend_from_slice(&rest.as_bytes()[..at]);
        let after = &rest[at + ESC.len_utf8()..];
        let end = after.find(ESC)?;
        let hex = &after[..end];
        if hex.is_empty() {
            out.extend_from_slice(ESC.to_string().as_bytes());
        } else {
            if hex.len() % 2 != 0 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F')) {
                return None;
            }
            out.extend(hex::decode(hex).ok()?);
        }
        rest = &after[end + ESC.len_utf8()..];
    }
    out.extend_from_slice(rest.as_bytes());
    // Canonical form only: one name, one key.
    (encode(&out) == key).then_some(out)
}

/// The length in bytes of the name whose key form is `key` (what NAME_MAX
/// limits); the key's own length when it does not decode.
pub fn byte_len(key: &str) -> usize {
    if !key.contains(ESC) {
        return key.len();
    }
    decode(key).map_or(key.len(), |b| b.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn utf8_names_are_their_own_keys() {
        for n in ["plain.txt", "café", "日本語", "a\u{1}b", "\u{10FFFC}"] {
            assert_eq!(encode(n.as_bytes()), n);
            assert_eq!(decode(n).unwrap(), n.as_bytes());
        }
    }

    #[test]
    fn latin1_and_broken_names_round_trip() {
        let e = ESC;
        assert_eq!(encode(b"caf\xe9"), format!("caf{e}E9{e}"));
        assert_eq!(encode(b"\xff\xfe.txt"), format!("{e}FFFE{e}.txt"));
        // A name cut in the middle of a character.
        assert_eq!(decode(&encode(b"\xe6\x97")).unwrap(), b"\xe6\x97");
        assert_eq!(byte_len(&encode(b"caf\xe9")), 4);
    }

    #[test]
    fn the_escape_itself_is_escaped() {
        let n = format!("a{ESC}b");
        assert_eq!(encode(n.as_bytes()), format!("a{ESC}{ESC}b"));
        assert_eq!(decode(&format!("a{ESC}{ESC}b")).unwrap(), n.as_bytes());
    }

    #[test]
    fn keys_that_are_no_name_are_refused() {
        let e = ESC;
        for k in [
            format!("a{e}E9"),      // unterminated
            format!("a{e}e9{e}"),   // lower case
            format!("a{e}E{e}"),    // odd digits
            format!("a{e}C3A9{e}"), // spells valid UTF-8 ("é"): not canonical
            format!("{e}ZZ{e}"),    // not hex
            format!("{e}"),         // lone escape
        ] {
            assert_eq!(decode(&k), None, "{k:?}");
        }
    }

    proptest! {
        #[test]
        fn every_byte_name_round_trips(name in prop::collection::vec(any::<u8>(), 0..64)) {
            let key = encode(&name);
            prop_assert_eq!(decode(&key), Some(name.clone()));
            prop_assert_eq!(byte_len(&key), name.len());
        }

        #[test]
        fn distinct_names_have_distinct_keys(
            a in prop::collection::vec(any::<u8>(), 0..16),
            b in prop::collection::vec(any::<u8>(), 0..16),
        ) {
            prop_assume!(a != b);
            prop_assert_ne!(encode(&a), encode(&b));
        }

        #[test]
        fn any_key_decodes_to_a_name_that_encodes_back(key in "\\PC{0,24}|[a\u{10FFFD}E9C3]{0,12}") {
            if let Some(name) = decode(&key) {
                prop_assert_eq!(encode(&name), key);
            }
        }
    }
}
