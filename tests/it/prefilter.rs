//! The byte-level test that passes over lines which cannot matter never drops a line that
//! does: relevant resources written every legal way (key order, whitespace around `:` and `,`,
//! escaped characters inside codes and systems, the relevant coding second or later, every name
//! of every code system), irrelevant ones that mention monitored codes in text, displays, notes
//! and under other systems, spread over several files, some gzip-compressed; copies of one id
//! that were corrected (re-coded, entered in error, moved to another patient, malformed, a near
//! miss), newer or older than the original; JSON forms FHIR JSON does not allow (an array for
//! an object, an object for an array, a string for a number): what the job reads with the test
//! on equals, exactly, what it reads parsing every line in full, but for the one documented
//! difference in counting malformed lines without a monitored code.

use chrono::NaiveDate;
use proptest::prelude::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use std::io::Write;
use tare_marker_monitor::config::{Code, Config};
use tare_marker_monitor::generate::{demo_scenarios, random_patient};
use tare_marker_monitor::ingest::code_systems::BUILT_IN;
use tare_marker_monitor::ingest::{DataQuality, Ingestor, LineOutcome, ResourceType, SkipReason};
use tare_marker_monitor::source::ndjson;

fn as_of() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 1).unwrap()
}

/// Every name of the system `canonical` (the built-in table), or the name itself.
fn names_of(canonical: &str) -> Vec<&'static str> {
    BUILT_IN
        .iter()
        .find(|s| s.canonical == canonical)
        .map(|s| {
            let mut names = vec![s.canonical];
            names.extend(s.aliases);
            names
        })
        .unwrap_or_default()
}

/// A JSON string literal for `text`, each character written as itself or, at random, escaped
/// (`\uXXXX` in either case, or the short escape where one exists).
fn string(text: &str, rng: &mut ChaCha8Rng, escape_rate: f64) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        let must = matches!(c, '"' | '\\') || c.is_control();
        if !must && !rng.gen_bool(escape_rate) {
            out.push(c);
            continue;
        }
        let short = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '/' => Some("\\/"),
            '\n' => Some("\\n"),
            '\t' => Some("\\t"),
            _ => None,
        };
        match short {
            Some(s) if rng.gen_bool(0.5) => out.push_str(s),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    if rng.gen_bool(0.5) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    } else {
                        out.push_str(&format!("\\u{unit:04X}"));
                    }
                }
            }
        }
    }
    out.push('"');
    out
}

/// How one line is written.
struct Style {
    /// `resourceType` first (as most servers write it), or anywhere.
    type_first: bool,
    shuffle_keys: bool,
    /// Spaces and tabs around `:` and `,` (JSON whitespace that fits on one line).
    spaced: bool,
    escape_rate: f64,
}

fn whitespace(rng: &mut ChaCha8Rng, style: &Style) -> &'static str {
    match style.spaced {
        true => [" ", "", "\t", "  "].choose(rng).unwrap(),
        false => "",
    }
}

/// Writes `value` as one line of JSON in `style`.
fn write(value: &Value, rng: &mut ChaCha8Rng, style: &Style, top: bool, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            if style.shuffle_keys {
                keys.shuffle(rng);
            }
            if top && style.type_first {
                keys.retain(|k| *k != "resourceType");
                keys.insert(0, map.keys().find(|k| *k == "resourceType").unwrap());
            }
            out.push('{');
            out.push_str(whitespace(rng, style));
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(whitespace(rng, style));
                    out.push(',');
                    out.push_str(whitespace(rng, style));
                }
                out.push_str(&string(key, rng, style.escape_rate / 4.0));
                out.push_str(whitespace(rng, style));
                out.push(':');
                out.push_str(whitespace(rng, style));
                write(&map[*key], rng, style, false, out);
            }
            out.push_str(whitespace(rng, style));
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                    out.push_str(whitespace(rng, style));
                }
                write(item, rng, style, false, out);
            }
            out.push(']');
        }
        Value::String(text) => out.push_str(&string(text, rng, style.escape_rate)),
        other => out.push_str(&other.to_string()),
    }
}

fn random_style(rng: &mut ChaCha8Rng) -> Style {
    Style {
        type_first: rng.gen_bool(0.6),
        shuffle_keys: rng.gen_bool(0.5),
        spaced: rng.gen_bool(0.4),
        escape_rate: *[0.0, 0.0, 0.05, 0.3].choose(rng).unwrap(),
    }
}

/// Puts `coding` among others, at a random place (second or later, often).
fn among_others(rng: &mut ChaCha8Rng, coding: Value) -> Value {
    let mut codings: Vec<Value> = (0..rng.gen_range(0..3))
        .map(|n| json!({"system": "https://lab.hospital.example.org/codes", "code": format!("L{n}"), "display": "local"}))
        .collect();
    let at = rng.gen_range(0..=codings.len());
    codings.insert(at, coding);
    json!({"coding": codings, "text": "as the laboratory calls it"})
}

/// A monitored code of one of `sets`, under a random name of its system.
fn monitored(rng: &mut ChaCha8Rng, sets: &[&Vec<Code>]) -> Value {
    let code = sets.choose(rng).unwrap().choose(rng).unwrap();
    let names = names_of(&code.system);
    let system = names.choose(rng).copied().unwrap_or(&code.system);
    json!({"system": system, "code": code.code, "display": "monitored"})
}

/// A resource that mentions monitored codes where they do not count: in text, a display, a
/// note, or as a code of another system (known, or not: a near miss).
fn mentioning(rng: &mut ChaCha8Rng, kind: &str, id: &str, patient: &str, code: &str) -> Value {
    let other = json!({"system": "http://loinc.org", "code": "718-7"});
    let mut resource = json!({
        "resourceType": kind, "id": id, "status": "final",
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": "2026-05-01T10:00:00Z", "performedDateTime": "2026-05-01",
        "valueQuantity": {"value": 12.5, "unit": "g/dL"},
    });
    resource["code"] = match rng.gen_range(0..5) {
        0 => json!({"coding": [other], "text": code}),
        1 => json!({"coding": [{"system": "http://loinc.org", "code": "718-7", "display": code}]}),
        2 => {
            resource["note"] = json!([{"text": format!("compare {code} — früher höher")}]);
            json!({"coding": [other]})
        }
        3 => json!({"coding": [other, {"system": "http://snomed.info/sct", "code": code}]}),
        _ => json!({"coding": [{"system": "https://unknown.example.org/codes", "code": code}]}),
    };
    resource
}

/// An irrelevant resource of another code, written plainly: the test must pass it over.
fn plain_irrelevant(kind: &str, id: &str, patient: &str) -> String {
    format!(
        r#"{{"resourceType":"{kind}","id":"{id}","status":"final","code":{{"coding":[{{"system":"http://loinc.org","code":"718-7"}}]}},"subject":{{"reference":"Patient/{patient}"}},"note":[{{"text":"Hämolyse"}}]}}"#
    )
}

/// The same resource in a form FHIR JSON does not allow: an element the job reads (or the whole
/// resource) as an array, a list as an object, a number as a string.
fn non_fhir_form(rng: &mut ChaCha8Rng, resource: &Value) -> Value {
    let mut form = resource.clone();
    let present: Vec<&str> = [
        "code",
        "subject",
        "valueQuantity",
        "effectivePeriod",
        "birthDate",
        "meta",
    ]
    .into_iter()
    .filter(|key| form.get(*key).is_some())
    .collect();
    match (rng.gen_range(0..6), present.choose(rng)) {
        (0, _) | (_, None) => return json!([resource.clone()]),
        (1, _) if form["code"]["coding"].is_array() => {
            let codings: Vec<Value> = form["code"]["coding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| json!([c["system"].clone(), c["code"].clone()]))
                .collect();
            form["code"]["coding"] = json!(codings);
        }
        (2, _) if form["code"]["coding"].is_array() => {
            form["code"]["coding"] = form["code"]["coding"][0].clone();
        }
        (3, _) if form["valueQuantity"]["value"].is_number() => {
            form["valueQuantity"]["value"] = json!(form["valueQuantity"]["value"].to_string());
        }
        (4, Some(key)) => form[*key] = Value::Null,
        (_, Some(key)) => form[*key] = json!([form[*key].clone()]),
    }
    form
}

/// A copy of `resource` (same type and id) that says something else, dated newer or older than
/// it: re-coded to another code, entered in error, moved to another patient, malformed, a near
/// miss, or simply another value. Both get a `meta.lastUpdated`.
fn corrected_copy(
    rng: &mut ChaCha8Rng,
    kind: &str,
    resource: &mut Value,
    other_patient: &str,
) -> Value {
    let (older, newer) = ("2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z");
    let copy_is_newer = rng.gen_bool(0.7);
    let mut copy = resource.clone();
    resource["meta"] = json!({"lastUpdated": if copy_is_newer { older } else { newer }});
    copy["meta"] = json!({"lastUpdated": if copy_is_newer { newer } else { older }});
    match (kind, rng.gen_range(0..6)) {
        ("Patient", 0..=2) => return non_fhir_form(rng, &copy),
        ("Patient", _) => copy["birthDate"] = json!("1940-02-03"),
        (_, 0) => {
            copy["code"] = json!({"coding": [{"system": "http://loinc.org", "code": "718-7"}]})
        }
        (_, 1) => {
            copy["status"] = json!("entered-in-error");
            copy["verificationStatus"] = json!({"coding": [{"code": "entered-in-error"}]});
        }
        (_, 2) => copy["subject"] = json!({"reference": format!("Patient/{other_patient}")}),
        (_, 3) => return non_fhir_form(rng, &copy),
        (_, 4) => {
            if let Some(coding) = copy["code"]["coding"].as_array_mut() {
                for c in coding {
                    c["system"] = json!("https://unknown.example.org/codes");
                }
            }
        }
        _ => copy["valueQuantity"]["value"] = json!(4321.5),
    }
    copy
}

/// The lines of one case: a cohort, resources made relevant in odd ways, irrelevant ones.
fn case_lines(seed: u64) -> (Vec<(&'static str, Vec<String>)>, Vec<String>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let config = Config::default();
    let codes = &config.codes;
    let mut patients = demo_scenarios();
    for n in 0..3 {
        patients.push(random_patient(&mut rng, &format!("r{n}"), as_of(), 4));
    }
    let ids: Vec<String> = patients
        .iter()
        .flat_map(|p| &p.patients)
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    let mut by_kind: Vec<(&'static str, Vec<Value>)> = vec![
        (
            "Patient",
            patients.iter().flat_map(|p| p.patients.clone()).collect(),
        ),
        (
            "Condition",
            patients.iter().flat_map(|p| p.conditions.clone()).collect(),
        ),
        (
            "Procedure",
            patients.iter().flat_map(|p| p.procedures.clone()).collect(),
        ),
        (
            "Observation",
            patients
                .iter()
                .flat_map(|p| p.observations.clone())
                .collect(),
        ),
    ];
    // Relevant resources with the monitored coding among others, under every system name.
    let observation_sets = [
        &codes.pivka,
        &codes.afp,
        &codes.afp_l3,
        &codes.albumin,
        &codes.bilirubin,
    ];
    for (kind_at, sets) in [
        (1, vec![&codes.hcc_condition]),
        (2, vec![&codes.tare_procedure]),
        (3, observation_sets.to_vec()),
    ] {
        for resource in by_kind[kind_at].1.iter_mut() {
            if rng.gen_bool(0.5) {
                let coding = monitored(&mut rng, &sets);
                resource["code"] = among_others(&mut rng, coding);
            }
        }
    }
    // Corrected copies of about one resource in eight, and resources in forms FHIR JSON does
    // not allow.
    for (kind_at, kind) in [
        (0, "Patient"),
        (1, "Condition"),
        (2, "Procedure"),
        (3, "Observation"),
    ] {
        let mut extra = Vec::new();
        for resource in by_kind[kind_at].1.iter_mut() {
            if rng.gen_bool(0.12) {
                let other = ids.choose(&mut rng).unwrap().clone();
                extra.push(corrected_copy(&mut rng, kind, resource, &other));
            } else if rng.gen_bool(0.04) {
                extra.push(non_fhir_form(&mut rng, resource));
            }
        }
        by_kind[kind_at].1.extend(extra);
    }
    // Irrelevant resources that mention monitored codes.
    let all_codes: Vec<String> = codes
        .named()
        .iter()
        .flat_map(|(_, set)| set.iter().map(|c| c.code.clone()))
        .collect();
    for (n, (kind_at, kind)) in [(1, "Condition"), (2, "Procedure"), (3, "Observation")]
        .into_iter()
        .cycle()
        .take(30)
        .enumerate()
    {
        let code = all_codes.choose(&mut rng).unwrap();
        let patient = ids.choose(&mut rng).unwrap();
        let resource = mentioning(&mut rng, kind, &format!("mention-{n}"), patient, code);
        if rng.gen_bool(0.2) {
            by_kind[kind_at].1.push(non_fhir_form(&mut rng, &resource));
        }
        by_kind[kind_at].1.push(resource);
    }
    let mut lines: Vec<(&'static str, Vec<String>)> = by_kind
        .into_iter()
        .map(|(kind, resources)| {
            let written = resources
                .iter()
                .map(|r| {
                    let style = random_style(&mut rng);
                    let mut line = String::new();
                    write(r, &mut rng, &style, true, &mut line);
                    line
                })
                .collect();
            (kind, written)
        })
        .collect();
    // The demo's deliberately broken lines, as they are, but for the one the rule sets apart
    // (`a_malformed_resource_without_a_monitored_code_is_not_relevant_when_passed_over`).
    lines[3].1.extend(
        patients
            .iter()
            .flat_map(|p| p.raw_observation_lines.clone())
            .filter(|line| !line.contains("demo-24-data-quality-broken")),
    );
    let mut plain = Vec::new();
    for (n, (kind_at, kind)) in [(1, "Condition"), (2, "Procedure"), (3, "Observation")]
        .into_iter()
        .enumerate()
    {
        let line = plain_irrelevant(kind, &format!("plain-{n}"), ids.choose(&mut rng).unwrap());
        lines[kind_at].1.push(line.clone());
        plain.push(line);
    }
    for (_, kind_lines) in lines.iter_mut() {
        kind_lines.shuffle(&mut rng);
    }
    (lines, plain)
}

/// Writes each type's lines over one to three files, some gzip-compressed.
fn write_folder(lines: &[(&str, Vec<String>)], rng: &mut ChaCha8Rng) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (kind, kind_lines) in lines {
        let files = rng.gen_range(1..=3);
        let mut parts = vec![String::new(); files];
        for line in kind_lines {
            let part = rng.gen_range(0..files);
            parts[part].push_str(line);
            parts[part].push('\n');
        }
        for (n, part) in parts.iter().enumerate() {
            if rng.gen_bool(0.5) {
                let file = std::fs::File::create(dir.path().join(format!("{kind}.{n}.ndjson.gz")))
                    .unwrap();
                let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
                gz.write_all(part.as_bytes()).unwrap();
                gz.finish().unwrap();
            } else {
                std::fs::write(dir.path().join(format!("{kind}.{n}.ndjson")), part).unwrap();
            }
        }
    }
    dir
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn passing_over_lines_reads_exactly_what_a_full_parse_of_every_line_reads(seed in any::<u64>()) {
        let (lines, plain) = case_lines(seed);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
        let folder = write_folder(&lines, &mut rng);
        let with_test = Config::default();
        let mut every_line = Config::default();
        every_line.ingest.pass_over_irrelevant_lines = false;
        let passing_over = Ingestor::new(&with_test, as_of());
        let full_parse = Ingestor::new(&every_line, as_of());
        let full = ndjson::load(folder.path(), &full_parse).unwrap();
        let fast = ndjson::load(folder.path(), &passing_over).unwrap();
        prop_assert_eq!(&fast.timelines, &full.timelines);
        // Against a model: copies resolved first (newest wins, whatever it says), then read.
        let model = newest_copies_read(&lines, &full_parse).timelines;
        for (a, b) in full.timelines.iter().zip(&model) {
            prop_assert_eq!(a, b);
        }
        prop_assert_eq!(&full.timelines, &model);
        prop_assert_eq!(
            counted_as_parsed(fast.quality, &lines, &passing_over, &full_parse),
            without_invalid_examples(full.quality)
        );
        // Not vacuous: plainly irrelevant lines are passed over, and some relevant ones exist.
        for (line, kind) in plain.iter().zip([ResourceType::Condition, ResourceType::Procedure, ResourceType::Observation]) {
            prop_assert!(passing_over.passes_over(kind, line.as_bytes()).is_some(), "{}", line);
        }
        prop_assert!(full.timelines.iter().any(|t| !t.values.is_empty() && !t.procedures.is_empty()));
    }
}

/// The model of docs/rules.md §1.5: of the lines of one type and id, only the newest
/// (`meta.lastUpdated`, then `meta.versionId`, then the content order the job uses) is kept,
/// whatever it says; lines whose id and meta cannot be read are kept as they are. The rest is
/// read in full.
fn newest_copies_read(
    lines: &[(&str, Vec<String>)],
    full_parse: &Ingestor,
) -> tare_marker_monitor::source::Loaded {
    use std::collections::BTreeMap;
    use tare_marker_monitor::ingest::{content_fingerprint, is_fhir_id, time::parse_instant_ns};
    let mut kept: Vec<(&str, Vec<String>)> = Vec::new();
    for (kind, kind_lines) in lines {
        let mut newest: BTreeMap<String, ((i64, u64, u64), String)> = BTreeMap::new();
        let mut unranked = Vec::new();
        for line in kind_lines {
            let value: Option<Value> = serde_json::from_str(line).ok();
            let header = value.as_ref().and_then(|v| {
                let id = v.get("id")?.as_str().filter(|id| is_fhir_id(id))?;
                (v.get("resourceType")? == kind).then_some(())?;
                let meta = match v.get("meta") {
                    None => None,
                    Some(meta) => Some(meta.as_object()?),
                };
                let text = |key: &str| meta.and_then(|m| m.get(key)).and_then(Value::as_str);
                let last_updated = text("lastUpdated")
                    .and_then(parse_instant_ns)
                    .unwrap_or(i64::MIN);
                let version = text("versionId")
                    .and_then(|v| v.parse::<u64>().ok())
                    .map_or(0, |v| v.saturating_add(1));
                Some((
                    id.to_owned(),
                    (last_updated, version, content_fingerprint(line)),
                ))
            });
            match header {
                Some((id, rank)) => {
                    if newest.get(&id).is_none_or(|(best, _)| rank > *best) {
                        newest.insert(id, (rank, line.clone()));
                    }
                }
                None => unranked.push(line.clone()),
            }
        }
        unranked.extend(newest.into_values().map(|(_, line)| line));
        kept.push((kind, unranked));
    }
    let dir = tempfile::tempdir().unwrap();
    for (kind, kind_lines) in &kept {
        std::fs::write(
            dir.path().join(format!("{kind}.ndjson")),
            kind_lines.join("\n") + "\n",
        )
        .unwrap();
    }
    ndjson::load(dir.path(), full_parse).unwrap()
}

/// The counts of a read that passed lines over, with the one documented difference taken out:
/// a malformed line passed over counts as not relevant; parsed, it counts as invalid.
fn counted_as_parsed(
    mut quality: DataQuality,
    lines: &[(&str, Vec<String>)],
    passing_over: &Ingestor,
    full_parse: &Ingestor,
) -> DataQuality {
    for (kind_name, kind_lines) in lines {
        let kind = ResourceType::from_name(kind_name).unwrap();
        let malformed_passed_over = kind_lines
            .iter()
            .filter(|line| passing_over.passes_over(kind, line.as_bytes()).is_some())
            .filter(|line| {
                matches!(full_parse.read_line(kind, line), LineOutcome::Skipped(skip) if skip.reason == SkipReason::InvalidJson)
            })
            .count() as u64;
        if malformed_passed_over > 0 {
            let counts = quality.by_type.get_mut(kind.name()).unwrap();
            counts.not_relevant -= malformed_passed_over;
            counts
                .left_out
                .entry(SkipReason::InvalidJson.key())
                .or_default()
                .count += malformed_passed_over;
        }
    }
    without_invalid_examples(quality)
}

/// The counts without the examples of invalid lines (which lines are examples differs).
fn without_invalid_examples(mut quality: DataQuality) -> DataQuality {
    for counts in quality.by_type.values_mut() {
        if let Some(invalid) = counts.left_out.get_mut(SkipReason::InvalidJson.key()) {
            invalid.examples.clear();
        }
    }
    quality
}

/// The one difference docs/rules.md names: a resource of no monitored code whose other
/// elements are malformed (a value of the wrong type) is not relevant when passed over, and
/// invalid when parsed in full; it could not have given a value either way.
#[test]
fn a_malformed_resource_without_a_monitored_code_is_not_relevant_when_passed_over() {
    let line = r#"{"resourceType":"Observation","id":"x","status":"final","valueQuantity":{"value":"lots"}}"#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Observation.ndjson"), format!("{line}\n")).unwrap();
    let mut every_line = Config::default();
    every_line.ingest.pass_over_irrelevant_lines = false;
    let counts = |config: &Config| {
        let loaded = ndjson::load(dir.path(), &Ingestor::new(config, as_of())).unwrap();
        let counts = loaded.quality.by_type["Observation"].clone();
        (
            counts.read,
            counts.not_relevant,
            counts.left_out.keys().copied().collect::<Vec<_>>(),
        )
    };
    assert_eq!(counts(&Config::default()), (1, 1, vec![]));
    assert_eq!(
        counts(&every_line),
        (1, 0, vec!["invalid_json_or_structure"])
    );
}
