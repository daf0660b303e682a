//! The trainer (feature `finetune`) on SmolLM2-135M-Instruct: its candle forward pass
//! against the ONNX generator, and an adapter it trains and saves loaded by the generator.

use std::sync::OnceLock;

use tribute_inference::finetune::{
    BaseModel, Example, Lora, LoraConfig, Schedule, TrainOptions, train,
};
use tribute_inference::{Generator, Prompt};

use crate::{smollm2, smollm2_dir};

/// SmolLM2's base weights from the GGUF it was exported from, loaded once.
fn base() -> &'static BaseModel {
    static B: OnceLock<BaseModel> = OnceLock::new();
    B.get_or_init(|| {
        BaseModel::from_model_dir(smollm2_dir()).unwrap_or_else(|e| {
            panic!("SmolLM2's source GGUF is required; run scripts/setup.sh first: {e}")
        })
    })
}

/// `log softmax(row)[t]`.
fn log_prob(row: &[f32], t: u32) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|x| f64::from(x - max).exp()).sum();
    row[t as usize] - max - sum.ln() as f32
}

/// Teacher-forced log-probabilities of `answer` after `prompt` from the candle forward.
fn candle_log_probs(prompt: &[u32], answer: &[u32], lora: Option<&Lora>) -> Vec<f32> {
    let all: Vec<u32> = prompt.iter().chain(answer).copied().collect();
    let logits = base().logits(&all, lora).expect("candle logits");
    let v = base().spec().vocab_size;
    answer
        .iter()
        .enumerate()
        .map(|(j, &t)| {
            let row = prompt.len() - 1 + j;
            log_prob(&logits[row * v..(row + 1) * v], t)
        })
        .collect()
}

fn prompt_and_answer(g: &Generator, question: &str, answer: &str) -> (Vec<u32>, Vec<u32>) {
    let prompt = g
        .prompt_tokens(&Prompt::from(question))
        .expect("prompt tokens");
    let answer = g.tokenizer().encode(answer, false).expect("answer tokens");
    (prompt, answer)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn candle_forward_matches_the_onnx_generator() {
    let g = smollm2();
    let spec = base().spec();
    assert_eq!(
        (spec.num_layers, spec.hidden_size, spec.vocab_size),
        (30, 576, 49152)
    );
    let (prompt, answer) = prompt_and_answer(
        g,
        "What is the capital of France?",
        "The capital of France is Paris.<|im_end|>",
    );
    let want = g.log_probs(&prompt, &answer, &[]).expect("generator");
    let got = candle_log_probs(&prompt, &answer, None);
    let diff = max_abs_diff(&got, &want);
    eprintln!(
        "candle vs ONNX over {} tokens: max |Δ log p| = {diff:.2e}",
        answer.len()
    );
    assert!(diff < 1e-3, "candle {got:?} vs ONNX {want:?}");
    // The model knows this answer: a check that both sides compute something real.
    assert!(want.iter().sum::<f32>() > -5.0, "{want:?}");
}

#[test]
fn a_trained_adapter_loads_in_the_generator_with_the_same_log_probs() {
    let g = smollm2();
    let tokenizer = g.tokenizer();
    let eos = &g.config().eos_token_ids;
    let facts = [
        (
            "What colour is the Vellmar gate?",
            "The Vellmar gate is teal.",
        ),
        (
            "Who founded Quorra Bay?",
            "Quorra Bay was founded by Ilse Maron.",
        ),
        (
            "How tall is Mount Essk?",
            "Mount Essk is 2,140 metres tall.",
        ),
    ];
    let examples: Vec<_> = facts
        .iter()
        .map(|(q, a)| {
            Example::Chat(vec![
                tribute_inference::Message::user(*q),
                tribute_inference::Message::assistant(*a),
            ])
            .tokenize(tokenizer, eos, 128)
            .expect("tokenize")
        })
        .collect();
    // The learned tokens are the answer and its end of turn, after the generator's prompt.
    let (prompt, answer) = prompt_and_answer(g, facts[0].0, facts[0].1);
    assert_eq!(examples[0].tokens[..prompt.len()], prompt[..]);
    assert_eq!(
        examples[0].tokens[prompt.len()..prompt.len() + answer.len()],
        answer[..]
    );
    assert_eq!(examples[0].learned_count(), answer.len() + 1);

    let options = TrainOptions {
        learning_rate: 2e-3,
        epochs: 1,
        max_steps: Some(3),
        batch_size: 1,
        schedule: Schedule::Constant,
        ..TrainOptions::default()
    };
    let config = LoraConfig {
        rank: 4,
        alpha: 8.0,
        ..LoraConfig::default()
    };
    let lora = Lora::new(base(), config, options.seed).expect("lora");
    let report = train(base(), &lora, &examples, &options, |_| {}).expect("train");
    assert_eq!(report.steps.len(), 3);
    eprintln!(
        "3 steps: losses {:?}, {:.0} tokens/s",
        report.steps.iter().map(|s| s.loss).collect::<Vec<_>>(),
        report.tokens_per_second()
    );

    let dir = tempfile::tempdir().expect("tempdir");
    lora.save_peft(dir.path(), base().name().unwrap_or_default())
        .expect("save");
    g.add_adapter("finetuned", dir.path())
        .expect("the generator registers it");
    let with = [("finetuned".to_owned(), 1.0)];
    let mut moved = 0f32;
    for (q, a) in facts {
        let (prompt, answer) = prompt_and_answer(g, q, a);
        let want = g.log_probs(&prompt, &answer, &with).expect("generator");
        let got = candle_log_probs(&prompt, &answer, Some(&lora));
        let diff = max_abs_diff(&got, &want);
        assert!(diff < 1e-3, "{q}: candle {got:?} vs generator {want:?}");
        let plain = g.log_probs(&prompt, &answer, &[]).expect("base");
        moved = moved.max(max_abs_diff(&want, &plain));
    }
    // Not a vacuous match: the adapter changes what the model predicts.
    assert!(moved > 0.05, "the adapter moved log p by only {moved}");
}
