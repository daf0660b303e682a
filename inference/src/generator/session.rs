//! Building an ONNX Runtime session for a model and checking that its inputs and outputs
//! are the ones the model's config describes.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::value::{TensorElementType, ValueType};

use super::Device;
use crate::config::{FloatDtype, GraphOps, ModelConfig, layer_name};
use crate::error::{Error, Result};

fn builder_err(e: ort::Error<SessionBuilder>) -> Error {
    Error::from(ort::Error::from(e))
}

/// A session for `onnx` on `device`, the device it ended up on (the CPU when CUDA is
/// unavailable), and whether it captures CUDA graphs: asked for with `cuda_graphs`, and
/// built without them (one warning) when ONNX Runtime refuses them for this graph.
pub(super) fn build_session(
    env: &ort::environment::Environment,
    onnx: &Path,
    threads: usize,
    device: Device,
    cuda_graphs: bool,
) -> Result<(Session, Device, bool)> {
    let base = || -> Result<SessionBuilder> {
        Session::builder(env)?
            // One "initializer appears in graph inputs" warning per LoRA input otherwise.
            .with_log_level(ort::logging::LogLevel::Error)
            .map_err(builder_err)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(builder_err)?
            .with_intra_threads(threads)
            .map_err(builder_err)
    };
    match device {
        Device::Cpu => Ok((base()?.commit_from_file(onnx)?, Device::Cpu, false)),
        Device::Cuda { device_id } => {
            #[cfg(feature = "cuda")]
            {
                let attempt = |graphs: bool| {
                    let cuda = ort::ep::CUDA::default()
                        .with_device_id(device_id)
                        .with_cuda_graph(graphs)
                        .build()
                        .error_on_failure();
                    base()?
                        .with_execution_providers([cuda])
                        .map_err(builder_err)
                        .and_then(|mut b| b.commit_from_file(onnx).map_err(Error::from))
                };
                if cuda_graphs {
                    match attempt(true) {
                        Ok(s) => return Ok((s, device, true)),
                        Err(e) => tracing::warn!(
                            "CUDA graphs unavailable for {} ({e}); decoding without them",
                            onnx.display()
                        ),
                    }
                }
                match attempt(false) {
                    Ok(s) => return Ok((s, device, false)),
                    Err(e) => {
                        tracing::warn!(
                            "CUDA device {device_id} unavailable ({e}); running on the CPU"
                        );
                    }
                }
            }
            #[cfg(not(feature = "cuda"))]
            {
                let _ = cuda_graphs;
                tracing::warn!(
                    "CUDA device {device_id} asked for, but tribute-inference was built without the `cuda` feature; running on the CPU"
                );
            }
            Ok((base()?.commit_from_file(onnx)?, Device::Cpu, false))
        }
    }
}

/// Checks that the session's inputs and outputs are the ones `c` names, with fitting
/// shapes, and that it takes no input the generator would not feed.
pub(super) fn check_io(dir: &Path, c: &ModelConfig, session: &Session) -> Result<()> {
    let bad = |r: String| {
        Err(Error::model_dir(
            dir,
            format!("{r}; tribute.json and model.onnx do not match"),
        ))
    };
    let overridable: HashSet<String> = session
        .overridable_initializers()
        .iter()
        .map(|i| i.name().to_owned())
        .collect();
    let inputs: HashMap<&str, &ValueType> = session
        .inputs()
        .iter()
        .map(|i| (i.name(), i.dtype()))
        .collect();
    let outputs: HashMap<&str, &ValueType> = session
        .outputs()
        .iter()
        .map(|o| (o.name(), o.dtype()))
        .collect();
    // (name, expected dims: Some(n) fixed, None any)
    let kv = |name: String| {
        (
            name,
            vec![
                None,
                Some(c.num_kv_heads as i64),
                None,
                Some(c.head_dim as i64),
            ],
        )
    };
    let mut need_in = vec![
        (c.inputs.input_ids.clone(), vec![None, None]),
        (c.inputs.attention_mask.clone(), vec![None, None]),
    ];
    if let Some(p) = &c.inputs.position_ids
        && inputs.contains_key(p.as_str())
    {
        need_in.push((p.clone(), vec![None, None]));
    }
    let mut need_out = vec![(
        c.outputs.logits.clone(),
        vec![None, None, Some(c.vocab_size as i64)],
    )];
    for i in 0..c.num_layers {
        need_in.push(kv(layer_name(&c.inputs.past_key, i)));
        need_in.push(kv(layer_name(&c.inputs.past_value, i)));
        need_out.push(kv(layer_name(&c.outputs.present_key, i)));
        need_out.push(kv(layer_name(&c.outputs.present_value, i)));
    }
    let check = |what: &str,
                 names: &HashMap<&str, &ValueType>,
                 need: &[(String, Vec<Option<i64>>)]|
     -> Result<()> {
        for (n, dims) in need {
            let Some(t) = names.get(n.as_str()) else {
                return bad(format!(
                    "model.onnx has no {what} {n:?} that the config names"
                ));
            };
            if let Some(shape) = t.tensor_shape() {
                let got: Vec<i64> = shape.iter().copied().collect();
                let fits = got.len() == dims.len()
                    && got
                        .iter()
                        .zip(dims)
                        .all(|(g, d)| *g < 0 || d.is_none_or(|d| d == *g));
                if !fits {
                    return bad(format!(
                        "{what} {n:?} has shape {got:?}, the config implies {dims:?}"
                    ));
                }
            }
        }
        Ok(())
    };
    check("input", &inputs, &need_in)?;
    check("output", &outputs, &need_out)?;
    // Element types: the generator allocates the cache and feeds the LoRA inputs as the
    // config says.
    let element = |d: FloatDtype| match d {
        FloatDtype::Float32 => TensorElementType::Float32,
        FloatDtype::Float16 => TensorElementType::Float16,
    };
    // LoRA inputs with defaults are overridable initializers rather than plain inputs.
    let defaults = session.overridable_initializers();
    let lora_types: HashMap<&str, &ValueType> = defaults
        .iter()
        .map(|i| (i.name(), i.dtype()))
        .chain(inputs.iter().map(|(n, t)| (*n, *t)))
        .collect();
    let lora_names = c.lora.modules.iter().flat_map(|m| [&m.a, &m.b]);
    for n in lora_names.chain(c.lora.mask.as_ref()) {
        let got = lora_types.get(n.as_str()).and_then(|t| t.tensor_type());
        if got.is_some_and(|got| got != element(c.lora.dtype)) {
            return bad(format!(
                "{n:?} takes {got:?}, but lora.dtype is {:?}",
                c.lora.dtype
            ));
        }
    }
    let want = element(c.kv_dtype);
    let cache_names = (0..c.num_layers).flat_map(|i| {
        [
            (&inputs, layer_name(&c.inputs.past_key, i)),
            (&inputs, layer_name(&c.inputs.past_value, i)),
            (&outputs, layer_name(&c.outputs.present_key, i)),
            (&outputs, layer_name(&c.outputs.present_value, i)),
        ]
    });
    for (names, n) in cache_names {
        let got = names.get(n.as_str()).and_then(|t| t.tensor_type());
        if got.is_some_and(|got| got != want) {
            return bad(format!(
                "{n:?} holds {got:?}, but kv_dtype is {:?}",
                c.kv_dtype
            ));
        }
    }
    // A static layout's graph writes its cache in place and says so by its argmax output;
    // a padded graph run as static would return presents of another width every step.
    if c.ops == GraphOps::Static
        && !c
            .outputs
            .next_token
            .as_ref()
            .is_some_and(|n| outputs.contains_key(n.as_str()))
    {
        return bad(
            "tribute.json says ops \"static\", but model.onnx has no next_token output, which \
             every static export has: it is not a static export (re-export it with --ops static, \
             or set ops to what it was exported with)"
                .into(),
        );
    }
    // Every graph input must be one the generator feeds.
    let known: HashSet<&str> = need_in.iter().map(|(n, _)| n.as_str()).collect();
    if let Some(extra) = inputs.keys().find(|n| !known.contains(**n)) {
        return bad(format!(
            "model.onnx takes input {extra:?} that the config does not describe (the config's num_layers is {})",
            c.num_layers
        ));
    }
    for m in &c.lora.modules {
        for n in [&m.a, &m.b] {
            if !overridable.contains(n) && !inputs.contains_key(n.as_str()) {
                return bad(format!(
                    "model.onnx has no LoRA input {n:?} that the config names"
                ));
            }
        }
    }
    Ok(())
}
