//! Every data-quality case of docs/rules.md §1.4, one line of FHIR JSON each.

use serde_json::{json, Value};
use tare_marker_monitor::config::Config;
use tare_marker_monitor::domain::{Censoring, Marker, MarkerValue};
use tare_marker_monitor::ingest::{
    CopyKey, Ingestor, LineOutcome, Record, ResourceType, SkipReason,
};
use tare_marker_monitor::source::ndjson;

fn observation(code: &str, effective: Value, value: Value) -> Value {
    let mut o = json!({
        "resourceType": "Observation", "id": "o1", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": effective,
        "valueQuantity": value
    });
    if o["effectiveDateTime"].is_null() {
        o.as_object_mut().unwrap().remove("effectiveDateTime");
    }
    if o["valueQuantity"].is_null() {
        o.as_object_mut().unwrap().remove("valueQuantity");
    }
    o
}

fn quantity(value: f64, code: &str) -> Value {
    json!({"value": value, "unit": code, "system": "http://unitsofmeasure.org", "code": code})
}

fn pivka(value: Value) -> Value {
    observation("34444-0", json!("2026-03-01T10:00:00Z"), value)
}

/// The ingestor as a run on 2026-11-01 builds it.
fn ingestor(config: &Config) -> Ingestor {
    Ingestor::new(
        config,
        chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
    )
}

fn read(resource: &Value) -> LineOutcome<'static> {
    ingestor(&Config::default())
        .read_line(ResourceType::Observation, &resource.to_string())
        .into_owned()
}

fn accepted(resource: &Value) -> MarkerValue {
    match read(resource) {
        LineOutcome::Record(Record::Value {
            value, patient_id, ..
        }) => {
            assert_eq!(patient_id, "p1");
            value
        }
        other => panic!("expected an accepted value, got {other:?}"),
    }
}

fn skipped(resource: &Value) -> (SkipReason, Option<String>) {
    match read(resource) {
        LineOutcome::Skipped(skip) => (skip.reason, skip.detail),
        other => panic!("expected a skip, got {other:?}"),
    }
}

fn with(mut resource: Value, key: &str, value: Value) -> Value {
    resource[key] = value;
    resource
}

fn without(mut resource: Value, key: &str) -> Value {
    resource.as_object_mut().unwrap().remove(key);
    resource
}

#[test]
fn final_amended_and_corrected_are_accepted() {
    for status in ["final", "amended", "corrected"] {
        let v = accepted(&with(
            pivka(quantity(100.0, "mAU/mL")),
            "status",
            json!(status),
        ));
        assert_eq!((v.marker, v.value), (Marker::Pivka2, 100.0));
    }
}

#[test]
fn other_statuses_are_left_out_with_the_status() {
    for status in [
        "preliminary",
        "registered",
        "cancelled",
        "entered-in-error",
        "unknown",
    ] {
        let (reason, detail) = skipped(&with(
            pivka(quantity(100.0, "mAU/mL")),
            "status",
            json!(status),
        ));
        assert_eq!(reason, SkipReason::StatusNotAccepted);
        assert_eq!(detail.as_deref(), Some(status));
    }
}

#[test]
fn missing_effective_time_is_left_out() {
    let o = observation("34444-0", Value::Null, quantity(100.0, "mAU/mL"));
    assert_eq!(skipped(&o).0, SkipReason::NoEffectiveTime);
}

#[test]
fn effective_period_start_then_instant_are_used() {
    let o = without(pivka(quantity(1.0, "mAU/mL")), "effectiveDateTime");
    let o1 = with(
        o.clone(),
        "effectivePeriod",
        json!({"start": "2026-03-04T08:00:00Z"}),
    );
    assert_eq!(accepted(&o1).date.to_string(), "2026-03-04");
    let o2 = with(o, "effectiveInstant", json!("2026-03-05T08:00:00Z"));
    assert_eq!(accepted(&o2).date.to_string(), "2026-03-05");
}

#[test]
fn date_only_time_is_that_date_at_its_start() {
    let v = accepted(&observation(
        "34444-0",
        json!("2026-03-01"),
        quantity(1.0, "mAU/mL"),
    ));
    assert_eq!(v.date.to_string(), "2026-03-01");
    let midnight = accepted(&observation(
        "34444-0",
        json!("2026-03-01T00:00:00Z"),
        quantity(1.0, "mAU/mL"),
    ));
    assert_eq!(v.instant_ms, midnight.instant_ms);
}

#[test]
fn partial_and_invalid_times_are_left_out() {
    let o = observation("34444-0", json!("2026-03"), quantity(1.0, "mAU/mL"));
    assert_eq!(skipped(&o).0, SkipReason::EffectiveTimeNotAFullDate);
    let o = observation("34444-0", json!("last tuesday"), quantity(1.0, "mAU/mL"));
    assert_eq!(skipped(&o).0, SkipReason::InvalidEffectiveTime);
}

#[test]
fn non_utc_offset_late_evening_falls_on_the_next_utc_date() {
    let v = accepted(&observation(
        "34444-0",
        json!("2026-01-01T23:30:00-05:00"),
        quantity(1.0, "mAU/mL"),
    ));
    assert_eq!(v.date.to_string(), "2026-01-02");
}

#[test]
fn configured_time_zone_decides_the_calendar_date() {
    let mut config = Config::default();
    config.ingest.time_zone = "America/New_York".into();
    let o = observation(
        "34444-0",
        json!("2026-01-01T23:30:00-05:00"),
        quantity(1.0, "mAU/mL"),
    );
    match ingestor(&config).read_line(ResourceType::Observation, &o.to_string()) {
        LineOutcome::Record(Record::Value { value, .. }) => {
            assert_eq!(value.date.to_string(), "2026-01-01")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn value_string_with_thousands_separator_is_parsed() {
    let o = with(
        without(pivka(Value::Null), "valueQuantity"),
        "valueString",
        json!("6,088 mAU/mL"),
    );
    let v = accepted(&o);
    assert_eq!(
        (v.marker, v.value, v.censoring),
        (Marker::Pivka2, 6088.0, Censoring::Exact)
    );
}

#[test]
fn value_string_censored_low_afp() {
    let o = observation("1834-1", json!("2026-03-01"), Value::Null);
    let v = accepted(&with(o, "valueString", json!("<2.0 ng/mL")));
    assert_eq!(
        (v.marker, v.value, v.censoring),
        (Marker::Afp, 2.0, Censoring::Low)
    );
}

#[test]
fn value_string_censored_high_with_space() {
    let o = with(
        without(pivka(Value::Null), "valueQuantity"),
        "valueString",
        json!("> 75000 mAU/mL"),
    );
    let v = accepted(&o);
    assert_eq!((v.value, v.censoring), (75000.0, Censoring::High));
}

#[test]
fn value_string_without_unit_is_left_out() {
    let o = with(
        without(pivka(Value::Null), "valueQuantity"),
        "valueString",
        json!("88000"),
    );
    assert_eq!(skipped(&o).0, SkipReason::ValueStringWithoutUnit);
    let o = with(
        without(pivka(Value::Null), "valueQuantity"),
        "valueString",
        json!("see comment"),
    );
    assert_eq!(skipped(&o).0, SkipReason::ValueStringNotANumber);
}

#[test]
fn quantity_comparators_censor() {
    for (comparator, expected) in [
        ("<", Censoring::Low),
        ("<=", Censoring::Low),
        (">", Censoring::High),
        (">=", Censoring::High),
    ] {
        let q = json!({"value": 5.0, "comparator": comparator, "code": "mAU/mL"});
        assert_eq!(accepted(&pivka(q)).censoring, expected, "{comparator}");
    }
    let q = json!({"value": 5.0, "comparator": "ad", "code": "mAU/mL"});
    assert_eq!(skipped(&pivka(q)).0, SkipReason::UnknownComparator);
}

#[test]
fn afp_in_iu_per_ml_is_converted_at_1_21() {
    let v = accepted(&observation(
        "19176-7",
        json!("2026-03-01"),
        quantity(10.0, "[IU]/mL"),
    ));
    assert_eq!(v.marker, Marker::Afp);
    assert!((v.value - 12.1).abs() < 1e-9);
}

#[test]
fn albumin_g_dl_is_converted_to_g_l() {
    let v = accepted(&observation(
        "1751-7",
        json!("2026-03-01"),
        quantity(3.6, "g/dL"),
    ));
    assert_eq!(v.marker, Marker::Albumin);
    assert!((v.value - 36.0).abs() < 1e-9);
}

#[test]
fn bilirubin_mg_dl_is_converted_to_umol_l() {
    let v = accepted(&observation(
        "1975-2",
        json!("2026-03-01"),
        quantity(1.2, "mg/dL"),
    ));
    assert_eq!(v.marker, Marker::Bilirubin);
    assert!((v.value - 20.52).abs() < 1e-9);
}

#[test]
fn printed_unit_is_used_when_there_is_no_ucum_code() {
    let v = accepted(&observation(
        "1975-2",
        json!("2026-03-01"),
        json!({"value": 20, "unit": "µmol/L"}),
    ));
    assert_eq!((v.marker, v.value), (Marker::Bilirubin, 20.0));
}

#[test]
fn pivka_in_ng_ml_goes_to_dcp() {
    let v = accepted(&pivka(quantity(85.0, "ng/mL")));
    assert_eq!((v.marker, v.value), (Marker::Dcp, 85.0));
}

#[test]
fn unknown_unit_is_left_out_with_its_unit() {
    let (reason, detail) = skipped(&observation(
        "1834-1",
        json!("2026-03-01"),
        quantity(3.0, "mmol/L"),
    ));
    assert_eq!(reason, SkipReason::UnknownUnit);
    assert_eq!(detail.as_deref(), Some("mmol/L"));
}

#[test]
fn data_absent_reason_is_left_out() {
    let o = with(
        without(pivka(Value::Null), "valueQuantity"),
        "dataAbsentReason",
        json!({"text": "haemolysed"}),
    );
    assert_eq!(skipped(&o).0, SkipReason::DataAbsentReason);
}

#[test]
fn missing_value_and_missing_subject_are_left_out() {
    assert_eq!(
        skipped(&without(pivka(Value::Null), "valueQuantity")).0,
        SkipReason::NoValue
    );
    assert_eq!(
        skipped(&without(pivka(quantity(1.0, "mAU/mL")), "subject")).0,
        SkipReason::NoPatientReference
    );
}

#[test]
fn reference_range_high_in_the_marker_unit_family_is_kept() {
    let o = with(
        pivka(quantity(50.0, "mAU/mL")),
        "referenceRange",
        json!([{"high": {"value": 35, "code": "mAU/mL"}}]),
    );
    assert_eq!(accepted(&o).reference_high.get(), Some(35.0));
    let o = with(
        pivka(quantity(50.0, "mAU/mL")),
        "referenceRange",
        json!([{"high": {"value": 7.5, "code": "ng/mL"}}]),
    );
    assert_eq!(accepted(&o).reference_high.get(), None);
}

#[test]
fn an_observation_of_another_code_is_not_relevant() {
    let o = observation("718-7", json!("2026-03-01"), quantity(12.0, "g/dL"));
    assert_eq!(
        read(&o),
        LineOutcome::NotRelevant(Some(CopyKey::of(ResourceType::Observation, "o1")))
    );
}

#[test]
fn wrong_element_type_is_left_out_with_its_id() {
    match read(&pivka(json!({"value": "lots"}))) {
        LineOutcome::Skipped(skip) => {
            assert_eq!(skip.reason, SkipReason::InvalidJson);
            assert_eq!(skip.resource_id.as_deref(), Some("o1"));
        }
        other => panic!("{other:?}"),
    }
}

// ---- whole files ----

fn write_folder(files: &[(&str, Vec<String>)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, lines) in files {
        std::fs::write(dir.path().join(name), lines.join("\n") + "\n").unwrap();
    }
    dir
}

fn obs_line(id: &str, effective: &str, value: f64, last_updated: &str) -> String {
    json!({
        "resourceType": "Observation", "id": id, "status": "final",
        "meta": {"lastUpdated": last_updated},
        "code": {"coding": [{"system": "http://loinc.org", "code": "34444-0"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": effective,
        "valueQuantity": {"value": value, "code": "mAU/mL"}
    })
    .to_string()
}

#[test]
fn duplicates_are_resolved_by_last_updated_and_counted() {
    let dir = write_folder(&[(
        "Observation.ndjson",
        vec![
            obs_line("a", "2026-03-01T10:00:00Z", 100.0, "2026-03-02T00:00:00Z"),
            obs_line("b", "2026-03-01T10:00:00Z", 120.0, "2026-03-03T00:00:00Z"),
            obs_line("c", "2026-03-01T10:00:00Z", 110.0, "2026-03-01T00:00:00Z"),
        ],
    )]);
    let loaded = ndjson::load(dir.path(), &ingestor(&Config::default())).unwrap();
    let values = &loaded.timelines[0].values;
    assert_eq!(values.len(), 1);
    assert_eq!((&*values[0].observation_id, values[0].value), ("b", 120.0));
    assert_eq!(
        loaded
            .quality
            .left_out_count(ResourceType::Observation, SkipReason::Duplicate),
        2
    );
}

#[test]
fn one_bad_line_never_stops_the_file() {
    let dir = write_folder(&[(
        "Observation.ndjson",
        vec![
            obs_line("a", "2026-03-01T10:00:00Z", 100.0, "2026-03-02T00:00:00Z"),
            "{not json".into(),
            "\u{0}garbage".into(),
            String::new(),
            obs_line("b", "2026-04-01T10:00:00Z", 90.0, "2026-04-02T00:00:00Z"),
        ],
    )]);
    let loaded = ndjson::load(dir.path(), &ingestor(&Config::default())).unwrap();
    assert_eq!(loaded.timelines[0].values.len(), 2);
    let observations = &loaded.quality.by_type["Observation"];
    assert_eq!(observations.read, 4);
    assert_eq!(observations.accepted, 2);
    let invalid = &observations.left_out["invalid_json_or_structure"];
    assert_eq!(invalid.count, 2);
    assert_eq!(invalid.examples[0].resource, "line 2 of Observation.ndjson");
}

#[test]
fn gzip_files_are_read_like_plain_ones() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::create(dir.path().join("Observation-1.ndjson.gz")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    writeln!(
        gz,
        "{}",
        obs_line("a", "2026-03-01T10:00:00Z", 100.0, "2026-03-02T00:00:00Z")
    )
    .unwrap();
    gz.finish().unwrap();
    let loaded = ndjson::load(dir.path(), &ingestor(&Config::default())).unwrap();
    assert_eq!(loaded.timelines[0].values[0].value, 100.0);
}

#[test]
fn folder_without_bulk_files_is_a_clear_error() {
    let dir = write_folder(&[("notes.txt", vec!["hello".into()])]);
    let error = ndjson::load(dir.path(), &ingestor(&Config::default()))
        .err()
        .unwrap();
    assert!(
        error
            .to_string()
            .contains("holds no Patient, Condition, Procedure or Observation"),
        "{error}"
    );
}

// ---- code systems by every name (docs/rules.md "Code systems") ----

fn procedure(system: Option<&str>, code: &str) -> Value {
    let mut coding = json!({"code": code});
    if let Some(system) = system {
        coding["system"] = json!(system);
    }
    json!({
        "resourceType": "Procedure", "id": "t1", "status": "completed",
        "code": {"coding": [coding]},
        "subject": {"reference": "Patient/p1"},
        "performedDateTime": "2026-01-10"
    })
}

fn read_as(kind: ResourceType, resource: &Value, config: &Config) -> LineOutcome<'static> {
    ingestor(config)
        .read_line(kind, &resource.to_string())
        .into_owned()
}

#[test]
fn hcpcs_s2095_is_a_tare_under_every_name_of_hcpcs() {
    for system in [
        "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
        "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
        "urn:oid:2.16.840.1.113883.6.285",
    ] {
        let outcome = read_as(
            ResourceType::Procedure,
            &procedure(Some(system), "S2095"),
            &Config::default(),
        );
        assert!(
            matches!(outcome, LineOutcome::Record(Record::Tare { .. })),
            "{system}: {outcome:?}"
        );
    }
}

#[test]
fn loinc_by_its_oid_is_loinc() {
    let mut o = pivka(quantity(100.0, "mAU/mL"));
    o["code"]["coding"][0]["system"] = json!("urn:oid:2.16.840.1.113883.6.1");
    assert_eq!(accepted(&o).value, 100.0);
}

#[test]
fn a_configured_code_under_an_unknown_system_is_a_near_miss_naming_the_system() {
    let config = Config::default();
    let cases = [
        (
            ResourceType::Procedure,
            procedure(Some("http://hospital.example/cpt"), "79445"),
            "http://hospital.example/cpt",
        ),
        (
            ResourceType::Procedure,
            procedure(None, "S2095"),
            "(no system)",
        ),
        (
            ResourceType::Condition,
            json!({"resourceType": "Condition", "id": "c1",
                   "code": {"coding": [{"system": "ICD10", "code": "C22.0"}]},
                   "subject": {"reference": "Patient/p1"}}),
            "ICD10",
        ),
        (
            ResourceType::Observation,
            {
                let mut o = pivka(quantity(100.0, "mAU/mL"));
                o["code"]["coding"][0]["system"] = json!("LN");
                o
            },
            "LN",
        ),
    ];
    for (kind, resource, system) in cases {
        match read_as(kind, &resource, &config) {
            LineOutcome::Skipped(skip) => {
                assert_eq!(skip.reason, SkipReason::CodeUnderUnknownSystem, "{system}");
                assert_eq!(skip.detail.as_deref(), Some(system));
            }
            other => panic!("{system}: {other:?}"),
        }
    }
    // The same code under a known but different system is another code, not a near miss.
    assert_eq!(
        read_as(
            ResourceType::Procedure,
            &procedure(Some("http://snomed.info/sct"), "79445"),
            &config
        ),
        LineOutcome::NotRelevant(Some(CopyKey::of(ResourceType::Procedure, "t1")))
    );
}

#[test]
fn a_site_alias_makes_its_local_system_name_match() {
    let config = Config::from_toml(
        "[code_systems.aliases]\n\"http://www.ama-assn.org/go/cpt\" = [\"http://hospital.example/cpt\"]\n",
    )
    .unwrap();
    config.validate().unwrap();
    let outcome = read_as(
        ResourceType::Procedure,
        &procedure(Some("http://hospital.example/cpt"), "79445"),
        &config,
    );
    assert!(
        matches!(outcome, LineOutcome::Record(Record::Tare { .. })),
        "{outcome:?}"
    );
}

#[test]
fn a_ucum_code_under_another_system_is_not_read_as_ucum() {
    // `code` under a system that is not UCUM says nothing; the printed unit decides.
    let o = pivka(
        json!({"value": 5.0, "unit": "ng/mL", "system": "http://example.org/units", "code": "mAU/mL"}),
    );
    assert_eq!(accepted(&o).marker, Marker::Dcp);
    let o =
        pivka(json!({"value": 5.0, "system": "urn:oid:2.16.840.1.113883.6.8", "code": "mAU/mL"}));
    assert_eq!(accepted(&o).marker, Marker::Pivka2);
}

// ---- implausible dates and values ----

#[test]
fn dates_outside_the_plausible_range_are_left_out() {
    for effective in [
        "1899-12-31",
        "2027-11-02T00:00:00Z",
        "-262143-01-01",
        "0000-01-01",
    ] {
        let o = observation("34444-0", json!(effective), quantity(100.0, "mAU/mL"));
        let (reason, detail) = skipped(&o);
        assert!(
            matches!(
                reason,
                SkipReason::DateOutsidePlausibleRange | SkipReason::InvalidEffectiveTime
            ),
            "{effective}: {reason:?}"
        );
        assert_eq!(detail.as_deref(), Some(effective));
    }
    // The first and the last plausible dates (as-of 2026-11-01 + 365 days).
    for effective in ["1900-01-01", "2027-11-01"] {
        let o = observation("34444-0", json!(effective), quantity(100.0, "mAU/mL"));
        assert_eq!(accepted(&o).date.to_string(), effective);
    }
    let mut p = procedure(Some("http://www.ama-assn.org/go/cpt"), "79445");
    for (performed, reason) in [
        ("1899-12-31", SkipReason::DateOutsidePlausibleRange),
        ("-262143-01-01", SkipReason::InvalidPerformedDate),
        (
            "2026-01-10T10:00:00+99:99",
            SkipReason::InvalidPerformedDate,
        ),
    ] {
        p["performedDateTime"] = json!(performed);
        match read_as(ResourceType::Procedure, &p, &Config::default()) {
            LineOutcome::Skipped(skip) => assert_eq!(skip.reason, reason, "{performed}"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn negative_non_finite_and_absurd_values_are_implausible_and_zero_is_a_value() {
    for value in [-5.0, -0.001, 1e308] {
        let (reason, _) = skipped(&pivka(quantity(value, "mAU/mL")));
        assert_eq!(reason, SkipReason::ImplausibleValue, "{value}");
    }
    let (reason, detail) = skipped(&observation(
        "34444-0",
        json!("2026-03-01"),
        json!({"value": 1.5e8, "code": "mAU/mL"}),
    ));
    assert_eq!(reason, SkipReason::ImplausibleValue);
    assert_eq!(
        detail.as_deref(),
        Some("150000000 mAU/mL is above the plausible maximum of 100000000 (markers.pivka2.plausible_max)")
    );
    assert_eq!(accepted(&pivka(quantity(0.0, "mAU/mL"))).value, 0.0);
    // A real extreme is kept.
    assert_eq!(
        accepted(&pivka(quantity(2_340_000.0, "mAU/mL"))).value,
        2_340_000.0
    );
}

#[test]
fn a_converted_value_keeps_the_precision_of_its_source() {
    let o = observation("19176-7", json!("2026-03-01"), quantity(1300.3, "[IU]/mL"));
    assert_eq!(accepted(&o).value, 1573.363);
    let o = observation("1975-2", json!("2026-03-01"), quantity(1.2, "mg/dL"));
    assert_eq!(accepted(&o).value, 20.52);
}

// ---- ids ----

#[test]
fn ids_that_are_not_fhir_ids_are_left_out_and_never_echoed_raw() {
    let o = with(pivka(quantity(1.0, "mAU/mL")), "id", json!("é1"));
    match read(&o) {
        LineOutcome::Skipped(skip) => {
            assert_eq!(skip.reason, SkipReason::InvalidId);
            assert_eq!(skip.resource_id, None);
            assert_eq!(skip.detail.as_deref(), Some("id \"é1\""));
        }
        other => panic!("{other:?}"),
    }
    let long = "a".repeat(300);
    let o = with(
        pivka(quantity(1.0, "mAU/mL")),
        "subject",
        json!({"reference": format!("Patient/{long}")}),
    );
    assert_eq!(skipped(&o).0, SkipReason::InvalidId);
}

// ---- one resource id, one answer ----

fn obs_copy(
    id: &str,
    patient: &str,
    value: f64,
    last_updated: Option<&str>,
    version: Option<&str>,
) -> String {
    let mut o = json!({
        "resourceType": "Observation", "id": id, "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "34444-0"}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": "2026-03-01T10:00:00Z",
        "valueQuantity": {"value": value, "code": "mAU/mL"}
    });
    if let Some(t) = last_updated {
        o["meta"]["lastUpdated"] = json!(t);
    }
    if let Some(v) = version {
        o["meta"]["versionId"] = json!(v);
    }
    o.to_string()
}

fn kept_values(
    lines: Vec<String>,
) -> (Vec<(String, f64)>, tare_marker_monitor::ingest::DataQuality) {
    let dir = write_folder(&[("Observation.ndjson", lines)]);
    let loaded = ndjson::load(dir.path(), &ingestor(&Config::default())).unwrap();
    let values = loaded
        .timelines
        .iter()
        .flat_map(|t| t.values.iter().map(|v| (t.patient_id.clone(), v.value)))
        .collect();
    (values, loaded.quality)
}

#[test]
fn copies_of_one_observation_id_keep_the_newest_and_count_the_others() {
    let lines = [
        obs_copy("o1", "p1", 100.0, Some("2026-03-02T00:00:00Z"), Some("1")),
        obs_copy("o1", "p1", 120.0, Some("2026-03-02T00:00:00Z"), Some("2")),
        obs_copy("o1", "p1", 90.0, Some("2026-03-01T00:00:00Z"), Some("9")),
    ];
    for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
        let (values, quality) = kept_values(order.iter().map(|&i| lines[i].clone()).collect());
        assert_eq!(values, vec![("p1".to_string(), 120.0)], "{order:?}");
        assert_eq!(
            quality.left_out_count(ResourceType::Observation, SkipReason::SupersededCopy),
            2
        );
        assert_eq!(quality.by_type["Observation"].read, 3);
        assert_eq!(quality.by_type["Observation"].accepted, 1);
    }
}

#[test]
fn copies_with_equal_versions_resolve_by_content_whatever_the_order() {
    let a = obs_copy("o1", "p1", 100.0, None, None);
    let b = obs_copy("o1", "p1", 200.0, None, None);
    let (forward, _) = kept_values(vec![a.clone(), b.clone()]);
    let (backward, quality) = kept_values(vec![b, a]);
    assert_eq!(forward, backward);
    assert_eq!(forward.len(), 1);
    assert_eq!(
        quality.left_out_count(ResourceType::Observation, SkipReason::SupersededCopy),
        1
    );
}

#[test]
fn a_newer_copy_entered_in_error_removes_the_older_value() {
    let older = obs_copy("o1", "p1", 100.0, Some("2026-03-02T00:00:00Z"), None);
    let mut newer: Value = serde_json::from_str(&obs_copy(
        "o1",
        "p1",
        100.0,
        Some("2026-03-05T00:00:00Z"),
        None,
    ))
    .unwrap();
    newer["status"] = json!("entered-in-error");
    let (values, quality) = kept_values(vec![newer.to_string(), older]);
    assert!(values.is_empty());
    assert_eq!(
        quality.left_out_count(ResourceType::Observation, SkipReason::StatusNotAccepted),
        1
    );
    assert_eq!(
        quality.left_out_count(ResourceType::Observation, SkipReason::SupersededCopy),
        1
    );
}

#[test]
fn one_observation_id_under_two_patients_belongs_to_the_newest_copy_only() {
    let (values, _) = kept_values(vec![
        obs_copy("o1", "p2", 300.0, Some("2026-03-09T00:00:00Z"), None),
        obs_copy("o1", "p1", 100.0, Some("2026-03-02T00:00:00Z"), None),
    ]);
    assert_eq!(values, vec![("p2".to_string(), 300.0)]);
}

#[test]
fn the_same_line_twice_is_one_value_and_one_counted_copy() {
    let line = obs_copy("o1", "p1", 100.0, None, None);
    let (values, quality) = kept_values(vec![line.clone(), line]);
    assert_eq!(values.len(), 1);
    let observations = &quality.by_type["Observation"];
    assert_eq!(observations.read, 2);
    assert_eq!(observations.accepted, 1);
    assert_eq!(observations.left_out["superseded_copy"].count, 1);
}

// ---- every input file seen ----

#[test]
fn a_symlinked_file_is_read_and_broken_names_are_listed_with_their_reason() {
    use std::os::unix::fs::symlink;
    let store = tempfile::tempdir().unwrap();
    let target = store.path().join("observations-export.ndjson");
    std::fs::write(
        &target,
        obs_line("a", "2026-03-01T10:00:00Z", 100.0, "2026-03-02T00:00:00Z") + "\n",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    symlink(&target, dir.path().join("Observation.ndjson")).unwrap();
    symlink(
        dir.path().join("Observation.ndjson"),
        dir.path().join("Observation-copy.ndjson"),
    )
    .unwrap();
    symlink(
        store.path().join("missing.ndjson"),
        dir.path().join("Observation-2.ndjson"),
    )
    .unwrap();
    symlink(
        dir.path().join("Patient.ndjson"),
        dir.path().join("Patient.ndjson"),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("Condition.ndjson")).unwrap();
    std::fs::write(dir.path().join("README.txt"), "notes").unwrap();
    let loaded = ndjson::load(dir.path(), &ingestor(&Config::default())).unwrap();
    assert_eq!(loaded.timelines[0].values[0].value, 100.0);
    let ignored: Vec<(String, String)> = loaded
        .ignored_inputs
        .iter()
        .map(|i| (i.name.clone(), i.reason.clone()))
        .collect();
    let reason = |name: &str| {
        ignored
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r.as_str())
            .unwrap_or_else(|| panic!("{name} not listed: {ignored:?}"))
    };
    assert_eq!(
        reason("Observation-2.ndjson"),
        "a symbolic link whose target is missing"
    );
    assert_eq!(reason("Patient.ndjson"), "a loop of symbolic links");
    assert_eq!(reason("Condition.ndjson"), "a folder, not a file");
    assert_eq!(
        reason("README.txt"),
        "not a Bulk Data file of a type the job reads"
    );
    // Two names for one file: the file is read once (the first name in name order).
    assert_eq!(
        reason("Observation.ndjson"),
        "the same file as Observation-copy.ndjson, which is read"
    );
    assert_eq!(loaded.quality.by_type["Observation"].read, 1);
}

#[test]
fn a_folder_without_observation_data_is_an_error_naming_it() {
    let dir = write_folder(&[(
        "Patient.ndjson",
        vec![json!({"resourceType": "Patient", "id": "p1"}).to_string()],
    )]);
    let error = ndjson::load(dir.path(), &ingestor(&Config::default()))
        .err()
        .unwrap();
    assert_eq!(
        error.to_string(),
        format!(
            "source folder {} holds no Observation data (no Observation*.ndjson file with a line in it)",
            dir.path().display()
        )
    );
    std::fs::write(dir.path().join("Observation.ndjson"), "\n\n").unwrap();
    assert!(ndjson::load(dir.path(), &ingestor(&Config::default())).is_err());
}

// ---- bounded memory: long lines ----

fn long_line_folder(gzip: bool, config: &Config) -> tare_marker_monitor::source::Loaded {
    use std::io::Write;
    let mut text = Vec::new();
    writeln!(
        text,
        "{}",
        obs_line("a", "2026-03-01T10:00:00Z", 100.0, "2026-03-02T00:00:00Z")
    )
    .unwrap();
    // 3 MB without a newline, then a line end, a normal line, and a long last line with no end.
    text.extend(std::iter::repeat_n(b'x', 3 << 20));
    text.push(b'\n');
    writeln!(
        text,
        "{}",
        obs_line("b", "2026-04-01T10:00:00Z", 90.0, "2026-04-02T00:00:00Z")
    )
    .unwrap();
    text.extend(std::iter::repeat_n(b'{', 2 << 20));
    let dir = tempfile::tempdir().unwrap();
    if gzip {
        let file = std::fs::File::create(dir.path().join("Observation.ndjson.gz")).unwrap();
        let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        gz.write_all(&text).unwrap();
        gz.finish().unwrap();
    } else {
        std::fs::write(dir.path().join("Observation.ndjson"), &text).unwrap();
    }
    ndjson::load(dir.path(), &ingestor(config)).unwrap()
}

#[test]
fn lines_over_the_limit_are_skipped_with_file_and_line_and_the_rest_is_read() {
    let config = Config::from_toml("[ingest]\nmax_line_bytes = 1048576\n").unwrap();
    for gzip in [false, true] {
        let loaded = long_line_folder(gzip, &config);
        assert_eq!(loaded.timelines[0].values.len(), 2, "gzip {gzip}");
        let observations = &loaded.quality.by_type["Observation"];
        assert_eq!(observations.read, 4);
        let too_long = &observations.left_out["line_too_long"];
        assert_eq!(too_long.count, 2);
        let name = if gzip {
            "Observation.ndjson.gz"
        } else {
            "Observation.ndjson"
        };
        let places: Vec<&str> = too_long
            .examples
            .iter()
            .map(|e| e.resource.as_str())
            .collect();
        assert_eq!(
            places,
            vec![format!("line 2 of {name}"), format!("line 4 of {name}")]
        );
        assert_eq!(
            too_long.examples[0].detail.as_deref(),
            Some("longer than 1048576 bytes (ingest.max_line_bytes)")
        );
    }
}

// ---- only FHIR JSON (docs/rules.md §1.4b) ----

#[test]
fn json_forms_that_fhir_json_does_not_allow_are_malformed_and_never_read() {
    let good = pivka(quantity(100.0, "mAU/mL"));
    let mut forms: Vec<(&str, Value)> = vec![
        // An array in place of an object, at every level the job reads.
        (
            "a coding as an array",
            with(
                good.clone(),
                "code",
                json!({"coding": [["http://loinc.org", "34444-0"]]}),
            ),
        ),
        (
            "a CodeableConcept as an array",
            with(
                good.clone(),
                "code",
                json!([[["http://loinc.org", "34444-0"]]]),
            ),
        ),
        (
            "a reference as an array",
            with(good.clone(), "subject", json!(["Patient/p1"])),
        ),
        (
            "a quantity as an array",
            with(
                good.clone(),
                "valueQuantity",
                json!([100.0, null, null, "mAU/mL", "mAU/mL"]),
            ),
        ),
        (
            "meta as an array",
            with(good.clone(), "meta", json!(["1", "2026-03-02T00:00:00Z"])),
        ),
        (
            "a period as an array",
            with(
                without(good.clone(), "effectiveDateTime"),
                "effectivePeriod",
                json!(["2026-03-01"]),
            ),
        ),
        (
            "a reference range as an array",
            with(good.clone(), "referenceRange", json!([[{"value": 40}]])),
        ),
        (
            "dataAbsentReason as an array",
            with(good.clone(), "dataAbsentReason", json!(["unknown"])),
        ),
        // An object where FHIR JSON has an array, a string where it has a number.
        (
            "codings as an object",
            with(
                good.clone(),
                "code",
                json!({"coding": {"system": "http://loinc.org", "code": "34444-0"}}),
            ),
        ),
        ("meta as null", with(good.clone(), "meta", json!(null))),
        (
            "a unit as null",
            with(
                good.clone(),
                "valueQuantity",
                json!({"value": 100.0, "code": "mAU/mL", "unit": null}),
            ),
        ),
        (
            "a reference range high as text",
            with(
                good.clone(),
                "referenceRange",
                json!([{"high": {"value": "40", "unit": "mAU/mL"}}]),
            ),
        ),
        (
            "a value as a string",
            with(
                good.clone(),
                "valueQuantity",
                json!({"value": "100", "code": "mAU/mL"}),
            ),
        ),
    ];
    forms.push((
        "the whole resource as an array",
        json!(["Observation", "o1", "final", {"coding": [{"system": "http://loinc.org", "code": "34444-0"}]}]),
    ));
    assert!(matches!(read(&good), LineOutcome::Record(_)));
    for (form, resource) in forms {
        match read(&resource) {
            LineOutcome::Skipped(skip) => {
                assert_eq!(skip.reason, SkipReason::InvalidJson, "{form}")
            }
            other => panic!("{form}: read as {other:?}"),
        }
    }
}

// ---- one id, one resource: the newest copy decides, whatever it says (docs/rules.md §1.5) ----

fn every_line_config() -> Config {
    let mut config = Config::default();
    config.ingest.pass_over_irrelevant_lines = false;
    config
}

/// Loads the folder in both read modes (lines passed over, and every line parsed), checks
/// that they give the same timelines, and returns the first.
fn load_both_ways(dir: &std::path::Path) -> ndjson_loaded::Loaded {
    let fast = ndjson::load(dir, &ingestor(&Config::default())).unwrap();
    let full = ndjson::load(dir, &ingestor(&every_line_config())).unwrap();
    assert_eq!(fast.timelines, full.timelines);
    fast
}

mod ndjson_loaded {
    pub use tare_marker_monitor::source::Loaded;
}

fn tare_patient_files(extra: &[(&str, Vec<String>)]) -> tempfile::TempDir {
    let mut files: Vec<(&str, Vec<String>)> = vec![
        (
            "Patient.ndjson",
            vec![
                json!({"resourceType": "Patient", "id": "p1", "birthDate": "1950-01-01"})
                    .to_string(),
            ],
        ),
        (
            "Condition.ndjson",
            vec![condition_line("c1", "C22.0", "2026-01-01T00:00:00Z")],
        ),
        (
            "Procedure.ndjson",
            vec![procedure_line("t1", "79445", "2026-01-01T00:00:00Z")],
        ),
        (
            "Observation.ndjson",
            vec![obs_line(
                "o0",
                "2026-01-05T10:00:00Z",
                900.0,
                "2026-01-06T00:00:00Z",
            )],
        ),
    ];
    for (name, lines) in extra {
        match files.iter_mut().find(|(n, _)| n == name) {
            Some((_, existing)) => existing.extend(lines.iter().cloned()),
            None => files.push((name, lines.clone())),
        }
    }
    write_folder(&files)
}

fn observation_ids(loaded: &ndjson_loaded::Loaded) -> Vec<&str> {
    loaded.timelines[0]
        .values
        .iter()
        .map(|v| &*v.observation_id)
        .collect()
}

fn condition_line(id: &str, code: &str, last_updated: &str) -> String {
    json!({
        "resourceType": "Condition", "id": id, "meta": {"lastUpdated": last_updated},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": code}]},
        "subject": {"reference": "Patient/p1"}
    })
    .to_string()
}

fn procedure_line(id: &str, code: &str, last_updated: &str) -> String {
    json!({
        "resourceType": "Procedure", "id": id, "status": "completed",
        "meta": {"lastUpdated": last_updated},
        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": code}]},
        "subject": {"reference": "Patient/p1"}, "performedDateTime": "2026-01-10"
    })
    .to_string()
}

/// Observation `id` of code `code` (LOINC) as a line, newer with a later `last_updated`.
fn coded_obs_line(id: &str, code: &str, value: f64, last_updated: &str) -> String {
    obs_line(id, "2026-03-01T10:00:00Z", value, last_updated).replace("34444-0", code)
}

#[test]
fn a_newer_copy_recoded_to_another_test_removes_the_older_value() {
    // The correction sits in another file, read in any order, and is passed over unparsed.
    let correction = r#"{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"718-7"}]},"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2026-03-01T10:00:00Z","valueQuantity":{"value":13.0,"code":"g/dL"},"id":"o1","meta":{"lastUpdated":"2026-03-05T00:00:00Z"}}"#.to_owned();
    assert!(ingestor(&Config::default())
        .passes_over(ResourceType::Observation, correction.as_bytes())
        .is_some());
    let dir = tare_patient_files(&[
        (
            "Observation.1.ndjson",
            vec![coded_obs_line(
                "o1",
                "34444-0",
                400.0,
                "2026-03-02T00:00:00Z",
            )],
        ),
        ("Observation.0.ndjson", vec![correction]),
    ]);
    let loaded = load_both_ways(dir.path());
    assert_eq!(observation_ids(&loaded), ["o0"]);
    let observations = &loaded.quality.by_type["Observation"];
    assert_eq!(
        (
            observations.read,
            observations.not_relevant,
            observations.accepted
        ),
        (3, 1, 1)
    );
    assert_eq!(observations.left_out["superseded_copy"].count, 1);
}

#[test]
fn a_newer_malformed_or_near_miss_copy_removes_the_older_value() {
    let mut newer_malformed: Value = serde_json::from_str(&obs_line(
        "o1",
        "2026-03-01T10:00:00Z",
        400.0,
        "2026-03-05T00:00:00Z",
    ))
    .unwrap();
    newer_malformed["valueQuantity"] = json!([newer_malformed["valueQuantity"].clone()]);
    let newer_malformed = newer_malformed.to_string();
    let newer_near_miss = obs_line("o1", "2026-03-01T10:00:00Z", 400.0, "2026-03-05T00:00:00Z")
        .replace("http://loinc.org", "http://loinc.example.org");
    for (case, newer, reason) in [
        ("malformed", newer_malformed, "invalid_json_or_structure"),
        ("near miss", newer_near_miss, "code_under_unknown_system"),
    ] {
        let dir = tare_patient_files(&[(
            "Observation.ndjson",
            vec![
                newer,
                obs_line("o1", "2026-03-01T10:00:00Z", 400.0, "2026-03-02T00:00:00Z"),
            ],
        )]);
        let loaded = load_both_ways(dir.path());
        assert_eq!(observation_ids(&loaded), ["o0"], "{case}");
        let left_out = &loaded.quality.by_type["Observation"].left_out;
        assert_eq!(left_out[reason].count, 1, "{case}");
        assert_eq!(left_out["superseded_copy"].count, 1, "{case}");
    }
}

#[test]
fn an_older_copy_of_another_code_leaves_the_newer_value_in_place() {
    let dir = tare_patient_files(&[(
        "Observation.ndjson",
        vec![
            coded_obs_line("o1", "718-7", 13.0, "2026-03-01T00:00:00Z"),
            coded_obs_line("o1", "34444-0", 400.0, "2026-03-05T00:00:00Z"),
        ],
    )]);
    let loaded = load_both_ways(dir.path());
    assert_eq!(observation_ids(&loaded), ["o0", "o1"]);
    assert_eq!(loaded.timelines[0].values[1].value, 400.0);
    let observations = &loaded.quality.by_type["Observation"];
    assert_eq!((observations.accepted, observations.not_relevant), (2, 1));
    assert!(!observations.left_out.contains_key("superseded_copy"));
}

#[test]
fn a_tare_recoded_to_another_procedure_and_an_hcc_recoded_to_another_diagnosis_no_longer_count() {
    let dir = tare_patient_files(&[
        (
            "Procedure.ndjson",
            vec![procedure_line("t1", "36245", "2026-02-01T00:00:00Z")],
        ),
        (
            "Condition.ndjson",
            vec![condition_line("c1", "K74.6", "2026-02-01T00:00:00Z")],
        ),
    ]);
    let loaded = load_both_ways(dir.path());
    let timeline = &loaded.timelines[0];
    assert!(timeline.procedures.is_empty());
    assert!(!timeline.has_hcc);
    for kind in ["Procedure", "Condition"] {
        assert_eq!(
            loaded.quality.by_type[kind].left_out["superseded_copy"].count, 1,
            "{kind}"
        );
    }
}

#[test]
fn a_newer_malformed_patient_copy_removes_the_patient_resource() {
    let dir = tare_patient_files(&[(
        "Patient.ndjson",
        vec![json!({
            "resourceType": "Patient", "id": "p1", "meta": {"lastUpdated": "2026-05-01T00:00:00Z"},
            "birthDate": ["1950-01-01"]
        })
        .to_string()],
    )]);
    let loaded = load_both_ways(dir.path());
    assert!(!loaded.timelines[0].has_patient_resource);
    let patients = &loaded.quality.by_type["Patient"];
    assert_eq!(patients.left_out["superseded_copy"].count, 1);
    assert_eq!(patients.left_out["invalid_json_or_structure"].count, 1);
}

/// A patient id, other than `p1`, that falls in the other of two shards.
fn patient_in_the_other_shard() -> String {
    use tare_marker_monitor::cohort::Shard;
    let of = |id: &str| {
        (0..2)
            .find(|i| {
                Shard {
                    index: *i,
                    count: 2,
                }
                .contains(id)
            })
            .unwrap()
    };
    (0..)
        .map(|n| format!("q{n}"))
        .find(|id| of(id) != of("p1"))
        .unwrap()
}

#[test]
fn a_copy_moved_to_a_patient_of_another_shard_wins_or_loses_there_as_in_one_run() {
    use tare_marker_monitor::cohort::Shard;
    let other = patient_in_the_other_shard();
    let moved = |line: String| line.replace("Patient/p1", &format!("Patient/{other}"));
    for (case, extra) in [
        (
            "a newer result moved away",
            vec![(
                "Observation.ndjson",
                vec![moved(obs_line(
                    "o1",
                    "2026-03-01T10:00:00Z",
                    400.0,
                    "2026-03-05T00:00:00Z",
                ))],
            )],
        ),
        (
            "an older result of the other patient",
            vec![(
                "Observation.ndjson",
                vec![moved(obs_line(
                    "o1",
                    "2026-03-01T10:00:00Z",
                    400.0,
                    "2026-02-01T00:00:00Z",
                ))],
            )],
        ),
        (
            "a TARE and an HCC diagnosis moved away",
            vec![
                (
                    "Procedure.ndjson",
                    vec![moved(procedure_line("t1", "79445", "2026-02-01T00:00:00Z"))],
                ),
                (
                    "Condition.ndjson",
                    vec![moved(condition_line("c1", "C22.0", "2026-02-01T00:00:00Z"))],
                ),
            ],
        ),
    ] {
        let mut extra = extra;
        extra.push((
            "Observation.ndjson",
            vec![obs_line(
                "o1",
                "2026-03-01T10:00:00Z",
                400.0,
                "2026-03-02T00:00:00Z",
            )],
        ));
        let dir = tare_patient_files(&extra);
        let config = Config::default();
        let one_run = ndjson::load(dir.path(), &ingestor(&config)).unwrap();
        let mut sharded: Vec<_> = (0..2)
            .flat_map(|index| {
                let shard = Some(Shard { index, count: 2 });
                ndjson::load(dir.path(), &ingestor(&config).for_shard(shard))
                    .unwrap()
                    .timelines
            })
            .collect();
        sharded.sort_by(|a, b| a.patient_id.cmp(&b.patient_id));
        assert_eq!(sharded, one_run.timelines, "{case}");
    }
}
