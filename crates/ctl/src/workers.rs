//! `ctl workers list`.

use camshaft_proto::v1::{ListWorkersRequest, WorkerInfo, WorkerState};

use crate::client::Servers;
use crate::console;
use crate::error::CallError;
use crate::output::{Table, devices_short, format_age};

/// A worker's row: id, state, host, devices, job, ranks, heartbeat age.
pub fn worker_row(worker: &WorkerInfo, now_ms: i64) -> Vec<String> {
    let state = WorkerState::try_from(worker.state)
        .map(|s| s.short_name().to_string())
        .unwrap_or_else(|_| format!("state {}", worker.state));
    let ranks = if worker.ranks.is_empty() {
        "-".to_string()
    } else {
        worker
            .ranks
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    vec![
        worker.worker_id.clone(),
        state,
        dash(&worker.hostname),
        devices_short(&worker.devices),
        dash(&worker.job_id),
        ranks,
        match format_age(now_ms, worker.last_heartbeat_unix_ms).as_str() {
            "-" => "-".to_string(),
            age => format!("{age} ago"),
        },
    ]
}

/// `ctl workers list [--all] [--json]`.
pub async fn list(servers: &Servers, all: bool, json: bool) -> anyhow::Result<()> {
    let mut client = servers.coordinator().await?;
    let workers = client
        .list_workers(ListWorkersRequest { include_lost: all })
        .await
        .map_err(CallError::wrap("coordinator", "ListWorkers"))?
        .into_inner()
        .workers;
    if json {
        return console::line(serde_json::to_string_pretty(&workers)?);
    }
    let now = camshaft_proto::now_unix_ms();
    let mut table = Table::new(&[
        "ID",
        "STATE",
        "HOST",
        "DEVICES",
        "JOB",
        "RANKS",
        "HEARTBEAT",
    ]);
    for worker in &workers {
        table.row(worker_row(worker, now));
    }
    console::text(table.render())
}

#[cfg(test)]
mod tests {
    use super::*;
    use camshaft_proto::v1::{Device, DeviceKind};

    #[test]
    fn a_busy_gpu_worker() {
        let worker = WorkerInfo {
            worker_id: "w-1".into(),
            hostname: "gpu-a".into(),
            devices: vec![
                Device {
                    kind: DeviceKind::Cuda as i32,
                    index: 0,
                    ..Default::default()
                },
                Device {
                    kind: DeviceKind::Cuda as i32,
                    index: 1,
                    ..Default::default()
                },
            ],
            state: WorkerState::Busy as i32,
            job_id: "j-4".into(),
            ranks: vec![0, 1],
            last_heartbeat_unix_ms: 7_000,
            ..Default::default()
        };
        assert_eq!(
            worker_row(&worker, 10_000),
            vec![
                "w-1",
                "busy",
                "gpu-a",
                "cuda:0,cuda:1",
                "j-4",
                "0,1",
                "3s ago"
            ]
        );
    }
}
