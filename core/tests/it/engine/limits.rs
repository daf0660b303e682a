//! `[limits]`: requests over `max_top_k` / `max_new_tokens` and documents over the
//! per-document bounds are typed errors, refused before any work or any receipt.

use tribute::attribution::receipt::PayerKey;
use tribute::{Document, EngineConfig, Error};

use super::{KEY0, QUESTION, engine_in, signed_config};

#[test]
fn requests_and_documents_over_the_limits_are_typed_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = EngineConfig::from_toml(
        "[limits]\nmax_top_k = 3\nmax_new_tokens = 8\nmax_document_bytes = 2000\n",
    )
    .expect("a [limits] section parses");
    assert_eq!(config.limits.max_top_k, 3);
    let mut config = EngineConfig {
        limits: config.limits,
        ..signed_config(dir.path())
    };
    config.generation.max_tokens = 8;
    let key = PayerKey::from_hex(KEY0).expect("key");
    let engine = engine_in(dir.path(), config, Some(key), true);

    let over = |r: Result<tribute::Answer, Error>| match r {
        Err(e @ Error::OverLimit { .. }) => {
            assert_eq!(e.kind(), tribute::ErrorKind::Request);
            let Error::OverLimit {
                what, value, limit, ..
            } = e
            else {
                unreachable!()
            };
            (what, value, limit)
        }
        other => panic!("expected OverLimit, got {other:?}"),
    };
    assert_eq!(over(engine.ask(QUESTION).top_k(4).run()), ("top_k", 4, 3));
    assert_eq!(
        over(engine.ask(QUESTION).top_k(3).max_tokens(1_000_000).run()),
        ("max_tokens", 1_000_000, 8)
    );
    let err = engine
        .search(QUESTION)
        .top_k(64)
        .run()
        .expect_err("search over max_top_k");
    assert!(
        matches!(
            err,
            Error::OverLimit {
                what: "top_k",
                value: 64,
                limit: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("limits.max_top_k"), "{err}");
    // A zero top_k is still refused as before.
    assert!(matches!(
        engine.ask(QUESTION).top_k(0).run(),
        Err(Error::InvalidRequest(_))
    ));
    // No refused request signed or journaled anything.
    let journaled = engine.receipts(None).expect("journal").len();
    assert_eq!(journaled, 0, "a refused request left a receipt");

    // Documents: the engine's index takes the document limits from [limits].
    let err = engine
        .add_documents(vec![Document::new("big", "word ".repeat(500))], None)
        .expect_err("2,500 bytes > 2,000");
    assert!(
        matches!(
            &err,
            Error::Index(tribute::index::Error::DocumentTooLarge { what: "bytes", .. })
        ),
        "{err:?}"
    );

    // At the limits the ask answers and is journaled.
    let a = engine
        .ask(QUESTION)
        .top_k(3)
        .max_tokens(8)
        .run()
        .expect("within the limits");
    assert!(a.usage.answer_tokens <= 8);
    assert!(a.receipt.is_some());
    assert_eq!(engine.receipts(None).expect("journal").len(), 1);
}
