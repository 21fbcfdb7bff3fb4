//! The `shoal` command line, run as a real process.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;

const GOOD_KEY: &str = "Gb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=";

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn config_errors_exit_2_and_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let allow = format!("[network]\ntrusted_nodes = [\"{GOOD_KEY}\"]\n");
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        ("missing", String::new(), vec!["cannot read config", "No such file"]),
        ("badtoml", format!("{allow}[cluster\nlisten = 1\n"), vec!["line 3"]),
        (
            "unknown",
            format!("{allow}[cluster]\nlisten = \"0.0.0.0:7946\"\nbogus = true\n"),
            vec!["line 5", "bogus"],
        ),
        (
            "badaddr",
            format!("{allow}[http]\nlisten = \"not-an-address\"\n"),
            vec!["line 4", "listen"],
        ),
        (
            "badkey",
            "[network]\ntrusted_nodes = [\"bm90IGEga2V5\"]\n".to_string(),
            vec!["line 2", "invalid public key"],
        ),
        (
            "unsetvar",
            format!("{allow}[node]\nname = \"${{SHOAL_TEST_SURELY_UNSET}}\"\n"),
            vec!["line 4", "SHOAL_TEST_SURELY_UNSET"],
        ),
        (
            "noadmission",
            "[node]\nname = \"x\"\n".to_string(),
            vec!["network.network_key", "no admission"],
        ),
    ];
    for (name, text, needles) in cases {
        let path = if name == "missing" {
            dir.path().join("missing.toml").to_string_lossy().into_owned()
        } else {
            write(dir.path(), &format!("{name}.toml"), &text)
        };
        for args in [vec!["agent", "--config", &path], vec!["config", "check", &path]] {
            let (code, _out, err) = run_shoal(&args);
            assert_eq!(code, 2, "{name} {args:?}: exit code; stderr: {err}");
            assert!(err.contains(&path), "{name}: names the file: {err}");
            for n in &needles {
                assert!(err.contains(n), "{name}: {err:?} should mention {n:?}");
            }
        }
    }
}

#[test]
fn keygen_writes_0600_prints_public_key_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.key");
    let p = path.to_str().unwrap();
    let (code, out, _) = run_shoal(&["keygen", "--out", p]);
    assert_eq!(code, 0);
    let public: shoal::identity::PublicKey = out.trim().parse().expect("prints a base64 public key");
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(shoal::identity::SecretKey::load(&path).unwrap().public(), public);

    let (code, _, err) = run_shoal(&["keygen", "--out", p]);
    assert_ne!(code, 0);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(
        shoal::identity::SecretKey::load(&path).unwrap().public(),
        public,
        "unchanged"
    );

    let (code, out, _) = run_shoal(&["keygen", "--out", p, "--force"]);
    assert_eq!(code, 0);
    assert_ne!(out.trim(), public.to_string());
}

#[test]
fn network_and_certificate_workflow_passes_config_check() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (code, network_pub, _) = run_shoal(&["network", "new", "--out", d.join("net.key").to_str().unwrap()]);
    assert_eq!(code, 0);
    let (_, node_pub, _) = run_shoal(&["keygen", "--out", d.join("node.key").to_str().unwrap()]);
    let (code, cert, err) = run_shoal(&[
        "cert",
        "sign",
        "--network-key",
        d.join("net.key").to_str().unwrap(),
        "--node",
        node_pub.trim(),
        "--name",
        "web-1",
        "--valid-for",
        "90d",
    ]);
    assert_eq!(code, 0, "{err}");
    let parsed = shoal::identity::NodeCertificate::from_base64(cert.trim()).unwrap();
    assert_eq!(parsed.name, "web-1");
    assert_eq!(parsed.network_key.to_string(), network_pub.trim());
    let days = (parsed.not_after - parsed.not_before) / 86400;
    assert!((89..=90).contains(&days), "{days}");

    let config = |key_file: &str| {
        format!(
            "[node]\nstate_dir = \"{}\"\nkey_file = \"{key_file}\"\n[network]\nnetwork_key = \"{}\"\ncertificate = \"{}\"\n",
            d.join("state").display(),
            network_pub.trim(),
            cert.trim()
        )
    };
    let good = write(d, "good.toml", &config(d.join("node.key").to_str().unwrap()));
    let (code, out, err) = run_shoal(&["config", "check", &good]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok"), "{out}");

    // The certificate is for another key than the node's: refused.
    run_shoal(&["keygen", "--out", d.join("other.key").to_str().unwrap()]);
    let bad = write(d, "bad.toml", &config(d.join("other.key").to_str().unwrap()));
    let (code, _, err) = run_shoal(&["config", "check", &bad]);
    assert_eq!(code, 2);
    assert!(err.contains("certificate is for node key"), "{err}");

    // Bad inputs to cert sign.
    let (code, _, err) = run_shoal(&[
        "cert",
        "sign",
        "--network-key",
        d.join("net.key").to_str().unwrap(),
        "--node",
        "nope",
        "--name",
        "x",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("invalid public key"), "{err}");
    let (code, _, err) = run_shoal(&[
        "cert",
        "sign",
        "--network-key",
        d.join("net.key").to_str().unwrap(),
        "--node",
        node_pub.trim(),
        "--name",
        "bad name",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("invalid node name"), "{err}");
}

#[test]
fn help_lists_the_commands() {
    let (code, out, _) = run_shoal(&["--help"]);
    assert_eq!(code, 0);
    for cmd in [
        "agent", "demo", "keygen", "network", "cert", "status", "members", "config",
    ] {
        assert!(out.contains(cmd), "{cmd} missing from help:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_members_read_the_local_agent() {
    let net = TestNetwork::new();
    let a = start(net.config("alpha")).await;
    let mut cb = net.config("beta");
    bootstrap(&mut cb, &[a.cluster_addr]);
    let b = start(cb).await;
    eventually(Duration::from_secs(10), "pair joined", || {
        alive_count(&a) == 2 && alive_count(&b) == 2
    })
    .await;
    wait_until(Duration::from_secs(10), "names learned", || {
        let http = a.http_addr;
        async move { members(http).await.unwrap_or_default().iter().all(|m| m.name.is_some()) }
    })
    .await;
    let url = format!("http://{}", a.http_addr);

    let (out, code) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            let (code, out, _) = run_shoal(&["status", "--url", &url]);
            (out, code)
        }
    })
    .await
    .unwrap();
    assert_eq!(code, 0);
    assert!(out.contains("name:    alpha"), "{out}");
    assert!(out.contains("2 alive, 0 suspect, 0 down"), "{out}");

    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_shoal(&args)
        })
    };
    let (code, out, _) = run(vec!["members".into(), "--url".into(), url.clone()]).await.unwrap();
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("NAME") && lines[0].contains("STATE"), "{out}");
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        out.contains("alpha *") && out.contains("beta") && out.contains("alive"),
        "{out}"
    );
    // Columns are aligned: STATE starts at the same offset on every line.
    let col = lines[0].find("STATE").unwrap();
    assert!(lines[1..].iter().all(|l| &l[col..col + 5] == "alive"), "{out}");

    let (code, out, _) = run(vec!["members".into(), "--json".into(), "--url".into(), url.clone()])
        .await
        .unwrap();
    assert_eq!(code, 0);
    let parsed: shoal::http::api::Members = serde_json::from_str(&out).expect("valid JSON");
    assert_eq!(parsed.members.len(), 2);

    let (code, _, err) = run(vec!["status".into(), "--url".into(), "http://127.0.0.1:9".into()])
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach the shoal agent"), "{err}");

    a.shutdown().await;
    b.shutdown().await;
}

#[test]
fn example_config_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/shoal.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    // certificate_file points at /etc; substitute an inline form so the example parses here.
    let env = std::collections::HashMap::<String, String>::new();
    let text = text.replace("certificate_file = \"/etc/shoal/node.cert\"", "");
    let err = shoal::config::Config::parse(&text, &path, &env)
        .unwrap_err()
        .to_string();
    // Without a certificate the only complaint is the missing certificate.
    assert!(
        err.contains("network.certificate") && err.contains("no certificate"),
        "{err}"
    );

    let net = shoal::identity::SecretKey::generate();
    let cert = shoal::identity::NodeCertificate::issue(
        &net,
        shoal::identity::SecretKey::generate().public(),
        "web-1",
        0,
        u64::MAX,
    )
    .unwrap();
    let text = text.replace(
        "network_key = \"hnuGNlUHyozNi1egatsI9GGx7dh+bNPHdugf5J9yJHQ=\"",
        &format!(
            "network_key = \"{}\"\ncertificate = \"{}\"",
            net.public(),
            cert.to_base64()
        ),
    );
    let config = shoal::config::Config::parse(&text, &path, &env).expect("example parses");
    assert_eq!(config.node.name.as_deref(), Some("web-1"));
    assert_eq!(config.cluster.bootstrap.len(), 2);
    assert_eq!(config.cluster.bootstrap[1].host, "seed.example.internal");
    assert_eq!(config.files["shared:data"].len(), 2);
    assert_eq!(config.schedules[0].id, "etc-snapshot");
    assert!(config.schedules[0].cron().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_commands_sign_upload_list_get_and_delete() {
    let net = TestNetwork::new();
    let a = start(net.config("alpha")).await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("signer.key");
    net.signer.save(&key, false).unwrap();
    let stranger = dir.path().join("stranger.key");
    shoal::identity::SecretKey::generate().save(&stranger, false).unwrap();
    let file = dir.path().join("app.conf");
    std::fs::write(&file, b"port = 1\n").unwrap();
    let url = format!("http://{}", a.http_addr);
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_shoal(&args)
        })
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let (f, k, ks) = (
        file.to_str().unwrap(),
        key.to_str().unwrap(),
        stranger.to_str().unwrap(),
    );

    let (code, out, err) = run(s(&["file", "update", f, "--key-path", k, "--url", &url]))
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("app.conf: version"), "{out}");
    std::fs::write(&file, b"port = 2\n").unwrap();
    let (code, _, err) = run(s(&["file", "update", f, "--key-path", k, "--url", &url]))
        .await
        .unwrap();
    assert_eq!(code, 0, "an update gets a newer version: {err}");

    let (code, out, _) = run(s(&["file", "get", "app.conf", "--url", &url])).await.unwrap();
    assert_eq!((code, out.as_str()), (0, "port = 2\n"));
    let (code, out, _) = run(s(&["file", "list", "--url", &url])).await.unwrap();
    assert_eq!(code, 0);
    assert!(
        out.starts_with("NAME") && out.contains("app.conf") && out.contains(&net.signer.public().short()),
        "{out}"
    );

    // Refusals say why and exit non-zero.
    let (code, _, err) = run(s(&["file", "update", f, "--key-path", ks, "--url", &url]))
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("unauthorized_signer"), "{err}");
    let (code, _, err) = run(s(&[
        "file",
        "update",
        f,
        "--name",
        "unlisted",
        "--key-path",
        k,
        "--url",
        &url,
    ]))
    .await
    .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("not configured"), "{err}");
    let (code, _, err) = run(s(&[
        "file",
        "update",
        f,
        "--name",
        "../x",
        "--key-path",
        k,
        "--url",
        &url,
    ]))
    .await
    .unwrap();
    assert_eq!(code, 2);
    assert!(err.contains("invalid file name"), "{err}");

    let (code, out, err) = run(s(&["file", "delete", "app.conf", "--key-path", k, "--url", &url]))
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("deleted"), "{out}");
    let (code, _, err) = run(s(&["file", "get", "app.conf", "--url", &url])).await.unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("deleted"), "{err}");
    let (_, out, _) = run(s(&["file", "list", "--url", &url])).await.unwrap();
    assert!(!out.contains("app.conf"), "deleted files are hidden: {out}");
    let (_, out, _) = run(s(&["file", "list", "--all", "--url", &url])).await.unwrap();
    assert!(out.contains("app.conf") && out.contains("deleted"), "{out}");
    a.shutdown().await;
}

#[test]
fn schedule_examples_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let env: std::collections::HashMap<String, String> =
        [("RESTIC_PASSWORD", "pw"), ("MONGO_URI", "mongodb://u:p@db/app")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let header = format!(
        "[network]\ntrusted_nodes = [\"{}\"]\n",
        shoal::identity::SecretKey::generate().public()
    );
    for (file, id) in [("restic.toml", "restic-home"), ("mongodump.toml", "mongodump-app")] {
        let path = dir.join(file);
        let text = format!("{header}{}", std::fs::read_to_string(&path).unwrap());
        let config = shoal::config::Config::parse(&text, &path, &env).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(config.schedules[0].id, id);
        assert!(config.schedules[0].cron().unwrap().next_after(0).is_some());
    }
}

#[test]
fn schedule_errors_name_the_line() {
    let text = format!(
        "[network]\ntrusted_nodes = [\"{}\"]\n\n[[schedules]]\nid = \"a\"\nschedule = \"@daily\"\ncommand = [\"true\"]\n\n[[schedules]]\nid = \"b\"\nschedule = \"99 * * * *\"\ncommand = [\"true\"]\n",
        shoal::identity::SecretKey::generate().public()
    );
    let env = std::collections::HashMap::<String, String>::new();
    let err = shoal::config::Config::parse(&text, std::path::Path::new("s.toml"), &env)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("s.toml:11: schedules[1].schedule: b: invalid cron expression"),
        "{err}"
    );
    let dup = text.replace("id = \"b\"", "id = \"a\"");
    let err = shoal::config::Config::parse(&dup, std::path::Path::new("s.toml"), &env)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("s.toml:10: schedules[1].id: duplicate schedule id \"a\""),
        "{err}"
    );
}
