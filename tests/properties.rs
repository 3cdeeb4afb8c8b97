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
use tare_marker_monitor::generate::{demo_scenarios, random_patient};
use tare_marker_monitor::ingest::Ingestor;
use tare_marker_monitor::run::evaluate_cohort;
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
