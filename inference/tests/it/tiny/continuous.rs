//! Continuous batching: requests join a running batch mid-decode and leave when they
//! finish, with the same tokens as alone; the queue bound (`Error::Overloaded`); scoring
//! between the steps of a long generation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::join_mid_decode;

/// A fresh generator on the tiny model (its own queue and batches), adapters registered.
fn fresh(options: GeneratorOptions) -> Generator {
    let f = fixture();
    let g = Generator::load_with(&f.model, options).expect("load the tiny model");
    g.add_adapter("a", &f.a).expect("register a");
    g.add_adapter("b", &f.b).expect("register b");
    g
}

#[test]
fn requests_join_a_running_batch_mid_decode_and_leave_early() {
    for io_binding in [false, true] {
        let g = fresh(GeneratorOptions {
            io_binding: Some(io_binding),
            ..GeneratorOptions::default()
        });
        let first = GenerateRequest::new(tokens(50, 4))
            .max_tokens(40)
            .ignore_eos(true);
        let joiners = [
            // Wider than the running batch: the batch's cache is padded on the left.
            GenerateRequest::new(tokens(51, 30))
                .max_tokens(20)
                .ignore_eos(true),
            // Narrower: the newcomer's cache is padded; it leaves after 3 tokens.
            GenerateRequest::new(tokens(52, 2))
                .max_tokens(3)
                .ignore_eos(true),
            GenerateRequest::new(tokens(53, 9))
                .max_tokens(25)
                .temperature(0.9)
                .seed(3),
            // Another adapter set: its own batch, stepped in turn.
            GenerateRequest::new(tokens(54, 6))
                .max_tokens(12)
                .ignore_eos(true)
                .adapter("a", 1.0),
        ];
        let got = join_mid_decode(&g, &first, &joiners, 6);
        let what = |i: usize| format!("io_binding {io_binding}, request {i}");
        for (i, (r, got)) in std::iter::once(&first)
            .chain(&joiners)
            .zip(&got)
            .enumerate()
        {
            assert_same(got, &run_one(&g, r), &what(i));
        }
        // The first request ran alone for 6 tokens, then with the three base-model joiners.
        assert_eq!(got[0].timings.batch_size, 4, "{}", what(0));
        assert_eq!(got[2].tokens.len(), 3);
        assert_eq!(
            got[4].timings.batch_size, 1,
            "the adapter row has its own batch"
        );
    }
}

#[test]
fn rows_leave_and_queued_requests_take_their_place() {
    // Two rows in flight at most, a queue of two: a batch of seven is fed in as rows
    // leave, each newcomer joining a batch that is mid-decode.
    let g = fresh(GeneratorOptions {
        max_batch: 2,
        max_queue: 2,
        ..GeneratorOptions::default()
    });
    let requests: Vec<GenerateRequest> = (0..7u64)
        .map(|i| {
            let r = GenerateRequest::new(tokens(60 + i, 3 + 5 * (i as usize % 4)))
                .max_tokens(4 + 7 * (i as usize % 3))
                .ignore_eos(true);
            if i == 4 { r.adapter("b", 1.0) } else { r }
        })
        .collect();
    let batch = g.generate_batch(&requests);
    for (i, (r, b)) in requests.iter().zip(&batch).enumerate() {
        let b = b.as_ref().unwrap_or_else(|e| panic!("row {i}: {e}"));
        assert_same(b, &run_one(tiny(), r), &format!("row {i}"));
        assert!(b.timings.batch_size <= 2, "row {i}: {:?}", b.timings);
    }
    assert!(
        batch
            .iter()
            .any(|b| b.as_ref().is_ok_and(|b| b.timings.batch_size == 2))
    );
}

#[test]
fn a_full_queue_refuses_requests_with_overloaded() {
    let g = fresh(GeneratorOptions {
        max_batch: 1,
        max_queue: 1,
        ..GeneratorOptions::default()
    });
    let long = GenerateRequest::new(tokens(70, 4))
        .max_tokens(50)
        .ignore_eos(true);
    let short = GenerateRequest::new(tokens(71, 5))
        .max_tokens(6)
        .ignore_eos(true);
    let mut running = g.stream(&long).expect("stream");
    running.next().expect("a piece").expect("ok");
    // In flight: 1 (the batch is full); this one waits in the queue.
    let mut waiting = g.stream(&short).expect("queued");
    for e in [
        err(g.generate(&short), "generate"),
        err(g.stream(&short), "stream"),
        g.generate_batch(std::slice::from_ref(&short))
            .pop()
            .expect("one result")
            .expect_err("generate_batch"),
    ] {
        assert!(
            matches!(
                e,
                Error::Overloaded {
                    in_flight: 1,
                    queued: 1
                }
            ),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("overloaded") && msg.contains("max_queue"),
            "{msg}"
        );
    }
    // Dropping the running stream frees its place: the queued one runs, then new ones.
    drop(running);
    let mut text = String::new();
    for p in &mut waiting {
        text.push_str(&p.expect("piece"));
    }
    let want = run_one(tiny(), &short);
    assert_same(
        &waiting.generation().expect("done"),
        &want,
        "the queued stream",
    );
    assert_eq!(text, want.text);
    assert_same(&run_one(&g, &short), &want, "after the queue drained");
}

#[test]
fn scoring_runs_between_the_steps_of_a_long_generation() {
    let g = fresh(GeneratorOptions::default());
    let ctx = toks(80, 9);
    let cont = toks(81, 6);
    let idle = g.log_probs(&ctx, &cont, &[]).expect("log_probs alone");
    let long = GenerateRequest::new(tokens(82, 4))
        .max_tokens(CONTEXT - 4)
        .ignore_eos(true);
    let finished = Arc::new(AtomicBool::new(false));
    let started = Arc::new(Barrier::new(2));
    let generation = {
        let (g, finished, started) = (g.clone(), finished.clone(), started.clone());
        std::thread::spawn(move || {
            let mut stream = g.stream(&long).expect("stream");
            stream.next().expect("a piece").expect("ok");
            started.wait();
            for p in &mut stream {
                p.expect("piece");
            }
            finished.store(true, Ordering::SeqCst);
            stream.generation().expect("done")
        })
    };
    started.wait();
    let t0 = Instant::now();
    let busy = g
        .log_probs(&ctx, &cont, &[])
        .expect("log_probs while generating");
    let masked = g
        .score_masked(&ctx, &cont, &[vec![true; ctx.len()]], &[])
        .expect("score_masked while generating");
    let waited = t0.elapsed();
    assert!(
        !finished.load(Ordering::SeqCst),
        "scoring waited for the whole generation ({waited:?})"
    );
    assert_eq!(busy, idle, "log_probs while a batch runs");
    assert_close(&masked[0], &idle, "score_masked while a batch runs");
    let done = generation.join().expect("generation thread");
    assert_eq!(done.tokens.len(), CONTEXT - 4);
    assert!(waited < Duration::from_secs(30));
}

#[test]
fn an_int4_export_loads_decodes_batches_and_scores() {
    // `--quant int4` (MatMulNBits) keeps the graph's inputs and outputs: the generator
    // loads it as it is; joins, adapters and scoring work on it.
    let f = fixture();
    let dir = scratch("int4");
    export(&[
        "--source",
        s(&f.hf),
        "--out",
        s(&dir),
        "--name",
        MODEL_NAME,
        "--quant",
        "int4",
    ]);
    let g = Generator::load(&dir).expect("load the int4 export");
    g.add_adapter("a", &f.a).expect("register a");
    let first = GenerateRequest::new(tokens(90, 5))
        .max_tokens(20)
        .ignore_eos(true);
    let joiners = [
        GenerateRequest::new(tokens(91, 17))
            .max_tokens(8)
            .ignore_eos(true),
        GenerateRequest::new(tokens(92, 3))
            .max_tokens(10)
            .ignore_eos(true)
            .adapter("a", 1.0),
    ];
    let got = join_mid_decode(&g, &first, &joiners, 4);
    for (i, (r, got)) in std::iter::once(&first)
        .chain(&joiners)
        .zip(&got)
        .enumerate()
    {
        assert_same(got, &run_one(&g, r), &format!("int4 request {i}"));
    }
    let ctx = toks(93, 8);
    let cont = toks(94, 5);
    let q = g.log_probs(&ctx, &cont, &[]).expect("int4 log_probs");
    let full = tiny().log_probs(&ctx, &cont, &[]).expect("fp32 log_probs");
    assert!(q.iter().all(|x| x.is_finite() && *x <= 0.0), "{q:?}");
    // Random tiny weights quantize coarsely (4 bits, 32-weight blocks): the point is that
    // scoring runs and stays near fp32, not how near.
    let mean = q.iter().zip(&full).map(|(a, b)| (a - b).abs()).sum::<f32>() / q.len() as f32;
    assert!(mean < 1.0, "int4 {q:?} vs fp32 {full:?}");
}
