//! Mechanics on a tiny random llama exported by `tribute_export`.
