//! One patient never stops a run: each patient's evaluation runs isolated, and a failure
//! (a defect, an input nobody foresaw) becomes that patient's error, counted with their id,
//! while everyone else is evaluated. The panic hook keeps such failures off stderr (the run
//! reports them once, in the summary); any other panic still prints as usual.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

thread_local! {
    static ISOLATED: Cell<bool> = const { Cell::new(false) };
}

/// Installs the panic hook (once, at the start of the binary).
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if ISOLATED.with(Cell::get) {
            tracing::debug!(%info, "isolated failure");
        } else {
            default(info);
        }
    }));
}

/// Runs `work`; a panic inside it comes back as its message.
pub fn isolated<T>(work: impl FnOnce() -> T) -> Result<T, String> {
    let was = ISOLATED.with(|flag| flag.replace(true));
    let result = catch_unwind(AssertUnwindSafe(work));
    ISOLATED.with(|flag| flag.set(was));
    // The message may quote the data (an id, a unit): escaped for the summary and stderr.
    result.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| crate::text::shown(s).into_owned())
            .or_else(|| {
                payload
                    .downcast_ref::<String>()
                    .map(|s| crate::text::shown(s).into_owned())
            })
            .unwrap_or_else(|| "an unexpected failure".to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_inside_is_returned_with_its_message_and_the_caller_goes_on() {
        let failed: Result<(), String> = isolated(|| panic!("date arithmetic overflowed"));
        assert_eq!(failed, Err("date arithmetic overflowed".to_owned()));
        assert_eq!(isolated(|| 41 + 1), Ok(42));
    }

    #[test]
    fn a_failure_message_quoting_the_data_comes_back_escaped() {
        let unit = "mAU/mL\n\u{202e}";
        let failed: Result<(), String> = isolated(|| panic!("no factor for {unit}"));
        assert_eq!(
            failed,
            Err("no factor for mAU/mL\\u{a}\\u{202e}".to_owned())
        );
    }
}
