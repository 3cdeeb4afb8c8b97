//! Comparisons for the rules' boundaries. Thresholds such as `baseline x 50%` or
//! `nadir x 1.4` are computed in binary floating point, where `100 x 1.4` may land a hair above
//! 140; a relative tolerance of 1e-9 (far below any laboratory precision) keeps "exactly 40%"
//! and "exactly 50%" on the side docs/rules.md puts them.

const RELATIVE_TOLERANCE: f64 = 1e-9;

fn tolerance(reference: f64) -> f64 {
    RELATIVE_TOLERANCE * reference.abs().max(1.0)
}

/// `value >= threshold`, boundary included.
pub fn at_least(value: f64, threshold: f64) -> bool {
    value >= threshold - tolerance(threshold)
}

/// `value <= threshold`, boundary included.
pub fn at_most(value: f64, threshold: f64) -> bool {
    value <= threshold + tolerance(threshold)
}

/// `value > threshold`, boundary excluded.
pub fn exceeds(value: f64, threshold: f64) -> bool {
    !at_most(value, threshold)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn computed_boundaries_land_on_their_side() {
        assert!(at_least(140.0, 100.0 * 1.4));
        assert!(at_most(0.3, 0.1 + 0.2));
        assert!(!exceeds(20.0, 16.528925619834713 * 1.21));
        assert!(exceeds(40.0001, 40.0));
    }
}
