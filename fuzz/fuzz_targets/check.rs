//! Fuzz target: the front end and the formatter on arbitrary UTF-8 never panic, and what
//! `vic fmt` prints parses again and formats to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vic::check::CheckOptions;
use vic::driver;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let front = driver::front_end(src, &CheckOptions::default());
    for d in &front.diagnostics {
        if let Some(r) = d.span.range() {
            assert!(
                r.start <= r.end && r.end <= src.len(),
                "span outside the source"
            );
        }
    }
    if let Ok(formatted) = driver::format(src) {
        let again = driver::format(&formatted);
        assert!(again.is_ok(), "fmt output does not parse");
        assert_eq!(
            again.ok().as_deref(),
            Some(formatted.as_str()),
            "fmt is not idempotent"
        );
    }
});
