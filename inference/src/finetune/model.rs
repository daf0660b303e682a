//! The llama forward pass in candle, differentiable with respect to LoRA matrices:
//! RMSNorm, RoPE (Hugging Face's rotate-half layout), grouped-query attention with a
//! causal mask, SwiGLU MLP and the (tied) output projection.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, D, DType, Layout, Shape, Tensor};

use super::base::{BaseModel, Proj};
use super::lora::Lora;
use crate::error::{Error, Result};

/// A right-padded batch of token rows and the positions whose next token is trained.
#[derive(Debug)]
pub(crate) struct Batch {
    /// `[rows, len]` token ids (u32).
    pub(crate) ids: Tensor,
    /// Flat indices `row * len + position` of the positions that predict a trained token.
    pub(crate) positions: Tensor,
    /// The trained tokens, one per position.
    pub(crate) targets: Tensor,
    /// Number of trained tokens.
    pub(crate) target_count: usize,
}

impl BaseModel {
    /// Logits `[len, vocab]` (row-major) of every position of `tokens`, with `lora` applied
    /// when given.
    pub fn logits(&self, tokens: &[u32], lora: Option<&Lora>) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            return Err(Error::InvalidRequest("logits of no tokens".into()));
        }
        self.check_tokens(tokens)?;
        let ids = Tensor::from_slice(tokens, (1, tokens.len()), &self.device)?;
        let hidden = self.hidden(&ids, lora)?;
        let hidden = hidden.reshape((tokens.len(), self.spec.hidden_size))?;
        let logits = self.project(&hidden)?;
        Ok(logits.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
    }

    /// Mean cross-entropy of the batch's trained tokens (a scalar, differentiable with
    /// respect to `lora`).
    pub(crate) fn loss(&self, batch: &Batch, lora: Option<&Lora>) -> Result<Tensor> {
        let hidden = self.hidden(&batch.ids, lora)?;
        let hidden = hidden.flatten_to(1)?;
        // Only the positions that are trained reach the (large) vocabulary projection.
        let picked = hidden.index_select(&batch.positions, 0)?;
        let logits = self.project(&picked)?;
        let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let picked = log_probs.gather(&batch.targets.unsqueeze(1)?, 1)?;
        Ok((picked.sum_all()? * (-1.0 / batch.target_count as f64))?)
    }

    pub(crate) fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        match tokens.iter().find(|&&t| t as usize >= self.spec.vocab_size) {
            Some(t) => Err(Error::InvalidRequest(format!(
                "token id {t} is outside the vocabulary ({})",
                self.spec.vocab_size
            ))),
            None => Ok(()),
        }
    }

    /// The last hidden states `[rows, len, hidden]` after the final norm.
    fn hidden(&self, ids: &Tensor, lora: Option<&Lora>) -> Result<Tensor> {
        let (rows, len) = ids.dims2()?;
        let spec = &self.spec;
        let dtype = self.dtype();
        let mut x = self
            .embed
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((rows * len, spec.hidden_size))?;
        let (cos, sin) = self.rope_tables(len)?;
        let mask = causal_mask(len, dtype, &self.device)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let h = rms_norm(&x, &layer.input_norm, spec.rms_norm_eps)?;
            let attn = self.attention(&h, i, rows, len, (&cos, &sin), &mask, lora)?;
            x = (x + attn)?;
            let h = rms_norm(&x, &layer.post_attention_norm, spec.rms_norm_eps)?;
            let gate = self.linear(&h, i, Proj::Gate, lora)?;
            let up = self.linear(&h, i, Proj::Up, lora)?;
            let mlp = self.linear(&(gate.silu()? * up)?, i, Proj::Down, lora)?;
            x = (x + mlp)?;
        }
        let x = rms_norm(&x, &self.norm, spec.rms_norm_eps)?;
        Ok(x.reshape((rows, len, spec.hidden_size))?)
    }

    /// `x [n, hidden] → [n, vocab]` with the output projection (the embedding when tied).
    fn project(&self, x: &Tensor) -> Result<Tensor> {
        frozen_linear(x, self.lm_head.as_ref().unwrap_or(&self.embed))
    }

    /// `x [n, in] → [n, out]` through a frozen module plus its LoRA delta, if any.
    fn linear(&self, x: &Tensor, layer: usize, proj: Proj, lora: Option<&Lora>) -> Result<Tensor> {
        let base = frozen_linear(x, self.weight(layer, proj))?;
        match lora.and_then(|l| l.pair(layer, proj).map(|p| (l.scale(), p))) {
            Some((scale, (a, b))) => {
                let delta = x.matmul(&a.t()?)?.matmul(&b.t()?)?;
                Ok((base + (delta * scale)?)?)
            }
            None => Ok(base),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        x: &Tensor,
        layer: usize,
        rows: usize,
        len: usize,
        rope: (&Tensor, &Tensor),
        mask: &Tensor,
        lora: Option<&Lora>,
    ) -> Result<Tensor> {
        let spec = &self.spec;
        let (heads, kv_heads, dim) = (spec.num_heads, spec.num_kv_heads, spec.head_dim);
        let split = |t: Tensor, n: usize| -> Result<Tensor> {
            // [rows·len, n·dim] → [rows, n, len, dim]
            Ok(t.reshape((rows, len, n, dim))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = split(self.linear(x, layer, Proj::Q, lora)?, heads)?;
        let k = split(self.linear(x, layer, Proj::K, lora)?, kv_heads)?;
        let v = split(self.linear(x, layer, Proj::V, lora)?, kv_heads)?;
        let q = apply_rope(&q, rope.0, rope.1)?;
        let k = apply_rope(&k, rope.0, rope.1)?;
        let k = repeat_kv(k, heads / kv_heads)?;
        let v = repeat_kv(v, heads / kv_heads)?;
        let scores = (q.matmul(&k.t()?)? * (1.0 / (dim as f64).sqrt()))?;
        let scores = scores.broadcast_add(mask)?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let out = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((rows * len, heads * dim))?;
        self.linear(&out, layer, Proj::O, lora)
    }

    /// RoPE's `cos` and `sin`, `[len, head_dim]`, each frequency repeated over both halves.
    fn rope_tables(&self, len: usize) -> Result<(Tensor, Tensor)> {
        let dim = self.spec.head_dim;
        // In f32 throughout, as Hugging Face and the exported graph compute them.
        let theta = self.spec.rope_theta as f32;
        let inv_freq: Vec<f32> = (0..dim / 2)
            .map(|i| 1.0 / theta.powf((2 * i) as f32 / dim as f32))
            .collect();
        let mut cos = Vec::with_capacity(len * dim);
        let mut sin = Vec::with_capacity(len * dim);
        for pos in 0..len {
            for _half in 0..2 {
                for f in &inv_freq {
                    let angle = (pos as f32) * f;
                    cos.push(f64::from(angle.cos()));
                    sin.push(f64::from(angle.sin()));
                }
            }
        }
        let dtype = self.dtype();
        let cos = Tensor::from_vec(cos, (len, dim), &self.device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (len, dim), &self.device)?.to_dtype(dtype)?;
        Ok((cos, sin))
    }
}

/// `x [n, in] · wᵀ` for a frozen `w [out, in]`, whose backward pass computes the gradient
/// of `x` only. Candle's own matmul also computes (and sums) a gradient for `w` even when
/// nothing asks for it: for SmolLM2 that is an `[in, out]` product per module per step and a
/// 576×49152 one for the tied output projection, most of the training time.
fn frozen_linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    Ok(x.apply_op2(&w.t()?, FrozenMatmul)?)
}

/// The op of [`frozen_linear`]: `lhs [m, k] · rhs [k, n]`, differentiable in `lhs` alone.
struct FrozenMatmul;

impl CustomOp2 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(
        &self,
        lhs: &CpuStorage,
        lhs_layout: &Layout,
        rhs: &CpuStorage,
        rhs_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (m, k) = lhs_layout.shape().dims2()?;
        let (k2, n) = rhs_layout.shape().dims2()?;
        if k != k2 {
            candle_core::bail!("frozen-matmul: [{m}, {k}] · [{k2}, {n}]");
        }
        // The same kernel (and strided-layout handling) as `Tensor::matmul`.
        let out = lhs.matmul(rhs, (1, m, n, k), lhs_layout, rhs_layout)?;
        Ok((out, Shape::from((m, n))))
    }

    fn bwd(
        &self,
        _lhs: &Tensor,
        rhs: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.matmul(&rhs.t()?)?), None))
    }
}

/// `x · rsqrt(mean(x²) + eps) · w` over the last axis.
fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let mean_square = x.sqr()?.mean_keepdim(D::Minus1)?;
    let x = x.broadcast_div(&(mean_square + eps)?.sqrt()?)?;
    Ok(x.broadcast_mul(w)?)
}

/// Hugging Face's rotary embedding: `x·cos + rotate_half(x)·sin` over `[rows, heads, len, dim]`.
fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let dim = x.dim(D::Minus1)?;
    let first = x.narrow(D::Minus1, 0, dim / 2)?;
    let second = x.narrow(D::Minus1, dim / 2, dim / 2)?;
    let rotated = Tensor::cat(&[&second.neg()?, &first], D::Minus1)?;
    Ok((x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?)
}

/// `[rows, kv_heads, len, dim] → [rows, kv_heads·times, len, dim]`, each head repeated
/// `times` times in a row (grouped-query attention).
fn repeat_kv(x: Tensor, times: usize) -> Result<Tensor> {
    if times == 1 {
        return Ok(x);
    }
    let (rows, kv_heads, len, dim) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .broadcast_as((rows, kv_heads, times, len, dim))?
        .contiguous()?
        .reshape((rows, kv_heads * times, len, dim))?)
}

/// `[len, len]`: 0 where a position may attend, −∞ above the diagonal.
fn causal_mask(len: usize, dtype: DType, device: &candle_core::Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..len)
        .flat_map(|i| (0..len).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(mask, (len, len), device)?.to_dtype(dtype)?)
}
