//! Streaming, cancellation and stop strings.

use super::*;

#[test]
fn stream_pieces_concatenate_to_the_generation() {
    let g = tiny();
    for r in [
        GenerateRequest::new(tokens(30, 6))
            .max_tokens(32)
            .ignore_eos(true),
        GenerateRequest::new("stream me")
            .max_tokens(25)
            .temperature(1.0)
            .seed(5),
    ] {
        let want = run_one(g, &r);
        let mut stream = g.stream(&r).expect("stream");
        assert!(
            stream.generation().is_none(),
            "not finished before the first piece"
        );
        let mut pieces = Vec::new();
        for p in &mut stream {
            let p = p.expect("piece");
            assert!(!p.is_empty(), "no empty pieces");
            pieces.push(p);
        }
        assert!(pieces.len() > 1, "several pieces: {pieces:?}");
        assert_eq!(pieces.concat(), want.text);
        let done = stream.generation().expect("finished generation");
        assert_same(&done, &want, "stream generation()");
        assert!(stream.next().is_none(), "a finished stream stays finished");
    }
}

#[test]
fn stream_cancel_ends_it_with_cancelled() {
    let g = tiny();
    let r = GenerateRequest::new(tokens(31, 6))
        .max_tokens(60)
        .ignore_eos(true);
    let full = run_one(g, &r);
    let mut stream = g.stream(&r).expect("stream");
    let mut text = String::new();
    for _ in 0..3 {
        text.push_str(&stream.next().expect("a piece").expect("ok"));
    }
    stream.cancel();
    assert!(stream.next().is_none(), "nothing after cancel()");
    let got = stream.generation().expect("generation after cancel");
    assert_eq!(got.finish_reason, FinishReason::Cancelled);
    assert!(
        got.tokens.len() >= 3 && got.tokens.len() < 60,
        "{}",
        got.tokens.len()
    );
    assert_eq!(got.tokens[..], full.tokens[..got.tokens.len()]);
    assert_eq!(got.text, text);
    assert!(full.text.starts_with(&got.text));
    drop(stream);
    // The session went back to the pool.
    assert_same(&run_one(g, &r), &full, "after a cancelled stream");
}

#[test]
fn cancel_token_from_another_thread_stops_generate() {
    let g = tiny();
    // Long enough to cancel mid-way; short enough that other tests' rows batched with it
    // stay within the context (see `batch_rows_near_the_context_limit`).
    let r = GenerateRequest::new(tokens(32, 4))
        .max_tokens(150)
        .ignore_eos(true);
    let full = run_one(g, &r);
    assert_eq!(full.tokens.len(), 150);

    // Cancelled (from another thread) before it starts: no forward pass at all.
    let token = CancelToken::new();
    let t2 = token.clone();
    std::thread::spawn(move || t2.cancel())
        .join()
        .expect("join");
    let got = run_one(g, &r.clone().cancel_token(token));
    assert_eq!(got.finish_reason, FinishReason::Cancelled);
    assert!(got.tokens.is_empty());

    // Cancelled while running.
    let token = CancelToken::new();
    let t2 = token.clone();
    let go = Arc::new(Barrier::new(2));
    let go2 = go.clone();
    let canceller = std::thread::spawn(move || {
        go2.wait();
        std::thread::sleep(std::time::Duration::from_millis(2));
        t2.cancel();
    });
    go.wait();
    let got = run_one(g, &r.clone().cancel_token(token));
    canceller.join().expect("join");
    assert_eq!(got.finish_reason, FinishReason::Cancelled);
    assert!(got.tokens.len() < full.tokens.len());
    assert_eq!(got.tokens[..], full.tokens[..got.tokens.len()]);
    assert!(full.text.starts_with(&got.text));
}

// -------------------------------------------------------------------------------------------
// 4. Stop strings

#[test]
fn stop_string_cuts_the_text_and_is_never_streamed() {
    let g = tiny();
    let base = GenerateRequest::new(tokens(40, 5))
        .max_tokens(60)
        .ignore_eos(true);
    let full = run_one(g, &base);
    let stop = ascii_stop(&full.text).expect("an ASCII pair in the output");
    let cut = full.text.find(&stop).expect("stop in text");
    // Several stop strings: the earliest match wins; one never matches.
    let r = base.clone().stop("\u{10FFFF}never").stop(stop.clone());
    let got = run_one(g, &r);
    assert_eq!(got.finish_reason, FinishReason::Stop(stop.clone()));
    assert_eq!(got.text, full.text[..cut]);
    assert!(got.tokens.len() < full.tokens.len());
    assert_eq!(got.tokens[..], full.tokens[..got.tokens.len()]);

    let mut stream = g.stream(&r).expect("stream");
    let mut pieces = Vec::new();
    for p in &mut stream {
        pieces.push(p.expect("piece"));
    }
    let streamed = pieces.concat();
    assert_eq!(
        streamed, got.text,
        "streamed text stops before the stop string"
    );
    let first = &stop[..1];
    assert!(
        !streamed.ends_with(first) || full.text[..cut].ends_with(first),
        "the stop string's first character was streamed: {pieces:?}"
    );
    assert_same(
        &stream.generation().expect("done"),
        &got,
        "stream with stop",
    );
}

#[test]
fn stop_string_prefix_is_held_back_then_released() {
    let g = tiny();
    let r = GenerateRequest::new(tokens(41, 5))
        .max_tokens(30)
        .ignore_eos(true);
    let full = run_one(g, &r);
    // The text's last character followed by a character the byte tokenizer cannot produce
    // here: a prefix of the stop string is pending at the end, and must still come out.
    let last = full.text.chars().last().expect("some text");
    let stop = format!("{last}\u{10FFFF}\u{10FFFF}");
    let mut stream = g.stream(&r.clone().stop(stop)).expect("stream");
    let mut pieces = Vec::new();
    for p in &mut stream {
        pieces.push(p.expect("piece"));
    }
    assert_eq!(pieces.concat(), full.text);
    let done = stream.generation().expect("done");
    assert_eq!(done.finish_reason, FinishReason::Length);
    assert_eq!(done.text, full.text);
}
