//! Unit tests of the compose parser and its safety gate.

use super::*;

struct Files(Vec<(&'static str, &'static str)>);

impl AppFiles for Files {
    fn has_file(&self, path: &str) -> bool {
        self.0.iter().any(|(p, _)| *p == path)
    }
    fn read(&self, path: &str) -> Option<Vec<u8>> {
        self.0
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, c)| c.as_bytes().to_vec())
    }
}

fn files() -> Files {
    Files(vec![
        ("web/Dockerfile", "FROM x"),
        ("api/Dockerfile.prod", "FROM x"),
        ("api.env", "# comment\nMODE=file\nexport TOKEN=\"abc\"\n"),
    ])
}

fn cx() -> Context<'static> {
    Context {
        defaults: Limits {
            memory_mb: 512,
            cpu_percent: 50,
        },
        max: Limits {
            memory_mb: 4096,
            cpu_percent: 200,
        },
        port_override: None,
        milkcrate_volumes: &[],
        assigned_volumes: &[],
        vars: &[],
    }
}

const STACK: &str = r#"
services:
  web:
    build: ./web
    ports: ["127.0.0.1:8080:80/tcp"]
    depends_on:
      api:
        condition: service_healthy
    labels:
      milkcrate.main_service: true
  api:
    build:
      context: api
      dockerfile: Dockerfile.prod
    env_file: api.env
    environment:
      MODE: compose
      DEBUG:
    expose: ["9000"]
    volumes: ["data:/var/lib/api", "data:/srv/ro:ro"]
    healthcheck:
      test: wget -q -O- http://localhost:9000/
      interval: 1m30s
      retries: 3
    deploy:
      resources:
        limits: {memory: 256m, cpus: "0.25"}
    user: "1000:1000"
    command: serve --port 9000 "with space"
volumes:
  data:
x-notes: anything
"#;

#[test]
fn a_two_service_stack_plans_in_dependency_order() {
    let plan = plan(STACK, &files(), cx()).unwrap();
    assert_eq!(plan.main, "web");
    assert_eq!(
        plan.port, 80,
        "the container side of ip:host:container/proto"
    );
    let names: Vec<&str> = plan.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, vec!["api", "web"]);
    let api = plan.service("api").unwrap();
    assert_eq!(
        api.source,
        ImageSource::Build {
            context: "api".into(),
            dockerfile: "Dockerfile.prod".into()
        }
    );
    assert_eq!(
        api.env,
        vec![
            ("TOKEN".into(), "abc".into()),
            ("MODE".into(), "compose".into()),
            ("DEBUG".into(), "".into())
        ],
        "environment wins over env_file"
    );
    assert_eq!(
        api.limits,
        Limits {
            memory_mb: 256,
            cpu_percent: 25
        }
    );
    assert_eq!(
        api.health.as_ref().unwrap().interval_ns,
        Some(90_000_000_000)
    );
    assert_eq!(
        api.health.as_ref().unwrap().test[0],
        "CMD-SHELL",
        "a string test runs in a shell"
    );
    assert_eq!(
        api.command.as_ref().unwrap(),
        &vec!["serve", "--port", "9000", "with space"]
    );
    assert!(api.mounts[1].read_only);
    assert_eq!(api.mounts[0].source, MountSource::Stack("data".into()));
    assert_eq!(plan.volumes, vec!["data"]);
    let web = plan.service("web").unwrap();
    assert_eq!(web.depends_on, vec![("api".into(), true)]);
    assert_eq!(web.limits.memory_mb, 512, "the form's defaults");
    assert_eq!(web.restart, "unless-stopped");
}

#[test]
fn the_main_service_falls_back_to_the_one_with_ports_then_the_first() {
    let text = "services:\n  db:\n    image: x\n  app:\n    image: y\n    ports: [8000]\n";
    assert_eq!(plan(text, &files(), cx()).unwrap().main, "app");
    let text = "services:\n  one:\n    image: x\n    labels: [\"milkcrate.main_service=true\"]\n    expose: [\"3000\"]\n  two:\n    image: y\n    ports: [\"8000:8000\"]\n";
    let p = plan(text, &files(), cx()).unwrap();
    assert_eq!((p.main.as_str(), p.port), ("one", 3000));
    let text = "services:\n  only:\n    image: x\n";
    let err = plan(text, &files(), cx()).unwrap_err();
    assert!(
        err.contains("Main service 'only' must expose at least one port"),
        "{err}"
    );
    let with_port = Context {
        port_override: Some(5000),
        ..cx()
    };
    assert_eq!(plan(text, &files(), with_port).unwrap().port, 5000);
}

#[test]
fn the_originals_messages_are_kept() {
    for (text, msg) in [
        ("- a\n- b\n", "docker-compose.yml must contain a dictionary"),
        (
            "version: '3'\n",
            "docker-compose.yml must contain a 'services' section",
        ),
        (
            "services: {}\n",
            "docker-compose.yml must contain at least one service",
        ),
        ("services:\n  a: 1\n", "Service 'a' must be a dictionary"),
        (
            "services:\n  a:\n    command: x\n",
            "Service 'a' must have either 'build' or 'image' defined",
        ),
        ("services: [\n", "Invalid YAML format"),
    ] {
        let err = plan(text, &files(), cx()).unwrap_err();
        assert!(err.contains(msg), "{text:?}: {err}");
    }
}

/// Each escape hatch is refused with the service, the key and its line.
#[test]
fn the_safety_gate_names_service_key_and_line() {
    let cases: &[(&str, &str)] = &[
        ("privileged: true", "privileged"),
        ("network_mode: host", "network_mode"),
        ("network_mode: \"container:db\"", "network_mode"),
        ("pid: host", "pid"),
        ("ipc: host", "ipc"),
        ("uts: host", "uts"),
        ("cap_add: [SYS_ADMIN]", "cap_add"),
        ("devices: [\"/dev/sda:/dev/sda\"]", "devices"),
        ("security_opt: [\"seccomp:unconfined\"]", "security_opt"),
        ("sysctls: {net.ipv4.ip_forward: 1}", "sysctls"),
        (
            "volumes: [\"/var/run/docker.sock:/var/run/docker.sock\"]",
            "volumes",
        ),
        ("volumes: [\"./data:/data\"]", "volumes"),
        (
            "volumes: [{type: bind, source: /, target: /host}]",
            "volumes",
        ),
        ("userns_mode: host", "userns_mode"),
        ("cgroup_parent: /", "cgroup_parent"),
        ("extra_hosts: [\"db:10.0.0.5\"]", "extra_hosts"),
        ("extra_hosts: [\"gw:host-gateway\"]", "extra_hosts"),
        ("user: root", "user"),
        ("user: \"0:0\"", "user"),
        ("user: \"1000:0\"", "user"),
        ("frobnicate: yes", "frobnicate"),
        (
            "labels: {traefik.http.routers.x.rule: \"PathPrefix(`/`)\"}",
            "labels",
        ),
        ("deploy: {resources: {limits: {memory: 64g}}}", "deploy"),
    ];
    for (line, key) in cases {
        let text = format!("services:\n  app:\n    image: x\n    ports: [80]\n    {line}\n");
        let err = plan(&text, &files(), cx()).unwrap_err();
        assert!(
            err.contains("Service 'app'")
                && err.contains(&format!("key '{key}'"))
                && err.contains("(line 5)"),
            "{line}: {err}"
        );
    }
    let sock = plan(
        "services:\n  app:\n    image: x\n    ports: [80]\n    volumes: [\"/var/run/docker.sock:/var/run/docker.sock\"]\n",
        &files(),
        cx(),
    )
    .unwrap_err();
    assert!(sock.contains("Docker socket"), "{sock}");
}

#[test]
fn harmless_forms_pass() {
    let text = "services:\n  app:\n    image: x\n    ports: [80]\n    privileged: false\n    cap_add: [NET_BIND_SERVICE]\n    extra_hosts: [\"me:127.0.0.1\"]\n    user: \"1000\"\n    x-custom: 1\n    tmpfs: /cache\n    read_only: true\n    networks: [backend]\nnetworks:\n  backend:\n";
    let p = plan(text, &files(), cx()).unwrap();
    let app = p.service("app").unwrap();
    assert_eq!(app.tmpfs, vec!["/cache"]);
    assert!(app.read_only);
}

#[test]
fn external_volumes_and_networks_must_be_milkcrates() {
    let text = "services:\n  app:\n    image: x\n    ports: [80]\n    volumes: [\"shared:/data\"]\nvolumes:\n  shared:\n    external: true\n    name: milkcrate-vol-shared\n";
    let err = plan(text, &files(), cx()).unwrap_err();
    assert!(err.contains("not a milkcrate volume"), "{err}");
    let known = [
        "milkcrate-vol-shared".to_string(),
        "milkcrate-vol-other".to_string(),
    ];
    // A milkcrate volume the admin did not assign to this app is another app's data.
    let unassigned = Context {
        milkcrate_volumes: &known,
        assigned_volumes: &known[1..],
        ..cx()
    };
    let err = plan(text, &files(), unassigned).unwrap_err();
    assert!(
        err.contains("Key 'volumes' (line 6)")
            && err.contains("'milkcrate-vol-shared', which the admin has not assigned to this app"),
        "{err}"
    );
    let ok = Context {
        milkcrate_volumes: &known,
        assigned_volumes: &known[..1],
        ..cx()
    };
    let p = plan(text, &files(), ok).unwrap();
    assert_eq!(
        p.service("app").unwrap().mounts[0].source,
        MountSource::Milkcrate("milkcrate-vol-shared".into())
    );
    assert!(p.volumes.is_empty(), "not a stack volume");
    let text = "services:\n  app:\n    image: x\n    ports: [80]\nnetworks:\n  outside:\n    external: true\n";
    let err = plan(text, &files(), cx()).unwrap_err();
    assert!(err.contains("network 'outside' is external"), "{err}");
    let text =
        "services:\n  app:\n    image: x\n    ports: [80]\n    volumes: [\"undeclared:/data\"]\n";
    assert!(
        plan(text, &files(), cx())
            .unwrap_err()
            .contains("not declared")
    );
    let text = "services:\n  app:\n    image: x\n    ports: [80]\nvolumes:\n  data:\n    driver_opts: {type: none, o: bind, device: /etc}\n";
    assert!(
        plan(text, &files(), cx())
            .unwrap_err()
            .contains("driver_opts")
    );
}

#[test]
fn dependencies_must_exist_and_not_loop() {
    let text = "services:\n  a:\n    image: x\n    ports: [80]\n    depends_on: [b]\n  b:\n    image: y\n    depends_on: [a]\n";
    assert!(plan(text, &files(), cx()).unwrap_err().contains("cycle"));
    let text = "services:\n  a:\n    image: x\n    ports: [80]\n    depends_on: [ghost]\n";
    assert!(
        plan(text, &files(), cx())
            .unwrap_err()
            .contains("no service 'ghost'")
    );
}

#[test]
fn build_contexts_stay_inside_the_zip() {
    for build in ["../outside", "/abs", "https://example.com/repo.git"] {
        let text = format!("services:\n  a:\n    build: {build}\n    ports: [80]\n");
        let err = plan(&text, &files(), cx()).unwrap_err();
        assert!(err.contains("key 'build'"), "{build}: {err}");
    }
    let text = "services:\n  a:\n    build: ./nowhere\n    ports: [80]\n";
    assert!(
        plan(text, &files(), cx())
            .unwrap_err()
            .contains("the ZIP has no nowhere/Dockerfile")
    );
}

#[test]
fn small_parsers() {
    assert_eq!(container_port("8000"), Some(8000));
    assert_eq!(container_port("8080:80"), Some(80));
    assert_eq!(container_port("127.0.0.1:8080:80/udp"), Some(80));
    assert_eq!(container_port("3000-3001"), Some(3000));
    assert_eq!(container_port("x"), None);
    assert_eq!(duration_ns("10s"), Some(10_000_000_000));
    assert_eq!(duration_ns("500ms"), Some(500_000_000));
    assert_eq!(duration_ns("bogus"), None);
    assert_eq!(memory_mib("1g"), Some(1024));
    assert_eq!(memory_mib("256M"), Some(256));
    assert_eq!(memory_mib("1073741824"), Some(1024));
    assert_eq!(
        split_command(r#"sh -c 'echo "hi there"'"#).unwrap(),
        vec!["sh", "-c", "echo \"hi there\""]
    );
    assert!(split_command("a 'b").is_err());
}

#[test]
fn variables_are_interpolated_like_compose() {
    let vars = [
        ("A".to_string(), "1".to_string()),
        ("EMPTY".to_string(), String::new()),
    ];
    let lookup = |n: &str| vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    for (input, want) in [
        ("$A-${A}", "1-1"),
        ("$$A", "$A"),
        ("${NOPE:-def}", "def"),
        ("${EMPTY:-def}", "def"),
        ("${EMPTY-def}", ""),
        ("${NOPE-${A}}", "1"),
        ("${A:+yes}", "yes"),
        ("${NOPE:+yes}", ""),
        ("${NOPE}", ""),
        ("cost: 5$", "cost: 5$"),
    ] {
        assert_eq!(interpolate(input, &lookup).unwrap(), want, "{input}");
    }
    assert_eq!(
        interpolate("${DB_PASSWORD:?set it on the app page}", &lookup).unwrap_err(),
        "variable DB_PASSWORD is required: set it on the app page"
    );
    assert!(interpolate("${A", &lookup).is_err());
}

#[test]
fn the_zips_env_file_and_the_apps_variables_fill_the_file() {
    let text = "services:\n  app:\n    image: ${IMAGE:-x}\n    ports: [\"${PORT}\"]\n    environment: {GREETING: \"${GREETING}\"}\n";
    let files = Files(vec![(".env", "PORT=7000\nGREETING=from .env\n")]);
    let vars = [("GREETING".to_string(), "from the app".to_string())];
    let p = plan(
        text,
        &files,
        Context {
            vars: &vars,
            ..cx()
        },
    )
    .unwrap();
    assert_eq!(p.port, 7000);
    let app = p.service("app").unwrap();
    assert_eq!(app.source, ImageSource::Image("x:latest".into()));
    assert_eq!(app.env, vec![("GREETING".into(), "from the app".into())]);
    let missing =
        "services:\n  app:\n    image: x\n    ports: [80]\n    environment: {P: \"${P:?set P}\"}\n";
    assert!(
        plan(missing, &files, cx())
            .unwrap_err()
            .contains("variable P is required: set P")
    );
}

#[test]
fn a_yaml_bomb_is_refused_quickly() {
    // "Billion laughs": nine levels of aliases, each repeating the one below nine times.
    let mut text = String::from(
        "x-a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for w in names.windows(2) {
        let (prev, next) = (w[0], w[1]);
        text.push_str(&format!(
            "x-{next}: &{next} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
    }
    text.push_str("services:\n  app:\n    image: x\n    ports: [80]\n    command: *i\n");
    let started = std::time::Instant::now();
    let result = plan(&text, &files(), cx());
    let err = result.unwrap_err();
    assert!(
        err.contains("Invalid YAML format"),
        "the parser refuses it: {err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "and fast: {:?}",
        started.elapsed()
    );
}

fn one_service(line: &str) -> Result<StackPlan, String> {
    let text = format!("services:\n  app:\n    image: x\n    ports: [80]\n    {line}\n");
    plan(&text, &files(), cx())
}

#[test]
fn users_are_numeric_and_never_root_or_group_root() {
    for (line, expected) in [
        ("user: \"1000\"", "1000:1000"),
        ("user: 1000", "1000:1000"),
        ("user: \"1000:2000\"", "1000:2000"),
        ("user: \"065534:065534\"", "65534:65534"),
    ] {
        let p = one_service(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        let user = p.service("app").unwrap().user.unwrap();
        assert_eq!(user.to_string(), expected, "{line}");
    }
    // Names (which the image's /etc/passwd may map to 0), group names, every spelling of 0.
    for line in [
        "user: toor",
        "user: root",
        "user: nobody",
        "user: \"65534:wheel\"",
        "user: \"65534:00\"",
        "user: \"65534:0000\"",
        "user: \"00\"",
        "user: 0",
        "user: \"+0\"",
        "user: \"-0\"",
        "user: \" 0\"",
        "user: \"65534: 0\"",
        "user: \"65534:+0\"",
        "user: \"65534:\"",
        "user: \":65534\"",
        "user: \"\"",
        "user: \"4294967295\"",
        "user: \"${UNSET_USER}\"",
        "user: \"${UNSET_USER:-0}:1000\"",
    ] {
        let err = one_service(line).unwrap_err();
        assert!(
            err.contains("Service 'app', key 'user' (line 5)"),
            "{line}: {err}"
        );
    }
    let err = one_service("user: toor").unwrap_err();
    assert!(err.contains("names are not accepted"), "{err}");
    let err = one_service("user: \"65534:00\"").unwrap_err();
    assert!(err.contains("is root"), "{err}");
}

#[test]
fn deeply_nested_defaults_are_refused_not_a_stack_overflow() {
    // Thousands of levels used to recurse once per level and abort the whole process.
    // In a file: as deep as the file's bracket budget allows.
    let n = 4_000;
    let value = format!("{}x{}", "${A:-".repeat(n), "}".repeat(n));
    let err = one_service(&format!("environment: {{X: \"{value}\"}}")).unwrap_err();
    assert!(err.contains("more than 32 levels deep"), "{err}");
    assert!(
        err.len() < 400,
        "the message quotes only the start of the value"
    );
    // The interpolation itself, far deeper.
    let n = 100_000;
    let value = format!("{}x{}", "${A:-".repeat(n), "}".repeat(n));
    let err = interpolate(&value, &|_| None).unwrap_err();
    assert!(err.contains("more than 32 levels deep"), "{err}");
    // Refused also when the outer variable is set (the default is never used).
    let err = interpolate(&value, &|_| Some("set".into())).unwrap_err();
    assert!(err.contains("levels deep"), "{err}");
    // Up to the bound, nesting works as in compose.
    let ok = format!(
        "{}x{}",
        "${A:-".repeat(MAX_NESTING),
        "}".repeat(MAX_NESTING)
    );
    assert_eq!(interpolate(&ok, &|_| None).unwrap(), "x");
    let too_deep = format!(
        "{}x{}",
        "${A:-".repeat(MAX_NESTING + 1),
        "}".repeat(MAX_NESTING + 1)
    );
    assert!(interpolate(&too_deep, &|_| None).is_err());
}

#[test]
fn deep_documents_and_many_services_are_refused_not_a_crash() {
    // Deep nesting in the document itself (the value walk recurses per level).
    let deep = format!(
        "services:\n  app:\n    image: x\n    ports: [80]\n    x-deep: {}1{}\n",
        "[".repeat(50_000),
        "]".repeat(50_000)
    );
    let err = plan(&deep, &files(), cx()).unwrap_err();
    assert!(err.contains("at most 5000"), "{err}");
    let deep = format!(
        "services:\n  app:\n    image: x\n    ports: [80]\n    x-deep: {}1{}\n",
        "[".repeat(65),
        "]".repeat(65)
    );
    let err = plan(&deep, &files(), cx()).unwrap_err();
    assert!(err.contains("nest more than 64 levels"), "{err}");
    // Quoted brackets and comments do not count; brackets cannot hide behind quotes either.
    let hidden = format!(
        "services:\n  app:\n    image: x\n    ports: [80]\n    x-deep: {}1{}\n",
        "[\"]\",".repeat(70),
        "]".repeat(70)
    );
    assert!(
        plan(&hidden, &files(), cx())
            .unwrap_err()
            .contains("nest more")
    );
    let plain_quote = format!(
        "services:\n  app:\n    image: x\n    ports: [80]\n    x-a: it's\n    x-deep: {}1{}\n",
        "[".repeat(70),
        "]".repeat(70)
    );
    assert!(
        plan(&plain_quote, &files(), cx())
            .unwrap_err()
            .contains("nest more")
    );
    let fine = format!(
        "services:\n  app:\n    image: x\n    ports: [80]  # {}\n    x-q: \"{}\"\n    x-s: '{}'\n",
        "[".repeat(100),
        "{".repeat(100),
        "[".repeat(100)
    );
    plan(&fine, &files(), cx()).unwrap();
    // A quote the parser reads as plain text (`a:'`), or one in a block scalar, hides nothing
    // on later lines.
    for opening in ["x-a: a:'", "x-a: |\n      '", "x-a: \"unclosed"] {
        let hidden = format!(
            "services:\n  app:\n    image: x\n    ports: [80]\n    {opening}\n    x-deep: {}1{}\n    x-b: b'\n",
            "[".repeat(70),
            "]".repeat(70)
        );
        let err = plan(&hidden, &files(), cx()).unwrap_err();
        assert!(err.contains("nest more"), "{opening}: {err}");
    }
    // And however the quotes are arranged, a file holds at most 5000 brackets.
    let many = format!(
        "services:\n  app:\n    image: x\n    ports: [80]\n    x-q: '{}'\n",
        "[".repeat(5_001)
    );
    let err = plan(&many, &files(), cx()).unwrap_err();
    assert!(err.contains("at most 5000"), "{err}");
    // Too many services.
    let mut many = String::from("services:\n");
    for i in 0..=MAX_SERVICES {
        many.push_str(&format!("  s{i}:\n    image: x\n    ports: [80]\n"));
    }
    let err = plan(&many, &files(), cx()).unwrap_err();
    assert!(err.contains("at most 100"), "{err}");
}

#[test]
fn durations_and_sizes_cannot_overflow_and_absurd_ones_are_refused() {
    // Each of these overflowed i64 arithmetic (a panic in debug builds, a wrapped value in
    // release) or asked the engine to wait for centuries.
    for line in [
        "stop_grace_period: 9999999999h9999999999h",
        "stop_grace_period: 99999999999999999999999999s",
        "stop_grace_period: 2h",
        "stop_grace_period: 1.2.3s",
        "stop_grace_period: infs",
        "stop_grace_period: \"-5s\"",
        "stop_grace_period: 0s",
        "stop_grace_period: s",
    ] {
        let err = one_service(line).unwrap_err();
        assert!(
            err.contains("key 'stop_grace_period' (line 5)") && err.contains("not a duration"),
            "{line}: {err}"
        );
    }
    for line in [
        "healthcheck: {test: [\"CMD\", \"true\"], interval: 9999999999h9999999999h}",
        "healthcheck: {test: [\"CMD\", \"true\"], timeout: 25h}",
        "healthcheck: {test: [\"CMD\", \"true\"], start_period: 10us}",
    ] {
        let err = one_service(line).unwrap_err();
        assert!(err.contains("key 'healthcheck'"), "{line}: {err}");
    }
    for line in [
        "mem_limit: infm",
        "mem_limit: NaNg",
        "mem_limit: 1e400",
        "mem_limit: \"-1g\"",
        "mem_limit: 99999999999999999999999999999g",
        "deploy: {resources: {limits: {cpus: \"inf\"}}}",
        "deploy: {resources: {limits: {cpus: \"NaN\"}}}",
        "deploy: {resources: {limits: {cpus: \"-1\"}}}",
        "deploy: {resources: {limits: {memory: infm}}}",
    ] {
        let err = one_service(line).unwrap_err();
        assert!(err.contains("(line 5)"), "{line}: {err}");
    }
    let p = one_service(
        "stop_grace_period: 1m30s\n    healthcheck: {test: [\"CMD\", \"true\"], interval: 500ms}",
    )
    .unwrap();
    let app = p.service("app").unwrap();
    assert_eq!(app.stop_timeout, Some(90));
    assert_eq!(app.health.as_ref().unwrap().interval_ns, Some(500_000_000));
}

#[test]
fn milkcrates_own_images_and_ids_are_refused() {
    for image in [
        "milkcrate-otherapp:20260101-000000",
        "milkcrate-otherapp",
        "docker.io/library/milkcrate-otherapp:1",
        "library/milkcrate-otherapp:1",
        "Milkcrate-OtherApp:1",
        "milkcrate/volume-helper:1",
        "milkcrate:latest",
        "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "milkcrate-otherapp@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "-milkcrate:1",
        "busybox:1 --privileged",
    ] {
        let err = one_service_image(image).unwrap_err();
        assert!(
            err.contains("Service 'app', key 'image' (line 3)"),
            "{image}: {err}"
        );
    }
    for (image, tag) in [
        ("busybox", "busybox:latest"),
        ("busybox:1.36", "busybox:1.36"),
        ("docker.io/library/busybox:1", "busybox:1"),
        (
            "registry.local:5000/team/api",
            "registry.local:5000/team/api:latest",
        ),
        ("milkcrate-test/busybox:1", "milkcrate-test/busybox:1"),
        // A digest pins the image; the deploy checks it is one of the image's repo digests.
        (
            "busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ),
    ] {
        let p = one_service_image(image).unwrap_or_else(|e| panic!("{image}: {e}"));
        assert_eq!(
            p.service("app").unwrap().source,
            ImageSource::Image(tag.into()),
            "{image}"
        );
    }
}

fn one_service_image(image: &str) -> Result<StackPlan, String> {
    let text = format!("services:\n  app:\n    image: \"{image}\"\n    ports: [80]\n");
    plan(&text, &files(), cx())
}

#[test]
fn env_files_are_read_once_and_bounded() {
    let big: String = (0..10_001).map(|i| format!("V{i}=x\n")).collect();
    let big: &'static str = Box::leak(big.into_boxed_str());
    let files = Files(vec![("big.env", big), ("small.env", "A=1\n")]);
    let text = "services:\n  app:\n    image: x\n    ports: [80]\n    env_file: big.env\n";
    let err = plan(text, &files, cx()).unwrap_err();
    assert!(err.contains("more than 10000 variables"), "{err}");
    // The same file listed many times is read once.
    let list = vec!["small.env"; 5000].join(", ");
    let text =
        format!("services:\n  app:\n    image: x\n    ports: [80]\n    env_file: [{list}]\n");
    let p = plan(&text, &files, cx()).unwrap();
    assert_eq!(
        p.service("app").unwrap().env,
        vec![("A".into(), "1".into())]
    );
}

#[test]
fn a_services_pull_policy_is_kept_for_the_deploy() {
    use crate::domain::image::PullPolicy;
    for (given, expected) in [
        ("always", Some(PullPolicy::Always)),
        ("never", Some(PullPolicy::Never)),
        ("missing", Some(PullPolicy::Missing)),
        ("if_not_present", Some(PullPolicy::Missing)),
        ("build", Some(PullPolicy::Missing)),
    ] {
        let text = format!(
            "services:\n  app:\n    image: busybox:1\n    pull_policy: {given}\n    ports: [80]\n"
        );
        let p = plan(&text, &files(), cx()).unwrap_or_else(|e| panic!("{given}: {e}"));
        assert_eq!(p.service("app").unwrap().pull, expected, "{given}");
    }
    let p = plan(
        "services:\n  app:\n    image: busybox:1\n    ports: [80]\n",
        &files(),
        cx(),
    )
    .unwrap();
    assert_eq!(p.service("app").unwrap().pull, None);
}
