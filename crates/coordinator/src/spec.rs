//! Job specs: every default filled in and every field checked on submit, so
//! a stored spec is complete and a bad one is refused with the reason. The
//! defaults and checks of a training job are `camshaft-spec`'s
//! ([`camshaft_spec::TrainingSpec::complete`], reached through
//! [`camshaft_proto::vocab`]); an all-reduce sweep's are here.

use camshaft_proto::v1::{CollectiveBackend, DeviceKind, JobSpec};
use camshaft_proto::{names, validate_name, vocab};
use camshaft_spec::sweep::SweepConfig;
use camshaft_spec::{DEFAULT_COLLECTIVE_TIMEOUT_MS, FailurePolicy, FieldError, Group};

use crate::{Error, Result};

/// `result`, its error as [`invalid`] of `field`.
fn at<T>(field: &str, result: std::result::Result<T, camshaft_proto::Error>) -> Result<T> {
    result.map_err(|e| invalid(field, e.to_string()))
}

/// INVALID_ARGUMENT naming `field` of the spec (a path of proto field
/// names under `JobSpec`), so clients can show it beside that field.
fn invalid(field: &str, reason: impl Into<String>) -> Error {
    Error::InvalidField {
        field: format!("spec.{field}"),
        reason: reason.into(),
    }
}

fn field_error(e: FieldError) -> Error {
    invalid(e.field, e.reason)
}

/// `spec` with every default applied, or the first thing wrong with it.
/// `random_seed` is recorded as the seed when the spec has none.
pub fn complete(spec: JobSpec, random_seed: u64) -> Result<JobSpec> {
    if spec.collective_bench.is_some() {
        return complete_collective_bench(spec);
    }
    let training = vocab::complete_training(&spec, random_seed).map_err(field_error)?;
    crate::registry::check_tags("spec.tags", &spec.tags)?;
    crate::registry::check_description("spec.description", &spec.description)?;
    Ok(vocab::training_job_spec(&training))
}

/// How many failures and membership changes a stored job survives: its
/// own limits, or the defaults of its kind ([`FailurePolicy::TRAINING`],
/// [`FailurePolicy::SWEEP`]).
pub fn failure_policy(spec: &JobSpec) -> FailurePolicy {
    let defaults = if spec.collective_bench.is_some() {
        FailurePolicy::SWEEP
    } else {
        FailurePolicy::TRAINING
    };
    defaults.with(spec.max_failures, spec.max_membership_changes)
}

/// Bytes a rank of a sweep of `max_bytes` messages needs on its device, about:
/// the checked sum is built and compared in int64 and float64 (2 bytes of
/// those per message byte, a few at once), then a float32 buffer is timed.
pub fn sweep_bytes_needed(max_bytes: u64) -> u64 {
    6 * max_bytes
}

/// An all-reduce sweep's spec (`collective_bench` set) with its defaults,
/// or the first thing wrong with it. The group fields mean what they mean
/// for training; the training fields must be left unset.
fn complete_collective_bench(mut spec: JobSpec) -> Result<JobSpec> {
    let training_field = [
        (spec.dataset.is_some(), "dataset"),
        (spec.arch != 0, "arch"),
        (spec.head != 0, "head"),
        (spec.epochs != 0, "epochs"),
        (spec.fine_tune, "fine_tune"),
        (spec.pretrained != 0, "pretrained"),
        (!spec.aliases.is_empty(), "aliases"),
        (spec.register != 0, "register"),
        (spec.monitor != 0, "monitor"),
        (spec.early_stop_patience != 0, "early_stop_patience"),
        (!spec.tags.is_empty(), "tags"),
        (!spec.description.is_empty(), "description"),
    ]
    .into_iter()
    .find_map(|(set, name)| set.then_some(name));
    if let Some(name) = training_field {
        return Err(invalid(
            name,
            format!(
                "{name} is a training field; an all-reduce sweep (collective_bench) trains nothing"
            ),
        ));
    }
    let bench = spec.collective_bench.get_or_insert_with(Default::default);
    let sweep = SweepConfig::complete(bench.min_bytes, bench.max_bytes, bench.iters, bench.warmup)
        .map_err(field_error)?;
    bench.min_bytes = sweep.min_bytes;
    bench.max_bytes = sweep.max_bytes;
    bench.warmup = Some(sweep.warmup);

    let group = group(&spec)?;
    // A sweep on fewer ranks than asked measures something else.
    if group.min_workers != group.workers {
        return Err(invalid(
            "min_workers",
            format!(
                "an all-reduce sweep runs on exactly its {} workers; min_workers {} is not that",
                group.workers, group.min_workers
            ),
        ));
    }
    spec.workers = group.workers;
    spec.min_workers = group.min_workers;
    // A failed sweep is reported, not re-run, unless the client asks.
    let policy = failure_policy(&spec);
    spec.max_failures = Some(policy.max_failures);
    spec.max_membership_changes = Some(policy.max_membership_changes);
    if spec.collective_timeout_ms == 0 {
        spec.collective_timeout_ms = DEFAULT_COLLECTIVE_TIMEOUT_MS;
    }
    if spec.name.is_empty() {
        spec.name = "allreduce".to_string();
    }
    at("name", validate_name(&spec.name))?;
    Ok(spec)
}

/// The ranks `spec` asks for, complete ([`Group::complete`]: the group
/// defaults training jobs and sweeps share), or the field that is wrong.
/// Placement reads a stored job's group through this too.
pub fn group(spec: &JobSpec) -> Result<Group> {
    let device = at(
        "device",
        names::known::<DeviceKind>("device", spec.device).map(DeviceKind::vocab),
    )?;
    let collective = at(
        "collective",
        names::known::<CollectiveBackend>("collective", spec.collective)
            .map(CollectiveBackend::vocab),
    )?;
    Group::complete(
        spec.workers,
        spec.gpus_per_worker,
        spec.min_workers,
        device,
        collective,
    )
    .map_err(field_error)
}

/// A short description of the data set for lineage: `kind` or `kind:dir`.
pub fn dataset_label(spec: &JobSpec) -> String {
    let Some(d) = &spec.dataset else {
        return String::new();
    };
    let kind = d.kind().short_name();
    if d.data_dir.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}:{}", d.data_dir)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use camshaft_proto::v1::{
        Arch, CollectiveBench, DatasetKind, DatasetSpec, Head, MonitorMetric, Normalization,
        Precision, PretrainedSource, RegisterPolicy,
    };

    use super::*;

    fn minimal() -> JobSpec {
        JobSpec {
            dataset: Some(DatasetSpec {
                kind: DatasetKind::Synthetic as i32,
                ..Default::default()
            }),
            arch: Arch::Resnet18 as i32,
            head: Head::Cam as i32,
            epochs: 3,
            ..Default::default()
        }
    }

    fn refused(spec: JobSpec) -> String {
        complete(spec, 7).unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_filled_in() {
        let spec = complete(minimal(), 7).unwrap();
        assert_eq!(spec.name, "synthetic");
        assert_eq!(spec.seed, Some(7));
        assert_eq!(spec.lr, Some(1e-3));
        assert_eq!(spec.batch_size, 64);
        assert_eq!(spec.image_size, 64);
        assert_eq!(spec.normalization(), Normalization::None);
        assert_eq!(spec.pretrained(), PretrainedSource::None);
        let synthetic = spec.dataset.as_ref().unwrap().synthetic.as_ref().unwrap();
        assert_eq!((synthetic.train_len, synthetic.num_classes), (2000, 2));
        assert_eq!(spec.precision(), Precision::Fp32);
        // A complete spec is a fixed point.
        assert_eq!(complete(spec.clone(), 9).unwrap(), spec);
    }

    #[test]
    fn registration_and_early_stopping_get_defaults_and_bounds() {
        let spec = complete(minimal(), 7).unwrap();
        assert_eq!(spec.register(), RegisterPolicy::Last);
        assert_eq!(spec.monitor(), MonitorMetric::ValidLoss);
        assert_eq!(spec.early_stop_patience, 0);
        let best = complete(
            JobSpec {
                register: RegisterPolicy::Best as i32,
                monitor: MonitorMetric::Accuracy as i32,
                early_stop_patience: 3,
                tags: [("team".into(), "vision".into())].into(),
                description: "pets, best accuracy".into(),
                ..minimal()
            },
            7,
        )
        .unwrap();
        assert_eq!(
            (best.register(), best.monitor(), best.early_stop_patience),
            (RegisterPolicy::Best, MonitorMetric::Accuracy, 3)
        );
        assert_eq!(best.tags["team"], "vision");
        let bad = |spec: JobSpec| match complete(spec, 7).unwrap_err() {
            Error::InvalidField { field, reason } => format!("{field}: {reason}"),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            bad(JobSpec {
                early_stop_patience: 1001,
                ..minimal()
            }),
            "spec.early_stop_patience: early_stop_patience must be 0 (off) ..=1000, not 1001"
        );
        assert!(
            bad(JobSpec {
                register: 9,
                ..minimal()
            })
            .starts_with("spec.register: ")
        );
        assert!(
            bad(JobSpec {
                monitor: 9,
                ..minimal()
            })
            .starts_with("spec.monitor: ")
        );
        assert!(
            bad(JobSpec {
                tags: [("no spaces".into(), "v".into())].into(),
                ..minimal()
            })
            .starts_with("spec.tags: tag key")
        );
        assert!(
            bad(JobSpec {
                description: "x".repeat(5000),
                ..minimal()
            })
            .starts_with("spec.description: the description is 5000 bytes")
        );
    }

    #[test]
    fn the_cnn_gets_the_head_and_size_it_fixes_on_every_data_set() {
        for kind in [
            DatasetKind::Synthetic,
            DatasetKind::Folder,
            DatasetKind::Cifar10,
        ] {
            let spec = complete(
                JobSpec {
                    arch: Arch::Cnn as i32,
                    head: Head::Unspecified as i32,
                    dataset: Some(DatasetSpec {
                        kind: kind as i32,
                        data_dir: "images".into(),
                        ..Default::default()
                    }),
                    ..minimal()
                },
                7,
            )
            .unwrap();
            assert_eq!(
                (spec.head(), spec.image_size),
                (Head::Linear, 32),
                "{kind:?}"
            );
        }
        // A size the cnn cannot take is still refused, with the reason.
        let e = refused(JobSpec {
            arch: Arch::Cnn as i32,
            head: Head::Linear as i32,
            image_size: 64,
            ..minimal()
        });
        assert!(e.contains("32×32"), "{e}");
    }

    #[test]
    fn mixed_precision_and_channels_last_are_kept() {
        for precision in [Precision::Bf16, Precision::Fp16] {
            let spec = complete(
                JobSpec {
                    precision: precision as i32,
                    channels_last: true,
                    ..minimal()
                },
                7,
            )
            .unwrap();
            assert_eq!((spec.precision(), spec.channels_last), (precision, true));
        }
        assert!(
            refused(JobSpec {
                precision: 99,
                ..minimal()
            })
            .contains("precision")
        );
    }

    #[test]
    fn pretrained_bodies_get_imagenet_normalisation_and_fine_tune_lr() {
        let spec = complete(
            JobSpec {
                pretrained: PretrainedSource::Imagenet as i32,
                fine_tune: true,
                ..minimal()
            },
            7,
        )
        .unwrap();
        assert_eq!(spec.normalization(), Normalization::Imagenet);
        assert_eq!(spec.lr, Some(2e-3));
        assert_eq!(spec.freeze_epochs, Some(1));
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        assert!(
            refused(JobSpec {
                epochs: 0,
                ..minimal()
            })
            .contains("epochs")
        );
        assert!(
            refused(JobSpec {
                arch: 0,
                ..minimal()
            })
            .contains("arch is required")
        );
        assert!(
            refused(JobSpec {
                arch: 99,
                ..minimal()
            })
            .contains("arch")
        );
        assert!(
            refused(JobSpec {
                dataset: None,
                ..minimal()
            })
            .contains("dataset.kind")
        );
        assert!(
            refused(JobSpec {
                fine_tune: true,
                ..minimal()
            })
            .contains("pretrained")
        );
        assert!(
            refused(JobSpec {
                lr: Some(-1.0),
                ..minimal()
            })
            .contains("lr")
        );
        assert!(
            refused(JobSpec {
                name: "no spaces".into(),
                ..minimal()
            })
            .contains("no spaces")
        );
        assert!(
            refused(JobSpec {
                workers: 5000,
                ..minimal()
            })
            .contains("workers")
        );
        let nccl_on_cpu = JobSpec {
            device: DeviceKind::Cpu as i32,
            collective: CollectiveBackend::Nccl as i32,
            ..minimal()
        };
        assert!(refused(nccl_on_cpu).contains("nccl"));
        let cnn = JobSpec {
            arch: Arch::Cnn as i32,
            head: Head::Linear as i32,
            image_size: 64,
            ..minimal()
        };
        assert!(refused(cnn.clone()).contains("32×32"));
        assert!(
            refused(JobSpec {
                head: Head::Cam as i32,
                ..cnn
            })
            .contains("linear head")
        );
        let folder = JobSpec {
            dataset: Some(DatasetSpec {
                kind: DatasetKind::Folder as i32,
                ..Default::default()
            }),
            ..minimal()
        };
        assert!(refused(folder).contains("data_dir"));
    }

    fn sweep(bench: CollectiveBench) -> JobSpec {
        JobSpec {
            collective_bench: Some(bench),
            workers: 2,
            ..Default::default()
        }
    }

    #[test]
    fn a_sweep_gets_its_defaults_and_no_training_ones() {
        let spec = complete(sweep(CollectiveBench::default()), 7).unwrap();
        let bench = spec.collective_bench.unwrap();
        assert_eq!((bench.min_bytes, bench.max_bytes), (8, 64 << 20));
        assert_eq!((bench.iters, bench.warmup), (0, Some(5)));
        assert_eq!((spec.workers, spec.min_workers), (2, 2));
        assert_eq!(spec.max_failures, Some(0));
        assert_eq!(spec.collective_timeout_ms, 60_000);
        assert_eq!(spec.name, "allreduce");
        assert!(spec.dataset.is_none() && spec.epochs == 0 && spec.seed.is_none());
    }

    #[test]
    fn bad_sweeps_say_what_is_wrong() {
        let bytes = |min_bytes, max_bytes| {
            refused(sweep(CollectiveBench {
                min_bytes,
                max_bytes,
                ..Default::default()
            }))
        };
        assert!(bytes(2, 0).contains("min_bytes must be at least 4"));
        assert!(bytes(0, (1 << 30) + 1).contains("at most 1 GiB"));
        assert!(bytes(1 << 20, 1024).contains("above max_bytes 1024"));
        assert!(
            refused(sweep(CollectiveBench {
                iters: 1_000_000,
                ..Default::default()
            }))
            .contains("iters must be at most")
        );
        let training = JobSpec {
            epochs: 3,
            ..sweep(CollectiveBench::default())
        };
        assert!(refused(training).contains("epochs is a training field"));
        let fewer = JobSpec {
            min_workers: 1,
            ..sweep(CollectiveBench::default())
        };
        assert!(refused(fewer).contains("exactly its 2 workers"));
        let nccl_on_cpu = JobSpec {
            device: DeviceKind::Cpu as i32,
            collective: CollectiveBackend::Nccl as i32,
            ..sweep(CollectiveBench::default())
        };
        assert!(refused(nccl_on_cpu).contains("nccl collective needs CUDA"));
    }
}
