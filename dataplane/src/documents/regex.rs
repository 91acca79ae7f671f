//! Which `$regex` patterns may reach the store.
//!
//! CouchDB matches `$regex` with Erlang's `re` (PCRE) and pouchdb-server with JavaScript's
//! engine; both backtrack, so a pattern like `^(a+)+$` takes time exponential in the length
//! of the field it is matched against (issue 15: 1.8 s for one 29-byte string on CouchDB
//! 3.5, per document). Patterns are therefore parsed here (with `regex-syntax`) and only
//! those whose backtracking is linear in the field's length are let through:
//!
//! - at most one variable repetition (`*`, `+`, `{n,}`, `{n,m}` with n < m), whose body
//!   is plain characters, classes or a fixed sequence of them (`[a-z]+`, `(ab)*`), never a
//!   group with choices, optional parts or another repetition (`(a+)+`, `(a|aa)*`,
//!   `(a?b)+`);
//! - a pattern with that repetition must be anchored at the start (`^`, not multi-line):
//!   otherwise the engine retries it at every position, which is quadratic;
//! - at most 64 ways through the pattern's optional parts (`?`) and alternations
//!   (`a|b|c` counts 3), so the work at each position is at most 64 times the pattern;
//! - nothing the Rust parser does not accept: back-references, look-around, possessive
//!   and atomic groups, recursion, conditionals (PCRE-only features).
//!
//! So matching one field of `n` bytes costs at most about `64 × pattern length × n` steps,
//! the same order as reading the document.

use regex_syntax::hir::{Hir, HirKind, Look};

/// Most ways through a pattern's optional parts and alternations.
pub const MAX_CHOICES: u64 = 64;

/// Why a pattern is refused (completes "'$regex' …" in the refusal).
pub type Refusal = &'static str;

#[derive(Default)]
struct Shape {
    repetitions: u32,
    choices: u64,
}

/// Accept `pattern`, or say why it may backtrack too much.
pub fn check_pattern(pattern: &str) -> Result<(), Refusal> {
    let hir = regex_syntax::ParserBuilder::new()
        .nest_limit(16)
        .build()
        .parse(pattern)
        .map_err(|_| {
            "is not a supported pattern (back-references, look-around, possessive or \
             atomic groups are not allowed)"
        })?;
    let mut shape = Shape {
        repetitions: 0,
        choices: 1,
    };
    walk(&hir, &mut shape)?;
    if shape.repetitions > 1 {
        return Err("has more than one repetition (*, +, {n,m})");
    }
    if shape.repetitions == 1 && !anchored_at_start(&hir) {
        return Err("has a repetition (*, +, {n,m}) but does not start with ^");
    }
    Ok(())
}

fn walk(hir: &Hir, shape: &mut Shape) -> Result<(), Refusal> {
    match hir.kind() {
        HirKind::Empty | HirKind::Literal(_) | HirKind::Class(_) | HirKind::Look(_) => Ok(()),
        HirKind::Capture(capture) => walk(&capture.sub, shape),
        HirKind::Concat(parts) => parts.iter().try_for_each(|p| walk(p, shape)),
        HirKind::Alternation(branches) => {
            choose(shape, branches.len() as u64)?;
            branches.iter().try_for_each(|b| walk(b, shape))
        }
        HirKind::Repetition(rep) => match rep.max {
            // Exactly n times: a fixed sequence, no choice.
            Some(max) if max == rep.min => walk(&rep.sub, shape),
            // `?`: two ways.
            Some(1) => {
                choose(shape, 2)?;
                walk(&rep.sub, shape)
            }
            _ => {
                shape.repetitions += 1;
                if fixed(&rep.sub) {
                    Ok(())
                } else {
                    Err(
                        "repeats a group with choices, optional parts or repetitions inside, \
                         which can backtrack exponentially",
                    )
                }
            }
        },
    }
}

fn choose(shape: &mut Shape, ways: u64) -> Result<(), Refusal> {
    shape.choices = shape.choices.saturating_mul(ways);
    if shape.choices > MAX_CHOICES {
        return Err("has too many optional parts and alternatives (more than 64 ways)");
    }
    Ok(())
}

/// A body that matches in one way only: characters, classes, assertions, and fixed
/// sequences and exact repetitions of them.
fn fixed(hir: &Hir) -> bool {
    match hir.kind() {
        HirKind::Empty | HirKind::Literal(_) | HirKind::Class(_) | HirKind::Look(_) => true,
        HirKind::Capture(capture) => fixed(&capture.sub),
        HirKind::Concat(parts) => parts.iter().all(fixed),
        HirKind::Repetition(rep) => rep.max == Some(rep.min) && fixed(&rep.sub),
        HirKind::Alternation(_) => false,
    }
}

/// Whether the pattern can only match at the start of the field (`^` or `\A` first, not
/// in multi-line mode).
fn anchored_at_start(hir: &Hir) -> bool {
    match hir.kind() {
        HirKind::Look(Look::Start) => true,
        HirKind::Concat(parts) => parts.first().is_some_and(anchored_at_start),
        HirKind::Capture(capture) => anchored_at_start(&capture.sub),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everyday_patterns_pass() {
        for ok in [
            "hello",
            "(?i)hello world",
            "^hello",
            "^[a-z0-9._%+-]+@example\\.com$",
            "^(?i)[a-z]+$",
            "^\\d{4}-\\d{2}-\\d{2}",
            "^(ab)*c",
            "colou?r",
            "^(foo|bar|baz)-[0-9]+$",
            "^.*needle",
        ] {
            assert_eq!(check_pattern(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn backtracking_patterns_are_refused() {
        for bad in [
            "^(a+)+$",
            "^(a*)*",
            "^(a|aa)+$",
            "^(x+x+)+y",
            "^(\\w+\\s?)*$",
            "^(a{1,10}){1,10}",
            "^(a?b)+",
            "^.*a.*b",
            "a*b",
            ".*needle",
            "(?m)^a+b",
            "a?a?a?a?a?a?a?aaaaaaa",
            "(a)\\1",
            "(?=a)a",
            "(?<!a)b",
            "a++",
            "(?>a+)b",
            "[",
        ] {
            assert!(check_pattern(bad).is_err(), "{bad} should be refused");
        }
    }
}
