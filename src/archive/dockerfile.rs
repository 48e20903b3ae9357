//! What milkcrate must know about a Dockerfile before it appends its `LABEL` line: whether
//! the file ends inside a line continuation. Docker joins a line ending in the escape
//! character (`\`, or the one an `# escape=` directive sets) with the next line that is
//! neither blank nor a comment, so such a file would swallow the appended line and the image
//! would come out without milkcrate's labels. Lines are split as Docker's parser splits them
//! (on `\n` only, trailing `\r` dropped, a UTF-8 byte-order mark skipped, any Unicode
//! white space before a `#` still making a comment). Where engine versions differ (which
//! comment lines still count as directives), the check takes the stricter reading; the
//! deploy also checks the built image for the labels, so a case this misses still fails.

/// True when the last line that is neither blank nor a comment ends in a line continuation.
pub fn ends_in_continuation(text: &[u8]) -> bool {
    let text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
    let backtick = backtick_escape(text);
    let last = text
        .split(|b| *b == b'\n')
        .map(trim_line_end)
        .rfind(|line| {
            let body = trim_start(line);
            !body.is_empty() && body[0] != b'#'
        });
    let Some(line) = last else {
        return false;
    };
    match trim_trailing(line, b" \t").last() {
        Some(b'\\') => true,
        Some(b'`') => backtick,
        _ => false,
    }
}

/// Whether a parser directive at the top may make `` ` `` the escape character. Directives
/// are `# key=value` lines before anything else. (`\` is always treated as an escape: an
/// engine that ignores the directive still continues lines with it.)
fn backtick_escape(text: &[u8]) -> bool {
    for line in text.split(|b| *b == b'\n').map(trim_line_end) {
        let line = trim_start(line);
        let Some(rest) = line.strip_prefix(b"#") else {
            break;
        };
        let rest = trim_start(rest);
        let Some(eq) = rest.iter().position(|b| *b == b'=') else {
            break;
        };
        let key = trim_trailing(&rest[..eq], b" \t");
        if key.is_empty() || !key.iter().all(|b| b.is_ascii_alphanumeric()) {
            break;
        }
        if key.eq_ignore_ascii_case(b"escape") && trim_start(&rest[eq + 1..]).first() == Some(&b'`')
        {
            return true;
        }
    }
    false
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    trim_trailing(line, b"\r\n")
}

fn trim_trailing<'a>(mut s: &'a [u8], set: &[u8]) -> &'a [u8] {
    while let Some((last, rest)) = s.split_last() {
        if !set.contains(last) {
            break;
        }
        s = rest;
    }
    s
}

/// Drops leading white space as Docker's parser does (Go's `unicode.IsSpace`, which is
/// Unicode's White_Space, as Rust's `char::is_whitespace`).
fn trim_start(s: &[u8]) -> &[u8] {
    let mut rest = s;
    loop {
        let head = &rest[..rest.len().min(4)];
        let ch = (1..=head.len())
            .find_map(|n| std::str::from_utf8(&head[..n]).ok())
            .and_then(|t| t.chars().next());
        match ch {
            Some(c) if c.is_whitespace() => rest = &rest[c.len_utf8()..],
            _ => return rest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ends_in_continuation as open;

    #[test]
    fn a_trailing_escape_is_found_past_blank_lines_and_comments() {
        assert!(open(b"FROM x\nRUN true \\"));
        assert!(open(b"FROM x\nRUN true \\\n"));
        assert!(open(
            b"FROM x\nRUN true \\  \t\r\n\n   \n# note\n  # another\n"
        ));
        assert!(
            open(b"FROM x\rRUN true \\"),
            "a bare CR does not end a line"
        );
        assert!(open(b"\xEF\xBB\xBF# escape=`\nFROM x\nRUN true `\n"));
        assert!(open(b"# syntax=x\n#ESCAPE = `\nFROM x\nRUN a `\n"));
        assert!(
            open(b"# escape=`\nFROM x\nRUN a \\\n"),
            "an engine that ignores the directive continues with \\"
        );
        assert!(
            open("FROM x\nRUN true \\\n\u{a0}# a comment after a no-break space\n".as_bytes()),
            "Unicode white space before # still makes a comment"
        );
    }

    #[test]
    fn ordinary_endings_pass() {
        assert!(!open(b"FROM x\nRUN true\n"));
        assert!(!open(b"FROM x\nRUN true"));
        assert!(!open(b""));
        assert!(!open(b"FROM x\n# a comment \\\n"));
        assert!(!open(b"FROM x\nRUN a \\\n  b\n"));
        assert!(
            !open(b"FROM x\nCMD echo `date`\n"),
            "a backtick is not the escape"
        );
        assert!(
            !open(b"FROM x\n# escape=`\nRUN a `\n"),
            "a directive after an instruction is a comment"
        );
    }
}
