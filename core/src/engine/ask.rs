//! Asking: [`AskOptions`] and [`AskRequest`], and the pipeline behind them — retrieve,
//! build the prompt within its budget, generate, attribute, sign.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Instant;

use alloy_primitives::U256;
use tribute_attribution::{Attribution, Method, Source};
use tribute_index::Hit;
use tribute_inference::{CancelToken, FinishReason, GenerateRequest, Generation, Prompt};

use super::answer::citation;
use super::{
    Answer, AskStream, Citation, Engine, NO_SOURCES_ANSWER, SearchOptions, StageTimings, Usage, ms,
};
use crate::audit::RecordInputs;
use crate::citations::{InfluenceUnit, audit_attribution};
use crate::error::{Error, Result};
use crate::rag::{DEFAULT_SYSTEM_PROMPT, EmbedderScorer, ModelScorer, PromptSource, RagPrompt};

mod source_guard;

/// Options of one ask; unset fields take the engine's config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AskOptions {
    /// Chunks to retrieve.
    pub top_k: Option<usize>,
    /// Retrieval mode.
    pub mode: Option<tribute_index::Mode>,
    /// Only these datanets.
    pub datanets: Option<Vec<String>>,
    /// Adapters and their merge weights.
    pub adapters: Vec<(String, f32)>,
    /// Attribution method.
    pub method: Option<Method>,
    /// Fee in wei.
    pub fee: Option<U256>,
    /// Most answer tokens.
    pub max_tokens: Option<usize>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Sampling seed.
    pub seed: Option<u64>,
    /// Generative or extractive answer (default: the config's `answer_mode`).
    pub answer_mode: Option<crate::config::AnswerMode>,
    /// Cancels the ask from another thread: generation stops after the current step and
    /// the ask returns [`Error::Cancelled`] without attributing or signing anything.
    pub cancel: Option<CancelToken>,
    /// What retrieval searches for instead of the question (a conversation's follow-up
    /// rewritten to stand alone); the answer still responds to the question.
    pub retrieval_query: Option<String>,
}

/// An ask being set up: `engine.ask(q).top_k(3).run()` (blocking), `.stream()`, or
/// `.await` (async: runs on tokio's blocking pool).
#[derive(Debug)]
#[must_use = "call .run(), .stream() or .await"]
pub struct AskRequest<'a> {
    engine: &'a Engine,
    question: String,
    /// Earlier turns of the conversation (see `conversation`).
    pub(super) history: Vec<super::Turn>,
    pub(super) options: AskOptions,
}

impl AskRequest<'_> {
    /// Chunks to retrieve.
    pub fn top_k(mut self, k: usize) -> Self {
        self.options.top_k = Some(k);
        self
    }

    /// Retrieval mode.
    pub fn mode(mut self, mode: tribute_index::Mode) -> Self {
        self.options.mode = Some(mode);
        self
    }

    /// Only these datanets.
    pub fn datanets<I: IntoIterator<Item = S>, S: Into<String>>(mut self, d: I) -> Self {
        self.options.datanets = Some(d.into_iter().map(Into::into).collect());
        self
    }

    /// Adapters (registered ids) merged with these weights.
    pub fn adapters<I: IntoIterator<Item = (S, f32)>, S: Into<String>>(mut self, a: I) -> Self {
        self.options.adapters = a.into_iter().map(|(id, w)| (id.into(), w)).collect();
        self
    }

    /// Attribution method.
    pub fn method(mut self, method: Method) -> Self {
        self.options.method = Some(method);
        self
    }

    /// Fee in wei.
    pub fn fee(mut self, fee: U256) -> Self {
        self.options.fee = Some(fee);
        self
    }

    /// Most answer tokens.
    pub fn max_tokens(mut self, n: usize) -> Self {
        self.options.max_tokens = Some(n);
        self
    }

    /// Sampling temperature (0: greedy).
    pub fn temperature(mut self, t: f32) -> Self {
        self.options.temperature = Some(t);
        self
    }

    /// Sampling seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.options.seed = Some(seed);
        self
    }

    /// Generative or extractive answer (see [`AnswerMode`](crate::config::AnswerMode)).
    pub fn answer_mode(mut self, mode: crate::config::AnswerMode) -> Self {
        self.options.answer_mode = Some(mode);
        self
    }

    /// Lets another thread cancel the ask (see [`AskOptions::cancel`]). Awaiting an ask
    /// and dropping the future also cancels it.
    pub fn cancel_token(mut self, token: CancelToken) -> Self {
        self.options.cancel = Some(token);
        self
    }

    /// All options at once.
    pub fn options(mut self, options: AskOptions) -> Self {
        self.options = options;
        self
    }

    /// Runs the ask on this thread.
    pub fn run(self) -> Result<Answer> {
        self.engine
            .ask_with(&self.question, &self.history, &self.options)
    }

    /// Streams the answer: text pieces as the model writes them, then the finished
    /// [`Answer`] (citations, receipt).
    pub fn stream(self) -> Result<AskStream> {
        self.engine
            .stream_with(&self.question, &self.history, &self.options)
    }
}

impl IntoFuture for AskRequest<'_> {
    type Output = Result<Answer>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Answer>> + Send>>;

    /// Runs the ask on tokio's blocking pool (needs a tokio runtime). Dropping the future
    /// before it completes cancels the ask.
    fn into_future(self) -> Self::IntoFuture {
        let engine = self.engine.clone();
        let (question, history, mut options) = (self.question, self.history, self.options);
        let token = options.cancel.get_or_insert_with(CancelToken::new).clone();
        Box::pin(async move {
            let guard = token.drop_guard();
            let result =
                tokio::task::spawn_blocking(move || engine.ask_with(&question, &history, &options))
                    .await
                    .map_err(|e| Error::Task(e.to_string()))?;
            guard.disarm();
            result
        })
    }
}

impl Prepared {
    pub(super) fn check_cancelled(&self) -> Result<()> {
        match &self.options.cancel {
            Some(t) if t.is_cancelled() => Err(Error::Cancelled),
            _ => Ok(()),
        }
    }
}

/// Retrieval and prompt of an ask, before generation.
pub(super) struct Prepared {
    question: String,
    options: AskOptions,
    started: Instant,
    hits: Vec<Hit>,
    retrieved: usize,
    dropped: usize,
    truncated: bool,
    prompt: RagPrompt,
    /// The system prompt and earlier turns the prompt was built from (for the record).
    system: String,
    history: Vec<tribute_inference::Message>,
    timings: StageTimings,
}

/// A generation attributed but not yet signed: what [`Engine::seal`] turns into an
/// [`Answer`].
pub(super) struct Attributed {
    prepared: Prepared,
    method: Method,
    text: String,
    /// The answer tokens without the end-of-sequence tokens.
    tokens: Vec<u32>,
    attribution: Option<Attribution>,
    cited_text: String,
    citations: Vec<Citation>,
    sentences: Vec<super::AnswerSentence>,
    citation_audit: Option<crate::citations::CitationAudit>,
    source_alert: Option<crate::source_guard::SourceAlert>,
    timings: StageTimings,
}

impl Engine {
    /// Asks a question; set options on the returned request, then `.run()`, `.stream()`
    /// or `.await`.
    pub fn ask(&self, question: impl Into<String>) -> AskRequest<'_> {
        AskRequest {
            engine: self,
            question: question.into(),
            history: Vec::new(),
            options: AskOptions::default(),
        }
    }

    fn ask_with(
        &self,
        question: &str,
        history: &[super::Turn],
        options: &AskOptions,
    ) -> Result<Answer> {
        // Tracing: one `ask` span per ask, its stages (retrieve, prompt, prefill, decode,
        // attribute, sign) inside it.
        let _ask = tracing::info_span!("ask").entered();
        if self.is_extractive(options) {
            return self.extractive_answer(question, options);
        }
        match self.prepare(question, history, options)? {
            Err(no_sources) => Ok(*no_sources),
            Ok(prepared) => {
                prepared.check_cancelled()?;
                let request = self.generate_request(&prepared);
                let generation = self.loaded_generator()?.generate(&request)?;
                self.finish_guarded(prepared, generation)
            }
        }
    }

    pub(super) fn generate_request(&self, p: &Prepared) -> GenerateRequest {
        let g = &self.inner.config.generation;
        let mut r = GenerateRequest::new(Prompt::Tokens(p.prompt.tokens.clone()))
            // Kept for the model's attribution, which scores the answer against this very
            // prompt, and for later prompts that start the same way (the system prompt, a
            // conversation's earlier turns), whose prefill starts from it.
            .keep_prompt_cache(true)
            .sampling(g.sampling())
            .max_tokens(p.options.max_tokens.unwrap_or(g.max_tokens))
            .temperature(p.options.temperature.unwrap_or(g.temperature))
            .seed(p.options.seed.unwrap_or(g.seed));
        for (id, w) in &p.options.adapters {
            r = r.adapter(id.clone(), *w);
        }
        // The prompt is a chat rendered to tokens: a model without a chat template of its
        // own ends its answer where it starts the next turn.
        if let Some(g) = &self.inner.generator {
            for s in g.tokenizer().chat_stop_strings() {
                r = r.stop(*s);
            }
        }
        if let Some(t) = &p.options.cancel {
            r = r.cancel_token(t.clone());
        }
        r
    }

    /// Retrieval and prompt. `Err(answer)`: no relevant source, the finished answer.
    #[allow(clippy::type_complexity)]
    pub(super) fn prepare(
        &self,
        question: &str,
        history: &[super::Turn],
        options: &AskOptions,
    ) -> Result<std::result::Result<Prepared, Box<Answer>>> {
        let started = Instant::now();
        let cfg = &self.inner.config;
        if question.trim().is_empty() {
            return Err(Error::InvalidRequest("the question is empty".into()));
        }
        for (id, w) in &options.adapters {
            if !w.is_finite() {
                return Err(Error::InvalidRequest(format!(
                    "adapter {id:?} has a non-finite weight"
                )));
            }
        }
        let top_k = options.top_k.unwrap_or(cfg.retrieval.top_k);
        cfg.limits.check_top_k(top_k)?;
        if let Some(n) = options.max_tokens {
            cfg.limits.check_max_tokens(n)?;
        }
        let search = SearchOptions {
            top_k: Some(top_k),
            mode: options.mode,
            datanets: options.datanets.clone(),
        };
        let mut timings = StageTimings::default();

        let t = Instant::now();
        let query = options.retrieval_query.as_deref().unwrap_or(question);
        let (hits, retrieved) = tracing::info_span!("retrieve", top_k)
            .in_scope(|| self.relevant_hits_counted(query, &search))?;
        timings.retrieval_ms = ms(t);

        if hits.is_empty() {
            return Ok(Err(Box::new(self.no_sources_answer(
                question, options, retrieved, started, timings,
            )?)));
        }

        let t = Instant::now();
        let prompt_span = tracing::info_span!("prompt").entered();
        let system = cfg
            .generation
            .system_prompt
            .as_deref()
            .unwrap_or(DEFAULT_SYSTEM_PROMPT);
        let max_tokens = options.max_tokens.unwrap_or(cfg.generation.max_tokens);
        let context = self.loaded_generator()?.config().context_length;
        let budget = cfg
            .generation
            .prompt_budget
            .unwrap_or_else(|| context.saturating_sub(max_tokens))
            .min(context.saturating_sub(1));
        let history = self.history_messages(history, budget)?;
        let (prompt, hits, dropped, truncated) =
            self.fit_prompt(system, &history, question, hits, budget)?;
        timings.prompt_ms = ms(t);
        drop(prompt_span);
        Ok(Ok(Prepared {
            question: question.to_owned(),
            options: options.clone(),
            started,
            hits,
            retrieved,
            dropped,
            truncated,
            prompt,
            system: system.to_owned(),
            history,
            timings,
        }))
    }

    /// Builds the prompt within `budget` tokens: drops the lowest-ranked sources, then cuts
    /// the last one's text.
    fn fit_prompt(
        &self,
        system: &str,
        history: &[tribute_inference::Message],
        question: &str,
        mut hits: Vec<Hit>,
        budget: usize,
    ) -> Result<(RagPrompt, Vec<Hit>, usize, bool)> {
        let g = self.loaded_generator()?;
        let sources = |hits: &[Hit]| -> Vec<PromptSource> {
            hits.iter()
                .map(|h| PromptSource {
                    title: h.title.clone(),
                    text: h.text.clone(),
                })
                .collect()
        };
        let mut dropped = 0;
        loop {
            let prompt =
                RagPrompt::build_with_history(g, system, history, question, &sources(&hits))?;
            if prompt.tokens.len() <= budget {
                return Ok((prompt, hits, dropped, false));
            }
            if hits.len() == 1 {
                break;
            }
            hits.pop();
            dropped += 1;
        }
        // One source, still too long: cut its text to fit.
        let mut src = sources(&hits);
        for _ in 0..8 {
            let prompt = RagPrompt::build_with_history(g, system, history, question, &src)?;
            let n = prompt.tokens.len();
            if n <= budget {
                hits[0].chunk.text = src[0].text.clone();
                return Ok((prompt, hits, dropped, true));
            }
            let shown = prompt.source_tokens[0].len().max(1);
            let excess = n - budget;
            if excess >= shown {
                break;
            }
            let text = &src[0].text;
            let keep = text.len() * (shown - excess).saturating_sub(4) / shown;
            let mut cut = keep.min(text.len());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            if cut == 0 {
                break;
            }
            src[0].text = text[..cut].to_owned();
        }
        Err(Error::InvalidRequest(format!(
            "the question and system prompt leave no room for a source within the \
             {budget}-token prompt budget"
        )))
    }

    pub(super) fn no_sources_answer(
        &self,
        question: &str,
        options: &AskOptions,
        retrieved: usize,
        started: Instant,
        mut timings: StageTimings,
    ) -> Result<Answer> {
        let text = NO_SOURCES_ANSWER.to_owned();
        let t = Instant::now();
        let (receipt, no_receipt) = if self.inner.config.receipts.sign_without_sources {
            self.sign_receipt(question, &text, options, &[])?
        } else {
            (
                None,
                Some("no source was relevant to the question, so nothing was cited or paid".into()),
            )
        };
        timings.receipt_ms = ms(t);
        timings.total_ms = ms(started);
        Ok(Answer {
            question: question.to_owned(),
            retrieval_query: options.retrieval_query.clone(),
            cited_text: text.clone(),
            sentences: Vec::new(),
            citation_audit: None,
            citations: Vec::new(),
            source_alert: None,
            adapters: options.adapters.clone(),
            usage: Usage {
                sources_retrieved: retrieved,
                timings,
                ..Usage::default()
            },
            receipt,
            no_receipt,
            text,
        })
    }

    /// Attribution and receipt of a finished generation.
    pub(super) fn finish(&self, p: Prepared, generation: Generation) -> Result<Answer> {
        let attributed = self.attribute_generation(p, generation)?;
        self.seal(attributed)
    }

    /// The attribute step of [`finish`](Self::finish): the answer text, its attribution,
    /// citations and sentences. Nothing is signed or journaled yet, so a guarded ask can
    /// still replace this answer (see `finish_guarded`).
    pub(super) fn attribute_generation(
        &self,
        p: Prepared,
        generation: Generation,
    ) -> Result<Attributed> {
        if generation.finish_reason == FinishReason::Cancelled {
            return Err(Error::Cancelled);
        }
        p.check_cancelled()?;
        let g = self.loaded_generator()?;
        let mut timings = p.timings;
        timings.prefill_ms = generation.timings.prefill.as_secs_f64() * 1e3;
        timings.decode_ms = generation.timings.decode.as_secs_f64() * 1e3;
        let eos = &g.config().eos_token_ids;
        let mut tokens = generation.tokens;
        while tokens.last().is_some_and(|t| eos.contains(t)) {
            tokens.pop();
        }
        let text = g.tokenizer().decode(&tokens, true)?;

        let t = Instant::now();
        let method = p
            .options
            .method
            .unwrap_or(self.inner.config.attribution.method);
        let attribution = if text.trim().is_empty() {
            None
        } else {
            let span = tracing::info_span!("attribute", method = ?method);
            Some(span.in_scope(|| self.attribute(method, &p, &text, tokens.clone()))?)
        };
        timings.attribution_ms = ms(t);
        p.check_cancelled()?;

        let mut citations: Vec<Citation> = Vec::new();
        let mut sentences = Vec::new();
        let mut citation_audit = None;
        let cited_text = match &attribution {
            Some(a) => {
                for (i, (h, &w)) in p.hits.iter().zip(&a.weights_bps).enumerate() {
                    if w > 0 {
                        citations.push(citation(i + 1, w, h));
                    }
                }
                citations.sort_by(|x, y| {
                    y.weight_bps
                        .cmp(&x.weight_bps)
                        .then(x.marker.cmp(&y.marker))
                });
                let threshold = InfluenceUnit::of(a.method).default_threshold();
                let (audited, audit) = audit_attribution(&text, a, threshold);
                sentences = audited;
                citation_audit = Some(audit);
                a.render(&text, |i| format!(" [{}]", i + 1))
            }
            None => text.clone(),
        };
        let source_alert = self.source_alert(&p.hits, attribution.as_ref());
        Ok(Attributed {
            prepared: p,
            method,
            text,
            tokens,
            attribution,
            cited_text,
            citations,
            sentences,
            citation_audit,
            source_alert,
            timings,
        })
    }

    /// The sign step of [`finish`](Self::finish): the attribution record, the signed and
    /// journaled receipt, and the finished [`Answer`].
    pub(super) fn seal(&self, a: Attributed) -> Result<Answer> {
        let Attributed {
            prepared: p,
            method,
            text,
            tokens,
            attribution,
            cited_text,
            citations,
            sentences,
            citation_audit,
            source_alert,
            mut timings,
        } = a;
        let _sign = tracing::info_span!("sign").entered();
        let t = Instant::now();
        let record = match &attribution {
            Some(a) => self.attribution_record(RecordInputs {
                prompt: &p.prompt,
                system: &p.system,
                history: &p.history,
                question: &p.question,
                hits: &p.hits,
                adapters: &p.options.adapters,
                method,
                attribution: a,
                answer: &text,
                answer_tokens: &tokens,
            })?,
            None => None,
        };
        // Last look before the payer is committed: a caller gone while the record was
        // built (hashing a model the first time takes seconds) is not charged.
        p.check_cancelled()?;
        let (receipt, no_receipt) = self.sign_receipt_recorded(
            self.inner.model.id,
            &p.question,
            &text,
            &p.options,
            &citations,
            record,
        )?;
        timings.receipt_ms = ms(t);
        timings.total_ms = ms(p.started);
        Ok(Answer {
            question: p.question,
            retrieval_query: p.options.retrieval_query.clone(),
            cited_text,
            citations,
            sentences,
            citation_audit,
            source_alert,
            adapters: p.options.adapters.clone(),
            usage: Usage {
                prompt_tokens: p.prompt.tokens.len(),
                answer_tokens: tokens.len(),
                sources_retrieved: p.retrieved,
                sources_used: p.hits.len(),
                sources_dropped: p.dropped,
                source_truncated: p.truncated,
                method: attribution.as_ref().map(|a| a.method),
                attribution_passes: attribution.as_ref().map_or(0, |a| a.model_passes),
                timings,
            },
            receipt,
            no_receipt,
            text,
        })
    }

    fn attribute(
        &self,
        method: Method,
        p: &Prepared,
        text: &str,
        tokens: Vec<u32>,
    ) -> Result<Attribution> {
        let sources: Vec<Source> = p
            .hits
            .iter()
            .map(|h| {
                Source::new(h.chunk_id.as_str(), h.text.clone())
                    .with_contributor(h.contributor.address())
                    .with_content_hash(h.content_hash.as_b256())
                    .with_retrieval_score(f64::from(h.score))
            })
            .collect();
        let cfg = &self.inner.config.attribution.config;
        let embedder = self.inner.embedder.clone().map(EmbedderScorer);
        let embedder_ref = embedder
            .as_ref()
            .map(|e| e as &dyn tribute_attribution::TextEmbedder);
        if method.needs_model() {
            let scorer = ModelScorer::from_tokens(
                self.loaded_generator()?,
                &p.prompt,
                tokens,
                p.options.adapters.clone(),
            )?;
            Ok(tribute_attribution::attribute(
                method,
                text,
                &sources,
                Some(&scorer),
                embedder_ref,
                cfg,
            )?)
        } else {
            Ok(tribute_attribution::attribute(
                method,
                text,
                &sources,
                None,
                embedder_ref,
                cfg,
            )?)
        }
    }
}
