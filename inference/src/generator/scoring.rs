//! Teacher-forced scoring: log-probabilities of given tokens, with or without parts of
//! the prompt hidden from attention.

use ort::value::DynValue;

use super::cache::HostTensor;
use super::forward::{Inputs, LogitsWanted, forward_tail, run};
use super::log_softmax::target_log_probs;
use super::pool::Lease;
use super::prompt_chunks::run_chunked;
use super::{GenerateRequest, Generator, Prompt};
use crate::config::{FloatDtype, GraphOps};
use crate::error::{Error, Result};
use crate::floats::float_tensor;

impl Generator {
    /// Teacher-forced log-probabilities: for each token of `continuation`, `log p(token |
    /// context, earlier continuation tokens)` under the given adapters, in one forward pass.
    pub fn log_probs(
        &self,
        context: &[u32],
        continuation: &[u32],
        adapters: &[(String, f32)],
    ) -> Result<Vec<f32>> {
        if context.is_empty() || continuation.is_empty() {
            return Err(Error::InvalidRequest(
                "log_probs needs a context and a continuation".into(),
            ));
        }
        let mut req = GenerateRequest::new(Prompt::Tokens(
            context.iter().chain(continuation).copied().collect(),
        ));
        for (id, w) in adapters {
            req = req.adapter(id.clone(), *w);
        }
        let set = req.adapter_set()?;
        let activation = self.shared.registry.activate(&set)?;
        let tokens = self.prompt_tokens(&req.prompt)?;
        if tokens.len() > self.shared.config.context_length {
            return Err(Error::PromptTooLong {
                tokens: tokens.len(),
                context: self.shared.config.context_length,
            });
        }
        let mut lease = Lease::new(&self.shared);
        // Continuation token j is predicted at position context.len() - 1 + j: the last
        // continuation.len() + 1 positions (the very last one predicts nothing asked for).
        let keep = continuation.len() + 1;
        let shared = self.shared.clone();
        let tail = lease.run(move |engine| {
            forward_tail(&shared, &mut engine.session, &activation, &tokens, keep)
        })?;
        let v = self.shared.config.vocab_size;
        let start = context.len() - 1;
        // The very last kept position predicts nothing asked for.
        target_log_probs(&tail[..continuation.len() * v], v, continuation, 0).map_err(|e| match e {
            Error::NonFiniteLogits { step, .. } => Error::NonFiniteLogits {
                step: 0,
                row: start + step,
            },
            e => e,
        })
    }

    /// Teacher-forced log-probabilities of `answer` after `prompt`, once per visibility
    /// mask over the prompt's tokens (`masks[v][i] == false` hides prompt token `i` from
    /// the answer). The prompt is run once; each mask then scores only the answer tokens
    /// against the cached prompt with those positions masked out, batched. Used to measure
    /// how much each part of a prompt (a retrieved source) contributes to an answer.
    ///
    /// The hidden tokens' keys and values are cut out of attention, not out of the prompt:
    /// later prompt tokens were still computed with them in view. The last prompt token is
    /// always visible (it is fed with the answer).
    pub fn score_masked(
        &self,
        prompt: &[u32],
        answer: &[u32],
        masks: &[Vec<bool>],
        adapters: &[(String, f32)],
    ) -> Result<Vec<Vec<f32>>> {
        let cfg = &self.shared.config;
        let p = prompt.len();
        if p < 2 || answer.is_empty() {
            return Err(Error::InvalidRequest(
                "score_masked needs a prompt of at least 2 tokens and an answer".into(),
            ));
        }
        if p + answer.len() > cfg.context_length {
            return Err(Error::PromptTooLong {
                tokens: p + answer.len(),
                context: cfg.context_length,
            });
        }
        if let Some(m) = masks.iter().find(|m| m.len() != p) {
            return Err(Error::InvalidRequest(format!(
                "a mask has {} flags for a prompt of {p} tokens",
                m.len()
            )));
        }
        if let Some(&t) = prompt
            .iter()
            .chain(answer)
            .find(|&&t| t as usize >= cfg.vocab_size)
        {
            return Err(Error::InvalidRequest(format!(
                "token id {t} is outside the vocabulary ({})",
                cfg.vocab_size
            )));
        }
        let mut req = GenerateRequest::new(Prompt::Tokens(prompt.to_vec()));
        for (id, w) in adapters {
            req = req.adapter(id.clone(), *w);
        }
        if cfg.ops == GraphOps::Static
            && let Some(w) = cfg.sliding_window.filter(|&w| p + answer.len() > w)
        {
            return Err(Error::InvalidRequest(format!(
                "masked scoring on a static-layout export runs over the visible columns only, \
                 which is exact within the model's sliding window ({w} tokens) but not across \
                 it ({} tokens here): score with a portable or fused export of this model",
                p + answer.len()
            )));
        }
        let set = req.adapter_set()?;
        let activation = self.shared.registry.activate(&set)?;
        let mut lease = Lease::new(&self.shared);
        let this = self.clone();
        let (prompt, answer, masks) = (prompt.to_vec(), answer.to_vec(), masks.to_vec());
        lease.run(move |engine| {
            this.score_masked_on(
                &mut engine.session,
                &set,
                &activation,
                &prompt,
                &answer,
                &masks,
            )
        })
    }

    /// [`Generator::score_masked`] on `session`, the request checked.
    fn score_masked_on(
        &self,
        session: &mut ort::session::Session,
        set: &crate::registry::AdapterSet,
        activation: &crate::registry::Activation,
        prompt: &[u32],
        answer: &[u32],
        masks: &[Vec<bool>],
    ) -> Result<Vec<Vec<f32>>> {
        let cfg = &self.shared.config;
        let p = prompt.len();
        // 1. The KV cache of the prompt but its last token: kept from the generation that
        //    wrote the answer, else computed once (its logits are unused).
        let prefix = p - 1;
        let kept = self
            .shared
            .prompt_cache
            .prefix(set, activation, &prompt[..prefix]);
        let cache = match kept {
            Some(cache) => cache,
            None => self.prefix_cache(session, activation, &prompt[..prefix])?,
        };
        // 2. The answer under each mask, a few masks per forward pass (the logits of every
        //    answer position are kept, so batches stay small). A fused-attention graph
        //    takes one row at a time here (ONNX Runtime's GroupQueryAttention limit).
        let a = answer.len();
        let v = cfg.vocab_size;
        let chunk = if cfg.ops.batches_tokens_over_past() {
            self.shared.max_batch.clamp(1, 8)
        } else {
            1
        };
        let mut ids_row: Vec<i64> = vec![i64::from(prompt[prefix])];
        ids_row.extend(answer[..a - 1].iter().map(|&t| i64::from(t)));
        let mut out = Vec::with_capacity(masks.len());
        for group in masks.chunks(chunk) {
            let b = group.len();
            // Chunks of one mask on this layout (`batches_tokens_over_past`).
            let (past, mask, total) = if cfg.ops == GraphOps::Static {
                visible_columns(cfg.kv_dtype, &cache, &group[0][..prefix], a)?
            } else {
                masked_columns(cfg.kv_dtype, &cache, group, prefix, a)?
            };
            let ids: Vec<i64> = (0..b).flat_map(|_| ids_row.iter().copied()).collect();
            let pos: Vec<i64> = (0..b)
                .flat_map(|_| (prefix as i64)..(prefix + a) as i64)
                .collect();
            let (logits, _) = run(
                &self.shared,
                session,
                None,
                activation,
                Inputs {
                    ids,
                    pos,
                    mask: &mask,
                    batch: b,
                    seq: a,
                    total,
                    past,
                    lora_mask: None,
                },
                LogitsWanted::Tail(a),
            )?;
            for row in 0..b {
                out.push(target_log_probs(
                    &logits[row * a * v..(row + 1) * a * v],
                    v,
                    answer,
                    row,
                )?);
            }
        }
        Ok(out)
    }

    /// The KV cache of `tokens` run alone from position 0, on the host:
    /// `[1, heads, tokens.len(), dim]` per present tensor.
    fn prefix_cache(
        &self,
        session: &mut ort::session::Session,
        activation: &crate::registry::Activation,
        tokens: &[u32],
    ) -> Result<Vec<HostTensor<f32>>> {
        let ones = vec![1i64; tokens.len()];
        let (_, present) = run_chunked(
            &self.shared,
            session,
            None,
            activation,
            Inputs::whole(&self.shared.config, tokens, &ones)?,
        )?;
        present.iter().map(HostTensor::from_value).collect()
    }
}

/// The past of `b = masks.len()` rows, each the whole cached prefix (`[1, heads, prefix,
/// dim]` per tensor), and their masks (`[b, prefix + answer]`) hiding what each mask hides.
fn masked_columns(
    dtype: FloatDtype,
    cache: &[HostTensor<f32>],
    masks: &[Vec<bool>],
    prefix: usize,
    answer: usize,
) -> Result<(Vec<DynValue>, Vec<i64>, usize)> {
    let b = masks.len();
    let mut past = Vec::with_capacity(cache.len());
    for t in cache {
        let [_, heads, cols, dim] = t.shape;
        let mut rep = Vec::with_capacity(t.data.len() * b);
        for _ in 0..b {
            rep.extend_from_slice(&t.data);
        }
        past.push(float_tensor(dtype, [b, heads, cols, dim], rep)?);
    }
    let mut mask = Vec::with_capacity(b * (prefix + answer));
    for m in masks {
        mask.extend(m[..prefix].iter().map(|&vis| i64::from(vis)));
        mask.extend(std::iter::repeat_n(1, answer));
    }
    Ok((past, mask, prefix + answer))
}

/// The static layout has no mask inside a row (a row attends to its first columns), so a
/// hidden token is left out of the past instead: one row of the visible columns only. Each
/// cached key carries the rotation of its own position, and the answer keeps its positions,
/// so attention sees exactly the keys and values the mask leaves visible.
fn visible_columns(
    dtype: FloatDtype,
    cache: &[HostTensor<f32>],
    visible: &[bool],
    answer: usize,
) -> Result<(Vec<DynValue>, Vec<i64>, usize)> {
    let kept: Vec<usize> = (0..visible.len()).filter(|&i| visible[i]).collect();
    let mut past = Vec::with_capacity(cache.len());
    for t in cache {
        let [_, heads, cols, dim] = t.shape;
        let mut data = Vec::with_capacity(heads * kept.len() * dim);
        for h in 0..heads {
            for &c in &kept {
                let at = (h * cols + c) * dim;
                data.extend_from_slice(&t.data[at..at + dim]);
            }
        }
        past.push(float_tensor(dtype, [1, heads, kept.len(), dim], data)?);
    }
    let total = kept.len() + answer;
    Ok((past, vec![1; total], total))
}
