//! Placement: which idle workers run an attempt, on which devices, with
//! which collective. A pure decision over the spec and the idle workers;
//! [`Cluster`](super::Cluster) hands it the workers and carries it out.
//!
//! Invariants (table and property tests below):
//! - the world size is the number of devices placed, one rank per device,
//!   ranks numbered from 0 in the order of the workers;
//! - a first attempt gets `workers` workers, a restart at least
//!   `min_workers` (clamped to 1..=`workers`), never more than `workers`;
//! - the collective is NCCL only when every rank is on a CUDA device (and
//!   the spec does not ask for the ring), else the TCP ring.

use std::ops::Range;

use camshaft_proto::v1::{self, DeviceKind};
use camshaft_spec::{CollectiveBackend, Group};

/// An idle worker the scheduler may place ranks on.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    /// Its id.
    pub id: &'a str,
    /// The devices it registered.
    pub devices: &'a [v1::Device],
}

/// Where an attempt runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    /// Each worker with the devices of its ranks, in rank order.
    pub workers: Vec<(String, Vec<v1::Device>)>,
    /// Every rank's collective.
    pub backend: CollectiveBackend,
}

impl Placement {
    /// The number of ranks: one per device placed.
    pub fn world_size(&self) -> u32 {
        self.workers.iter().map(|(_, d)| d.len() as u32).sum()
    }

    /// The global ranks of each worker, in order: consecutive, from 0.
    pub fn rank_ranges(&self) -> Vec<Range<u32>> {
        let mut next = 0u32;
        self.workers
            .iter()
            .map(|(_, devices)| {
                let start = next;
                next += devices.len() as u32;
                start..next
            })
            .collect()
    }

    /// The worker ids, in rank order.
    pub fn worker_ids(&self) -> Vec<String> {
        self.workers.iter().map(|(w, _)| w.clone()).collect()
    }
}

/// The fewest workers an attempt may start with: `workers` the first time,
/// `min_workers` (within 1..=`workers`) on a restart.
pub fn least_workers(group: &Group, restart: bool) -> usize {
    let wanted = group.workers.max(1);
    if restart {
        group.min_workers.clamp(1, wanted) as usize
    } else {
        wanted as usize
    }
}

/// Places `spec` on `idle` (in the order given, the scheduler's id order):
/// `spec.workers` of them, or on a restart as many as there are down to
/// `min_workers`; `None` when too few fit. GPUs where the spec asks for CUDA
/// or NCCL, or leaves the device open and enough workers have them (each
/// then hosts `gpus_per_worker` ranks, 0: all its GPUs); one CPU rank per
/// worker otherwise.
pub fn place(group: &Group, idle: &[Candidate<'_>], restart: bool) -> Option<Placement> {
    let wanted = group.workers.max(1) as usize;
    let least = least_workers(group, restart);
    let gpus = |devices: &[v1::Device]| -> Option<Vec<v1::Device>> {
        let all: Vec<v1::Device> = devices
            .iter()
            .filter(|d| d.kind() == DeviceKind::Cuda)
            .cloned()
            .collect();
        let want = if group.gpus_per_worker == 0 {
            all.len()
        } else {
            group.gpus_per_worker as usize
        };
        (want > 0 && all.len() >= want).then(|| all.into_iter().take(want).collect())
    };
    let on_gpus = || -> Vec<(String, Vec<v1::Device>)> {
        idle.iter()
            .filter_map(|w| gpus(w.devices).map(|d| (w.id.to_string(), d)))
            .take(wanted)
            .collect()
    };
    let on_cpus = || -> Vec<(String, Vec<v1::Device>)> {
        idle.iter()
            .take(wanted)
            .map(|w| (w.id.to_string(), vec![cpu_device()]))
            .collect()
    };
    let nccl_only = group.collective == Some(CollectiveBackend::Nccl);
    let workers = match group.device {
        Some(camshaft_spec::DeviceKind::Cuda) => on_gpus(),
        _ if nccl_only => on_gpus(),
        Some(camshaft_spec::DeviceKind::Cpu) => on_cpus(),
        None => {
            let gpus = on_gpus();
            if gpus.len() >= least { gpus } else { on_cpus() }
        }
    };
    if workers.len() < least {
        return None;
    }
    let backend = backend_for(group, &workers);
    Some(Placement { workers, backend })
}

/// NCCL when every placed rank is on a CUDA device and the spec does not
/// ask for the ring; the ring otherwise.
pub fn backend_for(group: &Group, workers: &[(String, Vec<v1::Device>)]) -> CollectiveBackend {
    let all_cuda = workers
        .iter()
        .all(|(_, d)| d.iter().all(|d| d.kind() == DeviceKind::Cuda));
    if all_cuda && group.collective != Some(CollectiveBackend::Ring) {
        CollectiveBackend::Nccl
    } else {
        CollectiveBackend::Ring
    }
}

/// The device of a CPU rank.
fn cpu_device() -> v1::Device {
    v1::Device {
        kind: DeviceKind::Cpu as i32,
        name: "cpu".into(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn gpu(index: u32) -> v1::Device {
        v1::Device {
            kind: DeviceKind::Cuda as i32,
            index,
            ..Default::default()
        }
    }

    use camshaft_spec::DeviceKind as Kind;

    fn spec(workers: u32, min_workers: u32, device: Option<Kind>) -> Group {
        Group::complete(workers, 0, min_workers, device, None).unwrap()
    }

    #[test]
    fn a_table_of_placements() {
        let two_gpus = [gpu(0), gpu(1)];
        let none: [v1::Device; 0] = [];
        let idle = [
            Candidate {
                id: "a",
                devices: &two_gpus,
            },
            Candidate {
                id: "b",
                devices: &none,
            },
            Candidate {
                id: "c",
                devices: &two_gpus,
            },
        ];
        // (spec, restart, expected workers, world size, backend)
        let cases = [
            (
                spec(2, 0, Some(Kind::Cuda)),
                false,
                Some((vec!["a", "c"], 4, CollectiveBackend::Nccl)),
            ),
            (spec(3, 0, Some(Kind::Cuda)), false, None),
            (
                spec(3, 2, Some(Kind::Cuda)),
                true,
                Some((vec!["a", "c"], 4, CollectiveBackend::Nccl)),
            ),
            (
                spec(3, 0, Some(Kind::Cpu)),
                false,
                Some((vec!["a", "b", "c"], 3, CollectiveBackend::Ring)),
            ),
            (
                spec(2, 0, None),
                false,
                Some((vec!["a", "c"], 4, CollectiveBackend::Nccl)),
            ),
            (
                spec(3, 0, None),
                false,
                Some((vec!["a", "b", "c"], 3, CollectiveBackend::Ring)),
            ),
            (spec(4, 0, Some(Kind::Cpu)), false, None),
            (
                spec(4, 3, Some(Kind::Cpu)),
                true,
                Some((vec!["a", "b", "c"], 3, CollectiveBackend::Ring)),
            ),
        ];
        for (i, (spec, restart, expected)) in cases.into_iter().enumerate() {
            let got =
                place(&spec, &idle, restart).map(|p| (p.worker_ids(), p.world_size(), p.backend));
            let expected = expected
                .map(|(w, n, b)| (w.into_iter().map(String::from).collect::<Vec<_>>(), n, b));
            assert_eq!(got, expected, "case {i}");
        }
    }

    #[test]
    fn gpus_per_worker_and_a_ring_asked_for() {
        let gpus = [gpu(0), gpu(1), gpu(2)];
        let idle = [Candidate {
            id: "a",
            devices: &gpus,
        }];
        let mut s = spec(1, 0, Some(Kind::Cuda));
        s.gpus_per_worker = 2;
        let p = place(&s, &idle, false).unwrap();
        assert_eq!(p.world_size(), 2);
        assert_eq!(p.rank_ranges(), vec![0..2; 1]);
        s.gpus_per_worker = 4;
        assert_eq!(place(&s, &idle, false), None);
        s.gpus_per_worker = 0;
        s.collective = Some(CollectiveBackend::Ring);
        assert_eq!(
            place(&s, &idle, false).unwrap().backend,
            CollectiveBackend::Ring
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        fn device(cuda: bool, index: u32) -> v1::Device {
            v1::Device {
                kind: if cuda {
                    DeviceKind::Cuda
                } else {
                    DeviceKind::Cpu
                } as i32,
                index,
                ..Default::default()
            }
        }

        /// Idle workers, each with 0..4 GPUs and maybe a CPU.
        fn workers() -> impl Strategy<Value = Vec<Vec<v1::Device>>> {
            prop::collection::vec((0u32..4, any::<bool>()), 0..8).prop_map(|ws| {
                ws.into_iter()
                    .map(|(gpus, cpu)| {
                        let mut d: Vec<v1::Device> = (0..gpus).map(|i| device(true, i)).collect();
                        if cpu {
                            d.push(device(false, 0));
                        }
                        d
                    })
                    .collect()
            })
        }

        /// Groups as `Group::complete` makes them (NCCL on a CPU refused).
        fn specs() -> impl Strategy<Value = Group> {
            let device = prop::option::of(prop::sample::select(camshaft_spec::DeviceKind::ALL));
            let collective = prop::option::of(prop::sample::select(CollectiveBackend::ALL));
            (0u32..6, 0u32..8, 0u32..3, device, collective).prop_filter_map(
                "a group Group::complete refuses",
                |(workers, min_workers, gpus_per_worker, device, collective)| {
                    Group::complete(workers, gpus_per_worker, min_workers, device, collective).ok()
                },
            )
        }

        proptest! {
            #[test]
            fn placements_keep_their_invariants(
                spec in specs(),
                devices in workers(),
                restart in any::<bool>(),
            ) {
                let ids: Vec<String> = (0..devices.len()).map(|i| format!("w{i}")).collect();
                let idle: Vec<Candidate<'_>> = ids
                    .iter()
                    .zip(&devices)
                    .map(|(id, d)| Candidate { id, devices: d })
                    .collect();
                let Some(p) = place(&spec, &idle, restart) else {
                    return Ok(());
                };
                // World size equals the devices placed, ranks 0..world_size.
                let placed: usize = p.workers.iter().map(|(_, d)| d.len()).sum();
                prop_assert_eq!(p.world_size() as usize, placed);
                let ranks: Vec<u32> = p.rank_ranges().into_iter().flatten().collect();
                prop_assert_eq!(ranks, (0..p.world_size()).collect::<Vec<_>>());
                prop_assert!(p.workers.iter().all(|(_, d)| !d.is_empty()));
                // Never fewer than min_workers on a restart (all of `workers`
                // the first time), never more than `workers`.
                let wanted = spec.workers.max(1) as usize;
                let least = if restart {
                    spec.min_workers.clamp(1, spec.workers.max(1)) as usize
                } else {
                    wanted
                };
                prop_assert!((least..=wanted).contains(&p.workers.len()));
                // Each worker at most once, and only idle ones.
                let mut seen = p.worker_ids();
                seen.sort();
                seen.dedup();
                prop_assert_eq!(seen.len(), p.workers.len());
                // NCCL only when every rank is on CUDA.
                let all_cuda = p
                    .workers
                    .iter()
                    .all(|(_, d)| d.iter().all(|d| d.kind() == DeviceKind::Cuda));
                if p.backend == CollectiveBackend::Nccl {
                    prop_assert!(all_cuda);
                    prop_assert!(spec.collective != Some(CollectiveBackend::Ring));
                }
                if spec.collective == Some(CollectiveBackend::Nccl)
                    || spec.device == Some(camshaft_spec::DeviceKind::Cuda)
                {
                    prop_assert!(all_cuda);
                }
            }
        }
    }
}
