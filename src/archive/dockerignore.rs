//! `.dockerignore` as Docker reads it: one pattern a line, `#` comments, `!` re-includes, `*`
//! and `?` within a path component, `**` across components. A pattern that matches a folder
//! excludes what is inside it. The last matching line decides.

#[derive(Debug, Default, Clone)]
pub struct DockerIgnore {
    rules: Vec<(bool, Vec<String>)>,
}

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
                let parts = pat
                    .trim_start_matches("./")
                    .trim_matches('/')
                    .split('/')
                    .filter(|c| !c.is_empty() && *c != ".")
                    .map(String::from)
                    .collect();
                (include, parts)
            })
            .collect();
        Self { rules }
    }

    /// Whether the relative path `path` (`a/b.txt`) is left out of the build context.
    /// The Dockerfile and `.dockerignore` itself are always sent, as Docker does.
    pub fn excluded(&self, path: &str) -> bool {
        if path == "Dockerfile" || path == ".dockerignore" {
            return false;
        }
        let comps: Vec<&str> = path.split('/').collect();
        let mut excluded = false;
        for (include, pat) in &self.rules {
            let hit = (1..=comps.len()).any(|n| matches(pat, &comps[..n]));
            if hit {
                excluded = !include;
            }
        }
        excluded
    }
}

fn matches(pat: &[String], path: &[&str]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| matches(rest, &path[skip..]))
        }
        Some((first, rest)) => path.split_first().is_some_and(|(p, prest)| {
            wildcard(first.as_bytes(), p.as_bytes()) && matches(rest, prest)
        }),
    }
}

fn wildcard(pat: &[u8], s: &[u8]) -> bool {
    match pat.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| wildcard(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && wildcard(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && wildcard(rest, &s[1..]),
    }
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
}
