//! The engine's TOML config (`EngineConfig::from_toml`, `from_toml_file`): any text.
//!
//! Properties: a config that parses writes back to TOML (`to_toml`) that parses to the same
//! config, and that TOML is a fixed point (written again, it is the same text); resolving
//! its paths against a folder does not panic, and reading it from a file gives the parsed
//! config with its paths resolved.

use std::path::Path;

use tribute::EngineConfig;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let Ok(config) = EngineConfig::from_toml(text) else {
            return;
        };
        let toml = config.to_toml().expect("a parsed config writes TOML");
        let back = EngineConfig::from_toml(&toml)
            .unwrap_or_else(|e| panic!("written TOML does not parse: {e}\n{toml}"));
        assert_eq!(
            back.to_toml().expect("writes again"),
            toml,
            "TOML is not a fixed point"
        );
        // Floats compare by their TOML text: NaN is never equal to itself.
        if !toml.contains("nan") {
            assert_eq!(back, config, "the config changed on a TOML round trip");
        }
        let mut resolved = config.clone();
        resolved.resolve_paths(Path::new("/base"));
        let dir = std::env::temp_dir().join(format!(
            "tribute-fuzz-{}",
            std::os::unix::process::parent_id()
        ));
        let dir = std::env::var_os("TRIBUTE_FUZZ_SCRATCH").map_or(dir, Into::into);
        std::fs::create_dir_all(&dir).expect("scratch folder");
        let file = dir.join("tribute.toml");
        std::fs::write(&file, data).expect("write the config");
        let from_file = EngineConfig::from_toml_file(&file).expect("the same text parses");
        let mut expected = config;
        expected.resolve_paths(&dir);
        if !toml.contains("nan") {
            assert_eq!(from_file, expected, "the file reads differently");
        }
    });
}
