//! The source guard in the ask pipeline: the alert on a finished answer, and the re-answer
//! without the flagged source (see [`crate::source_guard`]).

use tribute_attribution::Attribution;
use tribute_index::Hit;
use tribute_inference::Generation;

use super::Prepared;
use crate::engine::{Answer, Engine};
use crate::error::Result;
use crate::source_guard::{SourceAlert, SourceSignal};

impl Engine {
    /// The guard's alert on an answer attributed to `hits` (none without attribution).
    pub(super) fn source_alert(
        &self,
        hits: &[Hit],
        attribution: Option<&Attribution>,
    ) -> Option<SourceAlert> {
        let attribution = attribution?;
        let cfg = &self.inner.config;
        let signals: Vec<SourceSignal> = hits
            .iter()
            .zip(&attribution.weights_bps)
            .map(|(h, &weight_bps)| SourceSignal {
                weight_bps,
                retrieval_score: f64::from(h.score),
                trust: cfg
                    .datanets
                    .get(h.datanet.as_str())
                    .map(|d| d.trust)
                    .unwrap_or_default(),
            })
            .collect();
        let finding = cfg.source_guard.check(&signals)?;
        let h = hits.get(finding.index)?;
        Some(SourceAlert {
            marker: finding.index + 1,
            chunk_id: h.chunk_id.as_str().to_owned(),
            doc_id: h.doc_id.as_str().to_owned(),
            contributor: h.contributor.address().to_checksum(None),
            datanet: h.datanet.as_str().to_owned(),
            share: finding.share,
            retrieval_share: finding.retrieval_share,
            reason: finding.reason,
            reanswered: false,
            replaced_answer: None,
        })
    }

    /// Attribution and receipt of a finished generation; with `source_guard.reanswer`, an
    /// answer the guard flags is answered again without the flagged source (once), and the
    /// new answer carries the alert with the replaced text. Only the answer returned is
    /// signed and journaled: the replaced one is attributed (the guard needs its weights)
    /// but never receipted, so no one is paid for an answer the user never saw.
    pub(super) fn finish_guarded(&self, p: Prepared, generation: Generation) -> Result<Answer> {
        if !self.inner.config.source_guard.reanswer {
            return self.finish(p, generation);
        }
        let first = self.attribute_generation(p, generation)?;
        let Some(alert) = first.source_alert.clone() else {
            return self.seal(first);
        };
        let kept = &first.prepared;
        let hits: Vec<Hit> = kept
            .hits
            .iter()
            .filter(|h| h.chunk_id.as_str() != alert.chunk_id)
            .cloned()
            .collect();
        if hits.is_empty() {
            // Nothing else to answer from: the alert stands on the answer as it is.
            return self.seal(first);
        }
        // Without a source the prompt only shrinks, so the first prompt's length is a
        // budget every remaining source fits in.
        let budget = kept.prompt.tokens.len();
        let (prompt, hits, dropped, truncated) =
            self.fit_prompt(&kept.system, &kept.history, &kept.question, hits, budget)?;
        let again = Prepared {
            question: kept.question.clone(),
            options: kept.options.clone(),
            started: kept.started,
            hits,
            retrieved: kept.retrieved,
            dropped: kept.dropped + dropped,
            truncated,
            prompt,
            system: kept.system.clone(),
            history: kept.history.clone(),
            timings: kept.timings,
        };
        again.check_cancelled()?;
        let request = self.generate_request(&again);
        let generation = self.loaded_generator()?.generate(&request)?;
        let mut second = self.attribute_generation(again, generation)?;
        second.source_alert = Some(SourceAlert {
            reanswered: true,
            replaced_answer: Some(first.text),
            ..alert
        });
        self.seal(second)
    }
}
