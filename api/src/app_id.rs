//! App ids.
//!
//! An app names itself with an `appId` (often its origin URL). The one rule, written here
//! and nowhere else: 1 to [`MAX_CHARS`] characters (Unicode scalar values, as the OpenAPI
//! document's `maxLength` counts them — not bytes), at least one of them not white space,
//! and none a control character (C0, DEL or C1: they would end up in logs and headers).

/// Longest app id, in characters.
pub const MAX_CHARS: usize = 512;

/// Whether `app_id` is a valid app id.
pub fn is_valid(app_id: &str) -> bool {
    !app_id.trim().is_empty()
        && !app_id.chars().any(char::is_control)
        && app_id.chars().count() <= MAX_CHARS
}

/// The sentence a refusal says about an invalid `appId`.
pub const RULE: &str =
    "'appId' must be 1 to 512 characters, not only spaces, and no control characters.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_is_counted_in_characters() {
        assert!(is_valid(&"a".repeat(MAX_CHARS)));
        assert!(!is_valid(&"a".repeat(MAX_CHARS + 1)));
        // 512 two-byte characters: 1,024 bytes, still 512 characters.
        assert!(is_valid(&"é".repeat(MAX_CHARS)));
        assert!(!is_valid(&"é".repeat(MAX_CHARS + 1)));
        assert!(is_valid(&"🦀".repeat(MAX_CHARS)));
    }

    #[test]
    fn blank_and_control_characters_are_refused() {
        for bad in [
            "",
            " ",
            "\u{3000}\t",
            "a\u{0}b",
            "a\u{1f}",
            "a\u{7f}",
            "a\u{85}b",
            "\n",
        ] {
            assert!(!is_valid(bad), "{bad:?}");
        }
        for ok in ["https://notes.example", " x ", "notes app", "应用"] {
            assert!(is_valid(ok), "{ok:?}");
        }
    }
}
