//! The user-facing parsers of `isolate_core::parse` (sizes, durations,
//! volumes, devices, users, `KEY=VAL`, cgroup keyed files): any string is
//! parsed or refused without a panic, and what parses obeys the documented
//! rules.

#![no_main]

use isolate_core::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(bytes) = parse::size(s) {
        // Units are case-insensitive; a plain number of bytes reads back.
        assert_eq!(
            parse::size(&s.to_ascii_uppercase()).ok(),
            Some(bytes),
            "{s:?}"
        );
        if bytes < 1 << 53 {
            assert_eq!(parse::size(&bytes.to_string()).ok(), Some(bytes));
        }
        // The same number in a bigger unit is never smaller.
        let t = s.trim();
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(k) = parse::size(&format!("{t}k")) {
                assert_eq!(k, bytes.saturating_mul(1024));
            }
        }
    }

    if let Ok(d) = parse::duration(s) {
        assert!(d.as_secs_f64() <= 1e9, "{s:?} gave {d:?}");
        // Milliseconds read back as such.
        let ms = d.as_millis();
        if d.subsec_nanos() % 1_000_000 == 0 {
            let back = parse::duration(&format!("{ms}ms")).unwrap();
            assert!(
                back.abs_diff(d).as_micros() <= 1,
                "{s:?}: {d:?} vs {back:?}"
            );
        }
    }

    if let Ok((k, v)) = parse::env(s) {
        assert!(!k.is_empty() && !k.contains('='));
        assert_eq!(parse::env(&format!("{k}={v}")).ok(), Some((k, v)));
    }

    let _ = parse::volume(s);
    let _ = parse::device(s);
    let _ = parse::user(s);
    if let Some((key, content)) = s.split_once('\0') {
        let _ = parse::keyed(content, key);
    }
});
