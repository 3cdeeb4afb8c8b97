//! Lean read structs: only the elements the rules use, borrowed from the line where possible.
//! Everything else in a resource is skipped unparsed. fhir-sdk's typed models are not used here:
//! they drop a malformed `effective[x]`/`value[x]` silently, and we must count it instead.
//!
//! Only FHIR JSON is read (docs/rules.md §1.4b): a resource and every complex element the job
//! reads must be a JSON object. serde's derived impls also take an array of the fields in
//! their order (`["http://loinc.org","34444-0"]` as a Coding); here each struct is derived
//! with `remote = "Self"` and reached only through `deserialize_map` (`objects_only!`), so
//! such a form makes the resource malformed. Lists must be arrays, numbers numbers and
//! strings strings, as serde already requires, and an element is never `null` (`present`).

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use smallvec::SmallVec;
use std::borrow::Cow;

/// A JSON string, borrowed from the line when it holds no escape. (serde's own impl for
/// `Option<Cow<str>>` copies every string into a new allocation; this does not.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Text<'a>(pub(super) Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// Implements `Deserialize` for read structs derived with `remote = "Self"`: a JSON object is
/// handed to the derived code, anything else is an error.
macro_rules! objects_only {
    ($($name:ident),* $(,)?) => {$(
        impl<'de: 'a, 'a> Deserialize<'de> for $name<'a> {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct ObjectVisitor<'a>(std::marker::PhantomData<$name<'a>>);
                impl<'de: 'a, 'a> Visitor<'de> for ObjectVisitor<'a> {
                    type Value = $name<'a>;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str(concat!("a JSON object (", stringify!($name), ")"))
                    }
                    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<$name<'a>, A::Error> {
                        $name::deserialize(MapAccessDeserializer::new(map))
                    }
                }
                deserializer.deserialize_map(ObjectVisitor(std::marker::PhantomData))
            }
        }
    )*};
}

objects_only!(
    Coding,
    CodeableConcept,
    Reference,
    Period,
    Meta,
    Quantity,
    ReferenceRange,
    Header,
    ObservationIn,
    PatientIn,
    HumanName,
    IdentifierIn,
    IdentifierPeriod,
    Annotation,
    ProcedureIn,
    ConditionIn,
);

/// An element the job only tests for presence (`dataAbsentReason`): any JSON object, its
/// content skipped.
pub(super) struct AnyObject;

impl<'de> Deserialize<'de> for AnyObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = AnyObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnyObject, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(AnyObject)
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// An optional element: absent is `None`, and `null`, which FHIR JSON does not allow for an
/// element, is an error (serde's `Option` would take it for absent).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// A list read inline: resources rarely carry more than two codings, one note, one range.
pub(super) type Few<T> = SmallVec<[T; 2]>;

#[derive(Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub(super) struct Coding<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) system: Option<Text<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) code: Option<Text<'a>>,
}

#[derive(Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub(super) struct CodeableConcept<'a> {
    #[serde(borrow, default)]
    pub(super) coding: Few<Coding<'a>>,
}

#[derive(Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub(super) struct Reference<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) reference: Option<Text<'a>>,
}

#[derive(Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub(super) struct Period<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) start: Option<Text<'a>>,
}

/// An identifier's period: only its end is read (a retired MRN).
#[derive(Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub(super) struct IdentifierPeriod<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) end: Option<Text<'a>>,
}

#[derive(Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub(super) struct Meta<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) last_updated: Option<Text<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) version_id: Option<Text<'a>>,
}

#[derive(Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub(super) struct Quantity<'a> {
    #[serde(default, deserialize_with = "present")]
    pub(super) value: Option<f64>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) system: Option<Text<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) comparator: Option<Text<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) unit: Option<Text<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) code: Option<Text<'a>>,
}

#[derive(Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub(super) struct ReferenceRange<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) high: Option<Quantity<'a>>,
}

#[derive(Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub(super) struct Header<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) resource_type: Option<Text<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) id: Option<Text<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) meta: Option<Meta<'a>>,
}

#[derive(Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub(super) struct ObservationIn<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) resource_type: Option<Text<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) id: Option<Text<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) meta: Option<Meta<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) status: Option<Text<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) code: Option<CodeableConcept<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) subject: Option<Reference<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) effective_date_time: Option<Text<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) effective_period: Option<Period<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) effective_instant: Option<Text<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) value_quantity: Option<Quantity<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) value_string: Option<Text<'a>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) data_absent_reason: Option<AnyObject>,
    #[serde(borrow, default)]
    pub(super) reference_range: Few<ReferenceRange<'a>>,
    /// For the audit report only.
    #[serde(borrow, default)]
    pub(super) note: Few<Annotation<'a>>,
}

#[derive(Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub(super) struct PatientIn<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) resource_type: Option<Text<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) id: Option<Text<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) meta: Option<Meta<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) birth_date: Option<Text<'a>>,
    /// For the audit report only.
    #[serde(borrow, default)]
    pub(super) name: Vec<HumanName<'a>>,
    /// For the audit report only: the MRN is one of these.
    #[serde(borrow, default)]
    pub(super) identifier: Few<IdentifierIn<'a>>,
}

#[derive(Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub(super) struct IdentifierIn<'a> {
    /// `usual`, `official`, `temp`, `secondary`, `old`: a retired MRN is never shown.
    #[serde(rename = "use", borrow, default, deserialize_with = "present")]
    pub(super) identifier_use: Option<Text<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) system: Option<Text<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) value: Option<Text<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) period: Option<IdentifierPeriod<'a>>,
}

#[derive(Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub(super) struct HumanName<'a> {
    /// `official`, `usual`, `old`, ...: which of a patient's names the report shows.
    #[serde(rename = "use", borrow, default, deserialize_with = "present")]
    pub(super) name_use: Option<Text<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) text: Option<Text<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) family: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub(super) given: Few<Text<'a>>,
}

#[derive(Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub(super) struct Annotation<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) text: Option<Text<'a>>,
}

#[derive(Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub(super) struct ProcedureIn<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) resource_type: Option<Text<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) id: Option<Text<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) meta: Option<Meta<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) status: Option<Text<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) code: Option<CodeableConcept<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) subject: Option<Reference<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) performed_date_time: Option<Text<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) performed_period: Option<Period<'a>>,
}

#[derive(Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase")]
pub(super) struct ConditionIn<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) resource_type: Option<Text<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) id: Option<Text<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) meta: Option<Meta<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) code: Option<CodeableConcept<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) subject: Option<Reference<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) verification_status: Option<CodeableConcept<'a>>,
}
