//! The dashboard in a real browser: headless Chromium driven over WebDriver (chromedriver),
//! against a 3-node in-process cluster with a schedule and a file.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Without them the
//! test fails under CI and is skipped, loudly, elsewhere.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A chromedriver process and one browser session.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let port = free_tcp_port();
        // Its own process group, so that the browsers it starts go with it (see `Drop`).
        let driver = Command::new(CHROMEDRIVER)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let status = format!("{base}/status");
        let client = http.clone();
        wait_until(Duration::from_secs(20), "chromedriver ready", || {
            let (client, status) = (client.clone(), status.clone());
            async move {
                match client.get(&status).send().await {
                    Ok(r) => r.json::<Value>().await.is_ok_and(|v| v["value"]["ready"] == true),
                    Err(_) => false,
                }
            }
        })
        .await;
        let profile = tempfile::tempdir().unwrap();
        // The flags Chromium needs on a machine without outside network (see the env notes).
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,1000",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args}
        }}});
        let resp: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = resp["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {resp}"))
            .to_string();
        Browser {
            driver,
            base,
            session,
            http,
            _profile: profile,
        }
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method.clone(), url);
        if method != reqwest::Method::GET {
            req = req.json(&body);
        }
        let resp: Value = req.send().await.unwrap().json().await.unwrap();
        if resp["value"].get("error").is_some() {
            panic!("webdriver {path}: {resp}");
        }
        resp["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", json!({ "url": url })).await;
    }

    /// Runs `script` (a function body) in the page and returns its value.
    async fn eval(&self, script: &str) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// Waits until `script` returns true; panics with `what` and the page's text otherwise.
    async fn wait_for(&self, what: &str, script: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if self.eval(script).await == Value::Bool(true) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let text = self.eval("return document.body.innerText").await;
                panic!(
                    "timed out waiting for: {what}\npage text:\n{}",
                    text.as_str().unwrap_or("")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn screenshot(&self, path: &Path) {
        use base64::Engine;
        let png = self.cmd(reqwest::Method::GET, "/screenshot", Value::Null).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    async fn close(self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
    }
}

/// A test that fails mid-way still ends chromedriver and every Chromium process it started
/// (they would otherwise outlive the test run, reparented to init).
impl Drop for Browser {
    fn drop(&mut self) {
        // SAFETY: killpg has no memory effects; the group is the one chromedriver leads.
        unsafe { libc::killpg(self.driver.id() as libc::pid_t, libc::SIGKILL) };
        let _ = self.driver.wait();
    }
}

/// Where screenshots go: `target/test-artifacts/`.
fn artifact(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_mesh_and_follows_it_live() {
    if !Path::new(CHROMEDRIVER).exists() || !Path::new(CHROMIUM).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have chromium and chromium-driver (installed by .ci/run)"
        );
        eprintln!("SKIPPED: install chromium and chromium-driver to run the dashboard test");
        return;
    }
    let net = TestNetwork::new();
    let seed = start(net.config("alpha")).await;
    let mut c = net.config("bravo");
    bootstrap(&mut c, &[seed.cluster_addr]);
    c.schedules = vec![
        toml::from_str(
            "id = \"nightly-db\"\ndescription = \"Database dump\"\nschedule = \"0 3 * * *\"\ncommand = [\"sh\", \"-c\", \"echo dumped\"]\nrepository = \"s3:bucket/db\"\nretention = \"7d:4w\"\ntargets = [\"postgres\"]",
        )
        .unwrap(),
    ];
    let bravo = start(c).await;
    let mut c = net.config("charlie");
    bootstrap(&mut c, &[seed.cluster_addr]);
    let charlie = start(c).await;
    let agents = [seed, bravo, charlie];
    eventually(Duration::from_secs(20), "cluster formed", || {
        agents.iter().all(|a| alive_count(a) == 3)
    })
    .await;
    upload(agents[0].http_addr, &net, "app.conf", b"listen = 8080\n", &net.signer).await;

    let browser = Browser::start().await;
    let base = format!("http://{}", agents[0].http_addr);

    // Nodes: three rows, all up, and a graph with three nodes and links between them.
    browser.goto(&format!("{base}/#/nodes")).await;
    browser
        .wait_for(
            "three nodes up in the table",
            "return document.querySelectorAll('#nodes-table tr[data-state=up]').length === 3",
        )
        .await;
    browser
        .wait_for(
            "graph with three nodes and three alive links",
            "return document.querySelectorAll('svg.graph g.node').length === 3 && document.querySelectorAll('svg.graph line.edge[data-state=alive]').length === 3",
        )
        .await;
    browser.screenshot(&artifact("dashboard-nodes.png")).await;

    // Schedules: grouped by node, with the mesh size and the schedule's card.
    browser.goto(&format!("{base}/#/schedules")).await;
    browser
        .wait_for(
            "schedules grouped by node",
            "const g = document.querySelector('section.group[data-node=bravo]'); \
             return document.getElementById('mesh-count')?.textContent === 'Mesh: 3 nodes' && !!g \
               && g.querySelector('.count').textContent === '1 schedule' \
               && !!g.querySelector('article[data-schedule=nightly-db]') \
               && g.innerText.includes('s3:bucket/db') && g.innerText.includes('7d:4w') \
               && document.querySelectorAll('section.group').length === 3",
        )
        .await;

    // Run the schedule on bravo; on alpha's page its job appears, and its log is fetched from
    // bravo on demand.
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/schedules/nightly-db/run", agents[1].http_addr))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    browser
        .wait_for(
            "the job's success and its log",
            "const a = document.querySelector('section.group[data-node=bravo] article[data-schedule=nightly-db]'); \
             const b = a && a.querySelector('ul.jobs button'); \
             if (!b || !a.innerText.includes('success')) return false; \
             if (!document.getElementById('dialog').open) b.click(); \
             return document.querySelector('#dialog pre.log')?.textContent.includes('dumped') === true",
        )
        .await;
    browser.screenshot(&artifact("dashboard-schedules.png")).await;
    browser
        .eval("document.getElementById('dialog').close(); return true")
        .await;

    // A node's detail: its health, peers, files and schedules.
    browser.goto(&format!("{base}/#/nodes/bravo")).await;
    browser
        .wait_for(
            "bravo's detail",
            "const t = document.getElementById('main').innerText; \
             return document.querySelector('main h1')?.textContent.startsWith('bravo') \
               && t.includes('Links') && t.includes('alpha') && t.includes('app.conf') \
               && !!document.querySelector('article[data-schedule=nightly-db]')",
        )
        .await;

    // Files: the file, present on all three nodes (once their reports say so).
    browser.goto(&format!("{base}/#/files")).await;
    browser
        .wait_for(
            "the file, on 3 of 3 nodes",
            "const r = document.querySelector('tr[data-file=\"app.conf\"]'); \
             return !!r && r.querySelector('.present').textContent === '3 / 3 nodes'",
        )
        .await;

    // Back to the nodes; kill one; the page turns it down without a reload.
    browser.goto(&format!("{base}/#/nodes")).await;
    browser
        .wait_for(
            "three nodes up again",
            "return document.querySelectorAll('#nodes-table tr[data-state=up]').length === 3",
        )
        .await;
    browser.eval("window.__sameDocument = true; return true").await;
    let [alpha, bravo, charlie] = agents;
    charlie.kill().await;
    browser
        .wait_for(
            "charlie down on the page",
            "return document.querySelector('#nodes-table tr[data-node=charlie]')?.dataset.state === 'down' \
               && document.querySelector('svg.graph g.node.down[data-node=charlie]') !== null",
        )
        .await;
    assert_eq!(
        browser.eval("return window.__sameDocument === true").await,
        Value::Bool(true),
        "the page was not reloaded"
    );
    browser
        .wait_for(
            "node_down event on the overview",
            "location.hash = '#/'; return [...document.querySelectorAll('ol.events li')].some(li => li.dataset.kind === 'node_down' && li.innerText.includes('charlie'))",
        )
        .await;
    browser.screenshot(&artifact("dashboard-overview.png")).await;
    // A phone-sized window: the page still fits (tables scroll inside their box).
    browser
        .cmd(
            reqwest::Method::POST,
            "/window/rect",
            json!({"width": 390, "height": 844}),
        )
        .await;
    browser.goto(&format!("{base}/#/schedules")).await;
    browser
        .wait_for(
            "schedules readable on a phone",
            "return !!document.querySelector('article[data-schedule=nightly-db]') \
               && document.documentElement.scrollWidth <= window.innerWidth + 1",
        )
        .await;
    browser.screenshot(&artifact("dashboard-phone.png")).await;
    // The API reference page renders the OpenAPI document.
    browser.goto(&format!("{base}/api/docs")).await;
    browser
        .wait_for(
            "the API reference",
            "return [...document.querySelectorAll('main h3')].some(h => h.textContent === 'GET /api/schedules') \
               && !!document.getElementById('schema-JobView')",
        )
        .await;
    browser.close().await;
    alpha.shutdown().await;
    bravo.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_served_from_the_binary_with_a_strict_policy() {
    let net = TestNetwork::new();
    let a = start(net.config("solo")).await;
    let client = reqwest::Client::new();
    for (path, kind, needle) in [
        ("/", "text/html", "/assets/app.js"),
        ("/assets/app.js", "text/javascript", "EventSource('/api/events/stream')"),
        ("/assets/app.css", "text/css", "prefers-color-scheme"),
    ] {
        let resp = client
            .get(format!("http://{}{path}", a.http_addr))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        let headers = resp.headers().clone();
        assert!(headers["content-type"].to_str().unwrap().starts_with(kind), "{path}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff");
        let body = resp.text().await.unwrap();
        assert!(body.contains(needle), "{path}");
        // Nothing is loaded from elsewhere (the SVG namespace is a name, not a fetch).
        let body = body.replace("http://www.w3.org/2000/svg", "");
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{path} loads nothing from elsewhere"
        );
    }
    assert_eq!(
        client
            .get(format!("http://{}/assets/nope.js", a.http_addr))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    a.shutdown().await;
}
