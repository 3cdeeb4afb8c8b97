//! Lean read structs: only the elements the rules use, borrowed from the line where possible.
//! Everything else in a resource is skipped unparsed. fhir-sdk's typed models are not used here:
//! they drop a malformed `effective[x]`/`value[x]` silently, and we must count it instead.

use serde::de::{Deserializer, Visitor};
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

/// A list read inline: resources rarely carry more than two codings, one note, one range.
pub(super) type Few<T> = SmallVec<[T; 2]>;

#[derive(Deserialize)]
pub(super) struct Coding<'a> {
    #[serde(borrow)]
    pub(super) system: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) code: Option<Text<'a>>,
}

#[derive(Deserialize)]
pub(super) struct CodeableConcept<'a> {
    #[serde(borrow, default)]
    pub(super) coding: Few<Coding<'a>>,
}

#[derive(Deserialize)]
pub(super) struct Reference<'a> {
    #[serde(borrow)]
    pub(super) reference: Option<Text<'a>>,
}

#[derive(Deserialize)]
pub(super) struct Period<'a> {
    #[serde(borrow)]
    pub(super) start: Option<Text<'a>>,
}

#[derive(Deserialize)]
pub(super) struct Meta<'a> {
    #[serde(borrow, rename = "lastUpdated")]
    pub(super) last_updated: Option<Text<'a>>,
    #[serde(borrow, rename = "versionId")]
    pub(super) version_id: Option<Text<'a>>,
}

#[derive(Deserialize)]
pub(super) struct Quantity<'a> {
    pub(super) value: Option<f64>,
    #[serde(borrow)]
    pub(super) system: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) comparator: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) unit: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) code: Option<Text<'a>>,
}

#[derive(Deserialize)]
pub(super) struct ReferenceRange<'a> {
    #[serde(borrow)]
    pub(super) high: Option<Quantity<'a>>,
}

#[derive(Deserialize)]
pub(super) struct Header<'a> {
    #[serde(borrow, rename = "resourceType")]
    pub(super) resource_type: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) id: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) meta: Option<Meta<'a>>,
}

#[derive(Deserialize)]
pub(super) struct ObservationIn<'a> {
    #[serde(borrow, rename = "resourceType")]
    pub(super) resource_type: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) id: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) meta: Option<Meta<'a>>,
    #[serde(borrow)]
    pub(super) status: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) code: Option<CodeableConcept<'a>>,
    #[serde(borrow)]
    pub(super) subject: Option<Reference<'a>>,
    #[serde(borrow, rename = "effectiveDateTime")]
    pub(super) effective_date_time: Option<Text<'a>>,
    #[serde(borrow, rename = "effectivePeriod")]
    pub(super) effective_period: Option<Period<'a>>,
    #[serde(borrow, rename = "effectiveInstant")]
    pub(super) effective_instant: Option<Text<'a>>,
    #[serde(borrow, rename = "valueQuantity")]
    pub(super) value_quantity: Option<Quantity<'a>>,
    #[serde(borrow, rename = "valueString")]
    pub(super) value_string: Option<Text<'a>>,
    #[serde(rename = "dataAbsentReason")]
    pub(super) data_absent_reason: Option<serde::de::IgnoredAny>,
    #[serde(borrow, rename = "referenceRange", default)]
    pub(super) reference_range: Few<ReferenceRange<'a>>,
    /// For the audit report only.
    #[serde(borrow, default)]
    pub(super) note: Few<Annotation<'a>>,
}

#[derive(Deserialize)]
pub(super) struct PatientIn<'a> {
    #[serde(borrow, rename = "resourceType")]
    pub(super) resource_type: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) id: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) meta: Option<Meta<'a>>,
    #[serde(borrow, rename = "birthDate")]
    pub(super) birth_date: Option<Text<'a>>,
    /// For the audit report only.
    #[serde(borrow, default)]
    pub(super) name: Vec<HumanName<'a>>,
}

#[derive(Deserialize)]
pub(super) struct HumanName<'a> {
    #[serde(borrow)]
    pub(super) text: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) family: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub(super) given: Few<Text<'a>>,
}

#[derive(Deserialize)]
pub(super) struct Annotation<'a> {
    #[serde(borrow)]
    pub(super) text: Option<Text<'a>>,
}

#[derive(Deserialize)]
pub(super) struct ProcedureIn<'a> {
    #[serde(borrow, rename = "resourceType")]
    pub(super) resource_type: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) id: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) meta: Option<Meta<'a>>,
    #[serde(borrow)]
    pub(super) status: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) code: Option<CodeableConcept<'a>>,
    #[serde(borrow)]
    pub(super) subject: Option<Reference<'a>>,
    #[serde(borrow, rename = "performedDateTime")]
    pub(super) performed_date_time: Option<Text<'a>>,
    #[serde(borrow, rename = "performedPeriod")]
    pub(super) performed_period: Option<Period<'a>>,
}

#[derive(Deserialize)]
pub(super) struct ConditionIn<'a> {
    #[serde(borrow, rename = "resourceType")]
    pub(super) resource_type: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) id: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) meta: Option<Meta<'a>>,
    #[serde(borrow)]
    pub(super) code: Option<CodeableConcept<'a>>,
    #[serde(borrow)]
    pub(super) subject: Option<Reference<'a>>,
    #[serde(borrow, rename = "verificationStatus")]
    pub(super) verification_status: Option<CodeableConcept<'a>>,
}
