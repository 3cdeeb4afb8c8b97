//! Every data-quality case of RULES.md §1 "Which Observations count", one line of FHIR JSON each.

use serde_json::{json, Value};
use tare_marker_monitor::config::Config;
use tare_marker_monitor::domain::{Censoring, Marker, MarkerValue};
use tare_marker_monitor::ingest::{Ingestor, LineOutcome, Record, ResourceType, SkipReason};
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

fn read(resource: &Value) -> LineOutcome<'static> {
    Ingestor::new(&Config::default())
        .read_line(ResourceType::Observation, &resource.to_string())
        .into_owned()
}

fn accepted(resource: &Value) -> MarkerValue {
    match read(resource) {
        LineOutcome::Record(Record::Value { value, patient_id }) => {
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
    match Ingestor::new(&config).read_line(ResourceType::Observation, &o.to_string()) {
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
    assert_eq!(accepted(&o).reference_high, Some(35.0));
    let o = with(
        pivka(quantity(50.0, "mAU/mL")),
        "referenceRange",
        json!([{"high": {"value": 7.5, "code": "ng/mL"}}]),
    );
    assert_eq!(accepted(&o).reference_high, None);
}

#[test]
fn unmonitored_code_is_counted_apart() {
    let o = observation("718-7", json!("2026-03-01"), quantity(12.0, "g/dL"));
    assert_eq!(skipped(&o).0, SkipReason::NotMonitoredCode);
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
    let loaded = ndjson::load(dir.path(), &Ingestor::new(&Config::default())).unwrap();
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
    let loaded = ndjson::load(dir.path(), &Ingestor::new(&Config::default())).unwrap();
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
    let loaded = ndjson::load(dir.path(), &Ingestor::new(&Config::default())).unwrap();
    assert_eq!(loaded.timelines[0].values[0].value, 100.0);
}

#[test]
fn folder_without_bulk_files_is_a_clear_error() {
    let dir = write_folder(&[("notes.txt", vec!["hello".into()])]);
    let error = ndjson::load(dir.path(), &Ingestor::new(&Config::default()))
        .err()
        .unwrap();
    assert!(
        error
            .to_string()
            .contains("holds no Patient, Condition, Procedure or Observation"),
        "{error}"
    );
}
