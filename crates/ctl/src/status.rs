//! `ctl status`: what the coordinator and the explainer say about themselves.

use camshaft_proto::v1::{GetServerInfoRequest, GetServerInfoResponse, ServerRole};

use crate::client::Servers;
use crate::console;
use crate::error::{AlreadyReported, CallError, EXIT_FAILED, Unreachable};
use crate::output::{device_summary, format_duration_ms};

/// Asks the server at `address` for its info; `Err` holds the one-line reason.
async fn ask(
    servers: &Servers,
    server: &'static str,
    address: &str,
) -> Result<GetServerInfoResponse, String> {
    let mut client = servers.server_info(server, address).await.map_err(|e| {
        // The block already names the server and address: keep just the cause.
        match e.downcast_ref::<Unreachable>() {
            Some(unreachable) => unreachable.reason.clone(),
            None => e.to_string(),
        }
    })?;
    client
        .get_server_info(GetServerInfoRequest {})
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| CallError::new(server, "GetServerInfo", &status).to_string())
}

/// The text block of one server.
pub fn server_block(
    server: &str,
    address: &str,
    answer: &Result<GetServerInfoResponse, String>,
    now_ms: i64,
) -> String {
    let mut out = format!("{server} at {address}\n");
    let info = match answer {
        Ok(info) => info,
        Err(reason) => {
            out.push_str(&format!("  unreachable: {reason}\n"));
            return out;
        }
    };
    let mut field = |name: &str, value: String| {
        out.push_str(&format!("  {:<9}{value}\n", format!("{name}:")));
    };
    let roles: Vec<&str> = info
        .roles
        .iter()
        .map(|r| {
            ServerRole::try_from(*r)
                .unwrap_or(ServerRole::Unspecified)
                .short_name()
        })
        .collect();
    field("roles", roles.join(", "));
    field("version", info.version.clone());
    if info.started_unix_ms > 0 {
        field(
            "uptime",
            format_duration_ms(now_ms.saturating_sub(info.started_unix_ms).max(0)),
        );
    }
    field(
        "store",
        format!(
            "{} ({})",
            if info.store.is_empty() {
                "-"
            } else {
                &info.store
            },
            if info.store_healthy {
                "healthy"
            } else {
                "unhealthy"
            }
        ),
    );
    let serves = |role: ServerRole| info.roles.contains(&(role as i32));
    if serves(ServerRole::Coordinator) {
        field("workers", format!("{} live", info.live_workers));
        field("jobs", format!("{} active", info.active_jobs));
    }
    if serves(ServerRole::Explainer) {
        field(
            "queue",
            format!("{}/{} images", info.queue_depth, info.queue_capacity),
        );
        if info.loaded_models.is_empty() {
            field("models", "none loaded".into());
        } else {
            let models: Vec<String> = info
                .loaded_models
                .iter()
                .map(|m| {
                    let mut text = format!("{} on {}", m.model_version, m.device);
                    if !m.aliases.is_empty() {
                        text.push_str(&format!(" ({})", m.aliases.join(", ")));
                    }
                    if let Some(s) = &m.settings {
                        text.push_str(&format!(
                            " [batch {}, wait {} ms, {} replica{}, {}]",
                            s.max_batch,
                            s.max_batch_wait_ms,
                            s.replicas,
                            if s.replicas == 1 { "" } else { "s" },
                            s.precision
                        ));
                    }
                    if m.preloaded {
                        text.push_str(" preloaded");
                    }
                    text
                })
                .collect();
            field("models", models.join("; "));
        }
        if !info.preload.is_empty() {
            let preload: Vec<String> = info
                .preload
                .iter()
                .map(|p| match (p.ready, p.error.is_empty()) {
                    (true, _) => format!("{} → {} ready", p.model_ref, p.model_version),
                    (false, true) => format!("{} loading", p.model_ref),
                    (false, false) => format!("{} failed: {}", p.model_ref, p.error),
                })
                .collect();
            field("preload", preload.join("; "));
        }
    }
    field(
        "cuda",
        if info.cuda_available { "yes" } else { "no" }.into(),
    );
    if info.devices.is_empty() {
        field("devices", "-".into());
    } else {
        let devices: Vec<String> = info.devices.iter().map(device_summary).collect();
        field("devices", devices.join("; "));
    }
    out
}

/// `ctl status [--json]`: exit code 1 when either server is unreachable.
pub async fn status(servers: &Servers, json: bool) -> anyhow::Result<()> {
    let (coordinator, explainer) = tokio::join!(
        ask(servers, "coordinator", &servers.coordinator),
        ask(servers, "explainer", &servers.explainer)
    );
    if json {
        let entry = |address: &str, answer: &Result<GetServerInfoResponse, String>| match answer {
            Ok(info) => serde_json::json!({"address": address, "info": info}),
            Err(reason) => serde_json::json!({"address": address, "error": reason}),
        };
        console::line(serde_json::to_string_pretty(&serde_json::json!({
            "coordinator": entry(&servers.coordinator, &coordinator),
            "explainer": entry(&servers.explainer, &explainer),
        }))?)?;
    } else {
        let now = camshaft_proto::now_unix_ms();
        console::text(server_block(
            "coordinator",
            &servers.coordinator,
            &coordinator,
            now,
        ))?;
        console::text(server_block(
            "explainer",
            &servers.explainer,
            &explainer,
            now,
        ))?;
    }
    if coordinator.is_err() || explainer.is_err() {
        return Err(AlreadyReported { code: EXIT_FAILED }.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_for_an_answer_and_a_missing_server() {
        let info = GetServerInfoResponse {
            roles: vec![ServerRole::Coordinator as i32, ServerRole::Worker as i32],
            version: "0.1.0".into(),
            started_unix_ms: 1_000,
            store: "embedded:/tmp/data".into(),
            store_healthy: true,
            live_workers: 2,
            active_jobs: 1,
            ..Default::default()
        };
        let text = server_block("coordinator", "http://h:1", &Ok(info), 61_000);
        assert_eq!(
            text,
            "coordinator at http://h:1\n  roles:   coordinator, worker\n  version: 0.1.0\n  \
             uptime:  60s\n  store:   embedded:/tmp/data (healthy)\n  workers: 2 live\n  \
             jobs:    1 active\n  cuda:    no\n  devices: -\n"
        );
        let explainer = GetServerInfoResponse {
            roles: vec![ServerRole::Explainer as i32],
            version: "0.1.0".into(),
            started_unix_ms: 1_000,
            queue_capacity: 512,
            loaded_models: vec![camshaft_proto::v1::LoadedModel {
                model_version: "pets:2".into(),
                device: "cpu".into(),
                settings: Some(camshaft_proto::v1::ModelServingSettings {
                    max_batch: 8,
                    max_batch_wait_ms: 5,
                    replicas: 2,
                    precision: "bf16".into(),
                }),
                preloaded: true,
                ..Default::default()
            }],
            preload: vec![
                camshaft_proto::v1::PreloadState {
                    model_ref: "pets@prod".into(),
                    model_version: "pets:2".into(),
                    ready: true,
                    ..Default::default()
                },
                camshaft_proto::v1::PreloadState {
                    model_ref: "cifar".into(),
                    error: "model cifar not found".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let text = server_block("explainer", "http://h:2", &Ok(explainer), 1_000);
        assert!(
            text.contains(
                "  models:  pets:2 on cpu [batch 8, wait 5 ms, 2 replicas, bf16] preloaded\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "  preload: pets@prod → pets:2 ready; cifar failed: model cifar not found\n"
            ),
            "{text}"
        );
        let down = server_block("explainer", "http://h:2", &Err("refused".into()), 0);
        assert_eq!(down, "explainer at http://h:2\n  unreachable: refused\n");
    }
}
