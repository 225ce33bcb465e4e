//! Making text from outside safe to print: peer nicknames, close and
//! refusal reasons, errors that quote a peer. Printed raw, such text could
//! carry terminal escapes (colours, cursor moves, a fake prompt, a changed
//! window title) or flood a line with megabytes.

/// What replaces each control character.
pub const REPLACEMENT: char = '\u{FFFD}';
/// What ends a truncated text.
pub const ELLIPSIS: char = '…';

/// `s` with every control character replaced by [`REPLACEMENT`], cut to at
/// most `max_chars` characters (the last one then being [`ELLIPSIS`]).
///
/// Control characters are C0 (including ESC, which starts ANSI sequences,
/// and newlines, which could forge a line of output), DEL, C1 (including
/// U+009B CSI, which some terminals take as ESC `[`) and the bidirectional
/// overrides and isolates, which reorder what is shown.
pub fn sanitize(s: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max_chars.saturating_mul(4)));
    let mut chars = s.chars().peekable();
    let mut n = 0;
    while let Some(c) = chars.next() {
        if n + 1 == max_chars && chars.peek().is_some() {
            out.push(ELLIPSIS);
            return out;
        }
        if n == max_chars {
            return out;
        }
        out.push(if is_unsafe(c) { REPLACEMENT } else { c });
        n += 1;
    }
    out
}

fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'                  // Arabic letter mark
            | '\u{200E}' | '\u{200F}'   // left-to-right, right-to-left marks
            | '\u{202A}'..='\u{202E}'   // embeddings and overrides
            | '\u{2066}'..='\u{2069}' // isolates
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_text_unchanged() {
        assert_eq!(sanitize("host-1 (rack 4)", 64), "host-1 (rack 4)");
        assert_eq!(sanitize("nœud-α", 64), "nœud-α");
        assert_eq!(sanitize("", 8), "");
    }

    #[test]
    fn ansi_escapes_and_newlines_replaced() {
        assert_eq!(
            sanitize("\x1b[31mred\x1b[0m", 64),
            "\u{FFFD}[31mred\u{FFFD}[0m"
        );
        assert_eq!(
            sanitize("a\nweave-rs: fake line\r", 64),
            "a\u{FFFD}weave-rs: fake line\u{FFFD}"
        );
        assert_eq!(sanitize("tab\there\x7f", 64), "tab\u{FFFD}here\u{FFFD}");
        // Set the window title: ESC ] 0 ; t BEL.
        assert_eq!(sanitize("\x1b]0;t\x07", 64), "\u{FFFD}]0;t\u{FFFD}");
    }

    #[test]
    fn c1_and_bidi_controls_replaced() {
        assert_eq!(sanitize("\u{9b}31m\u{85}x", 64), "\u{FFFD}31m\u{FFFD}x");
        assert_eq!(sanitize("ab\u{202E}cd\u{2066}", 64), "ab\u{FFFD}cd\u{FFFD}");
    }

    #[test]
    fn long_text_truncated_with_ellipsis() {
        assert_eq!(sanitize("abcdef", 4), "abc…");
        assert_eq!(sanitize("abcd", 4), "abcd");
        assert_eq!(sanitize("abcde", 1), "…");
        assert_eq!(sanitize("abc", 0), "");
        // Counted in characters, never cutting one in half.
        assert_eq!(sanitize("ééééé", 3), "éé…");
        assert_eq!(sanitize(&"x".repeat(4 << 20), 100).chars().count(), 100);
    }

    proptest! {
        #[test]
        fn never_control_never_longer(s in any::<String>(), max in 0usize..40) {
            let out = sanitize(&s, max);
            prop_assert!(out.chars().count() <= max);
            prop_assert!(!out.chars().any(is_unsafe));
            if s.chars().count() <= max {
                prop_assert_eq!(out.chars().count(), s.chars().count());
            }
        }
    }
}
