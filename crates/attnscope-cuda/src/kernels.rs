//! The one table of kernel names: every `extern "C"` kernel of `kernels/*.cu` is a [`KernelFamily`] (a file,
//! a stem, the dtypes and variants it is instantiated for). The loader's list ([`kernel_names`]) and the
//! launchers' names ([`KernelFamily::name`]) both come from it, and `tests/nvrtc_compile.rs` checks the list
//! against the entries of the PTX, so names cannot drift apart unnoticed.

use crate::dtype::GpuDtype;
use attnscope_core::config::Activation;

/// Head dims with a tensor-core prefill kernel (`attn_prefill_<bf16|f16>_hd<HD>`).
pub const TC_HEAD_DIMS: [usize; 6] = [32, 64, 80, 96, 128, 256];
/// Head dims with a fast prefill kernel (`attn_prefill_fa2_<bf16|f16>_hd<HD>[_stats]`); the others run the
/// reference tensor-core kernel.
pub const FA2_HEAD_DIMS: [usize; 5] = [32, 64, 80, 96, 128];

const ALL: &[GpuDtype] = &[GpuDtype::F32, GpuDtype::Bf16, GpuDtype::F16];
const HALF: &[GpuDtype] = &[GpuDtype::Bf16, GpuDtype::F16];
const PLAIN: &[&str] = &[""];

/// Kernels named `<stem>_<dtype><variant>` for every dtype and variant listed, defined in `file`.
#[derive(Clone, Copy, Debug)]
pub struct KernelFamily {
    pub file: &'static str,
    pub stem: &'static str,
    pub dtypes: &'static [GpuDtype],
    /// Name suffixes after the dtype (`""`, `"_hd64"`, `"_wf16"`).
    pub variants: &'static [&'static str],
}

impl KernelFamily {
    /// The name of the instance for `dtype` and `variant` (one of `variants`).
    pub fn name(&self, dtype: GpuDtype, variant: &str) -> String {
        debug_assert!(self.dtypes.contains(&dtype) && self.variants.contains(&variant));
        format!("{}_{dtype}{variant}", self.stem)
    }

    /// The plain instance for `dtype`.
    pub fn of(&self, dtype: GpuDtype) -> String {
        self.name(dtype, "")
    }

    /// Every instance.
    fn instances(&self) -> impl Iterator<Item = String> + '_ {
        self.dtypes
            .iter()
            .flat_map(move |&t| self.variants.iter().map(move |v| self.name(t, v)))
    }
}

const fn family(file: &'static str, stem: &'static str) -> KernelFamily {
    KernelFamily {
        file,
        stem,
        dtypes: ALL,
        variants: PLAIN,
    }
}

pub const EMBEDDING_GATHER: KernelFamily = family("embedding.cu", "embedding_gather");
pub const POSITION_ADD: KernelFamily = family("embedding.cu", "position_add");
pub const RMSNORM: KernelFamily = family("norm.cu", "rmsnorm");
pub const LAYERNORM: KernelFamily = family("norm.cu", "layernorm");
pub const ROPE: KernelFamily = family("rope.cu", "rope");
pub const RESIDUAL_ADD: KernelFamily = family("residual.cu", "residual_add");
pub const RESIDUAL_ADD2: KernelFamily = family("residual.cu", "residual_add2");
pub const BIAS_ADD: KernelFamily = family("residual.cu", "bias_add");
pub const ACT_SILU: KernelFamily = family("activation.cu", "act_silu");
pub const ACT_GELU_ERF: KernelFamily = family("activation.cu", "act_gelu_erf");
pub const ACT_GELU_TANH: KernelFamily = family("activation.cu", "act_gelu_tanh");
pub const ACT_RELU: KernelFamily = family("activation.cu", "act_relu");
pub const ACT_GATE_SILU: KernelFamily = family("activation.cu", "act_gate_silu");
pub const ACT_GATE_GELU_ERF: KernelFamily = family("activation.cu", "act_gate_gelu_erf");
pub const ACT_GATE_GELU_TANH: KernelFamily = family("activation.cu", "act_gate_gelu_tanh");
pub const ACT_GATE_RELU: KernelFamily = family("activation.cu", "act_gate_relu");
pub const ATTN_PREFILL_SIMT: KernelFamily = family("attention_prefill.cu", "attn_prefill_simt");
/// Variants `_hd<HD>` for [`TC_HEAD_DIMS`].
pub const ATTN_PREFILL_TC: KernelFamily = KernelFamily {
    file: "attention_prefill.cu",
    stem: "attn_prefill",
    dtypes: HALF,
    variants: &["_hd32", "_hd64", "_hd80", "_hd96", "_hd128", "_hd256"],
};
/// Variants `_hd<HD>` (output + lse) and `_hd<HD>_stats` (also entropy, max weight, argmax) for
/// [`FA2_HEAD_DIMS`] (kernels/attention_prefill_fa2.cu).
pub const ATTN_PREFILL_FA2: KernelFamily = KernelFamily {
    file: "attention_prefill_fa2.cu",
    stem: "attn_prefill_fa2",
    dtypes: HALF,
    variants: &[
        "_hd32",
        "_hd32_stats",
        "_hd64",
        "_hd64_stats",
        "_hd80",
        "_hd80_stats",
        "_hd96",
        "_hd96_stats",
        "_hd128",
        "_hd128_stats",
    ],
};

/// The variant of [`ATTN_PREFILL_FA2`] for `head_dim` with or without statistics.
pub fn fa2_variant(head_dim: usize, stats: bool) -> String {
    format!("_hd{head_dim}{}", if stats { "_stats" } else { "" })
}
/// Variants `_wf32` / `_wf16`: the type of the weights written.
pub const ATTN_PROBS: KernelFamily = KernelFamily {
    file: "attention_probs.cu",
    stem: "attn_probs",
    dtypes: ALL,
    variants: &["_wf32", "_wf16"],
};
/// The received sums of the second pass from its per-row-group partials (f32 only: it reads f64 partials).
pub const ATTN_PROBS_RECEIVED: KernelFamily = KernelFamily {
    file: "attention_probs.cu",
    stem: "attn_probs_received",
    dtypes: &[GpuDtype::F32],
    variants: PLAIN,
};
pub const ATTN_DECODE_PARTIAL: KernelFamily = family("attention_decode.cu", "attn_decode_partial");
pub const ATTN_DECODE_COMBINE: KernelFamily = family("attention_decode.cu", "attn_decode_combine");
/// The decode of several sequences in one launch (`AttnParamsBatch`).
pub const ATTN_DECODE_PARTIAL_BATCH: KernelFamily =
    family("attention_decode.cu", "attn_decode_partial_batch");
pub const ATTN_DECODE_COMBINE_BATCH: KernelFamily =
    family("attention_decode.cu", "attn_decode_combine_batch");

/// Every kernel family, in file order.
pub const KERNELS: &[KernelFamily] = &[
    EMBEDDING_GATHER,
    POSITION_ADD,
    RMSNORM,
    LAYERNORM,
    ROPE,
    RESIDUAL_ADD,
    RESIDUAL_ADD2,
    BIAS_ADD,
    ACT_SILU,
    ACT_GATE_SILU,
    ACT_GELU_ERF,
    ACT_GATE_GELU_ERF,
    ACT_GELU_TANH,
    ACT_GATE_GELU_TANH,
    ACT_RELU,
    ACT_GATE_RELU,
    ATTN_PREFILL_SIMT,
    ATTN_PREFILL_TC,
    ATTN_PREFILL_FA2,
    ATTN_PROBS,
    ATTN_PROBS_RECEIVED,
    ATTN_DECODE_PARTIAL,
    ATTN_DECODE_COMBINE,
    ATTN_DECODE_PARTIAL_BATCH,
    ATTN_DECODE_COMBINE_BATCH,
];

/// The activation kernel `x = act(x)` (`gated = false`) or `up = up · act(gate)` (`gated = true`).
pub fn activation(act: Activation, gated: bool) -> KernelFamily {
    match (act, gated) {
        (Activation::Silu, false) => ACT_SILU,
        (Activation::Gelu, false) => ACT_GELU_ERF,
        (Activation::GeluTanh, false) => ACT_GELU_TANH,
        (Activation::Relu, false) => ACT_RELU,
        (Activation::Silu, true) => ACT_GATE_SILU,
        (Activation::Gelu, true) => ACT_GATE_GELU_ERF,
        (Activation::GeluTanh, true) => ACT_GATE_GELU_TANH,
        (Activation::Relu, true) => ACT_GATE_RELU,
    }
}

/// Names of the kernels that kernel file `file` (e.g. `"norm.cu"`) defines, from [`KERNELS`]; the loader
/// asks the compiled module for each.
pub fn kernel_names(file: &str) -> Vec<String> {
    KERNELS
        .iter()
        .filter(|k| k.file == file)
        .flat_map(|k| k.instances())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_table() {
        assert_eq!(RMSNORM.of(GpuDtype::Bf16), "rmsnorm_bf16");
        assert_eq!(
            ATTN_PREFILL_TC.name(GpuDtype::F16, "_hd64"),
            "attn_prefill_f16_hd64"
        );
        assert_eq!(
            ATTN_PROBS.name(GpuDtype::F32, "_wf16"),
            "attn_probs_f32_wf16"
        );
        assert_eq!(kernel_names("attention_prefill.cu").len(), 3 + 2 * 6);
        assert_eq!(kernel_names("activation.cu").len(), 3 * 8);
        assert_eq!(kernel_names("attention_probs.cu").len(), 3 * 2 + 1);
        assert_eq!(
            ATTN_PROBS_RECEIVED.of(GpuDtype::F32),
            "attn_probs_received_f32"
        );
        let variants: Vec<String> = TC_HEAD_DIMS.iter().map(|h| format!("_hd{h}")).collect();
        assert_eq!(ATTN_PREFILL_TC.variants, variants);
        let fa2: Vec<String> = FA2_HEAD_DIMS
            .iter()
            .flat_map(|&h| [fa2_variant(h, false), fa2_variant(h, true)])
            .collect();
        assert_eq!(ATTN_PREFILL_FA2.variants, fa2);
        assert_eq!(
            ATTN_PREFILL_FA2.name(GpuDtype::Bf16, &fa2_variant(128, true)),
            "attn_prefill_fa2_bf16_hd128_stats"
        );
        assert!(FA2_HEAD_DIMS.iter().all(|h| TC_HEAD_DIMS.contains(h)));
        for file in crate::kernel_sources().iter().map(|(f, _)| *f) {
            if file != "common.cuh" {
                assert!(!kernel_names(file).is_empty(), "{file}");
            }
        }
    }
}
