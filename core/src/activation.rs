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

/// The `hidden_act` names accepted, for error messages.
pub const ACTIVATION_NAMES: &str = "gelu, gelu_pytorch_tanh, gelu_new, quick_gelu, silu, swish";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported hidden_act {0:?} (supported: {ACTIVATION_NAMES})")]
pub struct UnknownActivation(pub String);

impl FromStr for Activation {
    type Err = UnknownActivation;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "gelu" => Self::Gelu,
            "gelu_pytorch_tanh" | "gelu_new" => Self::GeluTanh,
            "quick_gelu" => Self::QuickGelu,
            "silu" | "swish" => Self::Silu,
            other => return Err(UnknownActivation(other.to_string())),
        })
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Gelu => "gelu",
            Self::GeluTanh => "gelu_pytorch_tanh",
            Self::QuickGelu => "quick_gelu",
            Self::Silu => "silu",
        })
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
