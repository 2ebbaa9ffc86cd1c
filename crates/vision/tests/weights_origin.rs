//! Which formats a weight file may have depends on who chose it: a
//! request's file is safetensors or a `torch.save` zip, told apart by its
//! bytes, and never tch's `.ot` (libtorch's own deserializer); the
//! operator's may also be `.ot`.
#![allow(clippy::unwrap_used, missing_docs)]

use camshaft_vision::weights::{WeightsOrigin, read_named_tensors, read_named_tensors_from};
use camshaft_vision::{Arch, Head, Model, ModelSpec, Normalization, save_weights};
use tch::{Device, Tensor};

fn cnn() -> Model {
    let spec = ModelSpec {
        arch: Arch::Cnn,
        head: Head::Linear,
        class_names: vec!["a".into(), "b".into()],
        input_size: 16,
        normalization: Normalization::None,
    };
    Model::new(spec, Device::Cpu).unwrap()
}

#[test]
fn ot_is_read_only_from_the_operator() {
    let dir = tempfile::tempdir().unwrap();
    let model = cnn();
    let named: Vec<(String, Tensor)> = model.named_variables().into_iter().collect();
    let ot = dir.path().join("w.OT");
    Tensor::save_multi(&named, &ot).unwrap();

    let err = read_named_tensors(&ot).unwrap_err().to_string();
    assert!(err.contains(".ot") && err.contains("safetensors"), "{err}");
    let read = read_named_tensors_from(&ot, WeightsOrigin::Operator).unwrap();
    assert_eq!(read.len(), named.len());

    // Under another name the bytes decide: a zip goes to camshaft-pth, which
    // does not take a TorchScript archive for a state dict.
    let renamed = dir.path().join("w.pth");
    std::fs::copy(&ot, &renamed).unwrap();
    for origin in [WeightsOrigin::Request, WeightsOrigin::Operator] {
        assert!(read_named_tensors_from(&renamed, origin).is_err());
    }
}

#[test]
fn the_bytes_decide_the_format_not_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let model = cnn();
    let safetensors = dir.path().join("w.safetensors");
    save_weights(&model, &safetensors).unwrap();
    let misnamed = dir.path().join("w.pt");
    std::fs::copy(&safetensors, &misnamed).unwrap();
    assert_eq!(
        read_named_tensors(&misnamed).unwrap().len(),
        model.named_variables().len()
    );

    for (name, bytes) in [
        ("junk.pth", b"not a weight file at all".as_slice()),
        ("short.safetensors", b"{}".as_slice()),
        ("empty.pt", b"".as_slice()),
        // A header length past the end of the file.
        (
            "lying.safetensors",
            b"\xff\x00\x00\x00\x00\x00\x00\x00{}".as_slice(),
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = read_named_tensors(&path).unwrap_err().to_string();
        assert!(
            err.contains("neither safetensors nor a torch.save zip"),
            "{name}: {err}"
        );
    }
}
