//! `uniffi-bindgen-swift`: uniffi's Swift generator with the options SwiftPM and
//! XCFrameworks need (`--swift-sources`, `--headers`, `--modulemap`, `--module-name`,
//! `--modulemap-filename`, `--xcframework`); see bindings/swift/generate.sh.

fn main() {
    uniffi::uniffi_bindgen_swift()
}
