//! Host names: the custom domains an admin gives an app, the `<app>.<apps domain>` names
//! milkcrate gives every app, and the host a request names. All are compared in one form:
//! ASCII (IDNA names as punycode), lower case, without port or trailing dot.
//!
//! Pure rules only: whether a name is free is decided by the caller from the store, and the
//! store's primary key on the normalised name makes "unique across apps" hold under races.

/// A host name as stored and matched: ASCII, lower case, no trailing dot, at least two labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostName(String);

impl HostName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Display for HostName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses what an admin typed as a custom domain: IDNA names become punycode
/// (`café.example` → `xn--caf-dma.example`), case and a trailing dot do not matter. Refused:
/// wildcards, IP addresses, ports, schemes or paths, single-label names, bad labels.
pub fn parse_domain(input: &str) -> Result<HostName, String> {
    let raw = input.trim();
    if raw.is_empty() {
        return Err("A domain is required, e.g. shop.example.org.".into());
    }
    if raw.contains("://") || raw.contains('/') {
        return Err(format!(
            "'{raw}' is not a domain: give the host name only, without scheme or path (e.g. shop.example.org)."
        ));
    }
    if raw.contains('*') {
        return Err(format!(
            "'{raw}': wildcard domains are not allowed; add each host name on its own."
        ));
    }
    if raw.starts_with('[') || raw.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!(
            "'{raw}' is an IP address; an app needs a host name (e.g. shop.example.org)."
        ));
    }
    if raw.contains(':') {
        return Err(format!(
            "'{raw}': give the host name without a port (e.g. shop.example.org)."
        ));
    }
    let without_dot = raw.strip_suffix('.').unwrap_or(raw);
    let ascii = idna::domain_to_ascii_strict(without_dot)
        .map_err(|_| format!("'{raw}' is not a valid domain name."))?;
    let ascii = ascii.to_ascii_lowercase();
    check_ascii_name(&ascii)
        .map_err(|why| format!("'{raw}' is not a valid domain name: {why}."))?;
    if looks_like_ipv4(&ascii) {
        return Err(format!(
            "'{raw}' is an IP address; an app needs a host name (e.g. shop.example.org)."
        ));
    }
    Ok(HostName(ascii))
}

/// The labels of a DNS host name: 1 to 63 of `a-z 0-9 -`, not starting or ending with `-`,
/// at least two of them, 253 characters in all.
fn check_ascii_name(name: &str) -> Result<(), &'static str> {
    if name.len() > 253 {
        return Err("it is longer than 253 characters");
    }
    if !name.contains('.') {
        return Err("it needs a dot (a name such as shop.example.org)");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("it has an empty label");
        }
        if label.len() > 63 {
            return Err("a label is longer than 63 characters");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label starts or ends with a hyphen");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("only letters, digits, hyphens and dots are allowed");
        }
    }
    Ok(())
}

/// A name whose last label is all digits is an address to resolvers and browsers
/// (`127.1`, `10.0.0.1`); no top-level domain is numeric.
fn looks_like_ipv4(name: &str) -> bool {
    name.rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
}

/// What a new custom domain must not collide with, apart from other apps' domains (the
/// store's key).
#[derive(Debug, Clone, Copy)]
pub struct HostRules<'a> {
    /// MILKCRATE_ADMIN_HOST.
    pub admin_host: Option<&'a str>,
    /// MILKCRATE_APPS_DOMAIN.
    pub apps_domain: Option<&'a str>,
    /// MILKCRATE_ALLOWED_HOSTS (and MILKCRATE_DOMAIN): where the admin UI is reached when no
    /// admin host is set.
    pub admin_names: &'a [String],
}

impl HostRules<'_> {
    /// Refuses a domain that is the admin's, or that lies in the apps domain (those names are
    /// given to apps by their names: `<app>.<apps domain>`; one typed by hand would take
    /// another app's name, now or when that app is deployed later).
    pub fn check(&self, host: &HostName) -> Result<(), String> {
        let h = host.as_str();
        let is_admin = self.admin_host == Some(h)
            || (self.admin_host.is_none() && self.admin_names.iter().any(|a| a == h))
            || h == "localhost";
        if is_admin {
            return Err(format!(
                "{h} is where milkcrate's admin UI is served; an app cannot take it."
            ));
        }
        if let Some(apps) = self.apps_domain
            && (h == apps || under(h, apps))
        {
            return Err(format!(
                "{h} lies in MILKCRATE_APPS_DOMAIN ({apps}), whose names belong to apps by their names (<app>.{apps}); choose a name outside it."
            ));
        }
        Ok(())
    }
}

/// `name` is a subdomain of `domain` (not the domain itself).
pub fn under(name: &str, domain: &str) -> bool {
    name.len() > domain.len() + 1
        && name.ends_with(domain)
        && name.as_bytes()[name.len() - domain.len() - 1] == b'.'
}

/// The name every app gets in the apps domain: its uniqueness key (`my_app` → `my-app`, a
/// valid DNS label) under `apps_domain`.
pub fn app_host(name_key: &str, apps_domain: &str) -> String {
    format!("{name_key}.{apps_domain}")
}

/// Splits what an admin typed into the upload form's domain field (one or more names,
/// separated by spaces, commas or new lines), parsed, without repeats.
pub fn parse_domain_list(input: &str) -> Result<Vec<HostName>, String> {
    let mut out: Vec<HostName> = Vec::new();
    for part in input
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|p| !p.is_empty())
    {
        let host = parse_domain(part)?;
        if !out.contains(&host) {
            out.push(host);
        }
    }
    if out.len() > 20 {
        return Err("At most 20 domains can be given at once.".into());
    }
    Ok(out)
}

/// The host a request names, in the form host names are matched in: without port or trailing
/// dot, lower case. `None` for an authority that is not a plain host (user info, bad port).
pub fn request_host_name(authority: &str) -> Option<String> {
    let raw = authority.trim();
    if raw.is_empty() || raw.contains('@') {
        return None;
    }
    let host = if let Some(v6) = raw.strip_prefix('[') {
        let (inside, rest) = v6.split_once(']')?;
        if !(rest.is_empty() || port_ok(rest.strip_prefix(':')?)) {
            return None;
        }
        return Some(format!("[{}]", inside.to_ascii_lowercase()));
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if port_ok(port) => h,
            Some(_) => return None,
            None => raw,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    Some(host.to_ascii_lowercase())
}

fn port_ok(port: &str) -> bool {
    port.is_empty() || (port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> String {
        parse_domain(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .into_string()
    }

    #[test]
    fn domains_are_normalised_case_idna_and_trailing_dot() {
        assert_eq!(ok("Shop.Example.ORG"), "shop.example.org");
        assert_eq!(ok(" shop.example.org. "), "shop.example.org");
        assert_eq!(ok("café.example"), "xn--caf-dma.example");
        assert_eq!(ok("CAFÉ.example"), "xn--caf-dma.example");
        assert_eq!(ok("xn--caf-dma.example"), "xn--caf-dma.example");
        assert_eq!(ok("bücher.de"), "xn--bcher-kva.de");
        assert_eq!(ok("a-b.c-d.example"), "a-b.c-d.example");
    }

    #[test]
    fn wildcards_ip_literals_ports_and_junk_are_refused() {
        for (bad, why) in [
            ("*.example.org", "wildcard"),
            ("shop*.example.org", "wildcard"),
            ("10.0.0.1", "IP address"),
            ("127.1", "IP address"),
            ("1.2.3.4.", "IP address"),
            ("[::1]", "IP address"),
            ("::1", "IP address"),
            ("shop.example.org:8080", "port"),
            ("https://shop.example.org", "scheme"),
            ("shop.example.org/x", "scheme"),
            ("localhost", "dot"),
            ("shop", "dot"),
            ("a..b", "valid"),
            ("-a.example", "valid"),
            ("a-.example", "valid"),
            ("under_score.example", "valid"),
            ("sp ace.example", "valid"),
            ("", "required"),
        ] {
            let err = parse_domain(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
        let long = format!("{}.example", "a".repeat(64));
        assert!(parse_domain(&long).is_err());
    }

    #[test]
    fn the_admin_host_and_names_in_the_apps_domain_are_refused() {
        let admin_names = vec!["deploy.example.org".to_string()];
        let rules = HostRules {
            admin_host: Some("admin.example.org"),
            apps_domain: Some("apps.example.org"),
            admin_names: &admin_names,
        };
        let check = |s: &str| rules.check(&parse_domain(s).expect("parses"));
        assert!(check("ADMIN.example.org.").is_err());
        assert!(check("shop.apps.example.org").is_err());
        assert!(check("Other.Apps.Example.Org").is_err());
        assert!(check("apps.example.org").is_err());
        assert!(check("shop.example.org").is_ok());
        assert!(check("notapps.example.org").is_ok());
        // With an admin host set, the allow-list names are free (the admin is not served there).
        assert!(check("deploy.example.org").is_ok());
        let no_admin_host = HostRules {
            admin_host: None,
            apps_domain: None,
            admin_names: &admin_names,
        };
        assert!(
            no_admin_host
                .check(&parse_domain("Deploy.Example.org").expect("parses"))
                .is_err()
        );
    }

    #[test]
    fn lists_are_split_and_duplicates_are_one_up_to_case() {
        let list = parse_domain_list(
            "Shop.example.org, shop.example.org.\nSHOP.EXAMPLE.ORG www.shop.example.org",
        )
        .expect("valid");
        let names: Vec<&str> = list.iter().map(HostName::as_str).collect();
        assert_eq!(names, ["shop.example.org", "www.shop.example.org"]);
        assert!(parse_domain_list("").expect("empty").is_empty());
        assert!(parse_domain_list("ok.example, *.example").is_err());
    }

    #[test]
    fn request_hosts_ignore_port_case_and_trailing_dot() {
        assert_eq!(
            request_host_name("Shop.Example.org.:8080").as_deref(),
            Some("shop.example.org")
        );
        assert_eq!(
            request_host_name("shop.example.org").as_deref(),
            Some("shop.example.org")
        );
        assert_eq!(
            request_host_name("shop.example.org:").as_deref(),
            Some("shop.example.org")
        );
        assert_eq!(request_host_name("[::1]:5001").as_deref(), Some("[::1]"));
        assert_eq!(request_host_name("user@shop.example.org"), None);
        assert_eq!(request_host_name("shop.example.org:80x"), None);
        assert_eq!(request_host_name(""), None);
        assert_eq!(request_host_name("."), None);
        assert_eq!(
            app_host("my-app", "apps.example.org"),
            "my-app.apps.example.org"
        );
    }
}
