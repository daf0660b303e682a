//! Datanets built in code: two contributors write a harbour guide, a third posts to a
//! forum. A question restricted to the guide cites only the guide, and the citation
//! weights say who gets paid for the answer.
//! `cargo run -p tribute-examples --example datanets [QUESTION]`
//! (`TRIBUTE_EXAMPLE_KB` overrides the index directory.)

use std::collections::BTreeMap;

use tribute::attribution::split::SplitRequest;
use tribute::{Contributor, Document, Engine};

// Anvil's public development accounts 1–3 (never for real funds).
const CAROL: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
const DAVE: &str = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC";
const ERIN: &str = "0x90F79bf6EB2c4f870365E785982E1f101E93b906";
// Stand-ins for the model owner and the treasury in the payout preview.
const MODEL_OWNER: &str = "0x0000000000000000000000000000000000000001";
const TREASURY: &str = "0x0000000000000000000000000000000000000002";

fn documents() -> anyhow::Result<Vec<Document>> {
    let (carol, dave, erin) = (
        Contributor::parse(CAROL)?,
        Contributor::parse(DAVE)?,
        Contributor::parse(ERIN)?,
    );
    let guide = |id: &str, title: &str, text: &str, who: Contributor| {
        Document::new(id, text)
            .with_title(title)
            .with_datanet("harbor-guide")
            .with_contributor(who)
            .with_license("CC-BY-4.0")
    };
    Ok(vec![
        guide(
            "ferry-schedule",
            "Ferry schedule",
            "The ferry from Lumen Harbor to Kestrel Island leaves every day at 7:15, 11:40 \
             and 16:05. The crossing takes fifty minutes. In winter the 16:05 ferry does not run.",
            carol,
        ),
        guide(
            "ferry-tickets",
            "Ferry tickets",
            "A single ferry ticket to Kestrel Island costs 12 euros; children under ten travel \
             free. Bicycles cost 3 euros extra. Tickets are sold at the harbor kiosk only.",
            dave,
        ),
        guide(
            "island-walks",
            "Walks on Kestrel Island",
            "The lighthouse trail on Kestrel Island is 6 kilometres long and starts at the \
             ferry pier. Puffins nest on the north cliffs from May to July.",
            carol,
        ),
        Document::new(
            "forum-ferry",
            "Someone on the forum says the Kestrel ferry ticket is 5 euros and the first ferry \
             leaves at 6:00, but that was years ago.",
        )
        .with_title("Forum: ferry prices?")
        .with_datanet("harbor-forum")
        .with_contributor(erin),
    ])
}

fn main() -> anyhow::Result<()> {
    let kb = std::env::var_os("TRIBUTE_EXAMPLE_KB").map_or_else(
        || std::env::temp_dir().join("tribute-datanets-kb"),
        Into::into,
    );
    let engine = Engine::builder().index_dir(kb).build()?;
    // Re-ingesting unchanged documents is a no-op (same id, same content hash).
    let report = engine.add_documents(documents()?, None)?;
    println!(
        "ingested: {} added, {} unchanged, {} chunks",
        report.added, report.unchanged, report.chunks
    );

    let question = std::env::args().nth(1).unwrap_or_else(|| {
        "When does the first ferry to Kestrel Island leave, and what does a ticket cost?".into()
    });
    let answer = engine
        .ask(question.as_str())
        .datanets(["harbor-guide"])
        .top_k(3)
        .run()?;
    println!(
        "\nQ: {question}  (datanet harbor-guide only)\nA: {}\n",
        answer.cited_text
    );
    for c in &answer.citations {
        let pct = f64::from(c.weight_bps) / 100.0;
        println!(
            "[{}] {pct:5.1}%  {}  {}  {}",
            c.marker, c.contributor, c.datanet, c.title
        );
    }

    // Who gets paid: citation weights summed per contributor…
    let mut per_contributor: BTreeMap<&str, u32> = BTreeMap::new();
    for c in &answer.citations {
        *per_contributor.entry(c.contributor.as_str()).or_default() += c.weight_bps;
    }
    // …and what that is worth: the fee split with the engine's policy (default 70 % to
    // contributors, 10 % adapter authors, 15 % model owner, 5 % treasury), exact to the wei.
    let fee = engine.config().receipts.fee_wei;
    let mut request = SplitRequest::builder(fee)
        .model_owner(MODEL_OWNER)
        .treasury(TREASURY);
    for (who, bps) in &per_contributor {
        request = request.contributor(*who, *bps);
    }
    let split = engine.config().rewards.split(&request.build()?)?;
    println!("\nwho gets paid for this answer (fee {fee} wei):");
    for payout in &split.payouts {
        let address = payout.address.to_checksum(None);
        let share = per_contributor.get(address.as_str()).copied().unwrap_or(0);
        let role = match address.as_str() {
            // No adapter was merged, so the adapter authors' pool goes to the model owner.
            MODEL_OWNER => "model owner, with the unused adapter pool".to_owned(),
            TREASURY => "treasury".to_owned(),
            _ => format!(
                "contributor, {:5.1}% of the citations",
                f64::from(share) / 100.0
            ),
        };
        println!("  {address}  {:>16} wei  ({role})", payout.amount);
    }
    Ok(())
}
