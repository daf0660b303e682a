//! The ask loop: answer a question from the sample datanet with inline citations, credit and
//! a receipt. `cargo run -p tribute-examples --example quickstart [QUESTION]`. Receipts need
//! `TRIBUTE_KEY` (the payer's hex key) and `TRIBUTE_LEDGER` (a JSON file
//! `{"chainId":31337,"contract":"0x…"}`); `TRIBUTE_EXAMPLE_KB` overrides the index directory.
use tribute::index::{LoadOptions, document::expand_paths, load_file};
use tribute::{Engine, EngineConfig};

fn main() -> anyhow::Result<()> {
    let mut config = EngineConfig::default(); // the default models, from ~/.cache/tribute
    let kb = std::env::var_os("TRIBUTE_EXAMPLE_KB").map(Into::into);
    config.index = kb.unwrap_or_else(|| std::env::temp_dir().join("tribute-quickstart"));
    if let Some(path) = std::env::var_os("TRIBUTE_LEDGER") {
        config.receipts.ledger = Some(serde_json::from_slice(&std::fs::read(path)?)?);
    }
    let engine = Engine::builder().config(config).build()?; // signs with $TRIBUTE_KEY if set
    if engine.index_size()?.documents == 0 {
        let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/data/zephyr");
        for file in expand_paths(&[sample.into()])? {
            engine.add_documents(load_file(&file, &LoadOptions::default())?, None)?;
        }
    }
    let question = std::env::args().nth(1).unwrap_or_else(|| {
        "How many times per second does the Zephyr flight controller correct the attitude?".into()
    });
    let answer = engine.ask(question.as_str()).run()?;
    println!("Q: {question}\nA: {}\n", answer.cited_text);
    for c in &answer.citations {
        let (pct, who) = (f64::from(c.weight_bps) / 100.0, &c.contributor);
        println!(
            "[{}] {pct:5.1}%  {who}  {}  {}",
            c.marker, c.datanet, c.title
        );
    }
    match answer.receipt {
        Some(r) => println!(
            "\nreceipt {} signed by {}",
            r.receipt.receiptId, r.receipt.payer
        ),
        None => println!("\nno receipt: {}", answer.no_receipt.unwrap_or_default()),
    }
    Ok(())
}
