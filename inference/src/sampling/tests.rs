//! Unit tests of `sampling`.

use super::*;

/// Only plain greedy decoding may take a graph's argmax instead of reading the logits.
#[test]
fn only_plain_greedy_picks_the_argmax() {
    let with = |f: fn(&mut SamplingParams)| {
        let mut p = SamplingParams::greedy();
        f(&mut p);
        Sampler::new(p).expect("valid").picks_argmax()
    };
    assert!(with(|_| {}));
    assert!(with(|p| p.top_k = 1), "top-1 is greedy");
    assert!(!with(|p| p.temperature = 0.7));
    assert!(!with(|p| p.repetition_penalty = 1.2));
    assert!(!with(|p| p.no_repeat_ngram = 3));
    assert!(!with(|p| p.no_end_after_colon = true));
}

#[test]
fn greedy_takes_argmax_and_lowest_on_ties() {
    let mut s = Sampler::new(SamplingParams::greedy()).unwrap();
    assert_eq!(s.sample(&mut [0.1, 3.0, 3.0, -1.0], &[]), Some(1));
}

#[test]
fn repetition_penalty_matches_hf_rule() {
    let params = SamplingParams {
        repetition_penalty: 2.0,
        ..Default::default()
    };
    let mut s = Sampler::new(params).unwrap();
    let mut logits = [4.0, 3.0, -1.0];
    // token 0 seen: 4 → 2, so token 1 (3.0) wins; token 2 seen: -1 → -2.
    assert_eq!(s.sample(&mut logits, &[0, 2, 0]), Some(1));
    assert_eq!(logits, [2.0, 3.0, -2.0]);
}

#[test]
fn same_seed_same_tokens_and_distribution_is_followed() {
    let params = SamplingParams {
        temperature: 1.0,
        seed: 7,
        ..Default::default()
    };
    let logits = [0.0f32, (3.0f32).ln(), f32::NEG_INFINITY.max(-50.0)];
    let draw = |p: &SamplingParams| {
        let mut s = Sampler::new(p.clone()).unwrap();
        (0..4000)
            .map(|_| s.sample(&mut logits.clone(), &[]).unwrap())
            .collect::<Vec<_>>()
    };
    let a = draw(&params);
    assert_eq!(a, draw(&params));
    let ones = a.iter().filter(|&&t| t == 1).count() as f64 / a.len() as f64;
    assert!((ones - 0.75).abs() < 0.03, "p(token 1) = {ones}, want 0.75");
    assert!(!a.contains(&2));
}

#[test]
fn top_k_and_top_p_cut_the_tail() {
    let logits = [5.0f32, 4.9, 4.8, 0.0, -1.0];
    for params in [
        SamplingParams {
            temperature: 1.0,
            top_k: 2,
            ..Default::default()
        },
        SamplingParams {
            temperature: 1.0,
            top_p: 0.6,
            ..Default::default()
        },
    ] {
        let mut s = Sampler::new(params.clone()).unwrap();
        for _ in 0..500 {
            let t = s.sample(&mut logits.clone(), &[]).unwrap();
            assert!(t <= 1, "{params:?} sampled {t}");
        }
    }
}

/// Greedy picks of `steps` (one logit row per step), with the rows after the guard.
fn run<const N: usize>(s: &mut Sampler, steps: &[[f32; N]]) -> (Vec<u32>, Vec<[f32; N]>) {
    let mut picked = Vec::new();
    let mut rows = Vec::new();
    for row in steps {
        let mut l = *row;
        picked.push(s.sample(&mut l, &[]).unwrap());
        rows.push(l);
    }
    (picked, rows)
}

#[test]
fn token_endings_read_the_last_visible_character() {
    assert_eq!(TokenEnd::of_text(" is:"), TokenEnd::Colon);
    assert_eq!(TokenEnd::of_text("：\n"), TokenEnd::Colon);
    assert_eq!(TokenEnd::of_text(" \t"), TokenEnd::Blank);
    assert_eq!(TokenEnd::of_text(""), TokenEnd::Blank);
    assert_eq!(TokenEnd::of_text(" \n\t"), TokenEnd::LineBreak);
    assert_eq!(TokenEnd::of_text(":)"), TokenEnd::Other);
    assert_eq!(TokenEnd::of_text(" court."), TokenEnd::Sentence);
    assert_eq!(TokenEnd::of_text("?\")\n"), TokenEnd::Sentence);
    assert_eq!(TokenEnd::of_text("。"), TokenEnd::Sentence);
    assert_eq!(TokenEnd::of_text(" U.S"), TokenEnd::Other);
}

#[test]
fn no_end_after_colon_holds_the_end_until_something_follows_the_colon() {
    // Vocabulary: 0 = end of sequence, 1 = "is:", 2 = " " (blank), 3 = "No".
    use TokenEnd::{Blank, Colon, Other};
    let endings = TokenEndings::new(vec![Other, Colon, Blank, Other], vec![0]);
    let params = SamplingParams {
        no_end_after_colon: true,
        ..Default::default()
    };
    let mut s = Sampler::new(params.clone())
        .unwrap()
        .with_token_endings(Some(endings.clone()));
    // The end is the first choice at every step after "is:".
    let steps = [
        [0.0, 5.0, 1.0, 0.0],
        [9.0, 1.0, 5.0, 0.0],
        [9.0, 1.0, 0.0, 5.0],
        [9.0, 1.0, 0.0, 5.0],
    ];
    let (picked, rows) = run(&mut s, &steps);
    // After "is:" and after the blank that follows it the end is held back; once "No"
    // follows, the model may end.
    assert_eq!(picked, [1, 2, 3, 0]);
    assert_eq!(rows[1][0], f32::NEG_INFINITY);
    assert_eq!(rows[2][0], f32::NEG_INFINITY);
    assert_eq!(rows[3], steps[3]);

    // Off, or without the vocabulary's endings, the end is taken at once.
    let off = Sampler::new(SamplingParams::greedy()).unwrap();
    let blind = Sampler::new(params).unwrap();
    for mut s in [off.with_token_endings(Some(endings)), blind] {
        let (picked, rows) = run(&mut s, &steps[..2]);
        assert_eq!(picked, [1, 0]);
        assert_eq!(rows, steps[..2]);
    }
}

#[test]
fn ngram_block_bans_the_token_that_repeats_a_generated_bigram() {
    let params = SamplingParams {
        no_repeat_ngram: 2,
        ..Default::default()
    };
    let mut s = Sampler::new(params).unwrap();
    // Picks 1, 2, 1; then 2 again would repeat the bigram (1, 2): its logit becomes
    // −∞ and the runner-up, 3, is taken. The other logits are untouched.
    let steps = [
        [0.0, 5.0, 1.0, 0.0],
        [0.0, 1.0, 5.0, 0.0],
        [0.0, 5.0, 1.0, 0.0],
        [0.5, 1.0, 5.0, 4.0],
    ];
    let (picked, rows) = run(&mut s, &steps);
    assert_eq!(picked, [1, 2, 1, 3]);
    assert_eq!(rows[3], [0.5, 1.0, f32::NEG_INFINITY, 4.0]);
    assert_eq!(&rows[..3], &steps[..3]);
}

#[test]
fn ngram_block_ignores_the_prompt_and_trigram_needs_two_tokens_of_context() {
    let params = SamplingParams {
        no_repeat_ngram: 3,
        ..Default::default()
    };
    let mut s = Sampler::new(params).unwrap();
    // The context (prompt) repeats (1, 2, 1) but only generated tokens count.
    let mut l = [0.0, 5.0, 1.0, 0.0];
    assert_eq!(s.sample(&mut l, &[1, 2, 1, 2, 1]), Some(1));
    // Generated 1, 2, 1, 2: the trigram (1, 2, 1) is blocked at the fifth step, and
    // only there ((2, 1, 2) was never generated before the fourth step).
    let steps = [
        [0.0, 1.0, 5.0, 0.0],
        [0.0, 5.0, 1.0, 0.0],
        [0.0, 1.0, 5.0, 0.0],
        [0.0, 5.0, 1.0, 2.0],
    ];
    let (picked, _) = run(&mut s, &steps);
    assert_eq!(picked, [2, 1, 2, 3]);
}

#[test]
fn repeat_stop_answers_the_stop_token_once_the_model_keeps_repeating() {
    let params = SamplingParams {
        no_repeat_ngram: 1,
        repeat_stop: 2,
        ..Default::default()
    };
    let mut s = Sampler::new(params).unwrap().with_stop_token(Some(0));
    let prefers_1 = [0.0, 5.0, 1.0, 2.0];
    // 1; then 1 is blocked once (3 taken), then again: the second blocked first
    // choice stops the sequence.
    let (picked, _) = run(&mut s, &[prefers_1, prefers_1, prefers_1]);
    assert_eq!(picked, [1, 3, 0]);
    // Without a stop token the guard only blocks.
    let mut s = Sampler::new(s.params().clone()).unwrap();
    let (picked, _) = run(&mut s, &[prefers_1, prefers_1, prefers_1]);
    assert_eq!(picked, [1, 3, 2]);
}

#[test]
fn repeat_stop_grace_lets_the_model_finish_its_sentence() {
    // Vocabulary: 0 = end of sequence, 1 = " order", 2 = " court", 3 = ".", 4 = "\n".
    use TokenEnd::{LineBreak, Other, Sentence};
    let endings = TokenEndings::new(vec![Other, Other, Other, Sentence, LineBreak], vec![0]);
    let params = |grace| SamplingParams {
        no_repeat_ngram: 1,
        repeat_stop: 1,
        repeat_stop_grace: grace,
        ..Default::default()
    };
    let sampler = |grace| {
        Sampler::new(params(grace))
            .unwrap()
            .with_stop_token(Some(0))
            .with_token_endings(Some(endings.clone()))
    };
    let row = |first: usize, second: usize| {
        let mut r = [0.0; 5];
        r[first] = 5.0;
        r[second] = 4.0;
        r
    };
    // " order" again is the looping first choice at the second step: " court" is taken
    // instead, then "." ends the sentence and the sequence stops after it.
    let steps = [row(1, 0), row(1, 2), row(2, 3), row(3, 2), row(2, 4)];
    assert_eq!(run(&mut sampler(8), &steps).0, [1, 2, 3, 0, 0]);
    // No grace: the stop comes at once, in the middle of the sentence.
    assert_eq!(run(&mut sampler(0), &steps).0, [1, 0, 0, 0, 0]);
    // A sentence that does not end within the grace is stopped after it.
    let rambling = [row(1, 0), row(1, 2), row(2, 4), row(2, 4), row(2, 4)];
    // (" court" is blocked after its first use, so the runner-up "\n" ends the line.)
    assert_eq!(run(&mut sampler(8), &rambling).0, [1, 2, 4, 0, 0]);
    let unending = [
        row(1, 0),
        row(1, 2),
        [0.0, 0.0, 5.0, 0.0, 0.0],
        [0.0; 5],
        [0.0; 5],
    ];
    let mut s = sampler(1);
    assert_eq!(run(&mut s, &unending).0, [1, 2, 0, 0, 0]);
    // Already at a sentence's end when the model starts looping: stop at once.
    let at_end = [row(3, 0), row(3, 1), row(1, 2)];
    assert_eq!(run(&mut sampler(8), &at_end).0, [3, 0, 0]);
    // Without the vocabulary's endings the grace cannot see sentences: stop at once.
    let mut blind = Sampler::new(params(8)).unwrap().with_stop_token(Some(0));
    assert_eq!(run(&mut blind, &steps).0, [1, 0, 0, 0, 0]);
}

#[test]
fn guard_off_is_bit_identical_and_leaves_logits_alone() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let steps: Vec<[f32; 4]> = (0..64)
        .map(|_| std::array::from_fn(|_| rng.random::<f32>() * 4.0 - 2.0))
        .collect();
    let mut plain = Sampler::new(SamplingParams::greedy()).unwrap();
    let mut off = Sampler::new(SamplingParams {
        no_repeat_ngram: 0,
        repeat_stop: 3,
        ..Default::default()
    })
    .unwrap()
    .with_stop_token(Some(0));
    let (a, rows_a) = run(&mut plain, &steps);
    let (b, rows_b) = run(&mut off, &steps);
    assert_eq!(a, b);
    assert_eq!(rows_a, steps);
    assert_eq!(rows_b, steps);
    let argmaxes: Vec<u32> = steps.iter().map(|r| argmax(r)).collect();
    assert_eq!(a, argmaxes);
}

#[test]
fn bad_settings_and_nan_logits_are_refused() {
    for p in [
        SamplingParams {
            temperature: -1.0,
            ..Default::default()
        },
        SamplingParams {
            top_p: 0.0,
            ..Default::default()
        },
        SamplingParams {
            repetition_penalty: f32::NAN,
            ..Default::default()
        },
    ] {
        assert!(matches!(Sampler::new(p), Err(Error::InvalidRequest(_))));
    }
    let mut s = Sampler::new(SamplingParams::greedy()).unwrap();
    assert_eq!(s.sample(&mut [0.0, f32::NAN], &[]), None);
}
