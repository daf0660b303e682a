//! Picking rows' next tokens where their logits are (a GPU), so that only token ids come
//! back: a small graph (`sampler.onnx`, written by `python -m tribute_export.sampler`) that
//! picks as [`Sampler::sample`](crate::sampling::Sampler::sample) does for rows without a
//! repetition penalty, guard or excluded endings, each row's uniform number drawn by the
//! host from the row's own generator ([`DevicePick`]). Greedy rows pick their argmax.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Mutex, OnceLock};

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;

use super::Device;
use super::capture::device_use;
use super::device_copy::small_session;
use super::forward::cache_memory;
use super::kv_buffer::bind_input_in_place;
use crate::error::{Error, Result};
use crate::sampling::DevicePick;

/// One sampler session per device, built on first use and kept.
static SAMPLERS: OnceLock<Mutex<HashMap<Device, Session>>> = OnceLock::new();

/// Each row's token from `logits` (`[rows, 1, vocab]`, on `device`): rows `0..picks.len()`
/// as `picks` say, the rest (padding) greedy. −1 where a row's logits are not all finite.
pub(super) fn sample(
    device: Device,
    logits: &Tensor<f32>,
    picks: &[DevicePick],
) -> Result<Vec<i64>> {
    let rows = logits.shape().first().copied().unwrap_or(0) as usize;
    if picks.len() > rows {
        return Err(Error::internal("more picks than rows of logits"));
    }
    let pick = |i: usize| picks.get(i).copied().unwrap_or(DevicePick::GREEDY);
    let scale: Vec<f32> = (0..rows).map(|i| pick(i).scale).collect();
    let top_k: Vec<i64> = (0..rows)
        .map(|i| i64::try_from(pick(i).top_k).unwrap_or(0))
        .collect();
    let top_p: Vec<f64> = (0..rows).map(|i| pick(i).top_p).collect();
    let uniform: Vec<f64> = (0..rows).map(|i| pick(i).uniform).collect();
    let mut samplers = SAMPLERS
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .map_err(|_| Error::internal("the sampler sessions were poisoned by a panic"))?;
    let session = match samplers.entry(device) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(e) => e.insert(sampler_session(device)?),
    };
    let mut binding = session.create_binding()?;
    bind_input_in_place(&mut binding, "logits", logits)?;
    binding.bind_input("scale", &Tensor::from_array(([rows], scale))?)?;
    binding.bind_input("top_k", &Tensor::from_array(([rows], top_k))?)?;
    binding.bind_input("top_p", &Tensor::from_array(([rows], top_p))?)?;
    binding.bind_input("uniform", &Tensor::from_array(([rows], uniform))?)?;
    binding.bind_output_to_device("token", &cache_memory(Device::Cpu)?)?;
    let _use = device_use();
    let outputs = session.run_binding(&binding)?;
    let (_, tokens) = outputs["token"].try_extract_tensor::<i64>()?;
    Ok(tokens[..picks.len()].to_vec())
}

fn sampler_session(device: Device) -> Result<Session> {
    small_session(
        device,
        include_bytes!("sampler.onnx"),
        GraphOptimizationLevel::Level1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::{Sampler, SamplingParams};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The device sampler (here on the CPU) picks what the host sampler picks from the same
    /// logits with the same seed, over temperatures, top-k and top-p cuts and greedy rows,
    /// pick after pick (the uniform numbers come from the row's own generator); −1 where a
    /// row's logits are not finite, where the host finds none.
    #[test]
    fn picks_what_the_host_sampler_picks() {
        let _ort = tribute_common::ort_library::environment().expect("ONNX Runtime");
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let params = |rng: &mut ChaCha8Rng, seed: u64| SamplingParams {
            temperature: [0.0, 0.3, 0.8, 1.0, 1.7][rng.random_range(0..5)],
            top_k: [0, 0, 1, 5, 40, 10_000][rng.random_range(0..6)],
            top_p: [1.0, 1.0, 0.9, 0.5][rng.random_range(0..4)],
            seed,
            ..SamplingParams::default()
        };
        let (mut picks, mut sampled) = (0, 0);
        for case in 0..40u64 {
            let vocab: usize = rng.random_range(2..400);
            let rows: usize = rng.random_range(1..6);
            let chosen: Vec<SamplingParams> = (0..rows)
                .map(|r| params(&mut rng, case * 8 + r as u64))
                .collect();
            let mut host: Vec<Sampler> = chosen
                .iter()
                .map(|p| Sampler::new(p.clone()).expect("params"))
                .collect();
            let mut device = host.clone();
            for _step in 0..3 {
                let mut logits: Vec<f32> = (0..rows * vocab)
                    .map(|_| rng.random_range(-6.0f32..6.0))
                    .collect();
                if case == 7 {
                    logits[vocab + 1] = f32::NAN; // row 1
                }
                let mut asked = Vec::new();
                for s in &mut device {
                    assert!(s.picks_plainly());
                    asked.push(s.device_pick().expect("a plain pick"));
                }
                let extra = usize::from(case % 3 == 0); // a padding row
                let mut all = logits.clone();
                all.extend(std::iter::repeat_n(0.5, extra * vocab));
                let t = Tensor::from_array(([rows + extra, 1, vocab], all)).expect("tensor");
                let got = sample(Device::Cpu, &t, &asked).expect("device sample");
                assert_eq!(got.len(), rows);
                for (r, (h, d)) in host.iter_mut().zip(&mut device).enumerate() {
                    let mut row = logits[r * vocab..(r + 1) * vocab].to_vec();
                    let want = h.sample(&mut row, &[]).map_or(-1, i64::from);
                    assert_eq!(got[r], want, "case {case} row {r}: {:?}", chosen[r]);
                    if got[r] >= 0 {
                        d.accept(got[r] as u32);
                    }
                    picks += 1;
                    sampled += usize::from(asked[r].top_k != 1);
                }
            }
        }
        assert!(sampled > picks / 2, "{sampled} of {picks} picks sampled");
    }

    /// Rows with a repetition penalty or guard are not the device's: no pick, nothing drawn.
    #[test]
    fn rows_with_a_penalty_are_not_picked_on_the_device() {
        let p = SamplingParams {
            temperature: 0.7,
            repetition_penalty: 1.2,
            ..SamplingParams::default()
        };
        let mut s = Sampler::new(p).expect("params");
        assert!(!s.picks_plainly());
        assert_eq!(s.device_pick(), None);
    }
}
