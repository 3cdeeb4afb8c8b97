//! Properties of the whole read-and-evaluate path: the findings do not depend on the order of
//! the lines, on how the resources are split over files, or on values dated after the as-of date.

use chrono::NaiveDate;
use proptest::prelude::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use tare_marker_monitor::config::Config;
use tare_marker_monitor::domain::PatientFindings;
use tare_marker_monitor::evaluate::evaluate_cohort;
use tare_marker_monitor::generate::{demo_scenarios, random_patient};
use tare_marker_monitor::ingest::Ingestor;
use tare_marker_monitor::source::ndjson;

fn as_of() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 1).unwrap()
}

/// (file type, lines) of the demo scenarios plus `extra` random patients.
fn cohort(seed: u64, extra: usize) -> Vec<(&'static str, Vec<String>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut patients = demo_scenarios();
    for n in 0..extra {
        patients.push(random_patient(&mut rng, &format!("r{n}"), as_of(), 6));
    }
    let lines = |values: Vec<&Value>| values.iter().map(|v| v.to_string()).collect::<Vec<_>>();
    let mut observations = lines(patients.iter().flat_map(|p| &p.observations).collect());
    observations.extend(
        patients
            .iter()
            .flat_map(|p| p.raw_observation_lines.clone()),
    );
    vec![
        (
            "Patient",
            lines(patients.iter().flat_map(|p| &p.patients).collect()),
        ),
        (
            "Condition",
            lines(patients.iter().flat_map(|p| &p.conditions).collect()),
        ),
        (
            "Procedure",
            lines(patients.iter().flat_map(|p| &p.procedures).collect()),
        ),
        ("Observation", observations),
    ]
}

/// Writes each type's lines round-robin over `files_per_type` files, and evaluates the folder.
fn evaluate(files: &[(&str, Vec<String>)], files_per_type: usize) -> Vec<PatientFindings> {
    let dir = tempfile::tempdir().unwrap();
    for (kind, lines) in files {
        let mut parts = vec![String::new(); files_per_type];
        for (i, line) in lines.iter().enumerate() {
            parts[i % files_per_type].push_str(line);
            parts[i % files_per_type].push('\n');
        }
        for (n, part) in parts.iter().enumerate() {
            std::fs::write(dir.path().join(format!("{kind}-{n:02}.ndjson")), part).unwrap();
        }
    }
    let config = Config::default();
    let loaded = ndjson::load(dir.path(), &Ingestor::new(&config, as_of())).unwrap();
    evaluate_cohort(&loaded.timelines, &config, as_of())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn result_does_not_depend_on_input_order(seed in any::<u64>(), shuffle in any::<u64>()) {
        let files = cohort(seed, 6);
        let expected = evaluate(&files, 1);
        let mut rng = ChaCha8Rng::seed_from_u64(shuffle);
        let mut shuffled = files.clone();
        shuffled.shuffle(&mut rng);
        for (_, lines) in &mut shuffled {
            lines.shuffle(&mut rng);
        }
        prop_assert_eq!(evaluate(&shuffled, 1), expected);
    }

    #[test]
    fn splitting_resources_over_files_changes_nothing(seed in any::<u64>(), parts in 2usize..6) {
        let files = cohort(seed, 6);
        prop_assert_eq!(evaluate(&files, parts), evaluate(&files, 1));
    }

    #[test]
    fn values_dated_after_as_of_change_nothing(seed in any::<u64>(), added in 1usize..40) {
        let files = cohort(seed, 6);
        let expected = evaluate(&files, 1);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
        let mut with_future = files.clone();
        let patient_ids: Vec<String> = files[0].1.iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].as_str().unwrap().to_owned())
            .collect();
        let codes = [("34444-0", "mAU/mL"), ("1834-1", "ng/mL"), ("1975-2", "umol/L"), ("1751-7", "g/L"), ("42332-7", "%")];
        for n in 0..added {
            let (code, unit) = codes[rng.gen_range(0..codes.len())];
            let day = as_of() + chrono::Duration::days(rng.gen_range(1..400));
            let patient = &patient_ids[rng.gen_range(0..patient_ids.len())];
            let line = json!({
                "resourceType": "Observation", "id": format!("future-{n}"), "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                "subject": {"reference": format!("Patient/{patient}")},
                "effectiveDateTime": format!("{day}T10:00:00Z"),
                "valueQuantity": {"value": rng.gen_range(1.0..100000.0), "code": unit}
            });
            with_future[3].1.push(line.to_string());
        }
        prop_assert_eq!(evaluate(&with_future, 1), expected);
    }
}

// ---- hostile input: never a panic, every line counted ----

/// Every line read is accepted, not relevant, or left out under exactly one reason.
fn assert_every_line_counted(
    quality: &tare_marker_monitor::ingest::DataQuality,
    lines: &[(&str, u64)],
) {
    for (kind, non_blank) in lines {
        let counts = quality.by_type.get(kind).cloned().unwrap_or_default();
        let left_out: u64 = counts.left_out.values().map(|r| r.count).sum();
        assert_eq!(counts.read, *non_blank, "{kind}: read");
        assert_eq!(
            counts.accepted + counts.not_relevant + left_out,
            counts.read,
            "{kind}: {counts:?}"
        );
    }
}

/// JSON values shaped like FHIR resources, with anything at any place: the keys the job reads
/// (and others), monitored codes, extreme numbers, odd strings, wrong types.
fn resource_like() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<i64>().prop_map(Value::from),
        prop_oneof![
            Just("Observation".to_string()),
            Just("Patient/p1".to_string()),
            Just("34444-0".to_string()),
            Just("http://loinc.org".to_string()),
            Just("urn:oid:2.16.840.1.113883.6.1".to_string()),
            Just("mAU/mL".to_string()),
            Just("final".to_string()),
            Just("2026-03-01".to_string()),
            Just("-262143-01-01".to_string()),
            Just("<2.0 ng/mL".to_string()),
            Just("completed".to_string()),
            ".{0,12}",
        ]
        .prop_map(Value::from),
    ];
    let keys = prop_oneof![
        Just("resourceType"),
        Just("id"),
        Just("meta"),
        Just("lastUpdated"),
        Just("versionId"),
        Just("status"),
        Just("code"),
        Just("coding"),
        Just("system"),
        Just("subject"),
        Just("reference"),
        Just("effectiveDateTime"),
        Just("effectivePeriod"),
        Just("start"),
        Just("valueQuantity"),
        Just("value"),
        Just("unit"),
        Just("comparator"),
        Just("valueString"),
        Just("referenceRange"),
        Just("high"),
        Just("performedDateTime"),
        Just("birthDate"),
        Just("verificationStatus"),
        Just("note"),
        Just("text"),
        Just("other"),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..6).prop_map(|map| {
                Value::Object(map.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

fn load_lines(files: &[(&str, Vec<Vec<u8>>)]) -> tare_marker_monitor::source::Loaded {
    let dir = tempfile::tempdir().unwrap();
    for (kind, lines) in files {
        let mut text = Vec::new();
        for line in lines {
            text.extend_from_slice(line);
            text.push(b'\n');
        }
        std::fs::write(dir.path().join(format!("{kind}.ndjson")), text).unwrap();
    }
    let config = Config::from_toml("[ingest]\nmax_line_bytes = 200\n").unwrap();
    ndjson::load(dir.path(), &Ingestor::new(&config, as_of())).unwrap()
}

fn non_blank(lines: &[Vec<u8>]) -> u64 {
    lines.iter().filter(|l| !l.trim_ascii().is_empty()).count() as u64
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_bytes_never_panic_and_every_line_is_counted(
        lines in prop::collection::vec(prop::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..300), 1..40)
    ) {
        // An Observation line that is sure to be read, so the folder is never empty of them.
        let mut observations = vec![br#"{"resourceType":"Observation"}"#.to_vec()];
        observations.extend(lines.iter().cloned());
        let loaded = load_lines(&[("Observation", observations.clone()), ("Procedure", lines.clone())]);
        assert_every_line_counted(&loaded.quality, &[
            ("Observation", non_blank(&observations)),
            ("Procedure", non_blank(&lines)),
        ]);
    }

    #[test]
    fn arbitrary_json_never_panics_and_every_resource_is_counted(
        resources in prop::collection::vec(resource_like(), 1..30)
    ) {
        let lines: Vec<Vec<u8>> = resources.iter().map(|r| r.to_string().into_bytes()).collect();
        let files: Vec<(&str, Vec<Vec<u8>>)> = ["Patient", "Condition", "Procedure", "Observation"]
            .into_iter()
            .map(|kind| (kind, lines.clone()))
            .collect();
        let loaded = load_lines(&files);
        let expected: Vec<(&str, u64)> = files.iter().map(|(k, l)| (*k, non_blank(l))).collect();
        assert_every_line_counted(&loaded.quality, &expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn copies_of_one_id_give_one_answer_whatever_the_order_and_the_threads(
        seed in any::<u64>(), shuffle in any::<u64>(), copies in 1usize..20
    ) {
        let mut files = cohort(seed, 6);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xc091e5);
        // Copies of existing Observations with other values, some with a newer lastUpdated or
        // versionId, some identical in both.
        // (The demo scenarios hold deliberately broken lines: only sound ones are copied.)
        let sound: Vec<Value> = files[3].1.iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
        for _ in 0..copies {
            let original = sound.choose(&mut rng).unwrap();
            let mut copy = original.clone();
            if copy["valueQuantity"]["value"].is_number() {
                copy["valueQuantity"]["value"] = json!(rng.gen_range(1.0..50000.0));
            }
            match rng.gen_range(0..3) {
                0 => copy["meta"] = json!({"lastUpdated": "2026-10-30T00:00:00Z"}),
                1 => copy["meta"] = json!({"versionId": rng.gen_range(1..9).to_string()}),
                _ => {}
            }
            files[3].1.push(copy.to_string());
        }
        let expected = evaluate(&files, 1);
        let mut shuffled = files.clone();
        let mut rng = ChaCha8Rng::seed_from_u64(shuffle);
        for (_, lines) in &mut shuffled {
            lines.shuffle(&mut rng);
        }
        prop_assert_eq!(&evaluate(&shuffled, 3), &expected);
        let single = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        prop_assert_eq!(single.install(|| evaluate(&shuffled, 2)), expected);
    }
}
