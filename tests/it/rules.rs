//! Hand-computed cases for every rule and boundary of docs/rules.md §1-§3, on the pure core.

use crate::helpers::*;

use tare_marker_monitor::config::Config;
use tare_marker_monitor::domain::{Censoring, FlagCode, LeftOutReason, Marker, Response, Severity};
use tare_marker_monitor::format::{csv_number, csv_percent};

fn close(actual: f64, expected: f64) {
    assert!((actual - expected).abs() < 1e-9, "{actual} != {expected}");
}

// ---- the seed case ----

#[test]
fn seed_case_88000_to_6088_four_months_after_is_partial_response_not_complete() {
    let f = Case::new()
        .pivka(-7, 88000.0)
        .pivka(122, 6088.0)
        .as_of_day(130);
    let c = course(&f, Marker::Pivka2);
    assert_eq!(csv_percent(c.pct_change.unwrap()), "-93.1");
    assert_eq!(c.uln, 40.0);
    assert_eq!(c.response, Response::Partial);
    assert_eq!(flag_codes(&f), vec!["incomplete-response"]);
    assert_eq!(
        flag(&f, FlagCode::IncompleteResponse).unwrap().severity,
        Severity::Low
    );
}

// ---- response boundaries ----

#[test]
fn exactly_50_percent_fall_is_partial_response() {
    let f = Case::new().pivka(-1, 1000.0).pivka(30, 500.0).as_of_day(40);
    assert_eq!(course(&f, Marker::Pivka2).response, Response::Partial);
}

#[test]
fn just_under_50_percent_fall_is_stable_disease() {
    let f = Case::new()
        .pivka(-1, 1000.0)
        .pivka(30, 500.01)
        .as_of_day(40);
    assert_eq!(course(&f, Marker::Pivka2).response, Response::Stable);
}

#[test]
fn value_equal_to_uln_is_complete_response() {
    let f = Case::new().pivka(-1, 1000.0).pivka(30, 40.0).as_of_day(40);
    assert_eq!(course(&f, Marker::Pivka2).response, Response::Complete);
    let f = Case::new().pivka(-1, 1000.0).pivka(30, 40.01).as_of_day(40);
    assert_eq!(course(&f, Marker::Pivka2).response, Response::Partial);
}

#[test]
fn baseline_equal_to_uln_is_not_evaluable() {
    let f = Case::new().pivka(-1, 40.0).pivka(30, 10.0).as_of_day(40);
    assert_eq!(course(&f, Marker::Pivka2).response, Response::NotEvaluable);
}

#[test]
fn no_baseline_or_no_post_value_is_not_evaluable() {
    let f = Case::new().pivka(30, 500.0).as_of_day(40);
    assert_eq!(course(&f, Marker::Pivka2).response, Response::NotEvaluable);
    let f = Case::new().pivka(-1, 500.0).as_of_day(40);
    let c = course(&f, Marker::Pivka2);
    assert_eq!((c.response, c.n_post), (Response::NotEvaluable, 0));
}

#[test]
fn uln_comes_from_reference_range_of_the_latest_value() {
    let f = Case::new()
        .pivka(-1, 1000.0)
        .value_with(Marker::Pivka2, 30, 36.0, Censoring::Exact, Some(35.0))
        .as_of_day(40);
    let c = course(&f, Marker::Pivka2);
    assert_eq!(c.uln, 35.0);
    assert_eq!(c.response, Response::Partial);
}

#[test]
fn censored_value_is_used_as_the_number_it_carries() {
    let f = Case::new()
        .afp(-1, 100.0)
        .value_with(Marker::Afp, 30, 2.0, Censoring::Low, None)
        .as_of_day(40);
    let c = course(&f, Marker::Afp);
    assert_eq!(c.latest.as_ref().unwrap().value, 2.0);
    assert_eq!(c.latest.as_ref().unwrap().censoring, Censoring::Low);
    assert_eq!(c.response, Response::Complete);
}

// ---- marker-rise ----

#[test]
fn exactly_40_percent_rise_from_nadir_is_a_rise() {
    let f = Case::new()
        .pivka(-1, 1000.0)
        .pivka(30, 100.0)
        .pivka(60, 140.0)
        .as_of_day(70);
    let rise = flag(&f, FlagCode::MarkerRise).expect("marker-rise");
    assert_eq!(rise.severity, Severity::Moderate);
    assert_eq!(
        csv_percent(course(&f, Marker::Pivka2).rise_from_nadir_pct.unwrap()),
        "40.0"
    );
}

#[test]
fn just_under_40_percent_rise_is_no_rise() {
    let f = Case::new()
        .pivka(-1, 1000.0)
        .pivka(30, 100.0)
        .pivka(60, 139.99)
        .as_of_day(70);
    assert!(flag(&f, FlagCode::MarkerRise).is_none());
}

#[test]
fn rise_to_exactly_uln_is_no_rise() {
    let f = Case::new()
        .pivka(-1, 30.0)
        .pivka(30, 20.0)
        .pivka(60, 40.0)
        .as_of_day(70);
    assert!(flag(&f, FlagCode::MarkerRise).is_none());
    let f = Case::new()
        .pivka(-1, 30.0)
        .pivka(30, 20.0)
        .pivka(60, 41.0)
        .as_of_day(70);
    assert_eq!(
        flag(&f, FlagCode::MarkerRise).unwrap().severity,
        Severity::Moderate
    );
    // A marker that was not raised cannot respond, but can rise.
    assert_eq!(course(&f, Marker::Pivka2).response, Response::NotEvaluable);
}

#[test]
fn rise_after_nadir_confirmed_by_second_value_is_progression_and_high() {
    let f = Case::new()
        .pivka(-3, 5000.0)
        .pivka(30, 900.0)
        .pivka(120, 1400.0)
        .pivka(180, 2100.0)
        .as_of_day(190);
    let c = course(&f, Marker::Pivka2);
    assert_eq!(c.response, Response::Progression);
    assert_eq!(csv_percent(c.rise_from_nadir_pct.unwrap()), "133.3");
    let rise = flag(&f, FlagCode::MarkerRise).unwrap();
    assert_eq!(rise.severity, Severity::High);
    assert_eq!(rise.identified_date, date("2026-07-09"));
    let evidence: Vec<&str> = rise
        .evidence_observation_ids
        .iter()
        .map(|id| &**id)
        .collect();
    assert_eq!(evidence, vec!["obs-002", "obs-003", "obs-004"]);
    assert_eq!(
        rise.detail,
        "PIVKA-II rose 133.3% from its lowest value so far (reference nadir), 900 mAU/mL after TARE (2026-02-09), to 2,100 mAU/mL after TARE (2026-07-09), confirmed by the value before it, 1,400 mAU/mL after TARE (2026-05-10), above the upper limit of normal of 40 mAU/mL; TARE on 2026-01-10. Confirm with contrast CT/MRI."
    );
}

#[test]
fn rise_from_a_baseline_reference_nadir_says_so_in_words_and_in_the_course() {
    // The post values never fell below the baseline: the rise is measured from the baseline,
    // while the nadir (the lowest value after TARE) is 35.
    let f = Case::new()
        .pivka(-5, 30.0)
        .pivka(30, 35.0)
        .pivka(60, 180.0)
        .as_of_day(70);
    let c = course(&f, Marker::Pivka2);
    assert_eq!(
        c.nadir.as_ref().map(|n| (n.value, n.date)),
        Some((35.0, date("2026-02-09")))
    );
    assert_eq!(
        c.reference_nadir.as_ref().map(|n| (n.value, n.date)),
        Some((30.0, date("2026-01-05")))
    );
    assert_eq!(csv_percent(c.rise_from_nadir_pct.unwrap()), "500.0");
    assert_eq!(
        flag(&f, FlagCode::MarkerRise).unwrap().detail,
        "PIVKA-II rose 500.0% from its lowest value so far (reference nadir), 30 mAU/mL at \
         baseline before TARE (2026-01-05), to 180 mAU/mL after TARE (2026-03-11), not yet \
         confirmed by a second raised value, above the upper limit of normal of 40 mAU/mL; TARE \
         on 2026-01-10. Confirm with contrast CT/MRI."
    );
}

#[test]
fn rise_from_a_reference_nadir_of_zero_gives_the_two_values_and_no_percentage() {
    let f = Case::new()
        .pivka(-5, 1000.0)
        .pivka(30, 0.0)
        .pivka(60, 180.0)
        .as_of_day(70);
    let c = course(&f, Marker::Pivka2);
    assert_eq!(c.rise_from_nadir_pct, None);
    assert_eq!(
        flag(&f, FlagCode::MarkerRise).unwrap().detail,
        "PIVKA-II rose from its lowest value so far (reference nadir), 0 mAU/mL after TARE \
         (2026-02-09), to 180 mAU/mL after TARE (2026-03-11), not yet confirmed by a second \
         raised value, above the upper limit of normal of 40 mAU/mL; TARE on 2026-01-10. \
         Confirm with contrast CT/MRI."
    );
}

#[test]
fn rise_whose_previous_value_is_the_nadir_is_unconfirmed() {
    let f = Case::new()
        .pivka(-2, 3000.0)
        .pivka(30, 500.0)
        .pivka(75, 800.0)
        .as_of_day(80);
    assert_eq!(
        flag(&f, FlagCode::MarkerRise).unwrap().severity,
        Severity::Moderate
    );
    assert_eq!(course(&f, Marker::Pivka2).response, Response::Partial);
}

#[test]
fn confirmed_rise_takes_precedence_over_partial_response() {
    // Latest 60 would be PR against 1000, but the rise from 20 is confirmed: PD.
    let f = Case::new()
        .pivka(-1, 1000.0)
        .pivka(30, 20.0)
        .pivka(60, 50.0)
        .pivka(90, 60.0)
        .as_of_day(100);
    assert_eq!(course(&f, Marker::Pivka2).response, Response::Progression);
}

// ---- nadir, percentages, half-life, next due date ----

#[test]
fn nadir_tie_takes_the_earliest() {
    let f = Case::new()
        .pivka(-1, 1000.0)
        .pivka(30, 100.0)
        .pivka(60, 100.0)
        .pivka(90, 150.0)
        .as_of_day(95);
    let c = course(&f, Marker::Pivka2);
    assert_eq!(c.nadir.as_ref().unwrap().date, date("2026-02-09"));
    assert_eq!(c.reference_nadir.as_ref().unwrap().date, date("2026-02-09"));
}

#[test]
fn zero_baseline_leaves_percentages_empty() {
    let f = Case::new()
        .value(Marker::AfpL3, -2, 0.0)
        .value(Marker::AfpL3, 30, 4.0)
        .as_of_day(40);
    let c = course(&f, Marker::AfpL3);
    assert_eq!(c.pct_change, None);
    assert_eq!(c.rise_from_nadir_pct, None);
    assert_eq!(c.response, Response::NotEvaluable);
}

#[test]
fn halflife_of_a_halving_every_ten_days_is_ten_days() {
    let f = Case::new()
        .pivka(0, 1000.0)
        .pivka(10, 500.0)
        .pivka(20, 250.0)
        .pivka(30, 300.0)
        .as_of_day(35);
    close(course(&f, Marker::Pivka2).halflife_days.unwrap(), 10.0);
}

#[test]
fn halflife_needs_a_fall() {
    let f = Case::new().pivka(-1, 100.0).pivka(20, 200.0).as_of_day(35);
    // The nadir is the only post value and it is higher: the slope is positive.
    assert_eq!(course(&f, Marker::Pivka2).halflife_days, None);
}

#[test]
fn next_due_is_30_days_within_day_90_then_90_days() {
    let f = Case::new().pivka(-1, 100.0).pivka(90, 50.0).as_of_day(95);
    assert_eq!(course(&f, Marker::Pivka2).next_due_date, date("2026-05-10"));
    let f = Case::new().pivka(-1, 100.0).pivka(91, 50.0).as_of_day(95);
    assert_eq!(course(&f, Marker::Pivka2).next_due_date, date("2026-07-10"));
    let f = Case::new().pivka(-1, 100.0).as_of_day(5);
    assert_eq!(course(&f, Marker::Pivka2).next_due_date, date("2026-02-09"));
}

// ---- episodes, windows, as-of ----

#[test]
fn tare_90_days_after_index_joins_the_episode() {
    let f = Case::new().tare(90).pivka(-1, 100.0).as_of_day(100);
    let e = only_episode(&f);
    assert_eq!(e.procedure_ids, vec!["tare-1", "tare-2"]);
}

#[test]
fn tare_91_days_after_index_starts_a_new_episode() {
    let f = Case::new().tare(91).pivka(-1, 100.0).as_of_day(100);
    let indexes: Vec<_> = f.episodes.iter().map(|e| e.index_date).collect();
    assert_eq!(indexes, vec![date("2026-01-10"), date("2026-04-11")]);
}

#[test]
fn baseline_window_is_60_days_and_includes_the_tare_day() {
    let f = Case::new().pivka(-60, 500.0).pivka(30, 100.0).as_of_day(40);
    assert_eq!(
        course(&f, Marker::Pivka2).baseline.as_ref().unwrap().value,
        500.0
    );
    let f = Case::new().pivka(-61, 500.0).pivka(30, 100.0).as_of_day(40);
    assert!(course(&f, Marker::Pivka2).baseline.is_none());
    let f = Case::new()
        .pivka(-5, 900.0)
        .pivka(0, 500.0)
        .pivka(30, 100.0)
        .as_of_day(40);
    let c = course(&f, Marker::Pivka2);
    assert_eq!(c.baseline.as_ref().unwrap().value, 500.0);
    assert_eq!(c.n_post, 1);
}

#[test]
fn post_window_ends_the_day_before_the_next_episode() {
    let f = Case::new()
        .tare(200)
        .pivka(-1, 1000.0)
        .pivka(150, 300.0)
        .pivka(199, 200.0)
        .pivka(200, 180.0)
        .pivka(230, 90.0)
        .as_of_day(240);
    assert_eq!(f.episodes.len(), 2);
    let first = &f.episodes[0].courses[0];
    assert_eq!(first.n_post, 2);
    assert_eq!(first.latest.as_ref().unwrap().value, 200.0);
    let second = &f.episodes[1].courses[0];
    assert_eq!(second.baseline.as_ref().unwrap().value, 180.0);
    assert_eq!(second.n_post, 1);
}

#[test]
fn values_after_as_of_are_ignored() {
    let f = Case::new()
        .pivka(-1, 1000.0)
        .pivka(30, 400.0)
        .pivka(41, 5000.0)
        .as_of_day(40);
    let c = course(&f, Marker::Pivka2);
    assert_eq!((c.n_post, c.response), (1, Response::Partial));
}

#[test]
fn episode_after_as_of_is_ignored_and_counted() {
    let f = Case::new().tare(200).pivka(-1, 1000.0).as_of_day(150);
    assert_eq!(f.episodes.len(), 1);
    assert_eq!(f.episodes_after_as_of, 1);
    let f = Case::new().pivka(-1, 1000.0).as_of_day(-1);
    assert_eq!(f.left_out, Some(LeftOutReason::AllEpisodesAfterAsOf));
}

// ---- eligibility ----

#[test]
fn eighteenth_birthday_on_tare_day_is_eligible() {
    let mut case = Case::new().pivka(-1, 100.0);
    case.timeline.birth_date = Some(date("2008-01-10"));
    assert_eq!(only_episode(&case.as_of_day(5)).age_years, Some(18));
    case.timeline.birth_date = Some(date("2008-01-11"));
    let f = case.as_of_day(5);
    assert_eq!(f.left_out, Some(LeftOutReason::UnderMinimumAge));
    assert_eq!(f.episodes_under_minimum_age, 1);
}

#[test]
fn unknown_birth_date_is_evaluated_and_noted() {
    let mut case = Case::new().pivka(-1, 100.0);
    case.timeline.birth_date = None;
    let f = case.as_of_day(5);
    assert!(f.birth_date_unknown);
    assert_eq!(only_episode(&f).age_years, None);
}

#[test]
fn missing_hcc_leaves_patient_out_unless_configured() {
    let mut case = Case::new().pivka(-1, 100.0);
    case.timeline.has_hcc = false;
    assert_eq!(
        case.as_of_day(5).left_out,
        Some(LeftOutReason::NoHccCondition)
    );
    let mut config = Config::default();
    config.eligibility.require_hcc = false;
    assert_eq!(case.evaluate(5, &config).left_out, None);
}

#[test]
fn patient_without_patient_resource_is_left_out() {
    let mut case = Case::new().pivka(-1, 100.0);
    case.timeline.has_patient_resource = false;
    assert_eq!(
        case.as_of_day(5).left_out,
        Some(LeftOutReason::NoPatientResource)
    );
}

// ---- marker-plateau ----

#[test]
fn plateau_above_1000_over_28_days_is_flagged() {
    let f = Case::new()
        .pivka(-1, 20000.0)
        .pivka(30, 1800.0)
        .pivka(58, 2000.0)
        .as_of_day(60);
    assert_eq!(
        flag(&f, FlagCode::MarkerPlateau).unwrap().severity,
        Severity::Moderate
    );
}

#[test]
fn plateau_values_27_days_apart_are_not_a_plateau() {
    let f = Case::new()
        .pivka(-1, 20000.0)
        .pivka(30, 1800.0)
        .pivka(57, 2000.0)
        .as_of_day(60);
    assert!(flag(&f, FlagCode::MarkerPlateau).is_none());
}

#[test]
fn plateau_change_of_exactly_20_percent_counts() {
    let f = Case::new()
        .pivka(-1, 20000.0)
        .pivka(30, 1800.0)
        .pivka(60, 2160.0)
        .as_of_day(60);
    assert!(flag(&f, FlagCode::MarkerPlateau).is_some());
    let f = Case::new()
        .pivka(-1, 20000.0)
        .pivka(30, 1800.0)
        .pivka(60, 2161.0)
        .as_of_day(60);
    assert!(flag(&f, FlagCode::MarkerPlateau).is_none());
}

#[test]
fn plateau_needs_values_above_1000_and_only_applies_to_pivka() {
    let f = Case::new()
        .pivka(-1, 20000.0)
        .pivka(30, 1000.0)
        .pivka(60, 1100.0)
        .as_of_day(60);
    assert!(flag(&f, FlagCode::MarkerPlateau).is_none());
    let f = Case::new()
        .afp(-1, 20000.0)
        .afp(30, 1800.0)
        .afp(60, 1900.0)
        .as_of_day(60);
    assert!(flag(&f, FlagCode::MarkerPlateau).is_none());
}

// ---- no-response ----

#[test]
fn no_response_needs_a_value_on_or_after_day_76() {
    let f = Case::new()
        .pivka(-1, 10000.0)
        .pivka(40, 8000.0)
        .pivka(75, 7000.0)
        .as_of_day(80);
    assert!(flag(&f, FlagCode::NoResponse).is_none());
    let f = Case::new()
        .pivka(-1, 10000.0)
        .pivka(40, 8000.0)
        .pivka(76, 7000.0)
        .as_of_day(80);
    assert_eq!(
        flag(&f, FlagCode::NoResponse).unwrap().severity,
        Severity::Moderate
    );
    assert_eq!(course(&f, Marker::Pivka2).response, Response::Stable);
}

#[test]
fn a_single_post_value_at_half_baseline_is_a_response() {
    let f = Case::new()
        .pivka(-1, 10000.0)
        .pivka(40, 5000.0)
        .pivka(80, 7000.0)
        .as_of_day(80);
    assert!(flag(&f, FlagCode::NoResponse).is_none());
}

// ---- surveillance-overdue ----

#[test]
fn overdue_only_after_14_days_grace() {
    // Last value day 30: due day 60; overdue from day 75.
    let case = Case::new().pivka(-1, 1000.0).pivka(30, 20.0);
    assert!(flag(&case.as_of_day(74), FlagCode::SurveillanceOverdue).is_none());
    let f = case.as_of_day(75);
    let overdue = flag(&f, FlagCode::SurveillanceOverdue).unwrap();
    assert_eq!(overdue.severity, Severity::Low);
    assert_eq!(overdue.marker, Some(Marker::Pivka2));
}

#[test]
fn the_overdue_sentence_names_the_latest_value_as_markers_csv_does() {
    // Latest value 20 mAU/mL on day 30 (2026-02-09): due on day 60 (2026-03-11), flagged from
    // day 75, 15 days past the due date.
    let f = Case::new().pivka(-1, 1000.0).pivka(30, 20.0).as_of_day(75);
    assert_eq!(
        flag(&f, FlagCode::SurveillanceOverdue).unwrap().detail,
        "PIVKA-II was due on 2026-03-11 (latest value 20 mAU/mL after TARE (2026-02-09)) and is \
         15 days overdue as of 2026-03-26; TARE on 2026-01-10."
    );
}

#[test]
fn overdue_stops_after_the_first_year() {
    let case = Case::new().pivka(-1, 1000.0).pivka(30, 20.0);
    assert!(flag(&case.as_of_day(365), FlagCode::SurveillanceOverdue).is_some());
    assert!(flag(&case.as_of_day(366), FlagCode::SurveillanceOverdue).is_none());
}

#[test]
fn overdue_needs_a_baseline_and_the_latest_episode() {
    let f = Case::new().pivka(30, 20.0).as_of_day(200);
    assert!(flag(&f, FlagCode::SurveillanceOverdue).is_none());
    let f = Case::new()
        .tare(200)
        .pivka(-1, 1000.0)
        .pivka(30, 20.0)
        .as_of_day(300);
    assert!(f.episodes[0]
        .flags
        .iter()
        .all(|fl| fl.code != FlagCode::SurveillanceOverdue));
}

// ---- possible-reild ----

#[test]
fn reild_window_is_day_14_to_day_120() {
    for (day, expected) in [(13, false), (14, true), (120, true), (121, false)] {
        let f = Case::new()
            .bilirubin(-2, 15.0)
            .bilirubin(day, 60.0)
            .as_of_day(130);
        assert_eq!(
            flag(&f, FlagCode::PossibleReild).is_some(),
            expected,
            "day {day}"
        );
    }
}

#[test]
fn reild_at_exactly_3_mg_dl() {
    let f = Case::new().bilirubin(30, 51.3).as_of_day(40);
    let reild = flag(&f, FlagCode::PossibleReild).unwrap();
    assert_eq!((reild.severity, reild.marker), (Severity::High, None));
    let f = Case::new().bilirubin(30, 51.2).as_of_day(40);
    assert!(flag(&f, FlagCode::PossibleReild).is_none());
}

#[test]
fn reild_by_doubling_needs_a_value_above_the_uln() {
    let f = Case::new()
        .bilirubin(-2, 10.0)
        .bilirubin(30, 20.0)
        .as_of_day(40);
    assert!(flag(&f, FlagCode::PossibleReild).is_none());
    let f = Case::new()
        .bilirubin(-2, 10.0)
        .bilirubin(30, 22.0)
        .as_of_day(40);
    assert!(flag(&f, FlagCode::PossibleReild).is_some());
    let f = Case::new()
        .bilirubin(-2, 15.0)
        .bilirubin(30, 29.9)
        .as_of_day(40);
    assert!(flag(&f, FlagCode::PossibleReild).is_none());
    let f = Case::new()
        .bilirubin(-2, 15.0)
        .bilirubin(30, 30.0)
        .as_of_day(40);
    assert!(flag(&f, FlagCode::PossibleReild).is_some());
}

#[test]
fn reild_sentence_names_the_limit_the_bilirubin_value_crossed() {
    // 3.5 mg/dL = 59.85 umol/L: the absolute limit; the baseline is named beside it.
    let f = Case::new()
        .bilirubin(-2, 12.0)
        .bilirubin(30, 59.85)
        .as_of_day(40);
    assert_eq!(
        flag(&f, FlagCode::PossibleReild).unwrap().detail,
        "Bilirubin 59.85 umol/L (2026-02-09) on day 30 after TARE: at or above the REILD limit of \
         51.3 umol/L; baseline 12 umol/L before TARE (2026-01-08); TARE on 2026-01-10. Assess for \
         radioembolization-induced liver disease."
    );
    // Doubled from 15 to 30 umol/L, above the ULN of 21 but below 51.3: the relative limit.
    let f = Case::new()
        .bilirubin(-2, 15.0)
        .bilirubin(30, 30.0)
        .as_of_day(40);
    assert_eq!(
        flag(&f, FlagCode::PossibleReild).unwrap().detail,
        "Bilirubin 30 umol/L (2026-02-09) on day 30 after TARE: at least 2 times its baseline of \
         15 umol/L before TARE (2026-01-08) (so at least 30 umol/L) and above the upper limit of \
         normal of 21 umol/L; TARE on 2026-01-10. Assess for radioembolization-induced liver \
         disease."
    );
}

#[test]
fn reild_names_the_highest_value_of_its_window_when_a_later_one_is_worse() {
    // Doubled on day 30 (11 -> 22), then 70 umol/L on day 60, above the absolute limit, then
    // 30 on day 90: the first value raised the flag, the worst one is named and implicated.
    let f = Case::new()
        .bilirubin(-2, 11.0)
        .bilirubin(30, 22.0)
        .bilirubin(60, 70.0)
        .bilirubin(90, 30.0)
        .as_of_day(100);
    let reild = flag(&f, FlagCode::PossibleReild).unwrap();
    assert_eq!(reild.identified_date, date("2026-02-09"));
    assert_eq!(
        reild.detail,
        "Bilirubin 22 umol/L (2026-02-09) on day 30 after TARE: at least 2 times its baseline of \
         11 umol/L before TARE (2026-01-08) (so at least 22 umol/L) and above the upper limit of \
         normal of 21 umol/L; the highest since, 70 umol/L (2026-03-11) on day 60, is at or \
         above the REILD limit of 51.3 umol/L; TARE on 2026-01-10. Assess for \
         radioembolization-induced liver disease."
    );
    let evidence: Vec<&str> = reild
        .evidence_observation_ids
        .iter()
        .map(|id| &**id)
        .collect();
    assert_eq!(evidence, vec!["obs-001", "obs-002", "obs-003"]);
}

// ---- discordance, incomplete response ----

#[test]
fn progression_of_one_marker_with_response_of_another_is_discordance() {
    let f = Case::new()
        .pivka(-3, 5000.0)
        .pivka(30, 900.0)
        .pivka(120, 1400.0)
        .pivka(180, 2100.0)
        .afp(-3, 800.0)
        .afp(30, 300.0)
        .afp(120, 90.0)
        .afp(180, 70.0)
        .as_of_day(190);
    let d = flag(&f, FlagCode::MarkerDiscordance).unwrap();
    assert_eq!((d.severity, d.marker), (Severity::Low, None));
    assert_eq!(course(&f, Marker::Afp).response, Response::Partial);
}

#[test]
fn complete_response_has_no_incomplete_response_flag() {
    let f = Case::new().pivka(-1, 1000.0).pivka(30, 40.0).as_of_day(40);
    assert!(flag_codes(&f).is_empty());
}

// ---- ALBI ----

#[test]
fn albi_from_values_nearest_the_baseline_date() {
    // 0.66 x log10(17.1) - 0.085 x 40 = 0.81378 - 3.4 = -2.586
    let f = Case::new()
        .albumin(-2, 40.0)
        .bilirubin(-2, 17.1)
        .pivka(-1, 1000.0)
        .pivka(30, 100.0)
        .as_of_day(40);
    let c = course(&f, Marker::Pivka2);
    assert_eq!(csv_number(c.albi_baseline.unwrap(), 2), "-2.59");
    // No albumin within 30 days of the latest value.
    assert_eq!(c.albi_latest, None);
}

#[test]
fn albi_tie_takes_the_earlier_value() {
    // Albumin 30 (10 days before) and 40 (10 days after): the earlier, 30.
    // 0.66 x log10(17.1) - 0.085 x 30 = 0.81378 - 2.55 = -1.736
    let f = Case::new()
        .albumin(-11, 30.0)
        .albumin(9, 40.0)
        .bilirubin(-1, 17.1)
        .pivka(-1, 1000.0)
        .as_of_day(20);
    assert_eq!(
        csv_number(course(&f, Marker::Pivka2).albi_baseline.unwrap(), 2),
        "-1.74"
    );
}

#[test]
fn albi_ignores_values_more_than_30_days_away() {
    let f = Case::new()
        .albumin(-32, 40.0)
        .bilirubin(-1, 17.1)
        .pivka(-1, 1000.0)
        .as_of_day(20);
    assert_eq!(course(&f, Marker::Pivka2).albi_baseline, None);
}

// ---- configuration ----

#[test]
fn configured_rise_threshold_replaces_the_default() {
    let case = Case::new()
        .pivka(-1, 1000.0)
        .pivka(30, 100.0)
        .pivka(60, 130.0);
    assert!(flag(&case.as_of_day(70), FlagCode::MarkerRise).is_none());
    let mut config = Config::default();
    config.rules.rise_pct = 30.0;
    assert!(flag(&case.evaluate(70, &config), FlagCode::MarkerRise).is_some());
}

#[test]
fn configured_uln_replaces_the_default() {
    let case = Case::new().pivka(-1, 1000.0).pivka(30, 45.0);
    assert_eq!(
        course(&case.as_of_day(40), Marker::Pivka2).response,
        Response::Partial
    );
    let mut config = Config::default();
    config.markers.pivka2.uln = Some(50.0);
    assert_eq!(
        course(&case.evaluate(40, &config), Marker::Pivka2).response,
        Response::Complete
    );
}

// ---- one patient never stops a run ----

#[test]
fn a_patient_whose_evaluation_fails_is_left_out_with_the_reason_and_the_others_are_evaluated() {
    use chrono::NaiveDate;
    // Dates no ingest lets through (it keeps 1900 to as-of + 1 year): the last day of the
    // calendar, where the next due date cannot be computed.
    let mut broken = Case::new().pivka(-7, 88000.0).timeline;
    broken.patient_id = "p-broken".into();
    broken.procedures[0].date = NaiveDate::MAX;
    let sound = Case::new().pivka(-7, 88000.0).pivka(122, 6088.0).timeline;
    let findings = tare_marker_monitor::evaluate::evaluate_cohort(
        &[broken, sound],
        &Config::default(),
        NaiveDate::MAX,
    );
    assert_eq!(findings[0].patient_id, "p-broken");
    assert_eq!(findings[0].left_out, Some(LeftOutReason::EvaluationFailed));
    assert!(findings[0].evaluation_error.is_some());
    assert_eq!(findings[1].left_out, None);
    assert_eq!(findings[1].episodes.len(), 1);
}
