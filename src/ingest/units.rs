//! Units and values (docs/rules.md §1.2 and "Value"): which marker a unit puts a value in,
//! the factor to the canonical unit, and the parsing of `valueString` such as `6,088 mAU/mL`.

use crate::config::IngestConfig;
use crate::domain::{Censoring, Marker};

/// Which value set an Observation's code fell in. PIVKA-II codes carry two markers: the unit
/// decides (docs/rules.md §1: arbitrary units -> `pivka2`, mass -> `dcp`, never converted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodeFamily {
    Pivka,
    Afp,
    AfpL3,
    Albumin,
    Bilirubin,
}

/// The unit families we recognise. UCUM codes first, then common printed spellings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UnitKind {
    /// mAU/mL and equivalents (1 AU/L = 1 mAU/mL).
    Arbitrary,
    /// ng/mL = ug/L.
    MassNgMl,
    /// IU/mL = kIU/L.
    InternationalUnitsPerMl,
    Percent,
    GramsPerLitre,
    GramsPerDecilitre,
    MicromolPerLitre,
    MilligramsPerDecilitre,
}

fn unit_kind(unit: &str) -> Option<UnitKind> {
    use UnitKind::*;
    // Exact UCUM codes.
    let exact = match unit {
        "mAU/mL" | "m[arb'U]/mL" | "[arb'U]/L" | "AU/L" => Some(Arbitrary),
        "ng/mL" | "ug/L" => Some(MassNgMl),
        "[IU]/mL" | "k[IU]/L" => Some(InternationalUnitsPerMl),
        "%" => Some(Percent),
        "g/L" => Some(GramsPerLitre),
        "g/dL" => Some(GramsPerDecilitre),
        "umol/L" => Some(MicromolPerLitre),
        "mg/dL" => Some(MilligramsPerDecilitre),
        _ => None,
    };
    if exact.is_some() {
        return exact;
    }
    // Printed spellings: case-insensitive, micro sign folded to `u`.
    let folded: String = unit
        .trim()
        .chars()
        .map(|c| match c {
            'µ' | 'μ' => 'u',
            c => c.to_ascii_lowercase(),
        })
        .filter(|c| !c.is_whitespace())
        .collect();
    match folded.as_str() {
        "mau/ml" | "m[arb'u]/ml" | "[arb'u]/l" | "au/l" => Some(Arbitrary),
        "ng/ml" | "ug/l" | "mcg/l" => Some(MassNgMl),
        "iu/ml" | "[iu]/ml" | "kiu/l" | "k[iu]/l" => Some(InternationalUnitsPerMl),
        "%" | "percent" => Some(Percent),
        "g/l" => Some(GramsPerLitre),
        "g/dl" => Some(GramsPerDecilitre),
        "umol/l" | "mcmol/l" => Some(MicromolPerLitre),
        "mg/dl" => Some(MilligramsPerDecilitre),
        _ => None,
    }
}

/// The marker and the factor to its canonical unit, or `None` for a unit the rules do not use.
pub fn resolve_unit(
    family: CodeFamily,
    ucum_code: Option<&str>,
    printed_unit: Option<&str>,
    conversions: &IngestConfig,
) -> Option<(Marker, f64)> {
    let kind = ucum_code
        .and_then(unit_kind)
        .or_else(|| printed_unit.and_then(unit_kind))?;
    use UnitKind::*;
    match (family, kind) {
        (CodeFamily::Pivka, Arbitrary) => Some((Marker::Pivka2, 1.0)),
        (CodeFamily::Pivka, MassNgMl) => Some((Marker::Dcp, 1.0)),
        (CodeFamily::Afp, MassNgMl) => Some((Marker::Afp, 1.0)),
        (CodeFamily::Afp, InternationalUnitsPerMl) => {
            Some((Marker::Afp, conversions.afp_ng_per_iu))
        }
        (CodeFamily::AfpL3, Percent) => Some((Marker::AfpL3, 1.0)),
        (CodeFamily::Albumin, GramsPerLitre) => Some((Marker::Albumin, 1.0)),
        (CodeFamily::Albumin, GramsPerDecilitre) => {
            Some((Marker::Albumin, conversions.albumin_g_l_per_g_dl))
        }
        (CodeFamily::Bilirubin, MicromolPerLitre) => Some((Marker::Bilirubin, 1.0)),
        (CodeFamily::Bilirubin, MilligramsPerDecilitre) => {
            Some((Marker::Bilirubin, conversions.bilirubin_umol_l_per_mg_dl))
        }
        _ => None,
    }
}

/// Decimals in the shortest text that reads back as `x` (`1300.3` -> 1, `17.1` -> 1, `40` -> 0).
fn decimals(x: f64) -> u32 {
    let text = x.to_string();
    text.split_once('.')
        .map_or(0, |(_, fraction)| fraction.len() as u32)
}

/// `number` x `factor`, rounded to the decimals the exact decimal product has (the number's
/// plus the factor's): 1300.3 IU/mL x 1.21 is 1573.363 ng/mL, not 1573.3629999999998. A value
/// a person reads never carries more digits than its source and the conversion.
pub fn in_canonical_unit(number: f64, factor: f64) -> f64 {
    let product = number * factor;
    if factor == 1.0 {
        return product;
    }
    let places = decimals(number) + decimals(factor);
    let scale = 10f64.powi(places as i32);
    let scaled = product * scale;
    // Past 2^53 a float has no fractional digits to clean (and the scale could overflow).
    if places > 15 || !scaled.is_finite() || scaled.abs() >= 9_007_199_254_740_992.0 {
        return product;
    }
    scaled.round() / scale
}

/// Maps a FHIR `Quantity.comparator`.
pub fn censoring_of(comparator: Option<&str>) -> Option<Censoring> {
    match comparator {
        None => Some(Censoring::Exact),
        Some("<") | Some("<=") => Some(Censoring::Low),
        Some(">") | Some(">=") => Some(Censoring::High),
        Some(_) => None,
    }
}

/// A `valueString` read as comparator, number and unit.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedString<'a> {
    pub censoring: Censoring,
    pub number: f64,
    pub unit: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueStringError {
    /// A number with no unit: the scale cannot be known.
    NoUnit,
    /// Not a number with a unit at all (free text, `positive`, `6,5`).
    NotANumber,
}

/// Parses `<2.0 ng/mL`, `> 75000 mAU/mL`, `6,088 mAU/mL`. Commas are thousands separators
/// only in groups of three digits; anything else is not a number.
pub fn parse_value_string(text: &str) -> Result<ParsedString<'_>, ValueStringError> {
    let mut rest = text.trim();
    let mut censoring = Censoring::Exact;
    for (token, c) in [
        ("<=", Censoring::Low),
        (">=", Censoring::High),
        ("≤", Censoring::Low),
        ("≥", Censoring::High),
        ("<", Censoring::Low),
        (">", Censoring::High),
    ] {
        if let Some(stripped) = rest.strip_prefix(token) {
            censoring = c;
            rest = stripped.trim_start();
            break;
        }
    }
    let number_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == ',' || c == '.'))
        .unwrap_or(rest.len());
    let (number_text, unit) = rest.split_at(number_len);
    let number = parse_grouped_number(number_text).ok_or(ValueStringError::NotANumber)?;
    let unit = unit.trim();
    if unit.is_empty() {
        return Err(ValueStringError::NoUnit);
    }
    Ok(ParsedString {
        censoring,
        number,
        unit,
    })
}

fn parse_grouped_number(text: &str) -> Option<f64> {
    let (integer, fraction) = match text.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (text, None),
    };
    if integer.is_empty() || !integer.as_bytes()[0].is_ascii_digit() {
        return None;
    }
    let groups: Vec<&str> = integer.split(',').collect();
    if groups.len() > 1
        && (groups[0].is_empty() || groups[0].len() > 3 || groups[1..].iter().any(|g| g.len() != 3))
    {
        return None;
    }
    if let Some(f) = fraction {
        if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    let plain: String = integer.chars().filter(|c| *c != ',').collect();
    let joined = match fraction {
        Some(f) => format!("{plain}.{f}"),
        None => plain,
    };
    joined.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv() -> IngestConfig {
        IngestConfig::default()
    }

    #[test]
    fn value_string_with_thousands_separator() {
        let p = parse_value_string("6,088 mAU/mL").unwrap();
        assert_eq!(p.number, 6088.0);
        assert_eq!(p.censoring, Censoring::Exact);
        assert_eq!(p.unit, "mAU/mL");
    }

    #[test]
    fn value_string_censored_low_and_high() {
        let p = parse_value_string("<2.0 ng/mL").unwrap();
        assert_eq!(
            (p.number, p.censoring, p.unit),
            (2.0, Censoring::Low, "ng/mL")
        );
        let p = parse_value_string("> 75000 mAU/mL").unwrap();
        assert_eq!((p.number, p.censoring), (75000.0, Censoring::High));
    }

    #[test]
    fn value_string_without_unit_is_rejected() {
        assert_eq!(parse_value_string("88000"), Err(ValueStringError::NoUnit));
        assert_eq!(
            parse_value_string("positive"),
            Err(ValueStringError::NotANumber)
        );
        assert_eq!(
            parse_value_string("6,5 ng/mL"),
            Err(ValueStringError::NotANumber)
        );
    }

    #[test]
    fn pivka_unit_decides_the_scale() {
        assert_eq!(
            resolve_unit(CodeFamily::Pivka, Some("mAU/mL"), None, &conv()),
            Some((Marker::Pivka2, 1.0))
        );
        assert_eq!(
            resolve_unit(CodeFamily::Pivka, None, Some("ng/mL"), &conv()),
            Some((Marker::Dcp, 1.0))
        );
    }

    #[test]
    fn conversions_follow_rules() {
        assert_eq!(
            resolve_unit(CodeFamily::Afp, Some("[IU]/mL"), None, &conv()),
            Some((Marker::Afp, 1.21))
        );
        assert_eq!(
            resolve_unit(CodeFamily::Albumin, None, Some("g/dL"), &conv()),
            Some((Marker::Albumin, 10.0))
        );
        assert_eq!(
            resolve_unit(CodeFamily::Bilirubin, Some("mg/dL"), None, &conv()),
            Some((Marker::Bilirubin, 17.1))
        );
        assert_eq!(
            resolve_unit(CodeFamily::Bilirubin, None, Some("µmol/L"), &conv()),
            Some((Marker::Bilirubin, 1.0))
        );
    }

    #[test]
    fn converted_values_keep_the_precision_of_their_source() {
        assert_eq!(in_canonical_unit(1300.3, 1.21), 1573.363);
        assert_eq!(in_canonical_unit(1.2, 17.1), 20.52);
        assert_eq!(in_canonical_unit(3.5, 10.0), 35.0);
        assert_eq!(in_canonical_unit(88000.0, 1.0), 88000.0);
        assert_eq!(in_canonical_unit(0.0, 1.21), 0.0);
        // Numbers too large to have fractional digits are left as they are.
        assert_eq!(in_canonical_unit(1e300, 1.21), 1e300 * 1.21);
    }

    #[test]
    fn unknown_or_foreign_unit_is_not_used() {
        assert_eq!(
            resolve_unit(CodeFamily::Afp, Some("mmol/L"), None, &conv()),
            None
        );
        // An arbitrary unit is no AFP unit.
        assert_eq!(
            resolve_unit(CodeFamily::Afp, Some("mAU/mL"), None, &conv()),
            None
        );
    }
}
