//! `tribute::finetune` on SmolLM2-135M-Instruct's source GGUF: a short run that writes a
//! PEFT adapter and a signed provenance manifest, resumes, keeps the best epoch, and refuses
//! bad input.

use std::path::Path;

use tribute::attribution::provenance::{ProvenanceError, SignedProvenance};
use tribute::finetune::{FinetuneData, FinetuneEvent, FinetuneOptions, finetune};
use tribute::inference::finetune::{LoraConfig, Schedule, TrainOptions};
use tribute::inference::{Error as InferenceError, GenerateRequest, Generator};
use tribute::qa::{AdapterQuestion, evaluate_adapter};
use tribute::{Address, Error, PayerKey};

const ALICE: &str = "0x00000000000000000000000000000000000a11ce";

fn write_data(dir: &Path, lines: &[String]) -> std::path::PathBuf {
    let path = dir.join("data.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").expect("write data");
    path
}

fn facts() -> Vec<String> {
    let mut lines: Vec<String> = [
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
    ]
    .iter()
    .map(|(q, a)| {
        serde_json::json!({"question": q, "answer": a, "contributor": ALICE, "datanet": "facts"})
            .to_string()
    })
    .collect();
    // A document without a contributor: credited to the trainer. Long: cut to max_length.
    lines.push(
        serde_json::json!({"id": "d1", "text": "The Vellmar gate stands at the north end of Quorra Bay. ".repeat(20)})
            .to_string(),
    );
    lines
}

fn options() -> FinetuneOptions {
    FinetuneOptions {
        lora: LoraConfig {
            rank: 2,
            alpha: 4.0,
            target_modules: vec!["q_proj".into(), "v_proj".into()],
        },
        train: TrainOptions {
            learning_rate: 2e-3,
            epochs: 2,
            batch_size: 2,
            schedule: Schedule::Constant,
            ..TrainOptions::default()
        },
        max_length: 64,
        eval_split_bps: 2_500,
        patience: None,
        default_datanet: "misc".into(),
    }
}

fn inference_err(e: &Error) -> Option<&InferenceError> {
    match e {
        Error::Inference(i) => Some(i),
        _ => None,
    }
}

#[test]
fn finetune_writes_a_signed_adapter_resumes_and_refuses_bad_input() {
    let base = tribute::inference::default_model_dir();
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = FinetuneData::Jsonl(write_data(tmp.path(), &facts()));
    let out = tmp.path().join("adapter");
    let key = PayerKey::random();
    let mut events = Vec::new();
    let report = finetune(&base, &data, &out, &options(), Some(&key), false, |e| {
        events.push(e.clone())
    })
    .expect("finetune");
    // 4 examples, 25 % held out: 3 trained in batches of 2, 2 epochs.
    assert_eq!(
        (report.examples, report.train_examples, report.held_out),
        (4, 3, 1)
    );
    assert_eq!((report.steps, report.epochs), (4, 2));
    assert_eq!(report.truncated, 1);
    assert_eq!(report.eval_losses.len(), 2);
    let steps = events
        .iter()
        .filter(|e| matches!(e, FinetuneEvent::Step(_)))
        .count();
    assert_eq!(steps, 4);
    assert!(report.tokens_per_second > 0.0);

    // The manifest: signed by the trainer, names the adapter files and the data.
    let signed = SignedProvenance::read(&out).expect("provenance.json");
    let verified = signed.verify(&out).expect("it verifies");
    assert_eq!(Some(verified.manifest_hash), report.provenance_hash);
    let m = &signed.manifest;
    assert_eq!(m.trainer, key.address());
    assert_eq!(m.documents.len(), 3);
    assert_eq!(m.training.steps, 4);
    let alice: Address = ALICE.parse().expect("address");
    assert!(m.documents.iter().all(|d| {
        (d.contributor == alice && d.datanet == "facts")
            || (d.contributor == key.address() && d.datanet == "misc")
    }));
    let shares: u32 = m.contributors.iter().map(|c| u32::from(c.share_bps)).sum();
    assert_eq!(shares, 10_000);

    // A changed adapter file is refused.
    let weights = out.join("adapter_model.safetensors");
    let mut bytes = std::fs::read(&weights).expect("weights");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&weights, &bytes).expect("write");
    assert!(matches!(
        signed.verify(&out),
        Err(ProvenanceError::AdapterMismatch { .. })
    ));

    // Resuming the finished run changes nothing; another run's options are refused.
    let again = finetune(&base, &data, &out, &options(), None, true, |_| {}).expect("resume");
    assert_eq!(
        (again.steps, again.eval_losses),
        (4, report.eval_losses.clone())
    );
    let mut other = options();
    other.train.seed = 9;
    let err = finetune(&base, &data, &out, &other, None, true, |_| {}).unwrap_err();
    assert!(
        matches!(
            inference_err(&err),
            Some(InferenceError::ResumeMismatch { .. })
        ),
        "{err}"
    );

    // Bad input: a bad line (named), tiny data, an unknown module, a missing checkpoint.
    let mut lines = facts();
    lines.insert(2, "{\"question\": \"no answer\"}".into());
    let bad = FinetuneData::Jsonl(write_data(tmp.path(), &lines));
    let err = finetune(&base, &bad, &out, &options(), None, false, |_| {}).unwrap_err();
    assert!(
        matches!(
            inference_err(&err),
            Some(InferenceError::TrainingData { line: 3, .. })
        ),
        "{err}"
    );
    let tiny = FinetuneData::Jsonl(write_data(tmp.path(), &facts()[..1]));
    let err = finetune(&base, &tiny, &out, &options(), None, false, |_| {}).unwrap_err();
    assert!(
        matches!(
            inference_err(&err),
            Some(InferenceError::NotEnoughData {
                found: 1,
                needed: 2
            })
        ),
        "{err}"
    );
    let mut unknown = options();
    unknown.lora.target_modules = vec!["lm_head".into()];
    let err = finetune(&base, &data, &out, &unknown, None, false, |_| {}).unwrap_err();
    assert!(
        matches!(
            inference_err(&err),
            Some(InferenceError::UnknownTargetModule { .. })
        ),
        "{err}"
    );
    let no_source = tmp.path().join("model");
    std::fs::create_dir(&no_source).expect("dir");
    let cfg = std::fs::read_to_string(base.join("tribute.json")).expect("tribute.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&cfg).expect("json");
    cfg["source"]["path"] = "missing-model.gguf".into();
    std::fs::write(no_source.join("tribute.json"), cfg.to_string()).expect("write");
    let err = finetune(&no_source, &data, &out, &options(), None, false, |_| {}).unwrap_err();
    assert!(
        matches!(
            inference_err(&err),
            Some(InferenceError::SourceCheckpointMissing { .. })
        ),
        "{err}"
    );
}

#[test]
fn finetune_keeps_the_epoch_with_the_lowest_held_out_loss() {
    let base = tribute::inference::default_model_dir();
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = FinetuneData::Jsonl(write_data(tmp.path(), &facts()));
    let out = tmp.path().join("adapter");
    // A learning rate this high overshoots after the first epochs: the held-out loss goes
    // back up, and the adapter written must be the best epoch's, not the last one's.
    let mut opts = options();
    opts.train.learning_rate = 5e-2;
    opts.train.epochs = 4;
    let key = PayerKey::random();
    let report = finetune(&base, &data, &out, &opts, Some(&key), false, |_| {}).expect("finetune");
    assert_eq!(report.epochs, 4);
    let losses = &report.eval_losses;
    let best = (0..losses.len())
        .min_by(|&a, &b| losses[a].total_cmp(&losses[b]))
        .expect("losses");
    let kept = report.kept.expect("kept epoch");
    assert_eq!(kept.epoch, best + 1, "{losses:?}");
    assert_eq!(kept.eval_loss, Some(losses[best]));
    assert!(
        kept.epoch < report.epochs,
        "the last epoch was the best: {losses:?}"
    );
    assert_eq!(kept.steps, 2 * kept.epoch);

    // The adapter is byte for byte the one saved at that epoch, the only one kept aside.
    let checkpoint = out.join("checkpoint");
    let aside: Vec<_> = std::fs::read_dir(&checkpoint)
        .expect("checkpoint")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("best-"))
        .collect();
    assert_eq!(aside, vec![format!("best-{}", kept.epoch)]);
    for file in ["adapter_model.safetensors", "adapter_config.json"] {
        assert_eq!(
            std::fs::read(out.join(file)).expect("out"),
            std::fs::read(checkpoint.join(format!("best-{}", kept.epoch)).join(file))
                .expect("best"),
            "{file}"
        );
    }
    // The manifest describes the adapter kept: its steps, and it verifies.
    let signed = SignedProvenance::read(&out).expect("provenance.json");
    signed.verify(&out).expect("it verifies");
    assert_eq!(signed.manifest.training.steps, kept.steps as u64);

    // `eval adapter` on it: each side's answer is what the generator itself gives, scored
    // against the expected words.
    let generator = Generator::load(&base).expect("generator");
    let question = "What colour is the Vellmar gate?";
    let questions = vec![AdapterQuestion {
        question: question.into(),
        answer: Some("The Vellmar gate is teal.".into()),
        expect: Some("teal".into()),
    }];
    let mut seen = 0;
    let eval = evaluate_adapter(&generator, &out, &questions, 8, |i, n, _| {
        assert_eq!((i, n), (seen, 1));
        seen += 1;
    })
    .expect("eval adapter");
    assert_eq!((eval.examples, seen), (1, 1));
    let request = GenerateRequest::new(question).max_tokens(8);
    let reference = Generator::load(&base).expect("generator");
    reference.add_adapter("facts", &out).expect("adapter");
    let plain = reference.generate(&request).expect("base").text;
    let tuned = reference
        .generate(&request.clone().adapter("facts", 1.0))
        .expect("adapter")
        .text;
    let row = &eval.rows[0];
    assert_eq!(
        (row.base.text.as_str(), row.adapter.text.as_str()),
        (plain.trim(), tuned.trim())
    );
    assert_eq!(row.gold, "teal");
    for (answer, side) in [(&row.base, &eval.base), (&row.adapter, &eval.adapter)] {
        let contains = answer.text.to_lowercase().contains("teal");
        assert_eq!(
            answer.contains_answer,
            f64::from(u8::from(contains)),
            "{answer:?}"
        );
        assert_eq!(side.contains_answer, answer.contains_answer);
    }
    let missing = evaluate_adapter(
        &generator,
        &tmp.path().join("nowhere"),
        &questions,
        8,
        |_, _, _| {},
    );
    assert!(matches!(missing, Err(Error::Inference(_))), "{missing:?}");

    // A resumed run of the finished training keeps the same epoch.
    let again = finetune(&base, &data, &out, &opts, None, true, |_| {}).expect("resume");
    assert_eq!(again.kept, Some(kept));
    assert_eq!(
        std::fs::read(out.join("adapter_model.safetensors")).expect("out"),
        std::fs::read(
            checkpoint
                .join(format!("best-{}", kept.epoch))
                .join("adapter_model.safetensors")
        )
        .expect("best")
    );
}

#[test]
fn the_held_out_share_is_checked() {
    let mut o = FinetuneOptions::default();
    o.set_held_out_percent(12.5).expect("12.5 %");
    assert_eq!(o.eval_split_bps, 1_250);
    o.set_held_out_percent(0.0).expect("none");
    assert_eq!(o.eval_split_bps, 0);
    for bad in [100.0, -1.0, f64::NAN] {
        assert!(
            matches!(o.set_held_out_percent(bad), Err(Error::InvalidRequest(_))),
            "{bad}"
        );
    }
    assert_eq!(o.eval_split_bps, 0, "a refused share changes nothing");
}
