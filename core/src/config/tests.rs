use super::*;

#[test]
fn guard_is_on_by_default_and_off_is_plain_greedy() {
    let g = GenerationConfig::default();
    let s = g.sampling();
    assert_eq!(
        (
            s.no_repeat_ngram,
            s.repeat_stop,
            s.repeat_stop_grace,
            s.no_end_after_colon
        ),
        (4, 3, 32, true)
    );
    // Off: exactly the sampler settings asks used before the guard existed.
    assert_eq!(
        g.without_guard().sampling(),
        tribute_inference::SamplingParams::greedy()
    );
}

#[test]
fn hub_models_are_names_not_paths() {
    let mut c = EngineConfig::from_toml("model = \"hf:org/name@v1\"").unwrap();
    c.resolve_paths(Path::new("/base"));
    assert_eq!(c.model, Some(PathBuf::from("hf:org/name@v1")));
    let mut c = EngineConfig::from_toml("model = \"models/x\"").unwrap();
    c.resolve_paths(Path::new("/base"));
    assert_eq!(c.model_dir().unwrap(), PathBuf::from("/base/models/x"));
    let bad = EngineConfig::from_toml("model = \"hf:nonsense\"").unwrap();
    assert_eq!(
        bad.model_dir().unwrap_err().kind(),
        crate::ErrorKind::Request
    );
}

#[test]
fn postgres_journal_and_replica_are_urls_not_paths() {
    let url = "postgres://app:pw@db:5432/tribute";
    let mut c = EngineConfig::from_toml(&format!(
        "replica_url = \"postgres://app@replica/kb\"\n[receipts]\njournal = \"{url}\"\n"
    ))
    .unwrap();
    c.resolve_paths(Path::new("/base"));
    assert_eq!(c.receipts.journal, Some(PathBuf::from(url)));
    assert_eq!(c.replica_url.as_deref(), Some("postgres://app@replica/kb"));
    let mut c = EngineConfig::from_toml("[receipts]\njournal = \"receipts\"\n").unwrap();
    c.resolve_paths(Path::new("/base"));
    assert_eq!(c.receipts.journal, Some(PathBuf::from("/base/receipts")));
}

#[test]
fn answer_mode_reads_from_toml_and_strings() {
    let c = EngineConfig::from_toml("answer_mode = \"extractive\"\n[extractive]\nsentences = 3\n")
        .unwrap();
    assert_eq!(c.answer_mode, AnswerMode::Extractive);
    assert_eq!(c.extractive.sentences, 3);
    assert_eq!(EngineConfig::default().answer_mode, AnswerMode::Generative);
    assert_eq!(
        "Generative".parse::<AnswerMode>().unwrap(),
        AnswerMode::Generative
    );
    assert!("abstractive".parse::<AnswerMode>().is_err());
    assert!(EngineConfig::from_toml("answer_mode = \"both\"").is_err());
}

#[test]
fn datanet_trust_and_the_source_guard_read_from_toml() {
    let c = EngineConfig::from_toml(
        "[datanets.scraped]\ntrust = \"low\"\n[datanets.manuals]\ntrust = \"high\"\n\
         [source_guard]\ndominance = 0.7\nmin_retrieval_share = 0.1\nreanswer = true\n",
    )
    .unwrap();
    assert_eq!(c.datanets["scraped"].trust, TrustLevel::Low);
    assert_eq!(c.datanets["manuals"].trust, TrustLevel::High);
    assert_eq!(
        c.source_guard,
        SourceGuardConfig {
            enabled: true,
            dominance: 0.7,
            min_retrieval_share: 0.1,
            reanswer: true,
        }
    );
    // Defaults: no datanet listed, the guard alerts but never re-answers.
    let d = EngineConfig::default();
    assert!(d.datanets.is_empty());
    assert!(d.source_guard.enabled && !d.source_guard.reanswer);
    assert_eq!(EngineConfig::from_toml(&d.to_toml().unwrap()).unwrap(), d);
}

#[test]
fn bad_trust_levels_and_shares_are_config_errors() {
    for bad in [
        "[datanets.x]\ntrust = \"paranoid\"\n",
        "[datanets.x]\ntrusted = true\n",
        "[source_guard]\ndominance = 1.5\n",
        "[source_guard]\ndominance = 0.0\n",
        "[source_guard]\nmin_retrieval_share = -0.1\n",
        "[source_guard]\nreanswer = \"yes\"\n",
    ] {
        let e = EngineConfig::from_toml(bad).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Config, "{bad}: {e}");
    }
    let e = EngineConfig::from_toml("[source_guard]\ndominance = 1.5\n").unwrap_err();
    assert!(e.to_string().contains("0..=1"), "{e}");
}
