//! What a pulled checkpoint is exported as. A model spec may end in `:WORDS`, comma-separated:
//! a weight format (`int8`, `int4`), an attention layout (`portable`, `fused`, `static`) and
//! a compute type (`fp32`, `fp16`), e.g. `ORG/NAME@main:int4` for a laptop or
//! `ORG/NAME:static,fp16` for a GPU. Each choice is exported once and cached beside the
//! others; the default (fp32 weights, portable, fp32 compute) is the plain spec.

use std::fmt;

use tribute_inference::GraphOps;

/// Weight format of an export (the exporter's `--quant`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Quant {
    /// Float weights (fp32).
    #[default]
    None,
    /// Block-quantized int8 (`MatMulNBits`).
    Int8,
    /// Block-quantized int4 (`MatMulNBits`): about a sixth of fp32's bytes per decode step.
    Int4,
}

/// How a pulled checkpoint is exported (see the module).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportOptions {
    /// Weight format.
    pub quant: Quant,
    /// Attention layout (`--ops`).
    pub ops: GraphOps,
    /// Arithmetic in float16 (`--compute fp16`, for GPUs).
    pub fp16: bool,
}

impl ExportOptions {
    /// Parses `WORDS` (see the module): any order, one word of each kind at most.
    pub(crate) fn parse(words: &str) -> Result<Self, String> {
        let mut out = ExportOptions::default();
        let (mut quant, mut ops, mut compute) = (false, false, false);
        for word in words.split(',').map(str::trim) {
            let (seen, kind) = match word {
                "int8" | "int4" => {
                    out.quant = if word == "int8" {
                        Quant::Int8
                    } else {
                        Quant::Int4
                    };
                    (&mut quant, "weight format")
                }
                "portable" | "fused" | "static" => {
                    out.ops = match word {
                        "fused" => GraphOps::Fused,
                        "static" => GraphOps::Static,
                        _ => GraphOps::Portable,
                    };
                    (&mut ops, "attention layout")
                }
                "fp32" | "fp16" => {
                    out.fp16 = word == "fp16";
                    (&mut compute, "compute type")
                }
                "" => return Err("an empty export option".into()),
                other => {
                    return Err(format!(
                        "unknown export option {other:?} (int8, int4; portable, fused, static; \
                         fp32, fp16)"
                    ));
                }
            };
            if std::mem::replace(seen, true) {
                return Err(format!("more than one {kind}"));
            }
        }
        Ok(out)
    }

    /// The exporter's flag and value of each option that is not a default, in a fixed order
    /// (the values are also the options' words).
    fn flags(&self) -> Vec<(&'static str, &'static str)> {
        let quant = match self.quant {
            Quant::None => None,
            Quant::Int8 => Some("int8"),
            Quant::Int4 => Some("int4"),
        };
        let ops = match self.ops {
            GraphOps::Portable => None,
            GraphOps::Fused => Some("fused"),
            GraphOps::Static => Some("static"),
        };
        let compute = self.fp16.then_some("fp16");
        [("--quant", quant), ("--ops", ops), ("--compute", compute)]
            .into_iter()
            .filter_map(|(flag, value)| Some((flag, value?)))
            .collect()
    }

    /// The words naming the options that are not the defaults, in a fixed order.
    fn words(&self) -> Vec<&'static str> {
        self.flags().into_iter().map(|(_, word)| word).collect()
    }

    /// The exporter's arguments for these options (none for the defaults).
    pub(crate) fn args(&self) -> Vec<&'static str> {
        self.flags()
            .into_iter()
            .flat_map(|(flag, value)| [flag, value])
            .collect()
    }

    /// What the export directory's name (and its ref's) ends in: nothing for the defaults,
    /// so that caches written before options existed still resolve, else `--int4-static`.
    pub(crate) fn suffix(&self) -> String {
        let words = self.words();
        if words.is_empty() {
            String::new()
        } else {
            format!("--{}", words.join("-"))
        }
    }
}

/// Options hash as their words: equal options, equal words.
impl std::hash::Hash for ExportOptions {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.words().hash(state);
    }
}

/// `int4,static,fp16`: the options that are not the defaults (empty for the defaults).
impl fmt::Display for ExportOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.words().join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_in_any_order_and_print_canonically() {
        let o = ExportOptions::parse("fp16, static,int4").expect("options");
        assert_eq!(
            o,
            ExportOptions {
                quant: Quant::Int4,
                ops: GraphOps::Static,
                fp16: true
            }
        );
        assert_eq!(o.to_string(), "int4,static,fp16");
        assert_eq!(o.suffix(), "--int4-static-fp16");
        assert_eq!(
            o.args(),
            ["--quant", "int4", "--ops", "static", "--compute", "fp16"]
        );
        let defaults = ExportOptions::parse("portable,fp32").expect("explicit defaults");
        assert_eq!(defaults, ExportOptions::default());
        assert_eq!(
            (defaults.to_string(), defaults.suffix(), defaults.args()),
            (String::new(), String::new(), Vec::<&str>::new())
        );
        assert_eq!(
            ExportOptions::parse("int8").map(|o| o.args()),
            Ok(vec!["--quant", "int8"])
        );
    }

    #[test]
    fn unknown_empty_and_conflicting_options_are_refused() {
        for (words, says) in [
            ("q4_k_m", "unknown export option \"q4_k_m\""),
            ("int4,", "an empty export option"),
            ("int8,int4", "more than one weight format"),
            ("fused,static", "more than one attention layout"),
            ("fp16,fp16", "more than one compute type"),
        ] {
            let e = ExportOptions::parse(words).expect_err(words);
            assert!(e.contains(says), "{words}: {e}");
        }
    }
}
