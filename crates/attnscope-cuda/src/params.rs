//! [`AttnParams`]: the one parameter block of every attention kernel (prefill tensor-core and SIMT, decode
//! partial and combine, the probabilities' second pass), passed by value, the twin of `struct AttnParams`
//! in kernels/common.cuh (flash-attention's `Flash_fwd_params` is the model).
//!
//! The layout cannot drift: [`layout_defines`] turns `size_of`/`offset_of` of this struct into `#define`s
//! that the NVRTC compile step prepends to every kernel file, and common.cuh `static_assert`s its own
//! `sizeof`/`offsetof` against them, so a mismatch fails the compile (tests/nvrtc_compile.rs).

use cudarc::driver::DeviceRepr;
use std::mem::{offset_of, size_of};

/// Operands of one attention kernel launch. Pointers are device addresses (0 = null: an output not
/// computed); counts and strides are elements. Fields a kernel does not read are left 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AttnParams {
    /// Queries `[n_new, q_stride]` (storage dtype), already rotated.
    pub q: u64,
    /// Keys and values of the cache `[n_keys, kv_stride]`.
    pub k: u64,
    pub v: u64,
    /// Output `[n_new, o_stride]`.
    pub o: u64,
    /// First-pass statistics `[n_heads, n_new]`: f32 lse (always), f32 entropy, f32 max weight, u32 argmax.
    pub lse: u64,
    pub entropy: u64,
    pub max_weight: u64,
    pub argmax: u64,
    /// int32 group per cache slot.
    pub groups: u64,
    /// int64 position per cache slot (second pass).
    pub positions: u64,
    /// Split-K decode partials: f32 `[.., 4]` statistics, i32 argmax, f32 `[.., head_dim]` outputs.
    pub part_stat: u64,
    pub part_arg: u64,
    pub part_o: u64,
    /// Second pass: int32 query heads `[n_sel]`, weights (f32 or f16), f32 masses `[n_sel, n_new]`, f64
    /// received `[n_sel, received_stride]` and distance buckets `[n_sel, 65]`.
    pub heads: u64,
    pub weights: u64,
    pub sink: u64,
    pub prev: u64,
    pub self_mass: u64,
    pub group_mass: u64,
    pub received: u64,
    pub distance: u64,
    /// Second pass: f64 received partials `[n_sel, row_groups, n_keys]` (one per row group and key).
    pub recv_part: u64,
    /// Weights of selected head s, row i, at `weights + s·w_head_stride + i·w_row_stride`.
    pub w_head_stride: i64,
    pub w_row_stride: i64,
    pub q_stride: i32,
    pub kv_stride: i32,
    pub o_stride: i32,
    /// 1 = an isolated sequence (no attention to other members of a slot's group).
    pub isolated: i32,
    /// Sliding window in slots, 0 = none.
    pub window: i32,
    /// Cache slot of the first query row.
    pub q_start: i32,
    pub n_new: i32,
    pub n_heads: i32,
    pub n_kv_heads: i32,
    pub head_dim: i32,
    /// Factor on q·k.
    pub scale: f32,
    /// Keys per split (decode) or per z-block (second pass).
    pub split_len: i32,
    /// Splits of the decode (combine kernel).
    pub n_splits: i32,
    /// Selected heads of the second pass.
    pub n_sel: i32,
    pub received_stride: i32,
    /// Second pass: row groups (gridDim.x of attn_probs, the partials' middle axis); also makes the struct
    /// end on a multiple of 8 bytes (no implicit padding anywhere).
    pub row_groups: i32,
}

// SAFETY: AttnParams is #[repr(C)], Copy, made only of u64/i64/i32/f32 with no implicit padding (asserted
// below and against the C twin by static_assert at NVRTC compile time), so its bytes are exactly the
// `struct AttnParams` the kernels take by value.
unsafe impl DeviceRepr for AttnParams {}

/// Most decode calls of one batched launch (`AttnParamsBatch`; DECODE_MAX_BATCH in kernels/attention_decode.cu,
/// defined there by [`layout_defines`]).
pub const DECODE_MAX_BATCH: usize = 8;

/// The parameter blocks of a batched decode launch (kernels/attention_decode.cu `attn_decode_*_batch_<T>`):
/// sequence z reads `p[z]`; entries past the batch are unused. 2 KiB, within the 4 KiB of kernel parameters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AttnParamsBatch {
    pub p: [AttnParams; DECODE_MAX_BATCH],
}

// SAFETY: an array of AttnParams (itself DeviceRepr, no padding) in a #[repr(C)] struct: its bytes are the
// C `struct AttnParamsBatch { AttnParams p[DECODE_MAX_BATCH]; }`, whose size the kernel asserts.
unsafe impl DeviceRepr for AttnParamsBatch {}

/// Every field with its offset, in declaration order (the names are those of the C struct).
fn field_offsets() -> [(&'static str, usize); 40] {
    macro_rules! offsets {
        ($($f:ident),* $(,)?) => { [$((stringify!($f), offset_of!(AttnParams, $f))),*] };
    }
    offsets!(
        q,
        k,
        v,
        o,
        lse,
        entropy,
        max_weight,
        argmax,
        groups,
        positions,
        part_stat,
        part_arg,
        part_o,
        heads,
        weights,
        sink,
        prev,
        self_mass,
        group_mass,
        received,
        distance,
        recv_part,
        w_head_stride,
        w_row_stride,
        q_stride,
        kv_stride,
        o_stride,
        isolated,
        window,
        q_start,
        n_new,
        n_heads,
        n_kv_heads,
        head_dim,
        scale,
        split_len,
        n_splits,
        n_sel,
        received_stride,
        row_groups,
    )
}

/// `#define ATTN_PARAMS_SIZE …` and `#define ATTN_PARAMS_OFF_<field> …` for every field, from this
/// struct's layout; prepended to every kernel file so common.cuh can assert its twin against them.
pub fn layout_defines() -> String {
    let mut s = format!("#define ATTN_PARAMS_SIZE {}\n", size_of::<AttnParams>());
    s.push_str(&format!("#define DECODE_MAX_BATCH {DECODE_MAX_BATCH}\n"));
    for (name, off) in field_offsets() {
        s.push_str(&format!("#define ATTN_PARAMS_OFF_{name} {off}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_packed_and_matches_the_defines() {
        assert_eq!(size_of::<AttnParams>(), 22 * 8 + 2 * 8 + 16 * 4);
        assert_eq!(std::mem::align_of::<AttnParams>(), 8);
        let offsets = field_offsets();
        // No implicit padding: each field starts where the previous one ends.
        let sizes = |i: usize| if i < 24 { 8 } else { 4 };
        for i in 1..offsets.len() {
            assert_eq!(
                offsets[i].1,
                offsets[i - 1].1 + sizes(i - 1),
                "{}",
                offsets[i].0
            );
        }
        assert_eq!(offsets[0], ("q", 0));
        assert_eq!(offset_of!(AttnParams, scale), 232);
        let defines = layout_defines();
        assert!(defines.starts_with("#define ATTN_PARAMS_SIZE 256\n"));
        assert!(defines.contains("#define ATTN_PARAMS_OFF_received_stride 248\n"));
    }
}
