//! The trainer on a tiny random llama (no model files): gradients against finite
//! differences, determinism, learning, and the PEFT files it writes read back by the
//! generator's adapter loader.

use candle_core::{DType, Tensor};

use super::model::Batch;
use super::train::make_batch;
use super::*;
use crate::adapter::{AdapterId, load_peft};
use crate::config::LoraModule;

fn tiny_spec() -> LlamaSpec {
    LlamaSpec {
        hidden_size: 16,
        intermediate_size: 24,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 4,
        vocab_size: 40,
        rms_norm_eps: 1e-5,
        rope_theta: 10000.0,
    }
}

fn tiny(dtype: DType) -> BaseModel {
    BaseModel::random(tiny_spec(), 7, dtype).expect("random model")
}

fn lora(base: &BaseModel, targets: &[&str]) -> Lora {
    let config = LoraConfig {
        rank: 2,
        alpha: 4.0,
        target_modules: targets.iter().map(|t| (*t).to_owned()).collect(),
    };
    Lora::new(base, config, 3).expect("lora")
}

fn examples() -> Vec<TrainingExample> {
    let ex = |tokens: Vec<u32>, from: usize| TrainingExample {
        learned: (0..tokens.len()).map(|i| i >= from).collect(),
        tokens,
        truncated: false,
    };
    vec![
        ex(vec![1, 5, 9, 12, 3, 17, 22], 4),
        ex(vec![1, 8, 30, 2], 2),
        ex(vec![1, 11, 11, 4, 39, 25], 3),
        ex(vec![1, 6, 7], 1),
    ]
}

fn batch(base: &BaseModel) -> Batch {
    let ex = examples();
    let rows: Vec<&TrainingExample> = ex.iter().take(2).collect();
    make_batch(base, &rows).expect("batch")
}

fn loss(base: &BaseModel, b: &Batch, l: &Lora) -> f64 {
    base.loss(b, Some(l))
        .and_then(|t| Ok(t.to_scalar::<f64>()?))
        .expect("loss")
}

/// Adds `delta` to element `(i, j)` of a variable.
fn nudge(var: &candle_core::Var, i: usize, j: usize, delta: f64) {
    let mut m = var.as_tensor().to_vec2::<f64>().expect("values");
    m[i][j] += delta;
    let t = Tensor::new(m, var.device()).expect("tensor");
    var.set(&t).expect("set");
}

#[test]
fn lora_gradients_match_finite_differences() {
    let base = tiny(DType::F64);
    let l = lora(&base, &Proj::ALL.map(Proj::name));
    l.randomize_b(11).expect("randomize");
    let b = batch(&base);
    let grads = base
        .loss(&b, Some(&l))
        .expect("loss")
        .backward()
        .expect("backward");
    let h = 1e-5;
    let mut checked = 0;
    for layer in 0..2 {
        for p in Proj::ALL {
            let (a_var, b_var) = l.var_pair(layer, p).expect("pair");
            for (var, (i, j)) in [(a_var, (1, 3)), (b_var, (2, 1))] {
                let g = grads
                    .get(var)
                    .expect("gradient")
                    .to_vec2::<f64>()
                    .expect("g")[i][j];
                nudge(var, i, j, h);
                let up = loss(&base, &b, &l);
                nudge(var, i, j, -2.0 * h);
                let down = loss(&base, &b, &l);
                nudge(var, i, j, h);
                let numeric = (up - down) / (2.0 * h);
                // Central differences in f64 are good to ~1e-10 here.
                assert!(
                    (g - numeric).abs() < 1e-9 + 1e-4 * numeric.abs(),
                    "layer {layer} {} {:?}: backprop {g:e}, finite difference {numeric:e}",
                    p.name(),
                    (i, j)
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 28);
}

#[test]
fn a_fresh_lora_leaves_the_model_unchanged() {
    let base = tiny(DType::F32);
    let l = lora(&base, &["q_proj", "down_proj"]);
    let tokens = [1, 4, 9, 16, 25];
    let plain = base.logits(&tokens, None).expect("logits");
    assert_eq!(plain.len(), tokens.len() * 40);
    assert_eq!(base.logits(&tokens, Some(&l)).expect("logits"), plain);
    l.randomize_b(1).expect("randomize");
    assert_ne!(base.logits(&tokens, Some(&l)).expect("logits"), plain);
}

#[test]
fn padding_does_not_change_a_rows_loss() {
    let base = tiny(DType::F64);
    let l = lora(&base, &["v_proj"]);
    l.randomize_b(5).expect("randomize");
    let ex = examples();
    // Row 1 alone vs. padded to row 0's length in a batch of two.
    let alone = make_batch(&base, &[&ex[1]]).expect("batch");
    let padded = make_batch(&base, &[&ex[1], &ex[1], &ex[0]]).expect("batch");
    let both = make_batch(&base, &[&ex[0]]).expect("batch");
    let (a, c) = (loss(&base, &alone, &l), loss(&base, &both, &l));
    let n = |e: &TrainingExample| e.learned.iter().skip(1).filter(|&&x| x).count() as f64;
    let want = (2.0 * a * n(&ex[1]) + c * n(&ex[0])) / (2.0 * n(&ex[1]) + n(&ex[0]));
    assert!((loss(&base, &padded, &l) - want).abs() < 1e-12);
}

#[test]
fn training_is_deterministic_in_the_seed_and_lowers_the_loss() {
    let base = tiny(DType::F32);
    let ex = examples();
    let options = TrainOptions {
        learning_rate: 3e-2,
        epochs: 15,
        batch_size: 2,
        warmup_steps: 2,
        ..TrainOptions::default()
    };
    let run = || {
        let l = lora(&base, &Proj::ALL.map(Proj::name));
        let report = train(&base, &l, &ex, &options, |_| {}).expect("train");
        (l, report)
    };
    let (first, report) = run();
    let (second, again) = run();
    assert_eq!(report.steps.len(), 30);
    let losses = |r: &TrainReport| r.steps.iter().map(|s| s.loss).collect::<Vec<_>>();
    assert_eq!(losses(&report), losses(&again), "same seed, same losses");
    let tokens = [1, 5, 9, 12];
    assert_eq!(
        base.logits(&tokens, Some(&first)).expect("logits"),
        base.logits(&tokens, Some(&second)).expect("logits")
    );
    let before = eval_loss(&base, None, &ex, 4).expect("eval");
    let after = eval_loss(&base, Some(&first), &ex, 4).expect("eval");
    eprintln!("tiny model: loss {before} → {after}");
    assert!(after < 0.5 * before, "loss {before} → {after}");
}

#[test]
fn bad_options_and_data_are_refused() {
    let base = tiny(DType::F32);
    let config = |t: &str| LoraConfig {
        target_modules: vec![t.to_owned()],
        ..LoraConfig::default()
    };
    let err = Lora::new(&base, config("lm_head"), 0).unwrap_err();
    assert!(err.to_string().contains("\"lm_head\""), "{err}");
    let zero = LoraConfig {
        rank: 0,
        ..LoraConfig::default()
    };
    assert!(Lora::new(&base, zero, 0).is_err());
    let l = lora(&base, &["q_proj"]);
    let nothing = TrainingExample {
        tokens: vec![1, 2],
        learned: vec![false, false],
        truncated: false,
    };
    let err = train(&base, &l, &[nothing], &TrainOptions::default(), |_| {}).unwrap_err();
    assert!(
        matches!(err, crate::Error::NotEnoughData { found: 0, .. }),
        "{err}"
    );
    let outside = TrainingExample {
        tokens: vec![1, 400],
        learned: vec![false, true],
        truncated: false,
    };
    assert!(train(&base, &l, &[outside], &TrainOptions::default(), |_| {}).is_err());
    // A diverged run: the loss is reported, not trained on.
    let (_, b) = l.var_pair(0, Proj::Q).expect("pair");
    let nan = Tensor::full(f32::NAN, b.shape(), b.device()).expect("nan");
    b.set(&nan).expect("set");
    let err = train(&base, &l, &examples(), &TrainOptions::default(), |_| {}).unwrap_err();
    assert!(
        matches!(err, crate::Error::NonFiniteLoss { step: 1, .. }),
        "{err}"
    );
}

#[test]
fn saved_adapters_load_as_the_same_delta() {
    let base = tiny(DType::F32);
    let l = lora(&base, &["k_proj", "gate_proj"]);
    l.randomize_b(2).expect("randomize");
    let dir = tempfile::tempdir().expect("tempdir");
    l.save_peft(dir.path(), "random-tiny").expect("save");
    let spec = base.spec();
    let modules: Vec<LoraModule> = (0..spec.num_layers)
        .flat_map(|i| Proj::ALL.map(|p| (i, p)))
        .map(|(i, p)| {
            let (out, inp) = p.shape(spec);
            LoraModule {
                module: p.module_path(i),
                a: format!("{}.lora_A", p.module_path(i)),
                b: format!("{}.lora_B", p.module_path(i)),
                in_features: inp,
                out_features: out,
            }
        })
        .collect();
    let id = AdapterId::new("t").expect("id");
    let loaded =
        load_peft(&id, dir.path(), Some("random-tiny"), &modules).expect("the loader reads it");
    assert_eq!(loaded.modules.len(), 4);
    let (a, b) = l.pair(1, Proj::Gate).expect("pair");
    let got = &loaded.modules["model.layers.1.mlp.gate_proj"];
    assert_eq!(got.rank, 2);
    // The loader keeps Aᵀ and (alpha/r)·Bᵀ.
    let a_t: Vec<f32> = a
        .t()
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("a");
    let b_t: Vec<f32> = (b.t().expect("t") * l.scale())
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("b");
    assert_eq!(got.a_t, a_t);
    for (x, y) in got.b_t.iter().zip(&b_t) {
        assert!((x - y).abs() <= 1e-7 * y.abs().max(1.0));
    }
    let wrong_base = load_peft(&id, dir.path(), Some("SmolLM2-135M-Instruct"), &modules);
    assert!(wrong_base.is_err());
}

#[test]
fn a_resumed_run_takes_the_same_steps_as_an_uninterrupted_one() {
    let base = tiny(DType::F32);
    let ex = examples();
    let options = TrainOptions {
        learning_rate: 3e-2,
        epochs: 4,
        batch_size: 2,
        warmup_steps: 1,
        ..TrainOptions::default()
    };
    let whole = lora(&base, &["q_proj", "up_proj"]);
    let report = train(&base, &whole, &ex, &options, |_| {}).expect("train");
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let first = lora(&base, &["q_proj", "up_proj"]);
        let mut t = Trainer::new(&base, &first, &ex, &options).expect("trainer");
        t.run_epoch(|_| {}).expect("epoch 1");
        t.run_epoch(|_| {}).expect("epoch 2");
        t.save_checkpoint(dir.path(), "run-a").expect("checkpoint");
    }
    let resumed = lora(&base, &["q_proj", "up_proj"]);
    let mut t = Trainer::new(&base, &resumed, &ex, &options).expect("trainer");
    t.resume(dir.path(), "run-a").expect("resume");
    assert_eq!((t.epochs_done(), t.steps_done()), (2, 4));
    let mut losses = Vec::new();
    while !t.is_done() {
        losses.extend(t.run_epoch(|_| {}).expect("epoch").iter().map(|s| s.loss));
    }
    let want: Vec<f32> = report.steps[4..].iter().map(|s| s.loss).collect();
    assert_eq!(
        losses, want,
        "the resumed steps are the uninterrupted run's"
    );
    let tokens = [1, 5, 9, 12];
    assert_eq!(
        base.logits(&tokens, Some(&resumed)).expect("logits"),
        base.logits(&tokens, Some(&whole)).expect("logits")
    );
    // Another run's checkpoint, another LoRA shape, or no checkpoint: refused.
    let mut t = Trainer::new(&base, &resumed, &ex, &options).expect("trainer");
    let err = t.resume(dir.path(), "run-b").unwrap_err();
    assert!(matches!(err, crate::Error::ResumeMismatch { .. }), "{err}");
    let other = lora(&base, &["q_proj"]);
    let mut t = Trainer::new(&base, &other, &ex, &options).expect("trainer");
    let err = t.resume(dir.path(), "run-a").unwrap_err();
    assert!(matches!(err, crate::Error::ResumeMismatch { .. }), "{err}");
    let empty = tempfile::tempdir().expect("tempdir");
    let err = t.resume(empty.path(), "run-a").unwrap_err();
    assert!(matches!(err, crate::Error::ResumeMismatch { .. }), "{err}");
}
