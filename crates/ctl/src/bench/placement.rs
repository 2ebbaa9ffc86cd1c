//! Laying out N ranks on the cluster's workers: `workers × gpus_per_worker =
//! N` on GPU workers (fewest workers first, so a group fills a host before it
//! crosses the network), or one rank per CPU worker. Decided from
//! `ListWorkers` before any job is submitted, so a cluster that is too small
//! is refused up front.

use std::fmt;

use camshaft_proto::v1::{DeviceKind, WorkerInfo, WorkerState};
use serde::Serialize;

use crate::error::InputError;

/// What one rank runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RankDevice {
    /// One rank per worker, on its CPU.
    Cpu,
    /// One rank per GPU.
    Cuda,
}

impl RankDevice {
    /// Parses `cpu` or `cuda` (any case).
    pub fn parse(name: &str) -> Result<RankDevice, InputError> {
        match name.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(RankDevice::Cpu),
            "cuda" | "gpu" => Ok(RankDevice::Cuda),
            other => Err(InputError::new(format!(
                "unknown device {other:?}: use cpu or cuda"
            ))),
        }
    }

    /// The `--device` spelling of a job spec.
    pub fn short_name(self) -> &'static str {
        match self {
            RankDevice::Cpu => "cpu",
            RankDevice::Cuda => "cuda",
        }
    }
}

impl fmt::Display for RankDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

/// The workers a benchmark may use: every one that is idle or busy (a busy
/// one only delays the job); draining and lost workers take no new jobs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// The device the ranks run on.
    pub device: RankDevice,
    /// GPUs of each usable worker (empty entries for CPU-only workers).
    pub gpus: Vec<u32>,
    /// Usable workers running another job right now.
    pub busy: usize,
}

impl Capacity {
    /// The capacity of `workers` for `device`; `None` picks CUDA when any
    /// usable worker has a GPU, else the CPU.
    pub fn of(workers: &[WorkerInfo], device: Option<RankDevice>) -> Capacity {
        let usable: Vec<&WorkerInfo> = workers
            .iter()
            .filter(|w| {
                matches!(
                    WorkerState::try_from(w.state),
                    Ok(WorkerState::Idle | WorkerState::Busy)
                )
            })
            .collect();
        let gpus: Vec<u32> = usable
            .iter()
            .map(|w| {
                w.devices
                    .iter()
                    .filter(|d| d.kind() == DeviceKind::Cuda)
                    .count() as u32
            })
            .collect();
        let device = device.unwrap_or(if gpus.iter().any(|&g| g > 0) {
            RankDevice::Cuda
        } else {
            RankDevice::Cpu
        });
        Capacity {
            device,
            gpus,
            busy: usable
                .iter()
                .filter(|w| w.state == WorkerState::Busy as i32)
                .count(),
        }
    }

    /// The most ranks one job can have: every GPU (the largest layout may
    /// still need equal GPUs per worker), or one per CPU worker.
    pub fn total_ranks(&self) -> u32 {
        match self.device {
            RankDevice::Cpu => self.gpus.len() as u32,
            RankDevice::Cuda => self.gpus.iter().sum(),
        }
    }

    fn describe(&self) -> String {
        match self.device {
            RankDevice::Cpu => format!(
                "{} CPU worker{} (one rank each)",
                self.gpus.len(),
                if self.gpus.len() == 1 { "" } else { "s" }
            ),
            RankDevice::Cuda => {
                let with_gpus: Vec<String> = self
                    .gpus
                    .iter()
                    .filter(|&&g| g > 0)
                    .map(u32::to_string)
                    .collect();
                format!(
                    "{} GPU rank{} ({} GPU worker{} with {} GPUs)",
                    self.total_ranks(),
                    if self.total_ranks() == 1 { "" } else { "s" },
                    with_gpus.len(),
                    if with_gpus.len() == 1 { "" } else { "s" },
                    if with_gpus.is_empty() {
                        "no".to_string()
                    } else {
                        with_gpus.join(", ")
                    }
                )
            }
        }
    }
}

/// Where a job's N ranks go: the `workers`, `gpus_per_worker` and `device`
/// of its spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Placement {
    /// Ranks in the group: `workers × max(gpus_per_worker, 1)`.
    pub ranks: u32,
    /// Workers in the group.
    pub workers: u32,
    /// GPUs (ranks) per worker; 0 on the CPU (one rank per worker).
    pub gpus_per_worker: u32,
    /// What the ranks run on.
    pub device: RankDevice,
}

impl Placement {
    /// `2 × 4 cuda`, `2 × cpu`: workers × ranks per worker.
    pub fn label(&self) -> String {
        match self.device {
            RankDevice::Cpu => format!("{} × cpu", self.workers),
            RankDevice::Cuda => format!("{} × {} cuda", self.workers, self.gpus_per_worker),
        }
    }
}

/// Lays out `ranks` ranks on `capacity`, or says why it cannot (an
/// [`InputError`]: the user asked for more than the cluster has).
pub fn place(ranks: u32, capacity: &Capacity) -> Result<Placement, InputError> {
    if ranks == 0 {
        return Err(InputError::new("--ranks: a rank count must be at least 1"));
    }
    let too_few = || {
        InputError::new(format!(
            "the cluster has {}; --ranks asks for {ranks}",
            capacity.describe()
        ))
    };
    match capacity.device {
        RankDevice::Cpu => {
            if ranks as usize > capacity.gpus.len() {
                return Err(too_few());
            }
            Ok(Placement {
                ranks,
                workers: ranks,
                gpus_per_worker: 0,
                device: RankDevice::Cpu,
            })
        }
        RankDevice::Cuda => {
            if ranks > capacity.total_ranks() {
                return Err(too_few());
            }
            let most = capacity.gpus.iter().copied().max().unwrap_or(0).min(ranks);
            // Most GPUs per worker first: fewest workers, least network.
            for per_worker in (1..=most).rev() {
                if !ranks.is_multiple_of(per_worker) {
                    continue;
                }
                let workers = ranks / per_worker;
                let able = capacity.gpus.iter().filter(|&&g| g >= per_worker).count();
                if able >= workers as usize {
                    return Ok(Placement {
                        ranks,
                        workers,
                        gpus_per_worker: per_worker,
                        device: RankDevice::Cuda,
                    });
                }
            }
            Err(InputError::new(format!(
                "{ranks} ranks cannot be laid out as workers × GPUs per worker (the same \
                 number on each worker) on {}",
                capacity.describe()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use camshaft_proto::v1::Device;

    fn worker(gpus: u32, state: WorkerState) -> WorkerInfo {
        let mut devices = vec![Device {
            kind: DeviceKind::Cpu as i32,
            ..Default::default()
        }];
        devices.extend((0..gpus).map(|index| Device {
            kind: DeviceKind::Cuda as i32,
            index,
            ..Default::default()
        }));
        WorkerInfo {
            devices,
            state: state as i32,
            ..Default::default()
        }
    }

    fn cuda(gpus: &[u32]) -> Capacity {
        Capacity {
            device: RankDevice::Cuda,
            gpus: gpus.to_vec(),
            busy: 0,
        }
    }

    #[test]
    fn gpus_fill_a_worker_before_spreading() {
        let two_hosts = cuda(&[4, 4]);
        let layout = |n| {
            let p = place(n, &two_hosts).unwrap();
            (p.workers, p.gpus_per_worker)
        };
        assert_eq!(layout(1), (1, 1));
        assert_eq!(layout(2), (1, 2));
        assert_eq!(layout(4), (1, 4));
        assert_eq!(layout(8), (2, 4));
        assert_eq!(layout(6), (2, 3));
        assert_eq!(place(8, &two_hosts).unwrap().label(), "2 × 4 cuda");
    }

    #[test]
    fn too_many_ranks_are_refused_with_what_the_cluster_has() {
        let err = place(16, &cuda(&[4, 4])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the cluster has 8 GPU ranks (2 GPU workers with 4, 4 GPUs); --ranks asks for 16"
        );
        // 5 fits the total but not as workers × equal GPUs.
        let err = place(5, &cuda(&[4, 2])).unwrap_err();
        assert!(err.to_string().contains("cannot be laid out"), "{err}");
        assert!(place(0, &cuda(&[1])).is_err());
    }

    #[test]
    fn cpu_workers_hold_one_rank_each() {
        let cpus = Capacity::of(
            &[worker(0, WorkerState::Idle), worker(0, WorkerState::Busy)],
            None,
        );
        assert_eq!(cpus.device, RankDevice::Cpu);
        assert_eq!(cpus.busy, 1);
        let p = place(2, &cpus).unwrap();
        assert_eq!(
            (p.workers, p.gpus_per_worker, p.label()),
            (2, 0, "2 × cpu".into())
        );
        assert_eq!(
            place(3, &cpus).unwrap_err().to_string(),
            "the cluster has 2 CPU workers (one rank each); --ranks asks for 3"
        );
    }

    #[test]
    fn gpus_are_the_default_and_lost_or_draining_workers_do_not_count() {
        let workers = [
            worker(2, WorkerState::Idle),
            worker(0, WorkerState::Idle),
            worker(8, WorkerState::Draining),
            worker(8, WorkerState::Lost),
        ];
        let capacity = Capacity::of(&workers, None);
        assert_eq!(capacity.device, RankDevice::Cuda);
        assert_eq!(capacity.total_ranks(), 2);
        let on_cpus = Capacity::of(&workers, Some(RankDevice::Cpu));
        assert_eq!(on_cpus.total_ranks(), 2);
        assert_eq!(RankDevice::parse("CUDA").unwrap(), RankDevice::Cuda);
        assert!(RankDevice::parse("tpu").is_err());
    }
}
