//! Text that PostgreSQL cannot hold as it is. TEXT refuses NUL, yet correlation keys and
//! start idempotency keys come from users' input, and one of them holding a NUL must not
//! make a whole group commit fail. Such columns hold an injective escape of the value:
//! NUL becomes `ESC 0` and `ESC` itself `ESC ESC`, where `ESC` is a private-use character
//! real text does not carry, so ordinary values are stored unchanged.

use std::borrow::Cow;

/// The escape character (U+E000, the first private-use code point).
const ESC: char = '\u{E000}';

/// The value as stored.
pub(crate) fn escape(value: &str) -> Cow<'_, str> {
    if !value.contains(['\0', ESC]) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\0' => {
                out.push(ESC);
                out.push('0');
            }
            ESC => {
                out.push(ESC);
                out.push(ESC);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The value a stored one stands for.
pub(crate) fn unescape(stored: &str) -> Cow<'_, str> {
    if !stored.contains(ESC) {
        return Cow::Borrowed(stored);
    }
    let mut out = String::with_capacity(stored.len());
    let mut chars = stored.chars();
    while let Some(c) = chars.next() {
        match (c, c == ESC) {
            (_, true) => match chars.next() {
                Some('0') => out.push('\0'),
                Some(other) => out.push(other),
                None => out.push(ESC),
            },
            (c, false) => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_is_reversible_and_leaves_plain_text_alone() {
        for value in [
            "",
            "plain",
            "nul\0in",
            "\0",
            "esc\u{E000}0",
            "\u{E000}\0\u{E000}",
        ] {
            assert_eq!(unescape(&escape(value)), value, "{value:?}");
            assert!(!escape(value).contains('\0'));
        }
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
        // Injective: a NUL and an escaped-looking literal stay apart.
        assert_ne!(escape("\0"), escape("\u{E000}0"));
    }
}
