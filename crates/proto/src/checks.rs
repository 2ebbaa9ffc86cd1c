//! Checks of wire messages that more than one service (or client) needs.

use std::collections::HashSet;

use crate::names::{known, required};
use crate::v1::{Arch, ClassMap, Head, ModelSpec, Normalization, ResizeMethod};
use crate::{Error, Result};

/// Largest `ModelSpec.input_size` accepted (pixels per side).
pub const MAX_INPUT_SIZE: u32 = 4096;

impl ModelSpec {
    /// Checks that the spec can describe a model: arch and head set and known,
    /// known normalisation and resize method, at least two distinct non-empty
    /// class names, an input size in `1..=`[`MAX_INPUT_SIZE`]. The lecture's
    /// CNN has a linear head only.
    pub fn validate(&self) -> Result<()> {
        let arch: Arch = required("ModelSpec.arch", self.arch)?;
        let head: Head = required("ModelSpec.head", self.head)?;
        known::<Normalization>("ModelSpec.normalization", self.normalization)?;
        known::<ResizeMethod>("ModelSpec.resize", self.resize)?;
        if arch == Arch::Cnn && head != Head::Linear {
            return Err(Error::OutOfRange {
                what: "ModelSpec.head",
                reason: format!(
                    "the cnn architecture has a linear head only, not {}",
                    head.short_name()
                ),
            });
        }
        if self.class_names.len() < 2 {
            return Err(Error::OutOfRange {
                what: "ModelSpec.class_names",
                reason: format!(
                    "a classifier needs at least 2 classes, got {}",
                    self.class_names.len()
                ),
            });
        }
        let mut seen = HashSet::new();
        for name in &self.class_names {
            if name.is_empty() {
                return Err(Error::OutOfRange {
                    what: "ModelSpec.class_names",
                    reason: "a class name is empty".into(),
                });
            }
            if !seen.insert(name.as_str()) {
                return Err(Error::OutOfRange {
                    what: "ModelSpec.class_names",
                    reason: format!("{name:?} appears twice"),
                });
            }
        }
        if self.input_size == 0 {
            return Err(Error::Missing {
                what: "ModelSpec.input_size",
            });
        }
        if self.input_size > MAX_INPUT_SIZE {
            return Err(Error::OutOfRange {
                what: "ModelSpec.input_size",
                reason: format!("{} is over the limit of {MAX_INPUT_SIZE}", self.input_size),
            });
        }
        Ok(())
    }
}

impl ClassMap {
    /// Checks that `values` holds exactly `height × width` numbers (both ≥ 1),
    /// so the map can be drawn; returns `(height, width)` as `usize`.
    pub fn shape(&self) -> Result<(usize, usize)> {
        let bad = || Error::MapShape {
            class_index: self.class_index,
            height: self.height,
            width: self.width,
            len: self.values.len(),
        };
        let h = usize::try_from(self.height).map_err(|_| bad())?;
        let w = usize::try_from(self.width).map_err(|_| bad())?;
        if h == 0 || w == 0 || h.checked_mul(w) != Some(self.values.len()) {
            return Err(bad());
        }
        Ok((h, w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pets_spec() -> ModelSpec {
        ModelSpec {
            arch: Arch::Resnet34 as i32,
            head: Head::Cam as i32,
            class_names: vec!["cat".into(), "dog".into()],
            input_size: 512,
            normalization: Normalization::Imagenet as i32,
            resize: ResizeMethod::Unspecified as i32,
        }
    }

    #[test]
    fn a_lecture_spec_is_valid() {
        assert_eq!(pets_spec().validate(), Ok(()));
    }

    #[test]
    fn bad_specs_say_why() {
        let mut s = pets_spec();
        s.class_names.push("cat".into());
        assert_eq!(
            s.validate().expect_err("duplicate").to_string(),
            "ModelSpec.class_names: \"cat\" appears twice"
        );
        let mut s = pets_spec();
        s.arch = Arch::Cnn as i32;
        assert!(s.validate().is_err());
        let mut s = pets_spec();
        s.head = 0;
        assert_eq!(
            s.validate().expect_err("unset").to_string(),
            "ModelSpec.head is not set"
        );
        let mut s = pets_spec();
        s.input_size = 0;
        assert!(s.validate().is_err());
    }

    #[test]
    fn map_shape_is_checked() {
        let mut m = ClassMap {
            class_index: 1,
            height: 2,
            width: 3,
            values: vec![0.0; 6],
            faithfulness: None,
        };
        assert_eq!(m.shape(), Ok((2, 3)));
        m.values.pop();
        assert_eq!(
            m.shape().expect_err("5 values").to_string(),
            "class map of class 1 is 2×3 but holds 5 values"
        );
        m.height = -1;
        assert!(m.shape().is_err());
    }
}
