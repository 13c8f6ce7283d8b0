//! The MLP activations a config's `hidden_act` may name, parsed once: the trainer computes
//! them and the exporter writes them into the graph, so a checkpoint trained with one
//! activation can never be exported with another. An unknown name is an error, not a
//! silent default.

use std::fmt;
use std::str::FromStr;

/// An activation named by `hidden_act` (the Hugging Face `ACT2FN` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: exact GELU, `x * 0.5 * (1 + erf(x / sqrt 2))`.
    Gelu,
    /// `gelu_pytorch_tanh` / `gelu_new`: the tanh approximation of GELU.
    GeluTanh,
    /// `quick_gelu`: `x * sigmoid(1.702 x)`.
    QuickGelu,
    /// `silu` / `swish`: `x * sigmoid(x)`.
    Silu,
}

/// Every accepted `hidden_act` name and what it means; the first name of each activation is
/// the one it is written as. Parsing, display and the error's list all read this table.
const NAMES: [(&str, Activation); 6] = [
    ("gelu", Activation::Gelu),
    ("gelu_pytorch_tanh", Activation::GeluTanh),
    ("gelu_new", Activation::GeluTanh),
    ("quick_gelu", Activation::QuickGelu),
    ("silu", Activation::Silu),
    ("swish", Activation::Silu),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported hidden_act {0:?} (supported: {names})", names = NAMES.map(|(n, _)| n).join(", "))]
pub struct UnknownActivation(pub String);

impl FromStr for Activation {
    type Err = UnknownActivation;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NAMES
            .iter()
            .find(|(n, _)| *n == s)
            .map(|&(_, a)| a)
            .ok_or_else(|| UnknownActivation(s.to_string()))
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, _) = NAMES
            .iter()
            .find(|(_, a)| a == self)
            .expect("every activation has a name in NAMES");
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_hf_names_and_refuses_others() {
        assert_eq!("gelu".parse::<Activation>(), Ok(Activation::Gelu));
        assert_eq!("gelu_new".parse::<Activation>(), Ok(Activation::GeluTanh));
        assert_eq!("swish".parse::<Activation>(), Ok(Activation::Silu));
        let e = "relu".parse::<Activation>().unwrap_err().to_string();
        assert!(e.contains("\"relu\"") && e.contains("quick_gelu"), "{e}");
        for a in [
            Activation::Gelu,
            Activation::GeluTanh,
            Activation::QuickGelu,
            Activation::Silu,
        ] {
            assert_eq!(a.to_string().parse::<Activation>(), Ok(a));
        }
    }
}
