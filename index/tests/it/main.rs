//! Integration tests of `tribute-index` with the real all-MiniLM-L6-v2 model.
//!
//! The model and ONNX Runtime are installed by `scripts/setup.sh`; without them these
//! tests fail with a message saying so.

mod backends;
mod documents;
mod hnsw;
mod index;
mod limits;
#[cfg(feature = "postgres")]
mod pg_stats;
mod query;
#[cfg(feature = "postgres")]
mod replica;
mod sync;
mod texts;

use std::sync::{Arc, OnceLock};

use tribute_index::{Contributor, Document, Embedder, EmbedderOptions, OnnxEmbedder};

/// The real default embedder, loaded once per test binary.
pub fn embedder() -> Arc<dyn Embedder> {
    static E: OnceLock<Arc<OnnxEmbedder>> = OnceLock::new();
    E.get_or_init(|| {
        let dir = tribute_index::embedder::default_model_dir();
        match OnnxEmbedder::from_dir(&dir, EmbedderOptions::default()) {
            Ok(e) => Arc::new(e),
            Err(e) => panic!("the default embedding model is required for these tests; run scripts/setup.sh first ({e})"),
        }
    })
    .clone()
}

/// First test contributor (an EIP-55 test vector).
pub const ALICE: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
/// Second test contributor.
pub const BOB: &str = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359";

/// Parses a test address.
pub fn addr(s: &str) -> Contributor {
    Contributor::parse(s).expect("test address is valid")
}

/// A small corpus about made-up topics, from two contributors in two datanets.
pub fn corpus() -> Vec<Document> {
    let a = addr(ALICE);
    let b = addr(BOB);
    vec![
        Document::new("zephyr-intro", "The Zephyr SDK is a toolkit for building weather-aware drones. It was first released in 2021 by the Aeolus Foundation. Zephyr flight controllers read wind gusts from a lidar anemometer and correct the attitude forty times per second.")
            .with_title("What is the Zephyr SDK").with_datanet("zephyr-docs").with_contributor(a),
        Document::new("zephyr-battery", "Zephyr drones use lithium-sulfur cells. Store the cells at 40 percent charge when the drone is grounded for more than a week. A full charge takes ninety minutes on the standard dock.")
            .with_title("Battery care").with_datanet("zephyr-docs").with_contributor(a),
        Document::new("sourdough", "A sourdough starter is a culture of wild yeast and lactic acid bacteria. Feed it equal weights of flour and water every day and keep it at room temperature.")
            .with_title("Keeping a starter alive").with_datanet("baking").with_contributor(b),
        Document::new("gust-notes", "In our field tests the autopilot held a hover in 45 km/h gusts. Pilots should land when gusts exceed 60 km/h, because the rotors saturate.")
            .with_title("Flying in gusty weather").with_datanet("pilot-notes").with_contributor(b),
        Document::new("tides", "Spring tides happen near new and full moon, when the sun and moon pull in line and the tidal range is largest.")
            .with_title("Why tides change").with_datanet("baking").with_contributor(b),
    ]
}
