//! Split a Linux kernel command line into parameters, the way the kernel does.
//!
//! This mirrors `next_arg()` in the kernel's `lib/cmdline.c` and the loop around it in
//! `parse_args()` (`kernel/params.c`):
//!
//! - Parameters are separated by whitespace (the kernel's `isspace()`: space, `\t`, `\n`,
//!   `\v`, `\f`, `\r`).
//! - A parameter is `key` (a flag, no value) or `key=value`; the first `=` splits them, even
//!   inside quotes. An `=` in first position does not count (the kernel keeps the split
//!   position in an integer where 0 means "none").
//! - Double quotes protect whitespace and are removed when they wrap the value
//!   (`key="a b"`) or the whole parameter (`"key=a b"`). Quotes elsewhere are kept
//!   verbatim but still protect whitespace. There is no escape for `"`.
//! - An unterminated quote runs to the end of the line.
//! - A bare `--` ends the kernel's parameters: what follows belongs to init and is not
//!   returned.
//! - Keys compare with `-` and `_` equivalent (the kernel's `parameq()`); [`Param::key`]
//!   is normalised to `_`.
//! - Repeated keys are all returned, in order.
//!
//! One deviation: the kernel's `isspace()` also matches byte `0xA0`. This tokenizer works on
//! UTF-8 text, where that byte only occurs inside a multi-byte character, so it is not a
//! separator here. Command lines made of ASCII split identically.

use std::borrow::Cow;

/// One `key[=value]` parameter of the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param<'a> {
    /// The key as written, surrounding quotes removed.
    pub raw_key: &'a str,
    /// The key with every `-` replaced by `_`, so that `agent-id` and `agent_id` compare
    /// equal (kernel `parameq()`).
    pub key: Cow<'a, str>,
    /// `None` for a flag (`quiet`), `Some("")` for `key=` or `key=""`.
    pub value: Option<&'a str>,
}

/// Iterator over the parameters of a kernel command line; see [`tokenize`].
#[derive(Debug, Clone)]
pub struct Params<'a> {
    rest: &'a str,
}

/// Split `cmdline` (for instance the text of `/proc/cmdline`) into its kernel parameters.
///
/// A trailing newline, which `/proc/cmdline` adds but the kernel's own copy of the command
/// line does not have, is ignored. Parameters after a bare `--` are not returned.
pub fn tokenize(cmdline: &str) -> Params<'_> {
    Params {
        rest: cmdline.strip_suffix('\n').unwrap_or(cmdline),
    }
}

impl<'a> Iterator for Params<'a> {
    type Item = Param<'a>;

    fn next(&mut self) -> Option<Param<'a>> {
        let args = self
            .rest
            .trim_start_matches(|c: char| c.is_ascii() && is_space(c as u8));
        if args.is_empty() {
            self.rest = args;
            return None;
        }
        let (param, rest) = next_arg(args);
        // parse_args(): `if (!val && strcmp(param, "--") == 0)` stops the kernel's parsing.
        if param.value.is_none() && param.raw_key == "--" {
            self.rest = "";
            return None;
        }
        self.rest = rest;
        Some(param)
    }
}

/// The kernel's `isspace()` for ASCII (`lib/ctype.c`).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// `next_arg()` of `lib/cmdline.c`: take one parameter from the front of `args`, which
/// must be non-empty and not start with whitespace. Returns the parameter and the rest.
fn next_arg(args: &str) -> (Param<'_>, &str) {
    let (args, quoted) = match args.strip_prefix('"') {
        Some(inner) => (inner, true),
        None => (args, false),
    };
    let mut in_quote = quoted;
    let mut equals = None;
    let mut end = args.len();
    for (i, &b) in args.as_bytes().iter().enumerate() {
        if is_space(b) && !in_quote {
            end = i;
            break;
        }
        if equals.is_none() && b == b'=' && i > 0 {
            equals = Some(i);
        }
        if b == b'"' {
            in_quote = !in_quote;
        }
    }
    let token = &args[..end];
    // `end` is either the length or the index of an ASCII whitespace byte.
    let rest = args.get(end + 1..).unwrap_or("");

    let (raw_key, value) = match equals {
        None if quoted => (token.strip_suffix('"').unwrap_or(token), None),
        None => (token, None),
        Some(eq) => {
            let mut value = &token[eq + 1..];
            // "Don't include quotes in value": a leading quote goes, and so does the last
            // character of the parameter if it is a quote (it may be that same quote).
            let value_quoted = match value.strip_prefix('"') {
                Some(v) => {
                    value = v;
                    true
                }
                None => false,
            };
            if value_quoted || quoted {
                value = value.strip_suffix('"').unwrap_or(value);
            }
            (&token[..eq], Some(value))
        }
    };
    let key = if raw_key.contains('-') {
        Cow::Owned(raw_key.replace('-', "_"))
    } else {
        Cow::Borrowed(raw_key)
    };
    let param = Param {
        raw_key,
        key,
        value,
    };
    (param, rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// (key, value) pairs as the kernel would hand them to its parameter handlers.
    fn pairs(cmdline: &str) -> Vec<(String, Option<String>)> {
        tokenize(cmdline)
            .map(|p| (p.key.into_owned(), p.value.map(str::to_owned)))
            .collect()
    }

    fn kv(key: &str, value: Option<&str>) -> (String, Option<String>) {
        (key.to_owned(), value.map(str::to_owned))
    }

    #[test]
    fn splits_on_any_kernel_whitespace() {
        assert_eq!(
            pairs("  a=1\tb\x0bc=3\x0cd\re=5\nf  "),
            vec![
                kv("a", Some("1")),
                kv("b", None),
                kv("c", Some("3")),
                kv("d", None),
                kv("e", Some("5")),
                kv("f", None),
            ]
        );
    }

    #[test]
    fn empty_and_blank_lines_have_no_params() {
        assert!(pairs("").is_empty());
        assert!(pairs("\n").is_empty());
        assert!(pairs(" \t \n").is_empty());
    }

    #[test]
    fn first_equals_splits_key_and_value() {
        assert_eq!(
            pairs("root=UUID=abc= rw console="),
            vec![
                kv("root", Some("UUID=abc=")),
                kv("rw", None),
                kv("console", Some(""))
            ]
        );
    }

    #[test]
    fn equals_in_first_position_does_not_count() {
        // next_arg() stores the split index in `equals`, where 0 means "not found".
        assert_eq!(pairs("=a =a=b"), vec![kv("=a", None), kv("=a", Some("b"))]);
    }

    #[test]
    fn quoted_value_keeps_spaces_and_loses_quotes() {
        assert_eq!(
            pairs(r#"a="x y  z" b="" c="=""#),
            vec![
                kv("a", Some("x y  z")),
                kv("b", Some("")),
                kv("c", Some("="))
            ]
        );
    }

    #[test]
    fn quoted_whole_param_loses_quotes() {
        assert_eq!(
            pairs(r#""key=a b" "flag" """#),
            vec![kv("key", Some("a b")), kv("flag", None), kv("", None)]
        );
    }

    #[test]
    fn quotes_inside_a_value_are_kept_but_protect_spaces() {
        assert_eq!(
            pairs(r#"a=x"y z"w b"c d"=e"#),
            vec![kv("a", Some(r#"x"y z"w"#)), kv(r#"b"c d""#, Some("e"))]
        );
    }

    #[test]
    fn equals_inside_quotes_still_splits() {
        assert_eq!(pairs(r#""a=b"=c"#), vec![kv("a", Some(r#"b"=c"#))]);
    }

    #[test]
    fn quote_right_after_equals() {
        // `key="`: the leading quote of the value is also the last character.
        assert_eq!(pairs(r#"key=" x"#), vec![kv("key", Some(" x"))]);
        assert_eq!(pairs(r#"key=""#), vec![kv("key", Some(""))]);
        assert_eq!(pairs(r#"""#), vec![kv("", None)]);
    }

    #[test]
    fn unterminated_quote_takes_rest_of_line() {
        assert_eq!(
            pairs("a=1 b=\"x y -- c=3\n"),
            vec![kv("a", Some("1")), kv("b", Some("x y -- c=3"))]
        );
        assert_eq!(pairs("\"k=v w"), vec![kv("k", Some("v w"))]);
    }

    #[test]
    fn trailing_newline_is_not_part_of_the_line() {
        assert_eq!(pairs("quiet\n"), vec![kv("quiet", None)]);
        assert_eq!(pairs("a=\"b c\n"), vec![kv("a", Some("b c"))]);
    }

    #[test]
    fn double_dash_ends_kernel_params() {
        assert_eq!(
            pairs("ro -- kowabunga.kahuna=https://evil single"),
            vec![kv("ro", None)]
        );
        assert_eq!(pairs("\"--\" a=1"), Vec::new());
        assert!(pairs("-- ").is_empty());
    }

    #[test]
    fn double_dash_with_value_or_quotes_elsewhere_is_a_param() {
        assert_eq!(
            pairs("--=1 __ a=--"),
            vec![kv("__", Some("1")), kv("__", None), kv("a", Some("--"))]
        );
    }

    #[test]
    fn dash_and_underscore_are_equivalent_in_keys_only() {
        let params: Vec<_> = tokenize("kowabunga.agent-id=a-b_c").collect();
        assert_eq!(params.len(), 1);
        assert_eq!(params[0].raw_key, "kowabunga.agent-id");
        assert_eq!(params[0].key, "kowabunga.agent_id");
        assert_eq!(params[0].value, Some("a-b_c"));
        assert!(matches!(
            tokenize("no_dash").next().map(|p| p.key),
            Some(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn repeated_keys_are_kept_in_order() {
        assert_eq!(
            pairs("console=tty0 console=ttyS0,115200 console=tty0"),
            vec![
                kv("console", Some("tty0")),
                kv("console", Some("ttyS0,115200")),
                kv("console", Some("tty0")),
            ]
        );
    }

    #[test]
    fn non_ascii_text_passes_through() {
        assert_eq!(
            pairs("é=à\u{a0}b ü"),
            vec![kv("é", Some("à\u{a0}b")), kv("ü", None)]
        );
    }

    proptest! {
        #[test]
        fn never_panics_and_always_ends(s in any::<String>()) {
            let n = tokenize(&s).count();
            prop_assert!(n <= s.len() + 1);
        }

        #[test]
        fn never_panics_on_cmdline_like_text(s in r#"[a-c=" \t\n_-]{0,40}"#) {
            for p in tokenize(&s) {
                prop_assert!(!p.key.contains('-'));
                prop_assert!(p.key.len() == p.raw_key.len());
            }
        }

        #[test]
        fn quoted_values_round_trip(
            key in "[a-z][a-z0-9._]{0,15}",
            value in r#"[^"\n]{0,30}"#,
            whole in any::<bool>(),
        ) {
            let line = if whole {
                format!("before \"{key}={value}\" after\n")
            } else {
                format!("before {key}=\"{value}\" after\n")
            };
            prop_assert_eq!(
                pairs(&line),
                vec![kv("before", None), kv(&key, Some(&value)), kv("after", None)]
            );
        }

        #[test]
        fn unquoted_words_split_like_split_whitespace(words in prop::collection::vec("[a-z0-9=._-]{1,8}", 0..8)) {
            let line = words.join(" ");
            let expected = line.split_whitespace().take_while(|w| *w != "--").count();
            prop_assert_eq!(tokenize(&line).count(), expected);
        }

        #[test]
        fn dash_and_underscore_spellings_give_the_same_key(
            parts in prop::collection::vec("[a-z0-9.]{1,6}", 1..5),
            seps in prop::collection::vec(any::<bool>(), 4),
        ) {
            let underscored = parts.join("_");
            let mixed: String = parts
                .iter()
                .enumerate()
                .map(|(i, p)| if i == 0 { p.clone() } else if seps[i - 1] { format!("-{p}") } else { format!("_{p}") })
                .collect();
            let line = format!("{mixed}=v");
            let param = tokenize(&line).next();
            prop_assert_eq!(param.map(|p| p.key.into_owned()), Some(underscored));
        }
    }
}
