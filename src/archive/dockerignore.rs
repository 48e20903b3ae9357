//! `.dockerignore` as Docker reads it: one pattern a line, `#` comments, `!` re-includes, `*`
//! and `?` within a path component, `**` across components. A pattern that matches a folder
//! excludes what is inside it. The last matching line decides.
//!
//! Matching is bounded: a pattern is tried against a path in one pass over a table of
//! (pattern component, path component) pairs, and a component against a name with the
//! linear-space two-pointer glob algorithm. Nothing backtracks, so no pattern an upload
//! brings can make a path take exponential time (a 623-byte ZIP once pinned a core for hours).

#[derive(Debug, Default, Clone)]
pub struct DockerIgnore {
    rules: Vec<(bool, Vec<String>)>,
}

/// The matching was stopped from outside (the deploy it served was given up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

impl DockerIgnore {
    pub fn parse(text: &str) -> Self {
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (include, pat) = match l.strip_prefix('!') {
                    Some(p) => (true, p.trim()),
                    None => (false, l),
                };
                let mut parts: Vec<String> = pat
                    .trim_start_matches("./")
                    .trim_matches('/')
                    .split('/')
                    .filter(|c| !c.is_empty() && *c != ".")
                    .map(String::from)
                    .collect();
                // `**/**` matches what one `**` matches; folding them keeps the table small.
                parts.dedup_by(|a, b| a == "**" && b == "**");
                (include, parts)
            })
            .collect();
        Self { rules }
    }

    /// Whether the relative path `path` (`a/b.txt`) is left out of the build context.
    /// The Dockerfile and `.dockerignore` itself are always sent, as Docker does.
    pub fn excluded(&self, path: &str) -> bool {
        self.excluded_unless(path, &|| false).unwrap_or(false)
    }

    /// [`Self::excluded`], asking `stop` between rules so a caller can give up on a long run.
    pub fn excluded_unless(&self, path: &str, stop: &dyn Fn() -> bool) -> Result<bool, Stopped> {
        if path == "Dockerfile" || path == ".dockerignore" {
            return Ok(false);
        }
        let comps: Vec<&str> = path.split('/').collect();
        let mut excluded = false;
        for (include, pat) in &self.rules {
            if stop() {
                return Err(Stopped);
            }
            if matches_path_or_parent(pat, &comps) {
                excluded = !include;
            }
        }
        Ok(excluded)
    }
}

/// Whether `pat` matches `path` or one of its parent folders (`path[..n]` for some n ≥ 1).
///
/// `reach[j]` says whether the pattern components seen so far can match exactly the first
/// `j` path components; each pattern component updates it in one sweep, so the cost is
/// (pattern components × path components) component matches, never more.
fn matches_path_or_parent(pat: &[String], path: &[&str]) -> bool {
    let n = path.len();
    let mut reach = vec![false; n + 1];
    reach[0] = true;
    for p in pat {
        let mut next = vec![false; n + 1];
        if p == "**" {
            // Zero or more whole components: once reachable, every longer prefix is too.
            let mut on = false;
            for j in 0..=n {
                on |= reach[j];
                next[j] = on;
            }
        } else {
            for j in 0..n {
                if reach[j] && glob(p.as_bytes(), path[j].as_bytes()) {
                    next[j + 1] = true;
                }
            }
        }
        reach = next;
        if !reach.iter().any(|r| *r) {
            return false;
        }
    }
    reach[1..].iter().any(|r| *r)
}

/// `*` (any run of bytes) and `?` (one byte) within one component. The classic two-pointer
/// algorithm: on a mismatch it only moves the last `*` on by one, so it never revisits more
/// than (pattern length × name length) steps, however many stars the pattern holds.
fn glob(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        match pat.get(p) {
            Some(b'*') => {
                star = Some((p, i));
                p += 1;
            }
            Some(&c) if c == b'?' || c == s[i] => {
                p += 1;
                i += 1;
            }
            _ => match star {
                Some((sp, si)) => {
                    p = sp + 1;
                    i = si + 1;
                    star = Some((sp, si + 1));
                }
                None => return false,
            },
        }
    }
    pat[p..].iter().all(|c| *c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_work_as_docker_reads_them() {
        let ig = DockerIgnore::parse(
            "# comment\nnode_modules\n*.log\n**/secret.txt\n/build/\n!important.log\ndocs/*.md\n",
        );
        assert!(ig.excluded("node_modules"));
        assert!(ig.excluded("node_modules/x/y.js"));
        assert!(ig.excluded("debug.log"));
        assert!(!ig.excluded("important.log"));
        assert!(ig.excluded("a/b/secret.txt"));
        assert!(ig.excluded("secret.txt"));
        assert!(ig.excluded("build/out.bin"));
        assert!(ig.excluded("docs/readme.md"));
        assert!(!ig.excluded("docs/sub/readme.md"));
        assert!(!ig.excluded("src/main.rs"));
        assert!(!ig.excluded("Dockerfile"));
        assert!(!DockerIgnore::parse("*").excluded("Dockerfile"));
    }

    #[test]
    fn globs_and_double_stars_match_what_they_should() {
        for (pat, s, want) in [
            ("*", "", true),
            ("*", "abc", true),
            ("a*c", "abc", true),
            ("a*c", "abcd", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*a*b*", "xxaxxbxx", true),
            ("*a*b*", "xxbxxaxx", false),
            ("**", "x", true),
            ("", "", true),
            ("", "a", false),
        ] {
            assert_eq!(glob(pat.as_bytes(), s.as_bytes()), want, "{pat} vs {s}");
        }
        let ig = DockerIgnore::parse("a/**/z\n**/b/**\n");
        assert!(ig.excluded("a/z"));
        assert!(ig.excluded("a/x/y/z"));
        assert!(ig.excluded("a/x/y/z/inside"));
        assert!(!ig.excluded("a/x/y"));
        assert!(ig.excluded("b"));
        assert!(ig.excluded("q/b/r"));
        assert!(!ig.excluded("q/bb/r"));
        assert!(DockerIgnore::parse("**").excluded("any/thing"));
    }

    /// The pattern of the 623-byte ZIP's kind: many stars and double stars against a long
    /// path that almost matches. The old backtracking matcher never finished; this one must
    /// answer (correctly) well within a few seconds: a liveness check, not a timing one.
    #[test]
    fn pathological_patterns_finish_with_the_right_answer() {
        let stars = format!("{}b", "*a".repeat(40));
        let doubles = format!("{}/nomatch", ["**", "*a*a*a*"].repeat(40).join("/"));
        let ig = DockerIgnore::parse(&format!("{stars}\n{doubles}\n"));
        let long_name = "a".repeat(200);
        let deep = vec!["aaaaaaaaaaaa"; 60].join("/");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let answers = (ig.excluded(&long_name), ig.excluded(&deep));
            let _ = tx.send(answers);
        });
        let answers = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the matcher finishes");
        assert_eq!(answers, (false, false));
        let hit = DockerIgnore::parse(&format!("{}b", "*a".repeat(40)));
        assert!(hit.excluded(&format!("{}b", "a".repeat(200))));
    }

    #[test]
    fn matching_can_be_stopped() {
        let ig = DockerIgnore::parse("a\nb\n");
        assert_eq!(ig.excluded_unless("a", &|| true), Err(Stopped));
        assert_eq!(ig.excluded_unless("a", &|| false), Ok(true));
    }
}
