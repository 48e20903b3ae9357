//! The production files parse and say what the docs promise. (Traefik itself cannot run here:
//! no registry. docs/production.md lists what is checked by hand.)

use serde_norway::Value;

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{path} does not parse: {e}"))
}

#[test]
fn the_compose_file_keeps_the_dashboard_local_and_milkcrate_unpublished() {
    let c = yaml("deploy/docker-compose.yml");
    let traefik = &c["services"]["traefik"];
    let ports: Vec<&str> = traefik["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        ports.contains(&"127.0.0.1:8080:8080"),
        "dashboard on loopback only: {ports:?}"
    );
    assert!(
        !ports
            .iter()
            .any(|p| p.ends_with(":8080") && !p.starts_with("127.0.0.1:"))
    );
    assert!(traefik["image"].as_str().unwrap().starts_with("traefik:v3"));
    let socket = traefik["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v.as_str().unwrap().contains("docker.sock"))
        .unwrap();
    assert!(
        socket.as_str().unwrap().ends_with(":ro"),
        "Traefik reads the socket only"
    );

    let mc = &c["services"]["milkcrate"];
    assert!(
        mc.get("ports").is_none(),
        "milkcrate's own port is not published"
    );
    assert_eq!(
        mc["env_file"].as_str(),
        Some(".env"),
        "settings come from .env"
    );
    assert_eq!(
        mc["environment"]["MILKCRATE_ROUTER"].as_str(),
        Some("traefik")
    );
    assert_eq!(
        mc["environment"]["MILKCRATE_ENV"].as_str(),
        Some("production")
    );
    assert!(
        mc["environment"].get("SECRET_KEY").is_none(),
        "no placeholder secret in the file"
    );
    // Apps are kept apart: each gets its own network, joined by Traefik and milkcrate, named
    // as their containers are.
    let joined: Vec<&str> = mc["environment"]["MILKCRATE_TRAEFIK_CONTAINERS"]
        .as_str()
        .expect("MILKCRATE_TRAEFIK_CONTAINERS is set")
        .split(',')
        .collect();
    assert_eq!(
        joined,
        [
            c["services"]["traefik"]["container_name"].as_str().unwrap(),
            mc["container_name"].as_str().unwrap()
        ]
    );
    let labels = &mc["labels"];
    let admin_priority: u32 = labels["traefik.http.routers.milkcrate-admin.priority"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        admin_priority,
        milkcrate::domain::labels::PLATFORM_PRIORITY,
        "milkcrate's routers outrank every app"
    );
    let rule = labels["traefik.http.routers.milkcrate-admin.rule"]
        .as_str()
        .unwrap();
    for path in [
        "Path(`/admin`)",
        "PathPrefix(`/admin/`)",
        "Path(`/login`)",
        "PathPrefix(`/static/`)",
    ] {
        assert!(rule.contains(path), "{path} in {rule}");
    }
    assert_eq!(
        c["networks"]["milkcrate-traefik"]["name"].as_str(),
        Some("milkcrate-traefik")
    );
}

#[test]
fn traefik_yml_is_ready_for_https_and_explains_the_dashboard() {
    let text =
        std::fs::read_to_string(format!("{}/deploy/traefik.yml", env!("CARGO_MANIFEST_DIR")))
            .unwrap();
    let t = yaml("deploy/traefik.yml");
    assert_eq!(
        t["providers"]["docker"]["exposedByDefault"].as_bool(),
        Some(false)
    );
    assert_eq!(
        t["providers"]["docker"]["network"].as_str(),
        Some("milkcrate-traefik")
    );
    assert_eq!(
        t["entryPoints"]["websecure"]["address"].as_str(),
        Some(":443")
    );
    for promised in [
        "WITHOUT any",
        "insecure: false",
        "#   letsencrypt:",
        "#       to: websecure",
    ] {
        assert!(
            text.contains(promised),
            "traefik.yml explains/keeps ready: {promised}"
        );
    }
}

#[test]
fn the_env_example_and_units_name_real_settings() {
    let env = std::fs::read_to_string(format!(
        "{}/deploy/.env.example",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let out = crate::helpers::milkcrate_command()
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for line in env
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
    {
        let var = line.split('=').next().unwrap();
        if var == "DOCKER_GID" {
            continue; // for the compose file itself
        }
        assert!(
            help.contains(&format!("[env: {var}")),
            "{var} is a setting of milkcrate serve"
        );
    }
    let unit = std::fs::read_to_string(format!(
        "{}/deploy/milkcrate.service",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    for line in [
        "ExecStart=/usr/local/bin/milkcrate serve",
        "NoNewPrivileges=true",
        "Environment=MILKCRATE_ENV=production",
        "Restart=on-failure",
        // The host firewall needs it without root (MILKCRATE_HOST_FIREWALL=auto).
        "AmbientCapabilities=CAP_NET_BIND_SERVICE CAP_NET_ADMIN",
    ] {
        assert!(unit.contains(line), "{line}");
    }
}

/// 13.2 and 13.3 in the shipped files: Traefik routes only containers milkcrate labelled, and
/// milkcrate trusts forwarded headers only from Traefik's own fixed address (not the network
/// the apps are on).
#[test]
fn traefik_routes_only_milkcrates_containers_and_only_traefik_is_trusted() {
    let t = yaml("deploy/traefik.yml");
    let docker = &t["providers"]["docker"];
    assert_eq!(docker["exposedByDefault"].as_bool(), Some(false));
    let constraints = docker["constraints"].as_str().expect("a constraints line");
    assert!(
        constraints.contains("Label(`milkcrate.managed`,`true`)"),
        "{constraints}"
    );
    let c = yaml("deploy/docker-compose.yml");
    let traefik_networks = c["services"]["traefik"]["networks"]
        .as_mapping()
        .expect("Traefik's networks");
    let traefik_ip: Vec<&str> = traefik_networks
        .values()
        .filter_map(|n| n["ipv4_address"].as_str())
        .collect();
    assert_eq!(traefik_ip.len(), 1, "Traefik has one fixed address");
    let trusted = c["services"]["milkcrate"]["environment"]["TRUSTED_PROXIES"]
        .as_str()
        .expect("TRUSTED_PROXIES is set");
    assert_eq!(
        trusted, traefik_ip[0],
        "only Traefik's own address is trusted, never a range apps are on"
    );
    assert!(
        !trusted.contains('/'),
        "one address, not a network: {trusted}"
    );
}
