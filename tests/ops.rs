//! Operations: Prometheus metrics and live configuration reload.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;

/// Fetches `/metrics`, checks the exposition strictly, and parses it.
async fn scrape(http: SocketAddr) -> prometheus_parse::Scrape {
    let resp = reqwest::get(format!("http://{http}/metrics")).await.unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = resp.text().await.unwrap();
    // Every sample belongs to a family declared with HELP and TYPE, names are valid, and no
    // series appears twice.
    let mut typed = HashSet::new();
    let mut series = HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge"].contains(&kind), "{line}");
            assert!(text.contains(&format!("# HELP {name} ")), "no HELP for {name}");
            typed.insert(name.to_string());
        } else if !line.starts_with('#') {
            let name_end = line.find(['{', ' ']).unwrap();
            let name = &line[..name_end];
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                    && !name.starts_with(|c: char| c.is_ascii_digit()),
                "{line}"
            );
            assert!(typed.contains(name), "sample before its TYPE: {line}");
            let (id, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert!(series.insert(id.to_string()), "duplicate series {id}");
        }
    }
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
}

fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
            _ => f64::NAN,
        })
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_with_replication_and_rejections() {
    let net = TestNetwork::new();
    let agents = cluster(&net, 2).await;
    let (a, b) = (&agents[0], &agents[1]);
    let before = scrape(b.http_addr).await;
    assert_eq!(value(&before, "shoal_build_info", &[("version", shoal::VERSION)]), 1.0);
    assert_eq!(value(&before, "shoal_members", &[("state", "alive")]), 2.0);
    assert_eq!(value(&before, "shoal_files", &[]), 0.0);

    // A file big enough to travel as a body replicates to B.
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    assert_eq!(upload(a.http_addr, &net, "big.bin", &body, &net.signer).await.0, 200);
    let http = b.http_addr;
    wait_until(Duration::from_secs(20), "B counts the file", || async move {
        value(&scrape(http).await, "shoal_files", &[]) == 1.0
    })
    .await;
    let after = scrape(b.http_addr).await;
    assert_eq!(value(&after, "shoal_file_bytes", &[]), body.len() as f64);
    assert!(value(&after, "shoal_transfer_bytes_total", &[("direction", "received")]) >= body.len() as f64);
    assert!(value(&after, "shoal_bodies_fetched_total", &[]) > value(&before, "shoal_bodies_fetched_total", &[]));
    // B holds the connection it got the file over (and perhaps the other of a simultaneous
    // pair of dials), and never more than one per direction with its only peer.
    let open = value(&after, "shoal_connections_open", &[]);
    assert!((1.0..=2.0).contains(&open), "shoal_connections_open {open}");
    let committed = |s: &prometheus_parse::Scrape| {
        ["broadcast", "sync"]
            .iter()
            .map(|o| value(s, "shoal_items_committed_total", &[("origin", o)]))
            .sum::<f64>()
    };
    assert!(committed(&after) > committed(&before));
    assert!(
        value(
            &after,
            "shoal_messages_total",
            &[("kind", "swim"), ("direction", "received")]
        ) > value(
            &before,
            "shoal_messages_total",
            &[("kind", "swim"), ("direction", "received")]
        )
    );

    // A forged upload is refused and counted by reason.
    let stranger = shoal::identity::SecretKey::generate();
    let item = signed_file(
        net.network_id(),
        "app.conf",
        b"evil",
        &stranger,
        shoal::time::unix_ms() << 16,
    );
    let (status, _) = send_envelope(
        b.http_addr,
        reqwest::Method::PUT,
        "app.conf",
        shoal::files::envelope::encode(&item, b"evil"),
    )
    .await;
    assert_eq!(status, 403);
    let refused = scrape(b.http_addr).await;
    assert_eq!(
        value(&refused, "shoal_rejected_total", &[("reason", "unauthorized_signer")]),
        value(&after, "shoal_rejected_total", &[("reason", "unauthorized_signer")]) + 1.0
    );
    for a in agents {
        a.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_changes_apply_live_and_a_broken_edit_keeps_the_running_config() {
    let net = TestNetwork::new();
    let peer = start(net.config("peer")).await;
    // The reloading agent runs from a real file.
    let base = net.config("edited");
    let state = base.node.state_dir.clone();
    let toml_head = process_config_toml(
        &state,
        free_udp_port(),
        free_tcp_port(),
        &net.key.public(),
        base.network.certificate.as_deref().unwrap(),
        &[peer.cluster_addr],
    );
    let path = state.join("shoal.toml");
    let files_v1 = format!("\n[files]\n\"app.conf\" = [\"{}\"]\n", net.signer.public());
    std::fs::write(&path, format!("{toml_head}{files_v1}")).unwrap();
    let a = shoal::agent::start(shoal::config::Config::load(&path).unwrap(), &path)
        .await
        .unwrap();
    eventually(Duration::from_secs(20), "joined", || alive_count(&a) == 2).await;

    // "other" is not accepted here yet: it stays on the peer.
    assert_eq!(
        upload(peer.http_addr, &net, "other", b"from the peer", &net.signer)
            .await
            .0,
        200
    );

    // Edit the file as an editor would (write a temp file, rename it over): add the name and
    // a schedule. Both take effect without a restart.
    let schedule =
        "\n[[schedules]]\nid = \"added\"\nschedule = \"* * * * * *\"\ncommand = [\"sh\", \"-c\", \"echo reloaded\"]\n";
    let files_v2 = format!(
        "\n[files]\n\"app.conf\" = [\"{0}\"]\n\"other\" = [\"{0}\"]\n",
        net.signer.public()
    );
    let tmp = state.join(".shoal.toml.tmp");
    std::fs::write(&tmp, format!("{toml_head}{files_v2}{schedule}")).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let http = a.http_addr;
    wait_until(
        Duration::from_secs(20),
        "the new file name is accepted and fetched",
        || async move { content(http, "other").await.as_deref() == Some(b"from the peer".as_slice()) },
    )
    .await;
    wait_until(Duration::from_secs(20), "the new schedule runs", || async move {
        get_json::<shoal::http::api::ScheduleList>(http, "/api/schedules")
            .await
            .is_ok_and(|l| {
                l.nodes.iter().any(|n| {
                    n.local
                        && n.schedules.iter().any(|s| {
                            s.id == "added"
                                && s.last
                                    .as_ref()
                                    .is_some_and(|j| j.status == shoal::schedules::jobs::JobStatus::Success)
                        })
                })
            })
    })
    .await;

    // A broken edit is refused; the agent keeps running on what it had.
    std::fs::write(&path, format!("{toml_head}{files_v2}{schedule}\n[[schedules]]\nid = \"bad\"\nschedule = \"every day\"\ncommand = [\"true\"]\n")).unwrap();
    wait_until(Duration::from_secs(20), "the broken edit is refused", || async move {
        value(
            &scrape(http).await,
            "shoal_config_reloads_total",
            &[("result", "refused")],
        ) >= 1.0
    })
    .await;
    let err = a.reload().await.unwrap_err();
    assert!(
        err.contains("schedules[1].schedule") && err.contains("shoal.toml"),
        "{err}"
    );
    let list: shoal::http::api::ScheduleList = get_json(http, "/api/schedules").await.unwrap();
    let local = list.nodes.iter().find(|n| n.local).unwrap();
    assert_eq!(
        local.schedules.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["added"],
        "the running schedules are kept"
    );
    let files: shoal::http::api::FileList = get_json(http, "/api/files").await.unwrap();
    assert!(files.configured.contains(&"other".to_string()));

    // Settings that need a restart are reported, not applied.
    let moved = toml_head.replacen("[http]\nlisten = \"127.0.0.1:", "[http]\nlisten = \"127.0.0.2:", 1);
    std::fs::write(&path, format!("{moved}{files_v2}{schedule}")).unwrap();
    let applied = a.reload().await.unwrap();
    assert_eq!(applied.need_restart, ["http.listen"]);
    assert!(
        get_json::<serde_json::Value>(http, "/api/health").await.is_ok(),
        "still serving where it was"
    );
    a.shutdown().await;
    peer.shutdown().await;
}

/// A tool the test needs: present, or the test is skipped (and fails under CI, where `.ci/run`
/// installs it).
fn tool(path: &str, package: &str) -> bool {
    if std::path::Path::new(path).exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must have {path} (Debian package {package})"
    );
    eprintln!("SKIPPED: {path} missing (install {package})");
    false
}

#[test]
fn the_systemd_unit_and_the_backups_drop_in_verify() {
    if !tool("/usr/bin/systemd-analyze", "systemd") {
        return;
    }
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string(repo.join("contrib/shoal.service")).unwrap();
    let (code, printed, _) = run_shoal(&["systemd-unit"]);
    assert_eq!(
        (code, printed.as_str()),
        (0, unit.as_str()),
        "`shoal systemd-unit` prints the shipped unit"
    );
    for key in [
        "Type=notify",
        "WatchdogSec=",
        "StateDirectory=shoal",
        "ConfigurationDirectory=shoal",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK",
    ] {
        assert!(unit.contains(key), "{key}");
    }
    // verify needs the ExecStart binary to exist: point it at the one under test.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shoal.service");
    std::fs::write(&path, unit.replace("/usr/bin/shoal", shoal_bin())).unwrap();
    std::fs::create_dir(dir.path().join("shoal.service.d")).unwrap();
    std::fs::copy(
        repo.join("contrib/shoal-backups.conf"),
        dir.path().join("shoal.service.d/backups.conf"),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.path().display()))
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_nix_file_parses() {
    if !tool("/usr/bin/nix-instantiate", "nix-bin") {
        return;
    }
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![repo.join("flake.nix")];
    let mut dirs = vec![repo.join("nix")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "nix") {
                files.push(p);
            }
        }
    }
    assert!(files.len() >= 4, "{files:?}");
    for f in files {
        let out = std::process::Command::new("nix-instantiate")
            .arg("--parse")
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let module = std::fs::read_to_string(repo.join("nix/module.nix")).unwrap();
    for option in [
        "enable =",
        "package =",
        "settings =",
        "openFirewall =",
        "bootstrapNodes =",
        "files =",
        "environmentFile =",
        "extraArgs =",
    ] {
        assert!(module.contains(option), "module option {option}");
    }
}

#[test]
fn completions_and_the_man_page_come_from_the_cli() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = run_shoal(&["completions", shell]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("schedules") && out.contains("systemd-unit"), "{shell}");
    }
    let (code, out, _) = run_shoal(&["completions", "tcsh"]);
    assert_ne!(code, 0, "unknown shells are refused: {out}");
    let (code, man, _) = run_shoal(&["man"]);
    assert_eq!(code, 0);
    assert!(man.contains(".TH shoal 1") && man.contains("schedules"), "{man}");
}

#[test]
fn the_agent_tells_systemd_it_is_ready_alive_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let net = TestNetwork::new();
    let base = net.config("unit");
    let state = base.node.state_dir.clone();
    std::fs::create_dir_all(&state).unwrap();
    let path = state.join("shoal.toml");
    let http = free_tcp_port();
    std::fs::write(
        &path,
        process_config_toml(
            &state,
            free_udp_port(),
            http,
            &net.key.public(),
            base.network.certificate.as_deref().unwrap(),
            &[],
        ),
    )
    .unwrap();
    let socket_path = state.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut child = std::process::Command::new(shoal_bin())
        .args(["agent", "--config"])
        .arg(&path)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 512];
    let mut recv = || -> String {
        let n = socket.recv(&mut buf).expect("a notification within 20 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = recv();
    assert!(first.starts_with("READY=1\nSTATUS="), "{first}");
    // Pings at half the watchdog interval.
    assert_eq!(recv(), "WATCHDOG=1");
    assert_eq!(recv(), "WATCHDOG=1");
    // SIGTERM: STOPPING, then a clean exit.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    loop {
        let m = recv();
        if m.starts_with("STOPPING=1") {
            break;
        }
        assert_eq!(m, "WATCHDOG=1");
    }
    assert!(child.wait().unwrap().success());
    let _ = http;
}

/// Every `$ref` in `v`.
fn refs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    out.push(x.as_str().unwrap().to_string());
                } else {
                    refs(x, out);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_covers_the_api_and_resolves() {
    let net = TestNetwork::new();
    let a = start(net.config("doc")).await;
    let doc: serde_json::Value = get_json(a.http_addr, "/api/openapi.json").await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(doc["info"]["version"], shoal::VERSION);
    let paths = doc["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/api/health", &["get"][..]),
        ("/api/members", &["get"]),
        ("/api/nodes", &["get"]),
        ("/api/nodes/{name}", &["get"]),
        ("/api/graph", &["get"]),
        ("/api/events", &["get"]),
        ("/api/events/stream", &["get"]),
        ("/api/files", &["get"]),
        ("/api/files/{name}", &["get", "put", "delete"]),
        ("/api/files/{name}/content", &["get"]),
        ("/api/replication", &["get"]),
        ("/api/schedules", &["get"]),
        ("/api/schedules/{id}/run", &["post"]),
        ("/api/jobs", &["get"]),
        ("/api/jobs/{id}", &["get"]),
        ("/api/jobs/{id}/log", &["get"]),
        ("/metrics", &["get"]),
        ("/api/openapi.json", &["get"]),
    ] {
        for m in methods {
            assert!(paths.get(path).and_then(|p| p.get(m)).is_some(), "{m} {path} missing");
        }
    }
    // Every documented path is routed: anything but the router's fallback answer.
    let client = reqwest::Client::new();
    for path in paths.keys() {
        let concrete = path.replace("{name}", "app.conf").replace("{id}", "nope");
        if concrete.ends_with("/stream") {
            continue;
        }
        let body = client
            .get(format!("http://{}{concrete}", a.http_addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            !body.contains("no such endpoint"),
            "{path} is documented but not routed"
        );
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for r in &all {
        let name = r.strip_prefix("#/components/schemas/").unwrap();
        assert!(schemas.contains_key(name), "dangling {r}");
    }
    for s in [
        "Health",
        "NodeView",
        "HealthReport",
        "ScheduleList",
        "JobView",
        "Event",
        "FileInfo",
        "ApiError",
    ] {
        assert!(schemas.contains_key(s), "schema {s}");
    }
    let docs = client
        .get(format!("http://{}/api/docs", a.http_addr))
        .send()
        .await
        .unwrap();
    assert!(
        docs.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(docs.text().await.unwrap().contains("/assets/docs.js"));
    a.shutdown().await;
}
