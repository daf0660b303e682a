//! `uniffi-bindgen`: generates Tribute's Kotlin and Swift sources from the compiled
//! `tribute-ffi` library (library mode), e.g.
//!
//! ```sh
//! cargo run -p uniffi-bindgen -- generate --library $CARGO_TARGET_DIR/debug/libtribute_ffi.so \
//!     --language kotlin --no-format --out-dir bindings/kotlin/src/main/kotlin
//! ```
//!
//! A separate crate so that uniffi's `cli` feature (and its dependencies) never reach the
//! shipped library (see docs/MOBILE.md).

fn main() {
    uniffi::uniffi_bindgen_main()
}
