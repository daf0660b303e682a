//! ONNX Runtime `.onnx_adapter` files, any bytes, loaded as the registry loads them
//! (`AdapterRegistry::get` on an `AdapterSource::OnnxAdapter`; the format itself is parsed
//! by ONNX Runtime, which AFL does not instrument: its coverage here is that of Rust code).
//!
//! Needs the ONNX Runtime library (`make setup`); without it the target stops at once
//! with the library search's message.
//!
//! Properties: no crash or abort; a file either loads as an ONNX adapter whose size is the
//! file's, or is refused with a typed adapter error.

use tribute_inference::adapter::{AdapterId, AdapterSource, LoadedAdapter};
use tribute_inference::{AdapterRegistry, Error};
use tribute_inference_fuzz::{MODEL_NAME, modules, scratch_dir};

fn main() {
    // Only look here: the library is loaded in AFL's children, after the fork server
    // started (threads do not survive a fork).
    let search = tribute_common::ort_library::locate_ort_library();
    if search.found.is_none() {
        eprintln!(
            "onnx_adapter: no ONNX Runtime library (run `make setup` or set ORT_DYLIB_PATH); searched {:?}",
            search.searched
        );
        std::process::exit(2);
    }
    afl::fuzz!(|data: &[u8]| {
        let path = scratch_dir().join("fuzz.onnx_adapter");
        std::fs::write(&path, data).expect("write the adapter");
        let registry = AdapterRegistry::new(modules(), Some(MODEL_NAME.into()), usize::MAX);
        let id = AdapterId::new("fuzz").expect("id");
        registry
            .register(id.clone(), AdapterSource::OnnxAdapter(path))
            .expect("register");
        match registry.get(&id) {
            Ok(loaded) => match &*loaded {
                LoadedAdapter::Onnx { bytes, .. } => assert_eq!(*bytes, data.len()),
                LoadedAdapter::Lora(_) => panic!("an .onnx_adapter loaded as PEFT"),
            },
            Err(Error::Adapter(_) | Error::Ort(_)) => {}
            Err(e) => panic!("unexpected error kind: {e}"),
        }
    });
}
