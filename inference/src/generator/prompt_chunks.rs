//! Long prompts run a chunk of columns at a time, each chunk against the cache the chunks
//! before it wrote (`GeneratorOptions::prefill_chunk`).
//!
//! The portable graph scores every new query against every column of the call, so one
//! call over a whole prompt of `n` tokens computes `n × n` scores per head, half of them
//! masked (a query never sees a later column), and holds them, the mask added and the
//! softmax in memory at once. Chunks of `c` columns compute about `n²/2 + n·c/2`, and their
//! largest temporaries grow with `c × n` instead of `n²`. Each position attends to the same
//! columns either way, so the logits are the same.

use ort::session::{IoBinding, Session};
use ort::value::DynValue;

use super::Shared;
use super::forward::{Inputs, LogitsWanted, run};
use crate::error::Result;
use crate::registry::Activation;

/// Runs `x` (new tokens of `x.batch` rows over their past), `chunk` new columns per call
/// where the layout allows it (`0`: all at once); returns the last position's logits of each
/// row and the present cache.
pub(super) fn run_chunked(
    shared: &Shared,
    session: &mut Session,
    mut binding: Option<&mut IoBinding>,
    activation: &Activation,
    x: Inputs<'_>,
) -> Result<(Vec<f32>, Vec<DynValue>)> {
    let chunk = chunk_for(shared, x.batch, x.seq);
    if chunk >= x.seq {
        return run(shared, session, binding, activation, x, LogitsWanted::Last);
    }
    let Inputs {
        ids,
        pos,
        mask,
        batch,
        seq,
        total,
        mut past,
        lora_mask,
    } = x;
    let before = total - seq;
    let mut start = 0;
    loop {
        let end = (start + chunk).min(seq);
        let take = |v: &[i64]| -> Vec<i64> {
            (0..batch)
                .flat_map(|r| v[r * seq + start..r * seq + end].iter().copied())
                .collect()
        };
        let upto = before + end;
        let chunk_mask: Vec<i64> = (0..batch)
            .flat_map(|r| mask[r * total..r * total + upto].iter().copied())
            .collect();
        let (logits, present) = run(
            shared,
            session,
            binding.as_deref_mut(),
            activation,
            Inputs {
                ids: take(&ids),
                pos: take(&pos),
                mask: &chunk_mask,
                batch,
                seq: end - start,
                total: upto,
                past,
                lora_mask: lora_mask.clone(),
            },
            LogitsWanted::Last,
        )?;
        if end == seq {
            return Ok((logits, present));
        }
        past = present;
        start = end;
    }
}

/// Columns per call for `seq` new tokens of `batch` rows. Only the portable layout runs
/// several new tokens of several rows over a past (ONNX Runtime's `GroupQueryAttention`
/// takes one row at a time there), so a fused graph chunks a single row only; the static
/// layout prefills each row into its buffer, a chunk a pass, itself (`in_place.rs`).
fn chunk_for(shared: &Shared, batch: usize, seq: usize) -> usize {
    let chunk = shared.prefill_chunk;
    if chunk == 0 || (batch > 1 && !shared.config.ops.batches_tokens_over_past()) {
        seq
    } else {
        chunk
    }
}
