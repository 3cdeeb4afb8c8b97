//! Lines that cannot matter, told from their bytes without parsing them (docs/rules.md "Lines
//! the job does not parse"). A resource matters only through a monitored code: a Procedure with
//! a TARE code, a Condition with an HCC code, an Observation with a marker or liver-lab code.
//! In JSON such a code is a string, and a string without escapes is its own bytes between
//! quotes. So a line of an export file can be passed over, counted as not relevant, when all of
//! these hold:
//!
//! 1. it begins `{"resourceType":"<Type>"` (whitespace allowed around `:`), the type its file
//!    holds: the first key is the resource's own, so the resource is of that type;
//! 2. it ends with `}` (a line cut short is parsed, and reported);
//! 3. no key `"code"` anywhere in it (in contained resources too) has a monitored code as its
//!    string value (`"code":"34444-0"`);
//! 4. it holds no escape that could spell a character of a monitored code: no `\u` at all, and
//!    no short escape (`\/`, `\"`, ...) of a character some code contains.
//!
//! Then no coding of the resource can hold a monitored code, and a full parse would find it
//! not relevant too (contained resources are never read; a repeated `resourceType` key makes
//! the line malformed, and a malformed line without a monitored code is counted as not
//! relevant, docs/rules.md 1.4a). Everything else is parsed in full. Patients are always parsed.
//!
//! A line passed over may still be a newer copy of a resource the job reads (a result
//! re-coded to another test): the key (type and id) of every string value of a key `"id"` in
//! it is kept — its own id is among them, wherever it stands, since without escapes the key is
//! its own bytes —, and the reader parses the line in full after all when a resource it read
//! has one of these keys (docs/rules.md §1.5). An element's id that happens to equal such a
//! resource's id only costs that second look.

use super::{is_fhir_id_bytes, CopyKey, ResourceType};
use memchr::memmem::Finder;
use rustc_hash::FxHashSet;
use smallvec::SmallVec;

/// The test for one resource type.
struct TypeTest {
    /// `"Observation"`: the value of the first key.
    type_name: Vec<u8>,
    /// Every monitored code of the type.
    codes: FxHashSet<Box<[u8]>>,
    /// Which lengths (up to 63 bytes; longer ones share bit 63) and first bytes the codes
    /// have: most `"code"` values of an export (units, categories, other labs' codes) fail
    /// these two lookups and are never hashed.
    code_lengths: u64,
    code_first_bytes: [bool; 256],
    code_key: Finder<'static>,
    id_key: Finder<'static>,
    kind: ResourceType,
    /// For each byte `X`, whether the escape `\X` decodes to a character of some code.
    risky_escape: [bool; 256],
}

/// A line that provably cannot matter, and the keys its resource could be known by: those of
/// the string values of its keys `"id"` that a resource the job reads could have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassedOver {
    pub keys: SmallVec<[CopyKey; 2]>,
}

/// The byte-level test, built once from the configured codes.
pub struct Prefilter {
    tests: [Option<TypeTest>; 4],
}

/// What each short escape `\X` of JSON stands for.
fn unescaped(x: u8) -> Option<char> {
    Some(match x {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        _ => return None,
    })
}

/// A length's bit in `TypeTest::code_lengths`.
fn length_bit(length: usize) -> u64 {
    1 << length.min(63)
}

fn index(kind: ResourceType) -> usize {
    match kind {
        ResourceType::Patient => 0,
        ResourceType::Condition => 1,
        ResourceType::Procedure => 2,
        ResourceType::Observation => 3,
    }
}

/// Skips JSON whitespace from `at`; the index of the next other byte.
fn skip_whitespace(line: &[u8], mut at: usize) -> usize {
    while at < line.len() && matches!(line[at], b' ' | b'\t' | b'\n' | b'\r') {
        at += 1;
    }
    at
}

impl TypeTest {
    fn new(kind: ResourceType, codes: &[&str]) -> TypeTest {
        let mut risky_escape = [false; 256];
        risky_escape[usize::from(b'u')] = true;
        for x in 0..=255u8 {
            if let Some(c) = unescaped(x) {
                risky_escape[usize::from(x)] = codes.iter().any(|code| code.contains(c));
            }
        }
        let mut code_lengths = 0u64;
        let mut code_first_bytes = [false; 256];
        for code in codes {
            code_lengths |= length_bit(code.len());
            if let Some(&first) = code.as_bytes().first() {
                code_first_bytes[usize::from(first)] = true;
            }
        }
        TypeTest {
            type_name: format!("\"{}\"", kind.name()).into_bytes(),
            codes: codes.iter().map(|c| c.as_bytes().into()).collect(),
            code_lengths,
            code_first_bytes,
            code_key: Finder::new(b"\"code\"").into_owned(),
            id_key: Finder::new(b"\"id\"").into_owned(),
            kind,
            risky_escape,
        }
    }

    /// Whether some key `"code"` in `text` has a monitored code as its string value. Without
    /// risky escapes a code's string is its own bytes, ending at the next quote.
    fn names_a_monitored_code(&self, text: &[u8]) -> bool {
        self.code_key.find_iter(text).any(|at| {
            let after = skip_whitespace(text, at + 6);
            if text.get(after) != Some(&b':') {
                return false;
            }
            let start = skip_whitespace(text, after + 1);
            if text.get(start) != Some(&b'"') {
                return false;
            }
            let value = &text[start + 1..];
            memchr::memchr(b'"', value).is_some_and(|end| self.is_code(&value[..end]))
        })
    }

    fn is_code(&self, value: &[u8]) -> bool {
        value.first().is_some_and(|&first| {
            self.code_first_bytes[usize::from(first)]
                && self.code_lengths & length_bit(value.len()) != 0
                && self.codes.contains(value)
        })
    }

    /// The end of a `{"resourceType":"<Type>"` opening, or `None`.
    fn opening(&self, line: &[u8]) -> Option<usize> {
        let at = skip_whitespace(line, line.strip_prefix(b"{").map(|_| 1)?);
        let at = at + line[at..].strip_prefix(b"\"resourceType\"").map(|_| 14)?;
        let at = skip_whitespace(line, at);
        let at = skip_whitespace(line, at + line[at..].strip_prefix(b":").map(|_| 1)?);
        line[at..]
            .starts_with(&self.type_name)
            .then_some(at + self.type_name.len())
    }

    /// The keys of the string values of every key `"id"` in `text` that are FHIR ids (one
    /// with an escape is none).
    fn id_keys(&self, text: &[u8]) -> SmallVec<[CopyKey; 2]> {
        self.id_key
            .find_iter(text)
            .filter_map(|at| {
                let after = skip_whitespace(text, at + 4);
                (text.get(after) == Some(&b':')).then_some(())?;
                let start = skip_whitespace(text, after + 1);
                let value = text.get(start..)?.strip_prefix(b"\"")?;
                let id = &value[..memchr::memchr(b'"', value)?];
                // A FHIR id is ASCII: checked and hashed as bytes.
                is_fhir_id_bytes(id).then(|| CopyKey::of_bytes(self.kind, id))
            })
            .collect()
    }

    fn pass_over(&self, line: &[u8], may_hold_escapes: bool) -> Option<PassedOver> {
        let rest = &line[self.opening(line)?..];
        if line.last() != Some(&b'}') || self.names_a_monitored_code(rest) {
            return None;
        }
        if may_hold_escapes && !self.escapes_are_harmless(line) {
            return None;
        }
        Some(PassedOver {
            keys: self.id_keys(rest),
        })
    }

    /// Whether no escape in `line` could spell a character of a monitored code.
    fn escapes_are_harmless(&self, line: &[u8]) -> bool {
        let mut escapes = memchr::memchr_iter(b'\\', line);
        while let Some(at) = escapes.next() {
            match line.get(at + 1) {
                Some(&x) if !self.risky_escape[usize::from(x)] => {
                    // `\\` is one escape: its second backslash starts nothing.
                    if x == b'\\' {
                        escapes.next();
                    }
                }
                _ => return false,
            }
        }
        true
    }
}

impl Prefilter {
    /// The test for each type from its monitored codes (every code, under any system).
    pub fn new(
        condition_codes: &[&str],
        procedure_codes: &[&str],
        observation_codes: &[&str],
    ) -> Prefilter {
        Prefilter {
            tests: [
                None,
                Some(TypeTest::new(ResourceType::Condition, condition_codes)),
                Some(TypeTest::new(ResourceType::Procedure, procedure_codes)),
                Some(TypeTest::new(ResourceType::Observation, observation_codes)),
            ],
        }
    }

    /// Whether `line` (trimmed), from a file of `kind`, provably cannot matter; with the key
    /// of the resource it holds.
    pub fn pass_over(&self, kind: ResourceType, line: &[u8]) -> Option<PassedOver> {
        let may_hold_escapes = memchr::memchr(b'\\', line).is_some();
        self.pass_over_scanned(kind, line, may_hold_escapes)
    }

    /// `pass_over` for a line already scanned for backslashes (the reader finds them in the
    /// same pass that finds the line's end): `false` when it holds none.
    pub fn pass_over_scanned(
        &self,
        kind: ResourceType,
        line: &[u8],
        may_hold_escapes: bool,
    ) -> Option<PassedOver> {
        self.tests[index(kind)]
            .as_ref()?
            .pass_over(line, may_hold_escapes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefilter() -> Prefilter {
        Prefilter::new(&["C22.0"], &["79445"], &["34444-0", "1751-7", "a/b"])
    }

    fn passed_over(line: &str) -> bool {
        prefilter()
            .pass_over(ResourceType::Observation, line.as_bytes())
            .is_some()
    }

    #[test]
    fn a_line_of_another_code_is_passed_over() {
        assert!(passed_over(
            r#"{"resourceType":"Observation","code":{"coding":[{"system":"http://loinc.org","code":"718-7"}]}}"#
        ));
        assert!(passed_over(
            r#"{ "resourceType" : "Observation" , "note":[{"text":"34444-0 trend, see 1751-7"}]}"#
        ));
    }

    #[test]
    fn a_monitored_code_as_the_value_of_a_code_key_means_a_full_parse() {
        assert!(!passed_over(
            r#"{"resourceType":"Observation","code":{"coding":[{"code":"34444-0"}]}}"#
        ));
        assert!(!passed_over(
            r#"{"resourceType":"Observation","code":{"coding":[{"system":"x", "code" : "1751-7"}]}}"#
        ));
        // Anywhere: a component, a unit code, an extension.
        assert!(!passed_over(
            r#"{"resourceType":"Observation","component":[{"valueQuantity":{"code":"1751-7"}}]}"#
        ));
        // A monitored code as a display, or a code key with another value, is not enough.
        assert!(passed_over(
            r#"{"resourceType":"Observation","derivedFrom":[{"display":"1751-7"}],"code":{"coding":[{"code":"718-7"}]}}"#
        ));
    }

    #[test]
    fn an_opening_other_than_the_files_type_means_a_full_parse() {
        for line in [
            r#"{"id":"1","resourceType":"Observation"}"#,
            r#"{"resourceType":"Encounter","id":"1"}"#,
            r#"{"resourceType":"ObservationX","id":"1"}"#,
            r#"["resourceType","Observation"]"#,
            // Cut short.
            r#"{"resourceType":"Observation","id":"1""#,
        ] {
            assert!(!passed_over(line), "{line}");
        }
    }

    #[test]
    fn a_contained_resource_is_parsed_only_when_it_holds_a_monitored_code() {
        assert!(passed_over(
            r#"{"resourceType":"Observation","contained":[{"resourceType":"Observation","code":{"coding":[{"code":"718-7"}]}}]}"#
        ));
        assert!(!passed_over(
            r#"{"resourceType":"Observation","contained":[{"resourceType":"Observation","code":{"coding":[{"code":"34444-0"}]}}]}"#
        ));
    }

    #[test]
    fn escapes_that_could_spell_a_code_mean_a_full_parse() {
        // `\u` may spell anything; `\/` spells `/`, which the code `a/b` holds.
        assert!(!passed_over(
            r#"{"resourceType":"Observation","code":{"coding":[{"code":"34444\u002d0"}]}}"#
        ));
        assert!(!passed_over(
            r#"{"resourceType":"Observation","code":{"coding":[{"code":"a\/b"}]}}"#
        ));
        // `\n` and `\"` spell nothing any code holds; `\\u` is a backslash, then `u`.
        assert!(passed_over(
            r#"{"resourceType":"Observation","note":[{"text":"line\nbreak \"quoted\" c:\\users"}]}"#
        ));
        // A `\/` cannot spell part of a Procedure code here: Procedures pass over it.
        assert!(prefilter()
            .pass_over(
                ResourceType::Procedure,
                br#"{"resourceType":"Procedure","code":{"coding":[{"system":"http:\/\/x","code":"1"}]}}"#
            )
            .is_some());
    }

    #[test]
    fn patients_are_always_parsed() {
        assert!(prefilter()
            .pass_over(
                ResourceType::Patient,
                br#"{"resourceType":"Patient","id":"p"}"#
            )
            .is_none());
    }

    #[test]
    fn a_key_from_bytes_is_the_key_from_text() {
        assert_eq!(
            CopyKey::of_bytes(ResourceType::Observation, b"o-1"),
            CopyKey::of(ResourceType::Observation, "o-1")
        );
        assert_ne!(
            CopyKey::of(ResourceType::Procedure, "o-1"),
            CopyKey::of(ResourceType::Observation, "o-1")
        );
    }

    fn keys_of(line: &str) -> Option<Vec<CopyKey>> {
        prefilter()
            .pass_over(ResourceType::Observation, line.as_bytes())
            .map(|passed| passed.keys.into_vec())
    }

    #[test]
    fn a_line_passed_over_keeps_the_key_of_its_id_wherever_it_stands() {
        let key = CopyKey::of(ResourceType::Observation, "o-1.2");
        for line in [
            r#"{"resourceType":"Observation","id":"o-1.2","status":"final"}"#,
            r#"{ "resourceType" : "Observation" , "id" : "o-1.2" }"#,
            r#"{"resourceType":"Observation","category":[{"text":"lab"}],"id":"o-1.2"}"#,
        ] {
            assert_eq!(keys_of(line), Some(vec![key]), "{line}");
        }
        // No id: nothing it could be a copy of.
        assert_eq!(
            keys_of(r#"{"resourceType":"Observation","status":"final"}"#),
            Some(vec![])
        );
        // An id that is no FHIR id cannot be that of a resource the job reads.
        assert_eq!(
            keys_of(r#"{"resourceType":"Observation","id":"a b"}"#),
            Some(vec![])
        );
    }

    #[test]
    fn every_id_in_a_line_passed_over_is_kept_as_a_key() {
        // An element's id is kept beside the resource's: which one is the resource's own is
        // told by a full parse, if ever a resource read has one of these keys.
        let keys = keys_of(r#"{"resourceType":"Observation","extension":[{"id":"e1"}],"id":"o1"}"#);
        assert_eq!(
            keys,
            Some(vec![
                CopyKey::of(ResourceType::Observation, "e1"),
                CopyKey::of(ResourceType::Observation, "o1")
            ])
        );
    }
}
