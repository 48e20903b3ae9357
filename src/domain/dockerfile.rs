//! What a Dockerfile builds from: the images its `FROM` lines and `COPY --from` flags name,
//! with the build arguments' defaults filled in (milkcrate passes none). The deploy checks
//! each against milkcrate's own images before building, so an app cannot build on another
//! app's image (or copy files out of it). Pure: the caller hands in the text.

use crate::domain::compose::interpolate;

/// The image references a Dockerfile builds from, in order, without its own stages and
/// `scratch`. A reference whose build argument has no default is refused, since milkcrate
/// cannot know what it would name.
pub fn base_images(text: &str) -> Result<Vec<String>, String> {
    let text = without_bom(text);
    let mut out: Vec<String> = Vec::new();
    for escape in escapes(text) {
        for image in base_images_in(&logical_lines(text, escape))? {
            if !out.contains(&image) {
                out.push(image);
            }
        }
    }
    Ok(out)
}

/// [`base_images`] of one reading of the file.
fn base_images_in(lines: &[String]) -> Result<Vec<String>, String> {
    let mut args: Vec<(String, String)> = Vec::new();
    let mut stages: Vec<String> = Vec::new();
    let mut seen_from = false;
    let mut out = Vec::new();
    for line in lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(keyword) = words.first() else {
            continue;
        };
        let expand = |value: &str| -> Result<String, String> {
            let lookup = |name: &str| {
                args.iter()
                    .rev()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            };
            let expanded = interpolate(value, &lookup)?;
            if expanded.trim().is_empty() {
                return Err(format!(
                    "'{value}' names no image (a build argument without a default?)"
                ));
            }
            Ok(expanded)
        };
        match keyword.to_ascii_uppercase().as_str() {
            // Arguments declared before the first FROM are the ones FROM may use.
            "ARG" if !seen_from => {
                for w in &words[1..] {
                    let (k, v) = w.split_once('=').unwrap_or((w, ""));
                    let v = v.trim_matches('"').trim_matches('\'');
                    args.push((k.to_string(), v.to_string()));
                }
            }
            "FROM" => {
                seen_from = true;
                let mut rest = words[1..].iter().filter(|w| !w.starts_with("--"));
                let Some(image) = rest.next() else {
                    return Err("a FROM line names no image".into());
                };
                let image = expand(image)?;
                let stage = match (rest.next(), rest.next()) {
                    (Some(a), Some(name)) if a.eq_ignore_ascii_case("as") => {
                        Some(name.to_ascii_lowercase())
                    }
                    _ => None,
                };
                let lower = image.to_ascii_lowercase();
                if lower != "scratch" && !stages.contains(&lower) {
                    out.push(image);
                }
                // Stages are also known by their index.
                stages.push(stages.len().to_string());
                if let Some(name) = stage {
                    stages.push(name);
                }
            }
            "COPY" | "ADD" => {
                for w in &words[1..] {
                    let Some(from) = w
                        .get(..7)
                        .filter(|f| f.eq_ignore_ascii_case("--from="))
                        .map(|_| &w[7..])
                    else {
                        continue;
                    };
                    let from = expand(from)?;
                    if !stages.contains(&from.to_ascii_lowercase()) {
                        out.push(from);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The escape characters a Dockerfile may be read with. Parser directives (`# key=value`,
/// key in any case) are read from the top until the first line that is not one the parser
/// knows; engines differ in which keys they know (older ones only `escape`, then `syntax`,
/// now `check`), so each of those readings is returned, and callers check every one: a line
/// hidden from one reading (a `FROM` swallowed by a continuation) is still seen in another.
fn escapes(text: &str) -> Vec<char> {
    let directive = |line: &str| -> Option<(String, String)> {
        let (key, value) = line.trim().strip_prefix('#')?.split_once('=')?;
        let key = key.trim();
        let well_formed = key.starts_with(|c: char| c.is_ascii_alphabetic())
            && key.chars().all(|c| c.is_ascii_alphanumeric());
        let value = value.trim();
        (well_formed && !value.is_empty()).then(|| (key.to_ascii_lowercase(), value.to_string()))
    };
    let read = |known: &[&str]| -> char {
        for line in text.lines() {
            match directive(line) {
                Some((key, value)) if known.contains(&key.as_str()) => {
                    if key == "escape" {
                        return if value == "`" { '`' } else { '\\' };
                    }
                }
                _ => break,
            }
        }
        '\\'
    };
    let mut out = Vec::new();
    for known in [
        &["escape"][..],
        &["escape", "syntax"],
        &["escape", "syntax", "check"],
    ] {
        let c = read(known);
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// Instructions with their continuation lines joined and comments dropped, read with the
/// escape character `escape`.
fn logical_lines(text: &str, escape: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') {
            continue;
        }
        match t.strip_suffix(escape) {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(t);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    out
}

/// The text without a leading UTF-8 byte-order mark (the engines skip it; a `FROM` behind it
/// must still be seen).
fn without_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// Whether any build step may need the network: a `RUN` (it may download), an `ADD` of a
/// URL (fetched by the engine inside the build) or an `ONBUILD` (a base image's steps).
/// A Dockerfile that only copies files builds with no network at all.
pub fn needs_network(text: &str) -> bool {
    let text = without_bom(text);
    let lines: Vec<String> = escapes(text)
        .into_iter()
        .flat_map(|e| logical_lines(text, e))
        .collect();
    lines.iter().any(|line| {
        let mut words = line.split_whitespace();
        match words.next().map(str::to_ascii_uppercase).as_deref() {
            Some("RUN" | "ONBUILD") => true,
            Some("ADD") => words.any(|w| w.contains("://")),
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::{base_images, needs_network};

    #[test]
    fn only_run_add_of_a_url_and_onbuild_need_the_network() {
        assert!(!needs_network(
            "FROM a\nCOPY . /app\nADD site.tar /srv\nCMD [\"run\"]\n"
        ));
        assert!(needs_network("FROM a\nrun echo hi\n"));
        assert!(needs_network(
            "FROM a\nADD --chown=1:1 https://example.org/x /x\n"
        ));
        assert!(needs_network("FROM a\nONBUILD COPY . /x\n"));
        // A continuation or a comment does not hide a RUN.
        assert!(needs_network("FROM a\nCOPY a \\\n  b\n# x\nRUN true\n"));
    }

    #[test]
    fn bases_come_from_from_lines_copy_from_and_argument_defaults() {
        let text = "# escape=\\\\\nARG BASE=milkcrate-other\nARG TAG\nFROM --platform=linux/amd64 busybox:1 AS build\nRUN echo hi \\\\\n  && echo there\nfrom ${BASE}:1\nCOPY --from=build /a /b\nCOPY --from=0 /a /b\nCOPY --from=milkcrate-victim:2026 /app /loot\nFROM scratch\n";
        assert_eq!(
            base_images(text).unwrap(),
            vec!["busybox:1", "milkcrate-other:1", "milkcrate-victim:2026"]
        );
        let err = base_images("ARG TAG\nFROM ${TAG}\n").unwrap_err();
        assert!(err.contains("names no image"), "{err}");
        // A continuation cannot hide a FROM.
        assert_eq!(
            base_images("FROM \\\n  milkcrate-x:1\n").unwrap(),
            vec!["milkcrate-x:1"]
        );
        assert_eq!(
            base_images("# escape=`\nFROM `\n  milkcrate-x:1\n").unwrap(),
            vec!["milkcrate-x:1"]
        );
    }

    /// Every reading an engine could make is checked: a `FROM` one reading hides behind a
    /// continuation is seen in another (escape directives in any case, after another
    /// comment, behind a byte-order mark), and `--from` in any case.
    #[test]
    fn a_base_hidden_from_one_reading_is_still_found() {
        let hidden = |text: &str| {
            let bases = base_images(text).unwrap();
            assert!(
                bases.iter().any(|b| b == "victim:1"),
                "{text:?} hides victim:1: {bases:?}"
            );
        };
        hidden("# ESCAPE=`\nFROM busybox\nRUN true \\\nFROM victim:1\nRUN cat /x\n");
        hidden("# syntax=x\n#Escape = `\nFROM busybox\nRUN true \\\nFROM victim:1\n");
        hidden("# check=skip=all\n# escape=`\nFROM busybox\nRUN true \\\nFROM victim:1\n");
        hidden("\u{feff}FROM victim:1\n");
        hidden("FROM busybox\nCOPY --From=victim:1 /a /b\n");
        // The plain reading is unchanged.
        assert_eq!(
            base_images("FROM a:1\nRUN x \\\n  y\nFROM b:2\n").unwrap(),
            vec!["a:1", "b:2"]
        );
        assert!(needs_network("# ESCAPE=`\nFROM a\nCOPY x \\\nRUN y\n"));
    }
}
