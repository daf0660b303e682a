//! Reuters-like synthetic articles, for scales the real corpus cannot fill with chunks of
//! a realistic size (Reuters-21578 has 2.6M words: 1M chunks would be 2–3 words each).
//!
//! A word bigram chain fit on the real articles: every next word is drawn from the words
//! that followed the current one in Reuters, as often as they did, so the vocabulary, its
//! Zipf-shaped frequencies and the short-range word co-occurrence (what BM25 posting lists
//! and the bag-of-words vectors see) are Reuters', while the texts are new. Article
//! lengths are drawn from the real ones. Deterministic for a seed.

use std::collections::HashMap;

/// An article: `(id, title, body)`, as the bench's Reuters reader returns them.
pub type Article = (String, String, String);

/// The bigram chain of a corpus.
pub struct Bigrams {
    words: Vec<String>,
    /// For each word, every word that followed it (repeated as often as it did).
    next: Vec<Vec<u32>>,
    /// The first words of the articles.
    starts: Vec<u32>,
    /// The articles' lengths in words.
    lengths: Vec<usize>,
}

/// xorshift64*: a small deterministic generator (quality is not the point here).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

impl Bigrams {
    /// The chain of `articles`' bodies (whitespace-separated words, punctuation kept).
    pub fn fit(articles: &[Article]) -> Self {
        let mut ids: HashMap<&str, u32> = HashMap::new();
        let mut words: Vec<String> = Vec::new();
        let mut next: Vec<Vec<u32>> = Vec::new();
        let mut starts = Vec::new();
        let mut lengths = Vec::new();
        for (_, _, body) in articles {
            let mut prev: Option<u32> = None;
            let mut n = 0;
            for w in body.split_whitespace() {
                let id = *ids.entry(w).or_insert_with(|| {
                    words.push(w.to_owned());
                    next.push(Vec::new());
                    (words.len() - 1) as u32
                });
                match prev {
                    Some(p) => next[p as usize].push(id),
                    None => starts.push(id),
                }
                prev = Some(id);
                n += 1;
            }
            if n > 0 {
                lengths.push(n);
            }
        }
        Bigrams {
            words,
            next,
            starts,
            lengths,
        }
    }

    /// `n` new articles with ids `syn-{seed}-{i}`; a title is the first words of a second
    /// walk. Empty if the chain is.
    pub fn articles(&self, n: usize, seed: u64) -> Vec<Article> {
        if self.starts.is_empty() {
            return Vec::new();
        }
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        (0..n)
            .map(|i| {
                let len = self.lengths[rng.below(self.lengths.len())];
                let title_len = 4 + rng.below(5);
                let title = self.walk(&mut rng, title_len);
                let body = self.walk(&mut rng, len);
                (format!("syn-{seed}-{i}"), title, body)
            })
            .collect()
    }

    /// `len` words from a random article start, starting over where a word was only ever
    /// last.
    fn walk(&self, rng: &mut Rng, len: usize) -> String {
        let mut out = String::new();
        let mut at = self.starts[rng.below(self.starts.len())];
        for k in 0..len {
            if k > 0 {
                out.push(' ');
            }
            out.push_str(&self.words[at as usize]);
            let follow = &self.next[at as usize];
            at = if follow.is_empty() {
                self.starts[rng.below(self.starts.len())]
            } else {
                follow[rng.below(follow.len())]
            };
        }
        out
    }
}
