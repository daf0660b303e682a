//! Stream an answer: text pieces as the model writes them, then the citations and the
//! receipt once attribution has run.
//! `cargo run -p tribute-examples --example streaming [QUESTION]`
//! (`TRIBUTE_EXAMPLE_KB` overrides the index directory; the sample datanet is ingested
//! into an empty one.)

use std::io::Write;
use std::path::Path;

use tribute::index::{LoadOptions, document::expand_paths, load_file};
use tribute::{AskEvent, Engine};

fn main() -> anyhow::Result<()> {
    let kb = std::env::var_os("TRIBUTE_EXAMPLE_KB").map_or_else(
        || std::env::temp_dir().join("tribute-streaming-kb"),
        Into::into,
    );
    let engine = Engine::builder().index_dir(kb).build()?;
    if engine.index_size()?.documents == 0 {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/zephyr");
        let mut docs = Vec::new();
        for file in expand_paths(&[data])? {
            docs.extend(load_file(&file, &LoadOptions::default())?);
        }
        engine.add_documents(docs, None)?;
    }
    let question = std::env::args().nth(1).unwrap_or_else(|| {
        "What does the Zephyr installer need, and where does it put the toolchain?".into()
    });
    println!("Q: {question}");
    print!("A: ");
    let mut stdout = std::io::stdout().lock();
    for event in engine.ask(question.as_str()).top_k(3).stream()? {
        match event? {
            AskEvent::Text(piece) => {
                write!(stdout, "{piece}")?;
                stdout.flush()?;
            }
            AskEvent::Done(answer) => {
                writeln!(stdout, "\n\nwith citations: {}\n", answer.cited_text)?;
                for c in &answer.citations {
                    let pct = f64::from(c.weight_bps) / 100.0;
                    writeln!(
                        stdout,
                        "[{}] {pct:5.1}%  {}  {}  {}",
                        c.marker, c.contributor, c.datanet, c.title
                    )?;
                }
                let t = answer.usage.timings;
                writeln!(
                    stdout,
                    "\n{} answer tokens; decode {:.0} ms, attribution {:.0} ms ({}, {} model passes)",
                    answer.usage.answer_tokens,
                    t.decode_ms,
                    t.attribution_ms,
                    answer.usage.method.map_or("none", |m| m.as_str()),
                    answer.usage.attribution_passes
                )?;
                match (&answer.receipt, &answer.no_receipt) {
                    (Some(r), _) => writeln!(stdout, "receipt {}", r.receipt.receiptId)?,
                    (None, reason) => {
                        writeln!(stdout, "no receipt: {}", reason.as_deref().unwrap_or("?"))?
                    }
                }
            }
        }
    }
    Ok(())
}
