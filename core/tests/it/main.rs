//! Integration tests of the facade's glue with the real SmolLM2-135M-Instruct and MiniLM
//! (installed by `scripts/setup.sh`; without them these tests fail saying so).

mod citations;
mod engine;
#[cfg(feature = "finetune")]
mod finetune;
#[cfg(feature = "hub")]
mod hub;
mod rag;
mod session;
mod support;
