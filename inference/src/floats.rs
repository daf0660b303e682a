//! Float tensors at a graph's boundary, of the element type the model's config names
//! ([`FloatDtype`]: float32, or float16 in `--compute fp16` exports). Host values are always
//! float32: narrowed when a tensor is made, widened when one is read (a float16 value
//! widened and narrowed again is unchanged).

use half::f16;
use ort::value::{DynValue, Tensor, ToShape};

use crate::config::FloatDtype;
use crate::error::{Error, Result};

/// A tensor of `shape` holding `data` as `dtype`.
pub(crate) fn float_tensor<D: ToShape>(
    dtype: FloatDtype,
    shape: D,
    data: Vec<f32>,
) -> Result<DynValue> {
    Ok(match dtype {
        FloatDtype::Float32 => Tensor::from_array((shape, data))?.into_dyn(),
        FloatDtype::Float16 => {
            let half: Vec<f16> = data.into_iter().map(f16::from_f32).collect();
            Tensor::from_array((shape, half))?.into_dyn()
        }
    })
}

/// The shape and values of a float32 or float16 tensor in host memory, widened to float32.
pub(crate) fn read_floats(v: &DynValue) -> Result<(Vec<usize>, Vec<f32>)> {
    let dims = |shape: &ort::value::Shape| shape.iter().map(|&d| d as usize).collect();
    if let Ok((shape, data)) = v.try_extract_tensor::<f32>() {
        return Ok((dims(shape), data.to_vec()));
    }
    if let Ok((shape, data)) = v.try_extract_tensor::<f16>() {
        return Ok((dims(shape), data.iter().map(|x| x.to_f32()).collect()));
    }
    Err(Error::InvalidRequest(
        "internal: a tensor neither float32 nor float16 in host memory".into(),
    ))
}
