//! The normalized form of a GraphQL document, so that the same operation written with other
//! white space, commas or comments shares a cache entry. Lexical only (GraphQL spec §2.1:
//! white space, line terminators, commas and comments are ignored tokens); strings are kept as
//! they are.

/// `document` with its ignored tokens dropped: comments removed, commas and white space folded
/// into one space where two names or values meet, none around punctuators.
pub fn normalize_document(document: &str) -> String {
    let mut out = String::with_capacity(document.len());
    let mut chars = document.chars().peekable();
    // Whether ignored tokens were skipped since the last significant character.
    let mut gap = false;
    while let Some(c) = chars.next() {
        match c {
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' || c == '\r' {
                        break;
                    }
                }
                gap = true;
            }
            ',' | ' ' | '\t' | '\n' | '\r' | '\u{feff}' => gap = true,
            '"' => {
                push_gap(&mut out, &mut gap, c);
                out.push(c);
                copy_string(&mut chars, &mut out);
            }
            _ => {
                push_gap(&mut out, &mut gap, c);
                out.push(c);
            }
        }
    }
    out
}

/// One space between two tokens that would otherwise run together (`a b`, `1 2`, `$x y`).
fn push_gap(out: &mut String, gap: &mut bool, next: char) {
    if std::mem::take(gap) && out.chars().next_back().is_some_and(is_word) && is_word(next) {
        out.push(' ');
    }
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '"' | '$')
}

/// Copies a string literal after its opening quote: a `"..."` string with escapes, or a
/// `"""..."""` block string.
fn copy_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, out: &mut String) {
    let mut block = false;
    if chars.peek() == Some(&'"') {
        out.push(chars.next().unwrap_or('"'));
        if chars.peek() == Some(&'"') {
            out.push(chars.next().unwrap_or('"'));
            block = true;
        } else {
            return; // the empty string ""
        }
    }
    let mut quotes = 0;
    while let Some(c) = chars.next() {
        out.push(c);
        if block {
            if c == '"' {
                quotes += 1;
                if quotes == 3 {
                    return;
                }
            } else {
                quotes = 0;
                if c == '\\' {
                    // `\"""` is an escaped triple quote inside a block string.
                    for _ in 0..3 {
                        if chars.peek() == Some(&'"') {
                            out.push(chars.next().unwrap_or('"'));
                        }
                    }
                }
            }
        } else if c == '\\' {
            if let Some(escaped) = chars.next() {
                out.push(escaped);
            }
        } else if c == '"' {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_tokens_are_dropped_and_strings_kept() {
        assert_eq!(normalize_document("{ a b }"), "{a b}");
        assert_eq!(normalize_document("{\n  a, # one\n  b\n}"), "{a b}");
        assert_eq!(
            normalize_document("query Q($x: Int = 1, $y: [ID!]) { f(a: $x, b: \"s,  # t\") }"),
            "query Q($x:Int=1 $y:[ID!]){f(a:$x b:\"s,  # t\")}"
        );
        assert_eq!(
            normalize_document(r#"{ f(a: "q\"  x", b: """ block "" # """) }"#),
            r#"{f(a:"q\"  x" b:""" block "" # """)}"#
        );
        assert_eq!(
            normalize_document(r#"{ f(a: "", b: 1) }"#),
            r#"{f(a:"" b:1)}"#
        );
        // Different operations stay different.
        assert_ne!(normalize_document("{ ab }"), normalize_document("{ a b }"));
    }
}
