//! The local API answers only to its own host names, takes signed uploads only as envelopes,
//! and with `[http] token_file` takes changes only with the token.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use shoal::config::Config;
use shoal::config::schedules::ScheduleConfig;
use shoal::http::api;

const TOKEN: &str = "tok-0123456789abcdef0123456789";

/// A schedule that only runs when asked.
fn manual_schedule(id: &str) -> ScheduleConfig {
    toml::from_str(&format!("id = {id:?}\nschedule = \"0 0 1 1 *\"\ncommand = [\"true\"]")).unwrap()
}

/// A reply: status, `WWW-Authenticate`, JSON body (or Null).
struct Reply {
    status: u16,
    challenge: Option<String>,
    body: serde_json::Value,
}

impl Reply {
    fn reason(&self) -> Option<&str> {
        self.body["reason"].as_str()
    }
}

/// A request to the agent at `http`, naming `host` when given (else reqwest's own Host).
async fn request(
    http: SocketAddr,
    method: reqwest::Method,
    path: &str,
    host: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Reply {
    let mut req = reqwest::Client::new()
        .request(method, format!("http://{http}{path}"))
        .timeout(Duration::from_secs(30));
    if let Some(h) = host {
        req = req.header(reqwest::header::HOST, h);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = req.send().await.expect("agent reachable");
    let status = resp.status().as_u16();
    let challenge = resp
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp.json().await.unwrap_or(serde_json::Value::Null);
    Reply {
        status,
        challenge,
        body,
    }
}

/// A signed upload of `body` to `name` at the next version, as an envelope.
async fn upload_envelope(http: SocketAddr, net: &TestNetwork, name: &str, body: &[u8]) -> Vec<u8> {
    let current = get_json::<api::FileInfo>(http, &format!("/api/files/{name}"))
        .await
        .map(|f| f.version)
        .unwrap_or(0);
    let version = shoal::replication::hlc::next(shoal::time::unix_ms(), current);
    shoal::files::envelope::encode(&signed_file(net.network_id(), name, body, &net.signer, version), body)
}

/// A signed delete of `name` at the next version, as an envelope.
async fn delete_envelope(http: SocketAddr, net: &TestNetwork, name: &str) -> Vec<u8> {
    let current = get_json::<api::FileInfo>(http, &format!("/api/files/{name}"))
        .await
        .map(|f| f.version)
        .unwrap_or(0);
    let version = shoal::replication::hlc::next(shoal::time::unix_ms(), current);
    shoal::files::envelope::encode(&signed_delete(net.network_id(), name, &net.signer, version), &[])
}

async fn jobs(http: SocketAddr) -> usize {
    get_json::<api::JobList>(http, "/api/jobs").await.unwrap().jobs.len()
}

async fn files(http: SocketAddr) -> Vec<(String, u64, bool)> {
    get_json::<api::FileList>(http, "/api/files")
        .await
        .unwrap()
        .files
        .into_iter()
        .map(|f| (f.name, f.version, f.deleted))
        .collect()
}

/// `/metrics` sample `shoal_http_refused_total{reason="<reason>"}`.
async fn refused(http: SocketAddr, reason: &str) -> u64 {
    let text = reqwest::get(format!("http://{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("shoal_http_refused_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {prefix} in /metrics"))
        .parse()
        .unwrap()
}

const JSON: (&str, &str) = ("content-type", "application/json");
const ENVELOPE: (&str, &str) = ("content-type", shoal::files::envelope::CONTENT_TYPE);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_host_is_refused_on_every_route_and_changes_nothing() {
    let net = TestNetwork::new();
    let mut config = net.config("guarded");
    config.schedules = vec![manual_schedule("tick")];
    config.http.allowed_hosts = vec![
        "shoal.example.com".parse().unwrap(),
        "ops.example.com:8443".parse().unwrap(),
    ];
    let a = start(config).await;
    let http = a.http_addr;
    let port = http.port();
    let env = upload_envelope(http, &net, "app.conf", b"rebound").await;
    let del = delete_envelope(http, &net, "app.conf").await;

    let evil_port = format!("evil.example:{port}");
    for host in ["evil.example", evil_port.as_str(), "ops.example.com:8080", "0.0.0.0"] {
        let reads = [
            "/",
            "/assets/app.js",
            "/assets/app.css",
            "/metrics",
            "/api/docs",
            "/api/openapi.json",
            "/api/health",
            "/api/members",
            "/api/nodes",
            "/api/graph",
            "/api/events",
            "/api/files",
            "/api/files/app.conf",
            "/api/replication",
            "/api/schedules",
            "/api/jobs",
            "/no/such/route",
        ];
        for path in reads {
            let r = request(http, reqwest::Method::GET, path, Some(host), &[], None).await;
            assert_eq!(
                (r.status, r.reason()),
                (421, Some("host_not_allowed")),
                "GET {path} as {host}"
            );
            assert!(
                r.body["error"].as_str().unwrap().contains("allowed_hosts"),
                "says how to allow it: {}",
                r.body
            );
        }
        let r = request(
            http,
            reqwest::Method::POST,
            "/api/schedules/tick/run",
            Some(host),
            &[JSON],
            Some(b"{}".to_vec()),
        )
        .await;
        assert_eq!(
            (r.status, r.reason()),
            (421, Some("host_not_allowed")),
            "run-now as {host}"
        );
        for (method, body) in [(reqwest::Method::PUT, &env), (reqwest::Method::DELETE, &del)] {
            let r = request(
                http,
                method.clone(),
                "/api/files/app.conf",
                Some(host),
                &[ENVELOPE],
                Some(body.clone()),
            )
            .await;
            assert_eq!(
                (r.status, r.reason()),
                (421, Some("host_not_allowed")),
                "{method} as {host}"
            );
        }
    }
    assert_eq!(jobs(http).await, 0, "no job started");
    assert!(files(http).await.is_empty(), "nothing stored");
    assert!(refused(http, "host_not_allowed").await >= 4 * 20);

    // Loopback names and addresses, and the allowlist, pass (the listen address is loopback
    // here; the guard's unit tests cover a non-loopback one).
    let own = [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "LocalHost".to_string(),
        format!("dashboard.localhost:{port}"),
        format!("[::1]:{port}"),
        "127.0.0.2".to_string(),
        "shoal.example.com".to_string(),
        format!("Shoal.Example.com:{port}"),
        "ops.example.com:8443".to_string(),
    ];
    for host in &own {
        for path in ["/", "/api/health", "/metrics"] {
            let r = request(http, reqwest::Method::GET, path, Some(host), &[], None).await;
            assert_eq!(r.status, 200, "GET {path} as {host}: {}", r.body);
        }
    }
    let r = request(
        http,
        reqwest::Method::PUT,
        "/api/files/app.conf",
        Some("shoal.example.com"),
        &[ENVELOPE],
        Some(env),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = request(
        http,
        reqwest::Method::POST,
        "/api/schedules/tick/run",
        Some("localhost"),
        &[JSON],
        Some(b"{}".to_vec()),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(jobs(http).await, 1);

    // No Host at all (HTTP/1.0 by hand): no browser sends that, so it cannot be a rebound page.
    let raw = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(http).unwrap();
        s.write_all(b"GET /api/health HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap();
    assert!(raw.starts_with("HTTP/1.0 200"), "{raw}");
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_and_deletes_need_the_envelope_content_type() {
    let net = TestNetwork::new();
    let a = start(net.config("typed")).await;
    let http = a.http_addr;
    let bad_types: [Option<&str>; 7] = [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/json"),
        Some("application/octet-stream"),
        Some("application/vnd.shoal.signed-item"),
        None,
    ];
    let before = refused(http, "unsupported_media_type").await;
    for ct in bad_types {
        let env = upload_envelope(http, &net, "app.conf", b"sneaky").await;
        let headers: Vec<(&str, &str)> = ct.map(|c| ("content-type", c)).into_iter().collect();
        let r = request(
            http,
            reqwest::Method::PUT,
            "/api/files/app.conf",
            None,
            &headers,
            Some(env),
        )
        .await;
        assert_eq!(
            (r.status, r.reason()),
            (415, Some("unsupported_media_type")),
            "PUT as {ct:?}"
        );
        assert!(
            r.body["error"]
                .as_str()
                .unwrap()
                .contains(shoal::files::envelope::CONTENT_TYPE),
            "names the type to use: {}",
            r.body
        );
    }
    assert!(files(http).await.is_empty(), "nothing stored");
    assert_eq!(
        request(http, reqwest::Method::GET, "/api/files/app.conf", None, &[], None)
            .await
            .status,
        404,
        "no version"
    );

    // The envelope's own type (any case, with parameters) is accepted.
    let env = upload_envelope(http, &net, "app.conf", b"v1").await;
    let r = request(
        http,
        reqwest::Method::PUT,
        "/api/files/app.conf",
        None,
        &[("content-type", "Application/Vnd.Shoal.Envelope; v=1")],
        Some(env),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let stored = files(http).await;
    assert_eq!(stored.len(), 1);

    for ct in bad_types {
        let del = delete_envelope(http, &net, "app.conf").await;
        let headers: Vec<(&str, &str)> = ct.map(|c| ("content-type", c)).into_iter().collect();
        let r = request(
            http,
            reqwest::Method::DELETE,
            "/api/files/app.conf",
            None,
            &headers,
            Some(del),
        )
        .await;
        assert_eq!(
            (r.status, r.reason()),
            (415, Some("unsupported_media_type")),
            "DELETE as {ct:?}"
        );
    }
    assert_eq!(files(http).await, stored, "the file is unchanged");
    assert_eq!(content(http, "app.conf").await.as_deref(), Some(&b"v1"[..]));
    assert_eq!(
        refused(http, "unsupported_media_type").await,
        before + 2 * bad_types.len() as u64
    );
    let del = delete_envelope(http, &net, "app.conf").await;
    let r = request(
        http,
        reqwest::Method::DELETE,
        "/api/files/app.conf",
        None,
        &[ENVELOPE],
        Some(del),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    a.shutdown().await;
}

/// Writes `token` to `<dir>/api.token`, mode 0600.
fn write_token(dir: &Path, token: &str) -> PathBuf {
    let p = dir.join("api.token");
    std::fs::write(&p, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// The write requests the API takes, each fresh (envelopes carry the next version).
async fn writes(
    http: SocketAddr,
    net: &TestNetwork,
) -> Vec<(reqwest::Method, &'static str, (&'static str, &'static str), Vec<u8>)> {
    vec![
        (reqwest::Method::POST, "/api/schedules/tick/run", JSON, b"{}".to_vec()),
        (
            reqwest::Method::PUT,
            "/api/files/app.conf",
            ENVELOPE,
            upload_envelope(http, net, "app.conf", b"with token").await,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_file_writes_need_the_token_and_reads_stay_open() {
    let net = TestNetwork::new();
    let mut config = net.config("locked");
    config.schedules = vec![manual_schedule("tick")];
    std::fs::create_dir_all(&config.node.state_dir).unwrap();
    config.http.token_file = Some(write_token(&config.node.state_dir, TOKEN));
    let a = start(config).await;
    let http = a.http_addr;

    let bearer = format!("Bearer {TOKEN}");
    let wrong = format!("Bearer {TOKEN}x");
    let basic = format!("Basic {TOKEN}");
    for auth in [None, Some(wrong.as_str()), Some(basic.as_str()), Some("Bearer")] {
        for (method, path, ct, body) in writes(http, &net).await {
            let mut headers = vec![ct];
            if let Some(v) = auth {
                headers.push(("authorization", v));
            }
            let r = request(http, method.clone(), path, None, &headers, Some(body)).await;
            assert_eq!(
                (r.status, r.reason()),
                (401, Some("unauthorized")),
                "{method} {path} with {auth:?}"
            );
            assert!(
                r.challenge.as_deref().is_some_and(|c| c.starts_with("Bearer")),
                "{:?}",
                r.challenge
            );
        }
    }
    assert_eq!(jobs(http).await, 0, "no job started");
    assert!(files(http).await.is_empty(), "nothing stored");
    assert!(refused(http, "unauthorized").await >= 8);

    // Reads need nothing.
    for path in ["/", "/api/health", "/api/files", "/api/schedules", "/metrics"] {
        assert_eq!(
            request(http, reqwest::Method::GET, path, None, &[], None).await.status,
            200,
            "{path}"
        );
    }
    // The host check comes first: the right token from a foreign host is still refused.
    let (method, path, ct, body) = writes(http, &net).await.remove(0);
    let r = request(
        http,
        method,
        path,
        Some("evil.example"),
        &[ct, ("authorization", &bearer)],
        Some(body),
    )
    .await;
    assert_eq!(r.status, 421);

    let lower = format!("bearer {TOKEN}");
    for (method, path, ct, body) in writes(http, &net).await {
        let r = request(
            http,
            method.clone(),
            path,
            None,
            &[ct, ("authorization", &lower)],
            Some(body),
        )
        .await;
        assert!(
            r.status == 200 || r.status == 202,
            "{method} {path}: {} {}",
            r.status,
            r.body
        );
    }
    assert_eq!(jobs(http).await, 1);
    assert_eq!(files(http).await.len(), 1);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_allowed_hosts_and_a_rotated_token() {
    let net = TestNetwork::new();
    let base = net.config("reloaded");
    let state = base.node.state_dir.clone();
    let http_port = free_tcp_port();
    let head = process_config_toml(
        &state,
        free_udp_port(),
        http_port,
        &net.key.public(),
        base.network.certificate.as_deref().unwrap(),
        &[],
    );
    let schedule = "\n[[schedules]]\nid = \"tick\"\nschedule = \"0 0 1 1 *\"\ncommand = [\"true\"]\n";
    let path = state.join("shoal.toml");
    std::fs::write(&path, format!("{head}{schedule}")).unwrap();
    let a = shoal::agent::start(Config::load(&path).unwrap(), &path).await.unwrap();
    let http = a.http_addr;
    let run = |auth: Option<String>| async move {
        let mut headers = vec![JSON];
        let value;
        if let Some(v) = auth {
            value = v;
            headers.push(("authorization", value.as_str()));
        }
        request(
            http,
            reqwest::Method::POST,
            "/api/schedules/tick/run",
            None,
            &headers,
            Some(b"{}".to_vec()),
        )
        .await
        .status
    };
    let as_host = |host: &'static str| async move {
        request(http, reqwest::Method::GET, "/api/health", Some(host), &[], None)
            .await
            .status
            == 200
    };
    assert!(!as_host("shoal.example.com").await);

    write_token(&state, TOKEN);
    let http_section = format!(
        "[http]\nlisten = \"127.0.0.1:{http_port}\"\nallowed_hosts = [\"shoal.example.com\"]\ntoken_file = \"api.token\"\n"
    );
    let with_access = head.replace(&format!("[http]\nlisten = \"127.0.0.1:{http_port}\"\n"), &http_section);
    assert_ne!(with_access, head);
    // The file watcher applies the edit (a reload request would queue behind its debounce).
    std::fs::write(&path, format!("{with_access}{schedule}")).unwrap();
    wait_until(Duration::from_secs(10), "the new allowed host passes", || {
        as_host("shoal.example.com")
    })
    .await;
    assert_eq!(run(None).await, 401);
    assert_eq!(run(Some(format!("Bearer {TOKEN}"))).await, 202);

    // Rotating the token file's content applies on reload (SIGHUP), though the config is unchanged.
    let rotated = "rotated-token-abcdef0123456789";
    write_token(&state, rotated);
    let applied = a.reload().await.unwrap();
    assert_eq!(applied.applied, ["http.token_file"]);
    assert_eq!(run(Some(format!("Bearer {TOKEN}"))).await, 401);
    // 202, or 409 if the first run is still going: either way past the guard.
    assert_ne!(run(Some(format!("Bearer {rotated}"))).await, 401);

    // A token file made unusable is refused with the reload; the running token stays.
    std::fs::set_permissions(state.join("api.token"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = a.reload().await.unwrap_err();
    assert!(err.contains("http.token_file") && err.contains("chmod"), "{err}");
    assert_eq!(run(None).await, 401);
    a.shutdown().await;
}

/// Runs `shoal args...` with `env` set; returns (exit code, stdout, stderr).
async fn shoal_with_env(args: Vec<String>, env: Vec<(&'static str, String)>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(shoal_bin())
            .args(&args)
            .env_remove("SHOAL_TOKEN_FILE")
            .env_remove("LOG_LEVEL")
            .env_remove("RUST_LOG")
            .envs(env)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sends_the_token_from_token_file_or_shoal_token_file() {
    let net = TestNetwork::new();
    let mut config = net.config("cli");
    config.schedules = vec![manual_schedule("tick")];
    std::fs::create_dir_all(&config.node.state_dir).unwrap();
    let token = write_token(&config.node.state_dir, TOKEN);
    config.http.token_file = Some(token.clone());
    let a = start(config).await;
    let url = format!("http://{}", a.http_addr);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("signer.key");
    net.signer.save(&key, false).unwrap();
    let file = dir.path().join("app.conf");
    std::fs::write(&file, b"port = 1\n").unwrap();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let (f, k, t) = (file.to_str().unwrap(), key.to_str().unwrap(), token.to_str().unwrap());

    // Without it, writes fail and say how to pass it; reads work.
    for args in [
        s(&["run", "tick", "--url", &url]),
        s(&["file", "update", f, "--key-path", k, "--url", &url]),
    ] {
        let (code, _, err) = shoal_with_env(args.clone(), vec![]).await;
        assert_eq!(code, 1, "{args:?}");
        assert!(err.contains("unauthorized") && err.contains("--token-file"), "{err}");
    }
    let (code, out, err) = shoal_with_env(s(&["status", "--url", &url]), vec![]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cli"), "{out}");

    // With the flag, or the environment variable.
    let (code, out, err) = shoal_with_env(s(&["run", "tick", "--url", &url, "--token-file", t]), vec![]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("started job"), "{out}");
    let (code, out, err) = shoal_with_env(
        s(&["file", "update", f, "--key-path", k, "--url", &url]),
        vec![("SHOAL_TOKEN_FILE", t.to_string())],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("app.conf: version"), "{out}");
    let (code, _, err) = shoal_with_env(
        s(&[
            "file",
            "delete",
            "app.conf",
            "--key-path",
            k,
            "--url",
            &url,
            "--token-file",
            t,
        ]),
        vec![],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    // An unreadable token file is reported as such.
    let missing = dir.path().join("missing.token");
    let (code, _, err) = shoal_with_env(
        s(&["run", "tick", "--url", &url, "--token-file", missing.to_str().unwrap()]),
        vec![],
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("missing.token"), "{err}");
    a.shutdown().await;
}

#[test]
fn config_check_warns_about_an_api_beyond_loopback_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let allow = "[network]\ntrusted_nodes = [\"Gb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\"]\n";
    let check = |name: &str, http: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{allow}[http]\n{http}")).unwrap();
        run_shoal(&["config", "check", path.to_str().unwrap()])
    };
    let (code, out, err) = check("open.toml", "listen = \"0.0.0.0:7331\"\n");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("warning") && out.contains("beyond loopback") && out.contains("token_file"),
        "{out}"
    );
    write_token(dir.path(), TOKEN);
    let (code, out, err) = check(
        "locked.toml",
        "listen = \"0.0.0.0:7331\"\nallowed_hosts = [\"shoal.example.com\"]\ntoken_file = \"api.token\"\n",
    );
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("warning"), "{out}");
    assert!(out.contains("shoal.example.com") && out.contains("api.token"), "{out}");
    let (code, _, err) = check(
        "local.toml",
        "listen = \"127.0.0.1:7331\"\ntoken_file = \"nope.token\"\n",
    );
    assert_eq!(code, 2);
    assert!(err.contains("http.token_file") && err.contains("nope.token"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_the_guard_and_the_envelope_type() {
    let net = TestNetwork::new();
    let a = start(net.config("doc")).await;
    let doc: serde_json::Value = get_json(a.http_addr, "/api/openapi.json").await.unwrap();
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    let paths = &doc["paths"];
    for (path, method) in [("/api/files/{name}", "put"), ("/api/files/{name}", "delete")] {
        let op = &paths[path][method];
        let types = op["requestBody"]["content"].as_object().unwrap();
        assert_eq!(
            types.keys().collect::<Vec<_>>(),
            [shoal::files::envelope::CONTENT_TYPE],
            "{method} {path} names the type the CLI sends"
        );
        assert!(op["responses"]["415"].is_object(), "{method} {path}");
    }
    for (path, ops) in paths.as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            assert!(op["responses"]["421"].is_object(), "{method} {path}: 421");
            let write = method != "get";
            assert_eq!(op["responses"]["401"].is_object(), write, "{method} {path}: 401");
            assert_eq!(op["security"].is_array(), write, "{method} {path}: security");
        }
    }
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_listening_beyond_loopback_warns_unless_it_has_a_token() {
    captured_logs();
    let net = TestNetwork::new();
    let mut open = net.config("open");
    open.http.listen = "0.0.0.0:0".parse().unwrap();
    let mut locked = net.config("locked");
    locked.http.listen = "0.0.0.0:0".parse().unwrap();
    std::fs::create_dir_all(&locked.node.state_dir).unwrap();
    locked.http.token_file = Some(write_token(&locked.node.state_dir, TOKEN));
    let warning = |addr: SocketAddr| format!("the HTTP API listens on 0.0.0.0:{}, beyond loopback", addr.port());
    let a = start(open).await;
    let b = start(locked).await;
    let logs = logs_text();
    assert!(logs.contains(&warning(a.http_addr)), "{logs}");
    assert!(!logs.contains(&warning(b.http_addr)), "{logs}");
    a.shutdown().await;
    b.shutdown().await;
}
