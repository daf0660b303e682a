//! One forward pass of the model: inputs, the KV cache in and out, and the `IoBinding`
//! that keeps the cache on the session's device.

use std::borrow::Cow;

use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, Session, SessionInputValue, SessionOutputs};
use ort::value::{DynValue, Tensor};

use super::capture::device_use;
use super::{Device, Shared};
use crate::config::{ModelConfig, layer_name};
use crate::error::{Error, Result};
use crate::floats::float_tensor;
use crate::registry::Activation;

/// Zero-length past tensors for a prefill.
pub(super) fn empty_past(cfg: &ModelConfig, batch: usize) -> Result<Vec<DynValue>> {
    (0..2 * cfg.num_layers)
        .map(|_| {
            float_tensor(
                cfg.kv_dtype,
                [batch, cfg.num_kv_heads, 0, cfg.head_dim],
                Vec::new(),
            )
        })
        .collect()
}

/// Memory where the session leaves the KV cache: its device.
pub(super) fn cache_memory(device: Device) -> Result<MemoryInfo<'static>> {
    Ok(match device {
        Device::Cpu => MemoryInfo::new(
            AllocationDevice::CPU,
            0,
            AllocatorType::Device,
            MemoryType::Default,
        )?,
        Device::Cuda { device_id } => MemoryInfo::new(
            AllocationDevice::CUDA,
            device_id,
            AllocatorType::Device,
            MemoryType::Default,
        )?,
    })
}

/// A binding with the adapter tensors bound (copied to the device once per batch).
pub(super) fn new_binding(session: &Session, activation: &Activation) -> Result<IoBinding> {
    let mut binding = session.create_binding()?;
    if let Activation::Feed(feed) = activation {
        for (name, v) in &feed.inputs {
            binding.bind_input(name.as_str(), v)?;
        }
    }
    Ok(binding)
}

/// Binds the outputs afresh (ONNX Runtime would otherwise reuse the previous run's
/// tensors, whose sequence length no longer fits): logits to host memory, present
/// key/values to the session's device.
fn bind_outputs(shared: &Shared, binding: &mut IoBinding) -> Result<()> {
    let cfg = &shared.config;
    binding.clear_outputs();
    let host = cache_memory(Device::Cpu)?;
    let cache = cache_memory(shared.device)?;
    binding.bind_output_to_device(cfg.outputs.logits.as_str(), &host)?;
    for i in 0..cfg.num_layers {
        for pattern in [&cfg.outputs.present_key, &cfg.outputs.present_value] {
            binding.bind_output_to_device(layer_name(pattern, i), &cache)?;
        }
    }
    Ok(())
}

/// The inputs of one forward pass over `batch` rows of `seq` new tokens each.
pub(super) struct Inputs<'a> {
    /// Token ids, `[batch, seq]`, row-major.
    pub(super) ids: Vec<i64>,
    /// Position ids, `[batch, seq]` (fed only if the graph takes them).
    pub(super) pos: Vec<i64>,
    /// Attention mask over past and new tokens, `[batch, total]`: 1 attended, 0 not.
    pub(super) mask: &'a [i64],
    pub(super) batch: usize,
    pub(super) seq: usize,
    /// Past plus new tokens per row (the mask's width).
    pub(super) total: usize,
    /// Past keys and values, layer by layer (key, value), each
    /// `[batch, kv_heads, total - seq, head_dim]`.
    pub(super) past: Vec<DynValue>,
    /// With adapter slots: each row's LoRA columns, `[batch, 1, width]`, and the width.
    pub(super) lora_mask: Option<(Vec<f32>, usize)>,
}

impl<'a> Inputs<'a> {
    /// One whole sequence from position 0, nothing cached before it; `ones` is its
    /// all-visible mask (`tokens.len()` ones).
    pub(super) fn whole(cfg: &ModelConfig, tokens: &[u32], ones: &'a [i64]) -> Result<Self> {
        let n = tokens.len();
        Ok(Inputs {
            ids: tokens.iter().map(|&t| i64::from(t)).collect(),
            pos: (0..n as i64).collect(),
            mask: ones,
            batch: 1,
            seq: n,
            total: n,
            past: empty_past(cfg, 1)?,
            lora_mask: None,
        })
    }
}

/// Which logits a forward pass returns. Graphs with a `logits_to_keep` input compute only
/// these (the head is most of a small model's prefill); older graphs compute every position
/// and the rest is dropped here.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum LogitsWanted {
    /// The last position of each row (rows are left-padded: their latest token).
    Last,
    /// The last `n` positions of each row (at most the new tokens).
    Tail(usize),
}

impl LogitsWanted {
    fn positions(self, seq: usize) -> usize {
        match self {
            LogitsWanted::Last => 1,
            LogitsWanted::Tail(n) => n.clamp(1, seq.max(1)),
        }
    }
}

/// One forward pass: returns the logits (`[batch, positions, vocab]` for the positions
/// `wanted`) and the present key/values (left where the session put them).
pub(super) fn run(
    shared: &Shared,
    session: &mut Session,
    binding: Option<&mut IoBinding>,
    activation: &Activation,
    x: Inputs<'_>,
    wanted: LogitsWanted,
) -> Result<(Vec<f32>, Vec<DynValue>)> {
    let cfg = &shared.config;
    let batch = x.batch;
    let keep = wanted.positions(x.seq);
    let (mut inputs, past) = named_inputs(shared, x, keep)?;
    let mut past = past.into_iter();
    for i in 0..cfg.num_layers {
        for pattern in [&cfg.inputs.past_key, &cfg.inputs.past_value] {
            let v = past
                .next()
                .ok_or_else(|| Error::InvalidRequest("KV cache is missing layers".into()))?;
            inputs.push((layer_name(pattern, i), v));
        }
    }
    let _use = device_use();
    let mut outputs = match (activation, binding) {
        (Activation::Feed(_), Some(binding)) => {
            for (name, v) in &inputs {
                binding.bind_input(name.as_str(), v)?;
            }
            drop(inputs);
            bind_outputs(shared, binding)?;
            match shared.uncaptured() {
                Some(opts) => session.run_binding_with_options(binding, opts)?,
                None => session.run_binding(binding)?,
            }
        }
        // On the CPU a plain run is faster: its outputs come from the session's arena,
        // while outputs bound to a device are fresh allocations every step.
        (Activation::Feed(feed), None) => {
            let mut all: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = inputs
                .into_iter()
                .map(|(n, v)| (Cow::Owned(n), SessionInputValue::from(v)))
                .collect();
            for (n, v) in &feed.inputs {
                all.push((Cow::Borrowed(n.as_str()), SessionInputValue::from(v)));
            }
            match shared.uncaptured() {
                Some(opts) => session.run_with_options(all, opts)?,
                None => session.run(all)?,
            }
        }
        // ONNX Runtime applies the adapters of run options only in a plain run, not in a
        // run with an IoBinding: `.onnx_adapter` requests take the plain path (host KV).
        (Activation::RunOptions(_), _) if shared.uncaptured().is_some() => {
            return Err(Error::InvalidRequest(
                "`.onnx_adapter` adapters are applied through run options, and this generator's \
                 sessions capture CUDA graphs, whose runs take their own: use a PEFT adapter, or \
                 load the generator with cuda_graphs off"
                    .into(),
            ));
        }
        (Activation::RunOptions(opts), _) => session.run_with_options(inputs, opts)?,
    };
    let logits = kept_logits(shared, &outputs, batch, keep)?;
    let mut present = Vec::with_capacity(2 * cfg.num_layers);
    for i in 0..cfg.num_layers {
        for pattern in [&cfg.outputs.present_key, &cfg.outputs.present_value] {
            let name = layer_name(pattern, i);
            present.push(outputs.remove(&name).ok_or_else(|| {
                Error::model_dir(&shared.dir, format!("the model returned no {name}"))
            })?);
        }
    }
    Ok((logits, present))
}

/// A graph input and its value.
pub(super) type NamedInput = (String, DynValue);

/// The graph's inputs other than the cache, by name (token ids, attention mask, positions,
/// LoRA columns, how many positions' logits to keep), and the past `x` carries.
pub(super) fn named_inputs(
    shared: &Shared,
    x: Inputs<'_>,
    keep: usize,
) -> Result<(Vec<NamedInput>, Vec<DynValue>)> {
    let cfg = &shared.config;
    let mut inputs: Vec<NamedInput> = Vec::with_capacity(5 + 2 * cfg.num_layers);
    inputs.push((
        cfg.inputs.input_ids.clone(),
        Tensor::from_array(([x.batch, x.seq], x.ids))?.into_dyn(),
    ));
    inputs.push((
        cfg.inputs.attention_mask.clone(),
        Tensor::from_array(([x.batch, x.total], x.mask.to_vec()))?.into_dyn(),
    ));
    if let Some(p) = &cfg.inputs.position_ids
        && shared.graph_inputs.contains(p)
    {
        inputs.push((
            p.clone(),
            Tensor::from_array(([x.batch, x.seq], x.pos))?.into_dyn(),
        ));
    }
    if let (Some(name), Some((mask, width))) = (&shared.lora_mask, x.lora_mask) {
        inputs.push((
            name.clone(),
            float_tensor(shared.config.lora.dtype, [x.batch, 1, width], mask)?,
        ));
    }
    if let Some(name) = &shared.logits_to_keep {
        inputs.push((
            name.clone(),
            Tensor::from_array(([1usize], vec![keep as i64]))?.into_dyn(),
        ));
    }
    Ok((inputs, x.past))
}

/// The logits of the last `keep` positions of each of `batch` rows, `[batch, keep, vocab]`:
/// what the graph returned, or cut from a graph that computes every position.
pub(super) fn kept_logits(
    shared: &Shared,
    outputs: &SessionOutputs<'_>,
    batch: usize,
    keep: usize,
) -> Result<Vec<f32>> {
    let cfg = &shared.config;
    let logits_v = outputs
        .get(&cfg.outputs.logits)
        .ok_or_else(|| Error::InvalidRequest("the model returned no logits".into()))?;
    let (shape, data) = logits_v.try_extract_tensor::<f32>()?;
    let v = cfg.vocab_size;
    if shape.len() != 3 || shape[2] as usize != v || shape[0] as usize != batch {
        return Err(Error::model_dir(
            &shared.dir,
            format!("logits have shape {shape:?}, expected [{batch}, seq, {v}]"),
        ));
    }
    let s = shape[1] as usize;
    if s < keep {
        return Err(Error::model_dir(
            &shared.dir,
            format!("logits have {s} positions per row, {keep} were asked for"),
        ));
    }
    if s == keep {
        return Ok(data.to_vec());
    }
    let mut l = Vec::with_capacity(batch * keep * v);
    for b in 0..batch {
        let off = (b * s + s - keep) * v;
        l.extend_from_slice(&data[off..off + keep * v]);
    }
    Ok(l)
}

/// Logits of the last `keep` positions of one sequence (`[keep, vocab]`, row-major).
pub(super) fn forward_tail(
    shared: &Shared,
    session: &mut Session,
    activation: &Activation,
    tokens: &[u32],
    keep: usize,
) -> Result<Vec<f32>> {
    let ones = vec![1i64; tokens.len()];
    let mut binding = if shared.io_binding {
        Some(new_binding(session, activation)?)
    } else {
        None
    };
    let (logits, _) = run(
        shared,
        session,
        binding.as_mut(),
        activation,
        Inputs::whole(&shared.config, tokens, &ones)?,
        LogitsWanted::Tail(keep),
    )?;
    Ok(logits)
}
