//! Tidy: reads the source tree and fails, naming file and line, when a rule of ARCHITECTURE.md's
//! "Invariants" that can be checked by reading source is broken (in the manner of rust-analyzer's
//! `tidy.rs`). No Docker, no server: it only reads `src/` and `templates/`.
//!
//! Each rule has a unit test below that feeds the checker a small bad snippet and expects a finding,
//! so a rule that stops biting is noticed.

use std::fmt;
use std::path::{Path, PathBuf};

/// One broken rule: where, which rule, and the offending line.
#[derive(Debug)]
struct Finding {
    file: String,
    line: usize,
    rule: &'static str,
    text: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}\n    {}",
            self.file,
            self.line,
            self.rule,
            self.text.trim()
        )
    }
}

/// Which modules may use a crate or facility; `rel` is the path under the package root,
/// with `/` separators (`src/web/apps.rs`).
fn in_dir(rel: &str, dir: &str) -> bool {
    rel.starts_with(&format!("src/{dir}/")) || rel == format!("src/{dir}.rs")
}

/// Does `line` use the path `needle` (such as `bollard` or `zip::`) as a path of its own, not as
/// the tail of a longer name (`gzip::`, `crate::foo::tar::`)?
fn uses_path(line: &str, needle: &str) -> bool {
    let mut from = 0;
    while let Some(at) = line[from..].find(needle) {
        let start = from + at;
        let before = line[..start].chars().next_back();
        let after = line[start + needle.len()..].chars().next();
        let clean_before =
            !matches!(before, Some(c) if c.is_alphanumeric() || c == '_' || c == ':');
        let clean_after = !needle.ends_with(|c: char| c.is_alphanumeric() || c == '_')
            || !matches!(after, Some(c) if c.is_alphanumeric() || c == '_');
        if clean_before && clean_after {
            return true;
        }
        from = start + needle.len();
    }
    false
}

/// Is this line a comment (doc or plain)? Rules about imports and macros skip comments: a
/// module's doc may well name the crate it must not use.
fn is_comment(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("//") || t.starts_with("/*") || t.starts_with('*')
}

/// `std::net` items that are plain values (parsing an address is not IO).
const NET_VALUE_TYPES: &[&str] = &[
    "std::net::IpAddr",
    "std::net::Ipv4Addr",
    "std::net::Ipv6Addr",
    "std::net::SocketAddr",
    "std::net::AddrParseError",
];

/// Does this line of a `domain/` file do (or import something that does) IO?
fn domain_io(line: &str) -> Option<&'static str> {
    const IO: &[&str] = &[
        "std::fs",
        "tokio::fs",
        "tokio::net",
        "std::process",
        "tokio::process",
        "bollard",
        "rusqlite",
    ];
    if let Some(p) = IO.iter().find(|p| uses_path(line, p)) {
        return Some(p);
    }
    if uses_path(line, "std::net") {
        let mut rest = line.to_string();
        for t in NET_VALUE_TYPES {
            rest = rest.replace(t, "");
        }
        if uses_path(&rest, "std::net") {
            return Some("std::net");
        }
    }
    // `use std::{fs, process}` style imports.
    if let Some(i) = line.find("std::{") {
        let group = &line[i..];
        for m in ["fs", "process", "net"] {
            if group
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .any(|w| w == m)
            {
                return Some("std::{fs, net, process}");
            }
        }
    }
    None
}

/// SQL statements (uppercase, as the store writes them).
fn looks_like_sql(line: &str) -> bool {
    (line.contains("SELECT ") && line.contains(" FROM "))
        || line.contains("INSERT INTO")
        || line.contains("DELETE FROM")
        || line.contains("CREATE TABLE")
        || line.contains("ALTER TABLE")
        || (line.contains("UPDATE ") && line.contains(" SET "))
}

/// Does this line name the composition root (`crate::app::…`, or `app` in a `crate::{…}`
/// group on the same line)?
fn uses_app_state(line: &str) -> bool {
    uses_path(line, "crate::app")
        || (line.contains("crate::{") && (uses_path(line, "app::") || uses_path(line, "app}")))
}

/// Checks one Rust file under `src/`.
fn check_rust(rel: &str, text: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut push = |line: usize, rule: &'static str, text: &str| {
        out.push(Finding {
            file: rel.to_string(),
            line,
            rule,
            text: text.to_string(),
        })
    };

    // Every module opens with its purpose.
    match text.lines().enumerate().find(|(_, l)| !l.trim().is_empty()) {
        Some((_, l)) if l.trim_start().starts_with("//!") => {}
        Some((i, l)) => push(i + 1, "a module must open with a `//!` doc", l),
        None => push(1, "a module must open with a `//!` doc", ""),
    }

    let is_migrations = rel.starts_with("src/store/") && rel.contains("migration");
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if is_migrations && normalised_upper(line).contains("DROP TABLE") {
            push(n, "no migration drops a table (invariant 5)", line);
        }
        if is_comment(line) {
            continue;
        }
        for m in ["dbg!(", "todo!(", "unimplemented!("] {
            if uses_path(line, m) {
                push(n, "no dbg!, todo! or unimplemented! in src/", line);
            }
        }
        if in_dir(rel, "domain") && domain_io(line).is_some() {
            push(n, "domain/ does no IO (invariant 1)", line);
        }
        if !in_dir(rel, "store") && (uses_path(line, "rusqlite") || looks_like_sql(line)) {
            push(n, "SQL only in store/ (invariant 2)", line);
        }
        if !in_dir(rel, "docker") && uses_path(line, "bollard") {
            push(n, "bollard only in docker/ (invariant 2)", line);
        }
        if !(in_dir(rel, "web") || in_dir(rel, "router") || rel == "src/server.rs")
            && uses_path(line, "axum")
        {
            push(
                n,
                "axum only in web/, router/ and server.rs (invariant 2)",
                line,
            );
        }
        if (in_dir(rel, "router") || in_dir(rel, "http_common"))
            && (uses_path(line, "crate::app") || uses_path(line, "crate::web"))
        {
            push(
                n,
                "router/ and http_common/ import neither app nor web (issue 14: narrow handles)",
                line,
            );
        }
        if rel != "src/config.rs" && (uses_path(line, "std::env") || uses_path(line, "env::var")) {
            push(n, "std::env is read only by config.rs (invariant 4)", line);
        }
        if !in_dir(rel, "archive")
            && (uses_path(line, "zip::") || uses_path(line, "tar::") || uses_path(line, "flate2"))
        {
            push(n, "zip and tar only in archive/ (invariant 9)", line);
        }
        if (in_dir(rel, "service") || in_dir(rel, "domain")) && uses_path(line, "crate::web") {
            push(n, "service/ and domain/ never import web/ (layering)", line);
        }
        if in_dir(rel, "domain") && uses_app_state(line) {
            push(n, "domain/ never imports app (layering)", line);
        }
        if in_dir(rel, "service") && uses_app_state(line) {
            push(
                n,
                "a service receives the handles it uses, not AppState: no `crate::app` here (layering)",
                line,
            );
        }
    }
    out
}

/// Upper case with runs of whitespace made one space, so `drop   table` is caught too.
fn normalised_upper(line: &str) -> String {
    line.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase()
}

/// Checks one template: no inline script or style (the CSP forbids them; invariant 6).
fn check_template(rel: &str, text: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let lower = line.to_lowercase();
        let mut bad = lower.contains("<style") || lower.contains("style=");
        let mut from = 0;
        while let Some(at) = lower[from..].find("<script") {
            let start = from + at;
            let tag_end = lower[start..].find('>').map_or(lower.len(), |e| start + e);
            if !lower[start..tag_end].contains("src=") {
                bad = true;
            }
            from = start + "<script".len();
        }
        let inline_handler = lower.split(|c: char| c.is_whitespace()).any(|w| {
            w.starts_with("on") && w.contains('=') && w[2..].starts_with(char::is_alphabetic)
        });
        if bad || inline_handler {
            out.push(Finding {
                file: rel.to_string(),
                line: i + 1,
                rule: "no inline <script>, <style>, style= or on*= in templates (invariant 6)",
                text: line.to_string(),
            });
        }
    }
    out
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

#[test]
fn source_tree_is_tidy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut findings = Vec::new();
    let mut rust_files = Vec::new();
    files_under(&root.join("src"), &mut rust_files);
    let mut checked = 0;
    for path in rust_files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
    {
        let text = std::fs::read_to_string(path).expect("a readable source file");
        findings.extend(check_rust(&relative(root, path), &text));
        checked += 1;
    }
    assert!(
        checked > 50,
        "tidy found only {checked} Rust files under src/"
    );
    let mut templates = Vec::new();
    files_under(&root.join("templates"), &mut templates);
    for path in &templates {
        let text = std::fs::read_to_string(path).expect("a readable template");
        findings.extend(check_template(&relative(root, path), &text));
    }
    assert!(!templates.is_empty(), "tidy found no templates");
    assert!(
        findings.is_empty(),
        "tidy found {} problem(s) (rules: ARCHITECTURE.md, Invariants):\n{}",
        findings.len(),
        findings
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[cfg(test)]
mod rules_bite {
    use super::*;

    const DOC: &str = "//! A module.\n";

    fn rules(rel: &str, body: &str) -> Vec<&'static str> {
        check_rust(rel, &format!("{DOC}{body}"))
            .into_iter()
            .map(|f| f.rule)
            .collect()
    }

    fn one(rel: &str, body: &str, rule_part: &str) {
        let found = check_rust(rel, &format!("{DOC}{body}"));
        assert!(
            found
                .iter()
                .any(|f| f.rule.contains(rule_part) && f.line == 2 && f.file == rel),
            "expected a finding `{rule_part}` at {rel}:2 for {body:?}, got {found:?}"
        );
    }

    #[test]
    fn service_and_domain_never_import_web() {
        one(
            "src/service/x.rs",
            "use crate::web::form::Form;",
            "never import web",
        );
        one(
            "src/domain/x.rs",
            "    crate::web::views::render(p)",
            "never import web",
        );
        assert!(rules("src/cli/x.rs", "use crate::web::client::ClientInfo;").is_empty());
        assert!(rules("src/service/x.rs", "use crate::webhooks::Hook;").is_empty());
    }

    #[test]
    fn domain_never_imports_app() {
        one(
            "src/domain/x.rs",
            "use crate::app::AppState;",
            "domain/ never imports app",
        );
        one(
            "src/domain/x.rs",
            "use crate::{app::AppState, store};",
            "never imports app",
        );
        assert!(rules("src/domain/x.rs", "use crate::apps::Thing;").is_empty());
    }

    #[test]
    fn services_never_import_app() {
        one(
            "src/service/new.rs",
            "use crate::app::AppState;",
            "not AppState",
        );
        one(
            "src/service/new.rs",
            "fn f(s: &crate::app::AppState) {}",
            "not AppState",
        );
        one(
            "src/service/apps.rs",
            "use crate::{app::AppState, store};",
            "not AppState",
        );
        assert!(rules("src/service/new.rs", "use crate::service::app_dir;").is_empty());
    }

    #[test]
    fn a_module_without_its_opening_doc() {
        let found = check_rust("src/web/x.rs", "\nuse std::fmt;\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].line, 2);
        assert!(check_rust("src/web/x.rs", "// plain comment\n//! doc\n").len() == 1);
        assert!(check_rust("src/web/x.rs", "\n\n//! Purpose.\nuse std::fmt;\n").is_empty());
    }

    #[test]
    fn debugging_macros() {
        one("src/web/x.rs", "    let a = dbg!(b);", "dbg!");
        one("src/service/x.rs", "    todo!()", "dbg!");
        one("src/app.rs", "    unimplemented!(\"later\")", "dbg!");
        assert!(rules("src/app.rs", "// a comment naming todo!() is fine").is_empty());
    }

    #[test]
    fn domain_does_no_io() {
        for bad in [
            "use std::fs;",
            "    let f = std::fs::read(p);",
            "    tokio::fs::write(p, b).await;",
            "use std::net::TcpStream;",
            "    tokio::net::TcpStream::connect(a).await;",
            "    std::process::Command::new(\"sh\");",
            "use std::{fs, io};",
        ] {
            one("src/domain/x.rs", bad, "domain/ does no IO");
        }
        one(
            "src/domain/x.rs",
            "use bollard::Docker;",
            "domain/ does no IO",
        );
        one(
            "src/domain/x.rs",
            "use rusqlite::Connection;",
            "domain/ does no IO",
        );
        // Parsing an address is not IO.
        assert!(rules("src/domain/x.rs", "    s.parse::<std::net::IpAddr>()").is_empty());
        assert!(rules("src/service/x.rs", "use std::fs;").is_empty());
    }

    #[test]
    fn sql_only_in_store() {
        one(
            "src/service/x.rs",
            "use rusqlite::params;",
            "SQL only in store/",
        );
        one(
            "src/web/x.rs",
            "    conn.execute(\"DELETE FROM apps WHERE id = ?1\", [id])",
            "SQL only in store/",
        );
        one(
            "src/app.rs",
            "    \"SELECT name FROM apps\"",
            "SQL only in store/",
        );
        assert!(rules("src/store/apps.rs", "    \"SELECT name FROM apps\"").is_empty());
        assert!(rules("src/store/mod.rs", "use rusqlite::Connection;").is_empty());
    }

    #[test]
    fn bollard_only_in_docker() {
        one(
            "src/service/x.rs",
            "use bollard::Docker;",
            "bollard only in docker/",
        );
        one(
            "src/web/x.rs",
            "    let e: bollard::errors::Error = e;",
            "bollard only in docker/",
        );
        assert!(rules("src/docker/volumes.rs", "use bollard::Docker;").is_empty());
        assert!(rules("src/docker.rs", "use bollard::Docker;").is_empty());
    }

    #[test]
    fn env_only_in_config() {
        one(
            "src/app.rs",
            "    let v = std::env::var(\"X\");",
            "std::env is read only by config.rs",
        );
        one(
            "src/web/x.rs",
            "    for (k, v) in std::env::vars() {}",
            "std::env is read only by config.rs",
        );
        one(
            "src/cli/x.rs",
            "    let v = env::var(\"X\");",
            "std::env is read only by config.rs",
        );
        assert!(rules("src/config.rs", "    let v = std::env::var(\"X\");").is_empty());
    }

    #[test]
    fn zip_and_tar_only_in_archive() {
        one(
            "src/service/x.rs",
            "use zip::ZipArchive;",
            "zip and tar only in archive/",
        );
        one(
            "src/cli/x.rs",
            "    let b = tar::Builder::new(f);",
            "zip and tar only",
        );
        one(
            "src/web/x.rs",
            "use flate2::read::GzDecoder;",
            "zip and tar only",
        );
        assert!(rules("src/archive/backup.rs", "use tar::Builder;").is_empty());
        // A longer name that ends in `zip::` is not the crate.
        assert!(rules("src/web/x.rs", "    crate::archive::gzip::open()").is_empty());
    }

    #[test]
    fn axum_only_in_web_router_and_server() {
        one("src/service/x.rs", "use axum::Router;", "axum only in");
        one("src/app.rs", "use axum::Router;", "axum only in");
        one("src/cli/x.rs", "    axum::serve(l, r)", "axum only in");
        assert!(rules("src/web/x.rs", "use axum::Router;").is_empty());
        assert!(rules("src/router/proxy.rs", "use axum::Router;").is_empty());
        assert!(rules("src/server.rs", "use axum::Router;").is_empty());
    }

    #[test]
    fn router_imports_neither_app_nor_web() {
        one(
            "src/router/proxy.rs",
            "use crate::app::AppState;",
            "import neither app nor web",
        );
        one(
            "src/router/mod.rs",
            "    let c = crate::web::client::client_info(state, None, h);",
            "import neither app nor web",
        );
        one(
            "src/http_common/mod.rs",
            "use crate::web::views;",
            "import neither app nor web",
        );
        assert!(rules("src/web/client.rs", "use crate::app::AppState;").is_empty());
        assert!(rules("src/router/mod.rs", "use crate::http_common::ConnInfo;").is_empty());
        assert!(rules("src/router/mod.rs", "use crate::application::X;").is_empty());
    }

    #[test]
    fn no_migration_drops_a_table() {
        one(
            "src/store/migrations.rs",
            "    \"drop  table apps;\",",
            "no migration drops a table",
        );
        // Even inside a comment: the rule is about the text of the migrations.
        one(
            "src/store/migrations.rs",
            "    // DROP TABLE x",
            "no migration drops a table",
        );
    }

    #[test]
    fn templates_have_no_inline_script_or_style() {
        for bad in [
            "<script>alert(1)</script>",
            "<SCRIPT type=\"module\">x()</SCRIPT>",
            "<style>p { color: red }</style>",
            "<p style=\"color: red\">x</p>",
            "<button onclick=\"go()\">Go</button>",
        ] {
            let found = check_template("templates/x.html", &format!("<p>ok</p>\n{bad}\n"));
            assert!(
                found.len() == 1 && found[0].line == 2,
                "{bad:?} gave {found:?}"
            );
        }
        assert!(
            check_template(
                "templates/x.html",
                "<script src=\"{{ layout.js }}\" defer></script>\n<p class=\"online\">x</p>\n"
            )
            .is_empty()
        );
    }
}
