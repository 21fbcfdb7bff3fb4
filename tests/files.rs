//! File sync over real QUIC between in-process agents.

mod common;

use std::time::Duration;

use common::*;

/// Waits until every agent serves `expected` for `name` (None: no content) and, when there
/// is content, holds the same bytes under its files directory.
async fn converged(agents: &[shoal::agent::AgentHandle], name: &str, expected: Option<&[u8]>) {
    for a in agents {
        let http = a.http_addr;
        let path = a.files_dir().join(name);
        wait_until(
            Duration::from_secs(20),
            &format!("{} converges on {name}", a.name),
            || {
                let path = path.clone();
                async move {
                    let served = content(http, name).await;
                    let on_disk = std::fs::read(&path).ok();
                    served.as_deref() == expected && on_disk.as_deref() == expected
                }
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_update_and_delete_reach_all_five_nodes() {
    let net = TestNetwork::new();
    let agents = cluster(&net, 5).await;
    let v1 = b"listen = 8080\n".to_vec();
    let (status, body) = upload(agents[1].http_addr, &net, "app.conf", &v1, &net.signer).await;
    assert_eq!(status, 200, "{body}");
    converged(&agents, "app.conf", Some(&v1)).await;

    let v2: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let (status, body) = upload(agents[3].http_addr, &net, "app.conf", &v2, &net.alt_signer).await;
    assert_eq!(status, 200, "{body}");
    converged(&agents, "app.conf", Some(&v2)).await;

    let (status, body) = delete(agents[0].http_addr, &net, "app.conf", &net.signer).await;
    assert_eq!(status, 200, "{body}");
    converged(&agents, "app.conf", None).await;
    for a in &agents {
        let info: shoal::http::api::FileInfo = get_json(a.http_addr, "/api/files/app.conf").await.unwrap();
        assert!(info.deleted);
    }
    for a in agents {
        a.shutdown().await;
    }
}
