//! The weights side: every tensor a model has, and a safetensors header
//! checked against them.

use std::collections::HashMap;
use std::fmt::Write as _;

use camshaft_pth::{DType, RawTensor};
use safetensors::SafeTensors;
use safetensors::tensor::{Dtype, SafeTensorError, TensorInfo, TensorView};

use crate::spec::ModelShape;
use crate::vocab::{Arch, Head};
use crate::{Error, Result, quote};

/// How many problems a mismatch error spells out; the rest are counted.
pub const PROBLEMS_SHOWN: usize = 3;

/// Channels of the body's last feature map.
fn feature_channels(arch: Arch) -> i64 {
    match arch {
        Arch::Cnn => 128,
        Arch::Resnet18 | Arch::Resnet34 => 512,
    }
}

/// Appends a BatchNorm layer's variables as tch builds them: the affine
/// `weight` and `bias`, then the `running_mean` and `running_var` buffers
/// (tch keeps no `num_batches_tracked`).
fn batch_norm(out: &mut Vec<(String, Vec<i64>)>, prefix: &str, n: i64) {
    for var in ["weight", "bias", "running_mean", "running_var"] {
        out.push((format!("{prefix}.{var}"), vec![n]));
    }
}

fn conv(out: &mut Vec<(String, Vec<i64>)>, prefix: &str, c_in: i64, c_out: i64, k: i64) {
    out.push((format!("{prefix}.weight"), vec![c_out, c_in, k, k]));
}

impl ModelShape {
    /// Every variable `camshaft-vision` builds for this model, and so saves
    /// (parameters and BatchNorm running statistics), with its shape, in the
    /// order the model creates them: torchvision's names for the body
    /// (`conv1.weight`, `layer1.0.bn1.running_mean`, ...; the CNN's
    /// `0.weight`), then the head's (`fc.*`, the CNN's `4.*`, or fastai's
    /// `head.2` … `head.8`).
    pub fn expected_parameters(&self) -> Vec<(String, Vec<i64>)> {
        let mut out = Vec::new();
        let n = i64::try_from(self.num_classes).unwrap_or(i64::MAX);
        let c = feature_channels(self.arch);
        match self.arch {
            Arch::Cnn => {
                conv(&mut out, "0", 3, 128, 5);
                out.push(("0.bias".into(), vec![128]));
            }
            Arch::Resnet18 | Arch::Resnet34 => {
                let blocks: [usize; 4] = if self.arch == Arch::Resnet18 {
                    [2, 2, 2, 2]
                } else {
                    [3, 4, 6, 3]
                };
                conv(&mut out, "conv1", 3, 64, 7);
                batch_norm(&mut out, "bn1", 64);
                let mut c_in = 64;
                for (i, (count, c_out)) in blocks.into_iter().zip([64, 128, 256, 512]).enumerate() {
                    for j in 0..count {
                        let p = format!("layer{}.{j}", i + 1);
                        let block_in = if j == 0 { c_in } else { c_out };
                        conv(&mut out, &format!("{p}.conv1"), block_in, c_out, 3);
                        batch_norm(&mut out, &format!("{p}.bn1"), c_out);
                        conv(&mut out, &format!("{p}.conv2"), c_out, c_out, 3);
                        batch_norm(&mut out, &format!("{p}.bn2"), c_out);
                        // Layers 2..4 halve the map in their first block.
                        if j == 0 && (i > 0 || c_in != c_out) {
                            conv(&mut out, &format!("{p}.downsample.0"), c_in, c_out, 1);
                            batch_norm(&mut out, &format!("{p}.downsample.1"), c_out);
                        }
                    }
                    c_in = c_out;
                }
            }
        }
        match (self.head, self.arch) {
            (Head::Linear, Arch::Cnn) => {
                // Conv 5×5 (no padding) then 2×2 max-pool, flattened.
                let m = (i64::from(self.input_size) - 4) / 2;
                out.push(("4.weight".into(), vec![n, c * m * m]));
                out.push(("4.bias".into(), vec![n]));
            }
            (Head::Linear, _) => {
                out.push(("fc.weight".into(), vec![n, c]));
                out.push(("fc.bias".into(), vec![n]));
            }
            (Head::Cam, _) => out.push(("fc.weight".into(), vec![n, c])),
            (Head::Fastai, _) => {
                batch_norm(&mut out, "head.2", 2 * c);
                out.push(("head.4.weight".into(), vec![512, 2 * c]));
                batch_norm(&mut out, "head.6", 512);
                out.push(("head.8.weight".into(), vec![n, 512]));
            }
        }
        out
    }

    /// Checks a safetensors file against
    /// [`expected_parameters`](Self::expected_parameters), reading its header
    /// only (as the `safetensors` crate reads it, so the offsets must cover
    /// the data exactly): every expected tensor present with its shape and a
    /// float dtype (F32, F16 or BF16; loading converts to the model's), and
    /// nothing else but PyTorch's `num_batches_tracked` counters (I64, one
    /// element) of the BatchNorm layers, which torchvision state dicts carry
    /// and loading ignores. What passes loads into the model with
    /// `camshaft_vision::load_safetensors_bytes`.
    pub fn check_weights(&self, safetensors: &[u8]) -> Result<()> {
        let (_, metadata) = SafeTensors::read_metadata(safetensors)
            .map_err(|e| Error::NotSafetensors(describe(&e)))?;
        let mut file: HashMap<String, &TensorInfo> = metadata.tensors();
        let mut wrong = Vec::new();
        let mut missing = Vec::new();
        for (name, shape) in self.expected_parameters() {
            if let Some(prefix) = name.strip_suffix(".running_var") {
                let counter = format!("{prefix}.num_batches_tracked");
                if let Some(info) = file.remove(&counter) {
                    let scalar = info.shape.iter().product::<usize>() == 1 && info.shape.len() <= 1;
                    if !scalar || info.dtype != Dtype::I64 {
                        wrong.push(format!(
                            "{counter} is {:?} {}, expected I64 []",
                            info.dtype,
                            show_shape(&info.shape)
                        ));
                    }
                }
            }
            match file.remove(&name) {
                None => missing.push(format!("{name} is missing")),
                Some(info) if !same_shape(&info.shape, &shape) => wrong.push(format!(
                    "{name} is {}, expected {}",
                    show_shape(&info.shape),
                    show_shape(&shape)
                )),
                Some(info) if !matches!(info.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) => wrong
                    .push(format!(
                        "{name} is {:?}, expected F32, F16 or BF16",
                        info.dtype
                    )),
                Some(_) => {}
            }
        }
        let mut unexpected: Vec<String> = file.into_keys().collect();
        unexpected.sort_unstable();
        let total = wrong.len() + missing.len() + unexpected.len();
        if total == 0 {
            return Ok(());
        }
        let first: Vec<String> = wrong
            .into_iter()
            .chain(missing)
            .chain(
                unexpected
                    .iter()
                    .map(|n| format!("{} is unexpected", quote(n))),
            )
            .take(PROBLEMS_SHOWN)
            .collect();
        Err(Error::Mismatch {
            model: self.to_string(),
            more: total - first.len(),
            first,
        })
    }
}

fn same_shape(found: &[usize], expected: &[i64]) -> bool {
    found.len() == expected.len()
        && found
            .iter()
            .zip(expected)
            .all(|(&f, &e)| i64::try_from(f).is_ok_and(|f| f == e))
}

/// `[10, 512]`, with at most 8 dimensions spelled out (a header may claim
/// thousands).
fn show_shape<T: std::fmt::Display>(shape: &[T]) -> String {
    const SHOWN: usize = 8;
    let mut s = String::from("[");
    for (i, d) in shape.iter().take(SHOWN).enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{d}");
    }
    if shape.len() > SHOWN {
        let _ = write!(s, ", … ({} dimensions)", shape.len());
    }
    s.push(']');
    s
}

/// What is wrong with a file that is not safetensors, in words, quoting a
/// tensor name short (the crate's own message is its `Debug` form, which
/// would echo a name of any length).
fn describe(err: &SafeTensorError) -> String {
    use SafeTensorError as E;
    match err {
        E::HeaderTooSmall => "shorter than its 8-byte header length".into(),
        E::HeaderTooLarge => "the header length is over 100 MB".into(),
        E::InvalidHeaderLength => "the header is longer than the file".into(),
        E::InvalidHeader => "the header is not UTF-8".into(),
        E::InvalidHeaderStart => "the header does not start with `{`".into(),
        E::InvalidHeaderDeserialization | E::JsonError(_) => {
            "the header is not a table of tensors (name → dtype, shape, data_offsets)".into()
        }
        E::InvalidOffset(name) => format!(
            "the data offsets of tensor {} do not follow the previous tensor's",
            quote(name)
        ),
        E::TensorInvalidInfo | E::InvalidTensorView(..) => {
            "a tensor's data offsets do not match its shape and dtype".into()
        }
        E::MetadataIncompleteBuffer => "the tensors' data does not end where the file ends".into(),
        E::ValidationOverflow => "a tensor's shape overflows".into(),
        E::TensorNotFound(_) | E::IoError(_) => "it cannot be read".into(),
    }
}

/// A `torch.save` state dict (as `camshaft-pth` reads it) as the
/// registry stores weights: float32 safetensors, DDP's `module.` prefixes
/// dropped and BatchNorm's `num_batches_tracked` counters too; every other
/// tensor must be floating point (float64, float16 and bfloat16 are
/// converted exactly or rounded to nearest). Check the result with
/// [`ModelShape::check_weights`].
pub fn state_dict_safetensors(tensors: Vec<(String, RawTensor)>) -> Result<Vec<u8>> {
    let mut floats = Vec::with_capacity(tensors.len());
    for (name, tensor) in tensors {
        let name = name.strip_prefix("module.").unwrap_or(&name).to_string();
        if name.ends_with("num_batches_tracked") {
            continue;
        }
        let data = float32_bytes(&tensor).ok_or_else(|| {
            Error::NotFloat(format!(
                "tensor {} is {}: a model's weights are floating point",
                quote(&name),
                tensor.dtype.name()
            ))
        })?;
        floats.push((name, tensor.shape, data));
    }
    let views = floats
        .iter()
        .map(|(name, shape, data)| {
            TensorView::new(Dtype::F32, shape.clone(), data)
                .map(|view| (name.clone(), view))
                .map_err(|e| Error::NotFloat(format!("tensor {}: {e:?}", quote(name))))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::tensor::serialize(views, &None)
        .map_err(|e| Error::NotFloat(format!("writing safetensors: {e:?}")))
}

/// A float tensor's elements as little-endian float32 bytes; `None` for
/// integer and boolean tensors.
fn float32_bytes(tensor: &RawTensor) -> Option<Vec<u8>> {
    let data = &tensor.data;
    let floats: Vec<f32> = match tensor.dtype {
        DType::F32 => return Some(data.clone()),
        DType::F64 => data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        DType::BF16 => data
            .chunks_exact(2)
            .map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16))
            .collect(),
        DType::F16 => data
            .chunks_exact(2)
            .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        _ => return None,
    };
    Some(floats.iter().flat_map(|f| f.to_le_bytes()).collect())
}

/// IEEE half precision to single, exactly (subnormals, infinities, NaN).
fn f16_to_f32(bits: u16) -> f32 {
    let negative = bits >> 15 == 1;
    let exponent = u32::from((bits >> 10) & 0x1f);
    let mantissa = u32::from(bits & 0x3ff);
    let value = match exponent {
        // Zero and subnormals: mantissa × 2⁻²⁴, exact in f32.
        0 => mantissa as f32 * f32::powi(2.0, -24),
        0x1f => f32::from_bits(0x7f80_0000 | (mantissa << 13)),
        e => f32::from_bits(((e + 127 - 15) << 23) | (mantissa << 13)),
    };
    if negative { -value } else { value }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A safetensors file holding `tensors` (zeros), written by hand: the
    /// 8-byte little-endian header length, the JSON header, the data.
    fn file(tensors: &[(String, &str, Vec<usize>)]) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        let mut offset = 0usize;
        for (name, dtype, shape) in tensors {
            let size = match *dtype {
                "F16" | "BF16" => 2,
                "I64" | "F64" => 8,
                _ => 4,
            } * shape.iter().product::<usize>();
            header.insert(
                name.clone(),
                serde_json::json!({"dtype": dtype, "shape": shape,
                                   "data_offsets": [offset, offset + size]}),
            );
            offset += size;
        }
        let header = serde_json::to_vec(&header).unwrap();
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&header);
        out.resize(out.len() + offset, 0);
        out
    }

    fn shape(arch: Arch, head: Head, n: usize) -> ModelShape {
        ModelShape {
            arch,
            head,
            num_classes: n,
            input_size: 32,
        }
    }

    fn fitting(s: &ModelShape) -> Vec<(String, &'static str, Vec<usize>)> {
        s.expected_parameters()
            .into_iter()
            .map(|(n, sh)| (n, "F32", sh.into_iter().map(|d| d as usize).collect()))
            .collect()
    }

    fn refused(s: &ModelShape, tensors: &[(String, &str, Vec<usize>)]) -> String {
        s.check_weights(&file(tensors)).unwrap_err().to_string()
    }

    #[test]
    fn half_floats_convert_exactly() {
        for (bits, want) in [
            (0x3c00u16, 1.0f32),
            (0xc000, -2.0),
            (0x0001, f32::powi(2.0, -24)),
            (0x7bff, 65504.0),
            (0x0000, 0.0),
            (0x7c00, f32::INFINITY),
            (0x3555, 0.333_251_95),
        ] {
            assert_eq!(f16_to_f32(bits), want, "{bits:#06x}");
        }
        assert!(f16_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn the_tables_have_the_torchvision_sizes() {
        let count = |s: ModelShape| -> i64 {
            s.expected_parameters()
                .iter()
                .filter(|(n, _)| !n.ends_with("running_mean") && !n.ends_with("running_var"))
                .map(|(_, sh)| sh.iter().product::<i64>())
                .sum()
        };
        // torchvision: resnet18 11 689 512 and resnet34 21 797 672
        // parameters with the 1000-class fc.
        assert_eq!(count(shape(Arch::Resnet18, Head::Linear, 1000)), 11_689_512);
        assert_eq!(count(shape(Arch::Resnet34, Head::Linear, 1000)), 21_797_672);
        // The lecture's CNN: Conv2d(3,128,5) + Linear(25088, 10).
        assert_eq!(
            count(shape(Arch::Cnn, Head::Linear, 10)),
            128 * 75 + 128 + 25088 * 10 + 10
        );
        let fastai = shape(Arch::Resnet34, Head::Fastai, 2).expected_parameters();
        assert!(fastai.contains(&("head.4.weight".into(), vec![512, 1024])));
        assert!(fastai.contains(&("head.8.weight".into(), vec![2, 512])));
        assert!(fastai.contains(&("layer2.0.downsample.0.weight".into(), vec![128, 64, 1, 1])));
        assert!(
            !fastai
                .iter()
                .any(|(n, _)| n.starts_with("layer1.0.downsample"))
        );
    }

    #[test]
    fn fitting_weights_pass_in_any_float_dtype_with_counters() {
        let s = shape(Arch::Resnet18, Head::Cam, 2);
        s.check_weights(&file(&fitting(&s))).unwrap();
        let mut half = fitting(&s);
        for (_, dtype, _) in &mut half {
            *dtype = "BF16";
        }
        half[0].1 = "F16";
        half.push(("bn1.num_batches_tracked".into(), "I64", vec![]));
        half.push(("layer1.0.bn2.num_batches_tracked".into(), "I64", vec![1]));
        s.check_weights(&file(&half)).unwrap();
    }

    #[test]
    fn a_wrong_head_is_named_with_both_shapes() {
        let wide = shape(Arch::Resnet18, Head::Cam, 10);
        let err = refused(&shape(Arch::Resnet18, Head::Cam, 2), &fitting(&wide));
        assert_eq!(
            err,
            "weights do not fit resnet18 with the cam head for 2 classes: \
             fc.weight is [10, 512], expected [2, 512]"
        );
        // A linear head's weights for a cam spec: the bias is unexpected.
        let linear = shape(Arch::Resnet34, Head::Linear, 2);
        let err = refused(&shape(Arch::Resnet34, Head::Cam, 2), &fitting(&linear));
        assert!(err.ends_with(": \"fc.bias\" is unexpected"), "{err}");
    }

    #[test]
    fn problems_are_listed_shapes_first_then_counted() {
        let s = shape(Arch::Resnet18, Head::Fastai, 2);
        let mut tensors = fitting(&shape(Arch::Resnet18, Head::Fastai, 3));
        tensors.retain(|(n, _, _)| !n.starts_with("layer4.1."));
        tensors.push(("module.extra".into(), "F32", vec![1]));
        tensors[0].1 = "F64";
        let err = refused(&s, &tensors);
        assert!(
            err.starts_with(
                "weights do not fit resnet18 with the fastai head for 2 classes: \
                 conv1.weight is F64, expected F32, F16 or BF16; \
                 head.8.weight is [3, 512], expected [2, 512]; \
                 layer4.1.conv1.weight is missing; "
            ),
            "{err}"
        );
        // Of 2 wrong, 10 missing (conv1, bn1 ×4, conv2, bn2 ×4) and 1
        // unexpected, 3 are shown.
        assert!(err.ends_with("; 10 more problems"), "{err}");
    }

    #[test]
    fn errors_stay_short_whatever_the_file_holds() {
        let s = shape(Arch::Cnn, Head::Linear, 10);
        let junk: Vec<(String, &str, Vec<usize>)> = (0..1000)
            .map(|i| (format!("{}{i}", "n".repeat(10_000)), "F32", vec![1; 100]))
            .collect();
        let err = refused(&s, &junk);
        assert!(err.len() < 600, "{} bytes: {err}", err.len());
        assert!(err.ends_with("; 1001 more problems"), "{err}");
        let mut tensors = fitting(&s);
        tensors[0].2 = vec![1; 100];
        let err = refused(&s, &tensors);
        assert!(
            err.contains("0.weight is [1, 1, 1, 1, 1, 1, 1, 1, … (100 dimensions)]"),
            "{err}"
        );
        let mut counter = fitting(&shape(Arch::Resnet18, Head::Cam, 2));
        counter.push(("bn1.num_batches_tracked".into(), "F32", vec![2]));
        let err = refused(&shape(Arch::Resnet18, Head::Cam, 2), &counter);
        assert!(
            err.contains("bn1.num_batches_tracked is F32 [2], expected I64 []"),
            "{err}"
        );
    }

    #[test]
    fn files_that_are_not_safetensors_are_refused() {
        let s = shape(Arch::Cnn, Head::Linear, 10);
        let err = |bytes: &[u8]| s.check_weights(bytes).unwrap_err().to_string();
        assert!(err(b"PK\x03\x04 a zip").contains("not a safetensors file"));
        assert!(err(b"abc").contains("8-byte header"));
        let good = file(&fitting(&s));
        assert!(err(&good[..good.len() - 1]).contains("does not end where the file ends"));
        let mut longer = good.clone();
        longer.push(0);
        assert!(err(&longer).contains("does not end where the file ends"));
        let mut huge_len = good;
        huge_len[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(err(&huge_len).contains("header"));
        assert!(err(&[]).starts_with("weights are not a safetensors file"));
    }
}
