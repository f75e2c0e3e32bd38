//! The tensor-core output reference of the GPU tests (tests/gpu_common/tc_reference.rs, which emulates the
//! rounding of P to bf16/f16 in the kernel's key tiles) against deliberate fragment-layout errors, on the
//! CPU: no GPU is needed, so CI runs it.
//!
//! For each shape and 16-bit type: the emulation with f32 scores and exp2 (what an honest kernel computes)
//! passes the bound, and the same emulation with keys, rows or dimensions exchanged inside a fragment fails
//! it. Whether the old bound, u·(1 + |ref|) + 2e-4 against an f32 reference, would have caught each fault is
//! printed alongside, with the median ratio of the two bounds.

mod gpu_common;

use gpu_common::Elem;
use gpu_common::attention::{Problem, Shape, slots};
use gpu_common::round_to;
use gpu_common::tc_reference::{Arith, Fault, TileWalk};

fn shape(n_keys: usize, q_start: usize, head_dim: usize, heads: (usize, usize)) -> Shape {
    Shape {
        n_keys,
        q_start,
        head_dim,
        n_heads: heads.0,
        n_kv_heads: heads.1,
        isolated: true,
        window: None,
    }
}

/// Whether the old bound (u·(1 + |ref|) + 2e-4 against the unrounded-P reference) accepts `got`.
fn old_bound_accepts<E: Elem>(got: &[f32], f32_ref: &[f32]) -> bool {
    got.iter()
        .zip(f32_ref)
        .all(|(&g, &w)| (g - w).abs() <= E::UNIT * (1.0 + w.abs()) + 2e-4)
}

/// Checks the bound on `s`; returns the faults the old bound would have accepted.
fn check<E: Elem>(s: Shape, walk: TileWalk) -> Vec<Fault> {
    let mut old_accepts = Vec::new();
    let p = Problem::new(s, slots(s.n_keys), round_to::<E>);
    let reference = p.tc_emulated::<E>(walk, Fault::None, Arith::F64);
    let label = format!("{} {s:?} {walk:?}", E::SUFFIX);
    let honest = p.tc_emulated::<E>(walk, Fault::None, Arith::F32);
    if let Err(e) = reference.check(&honest.out) {
        panic!("{label}: an honest f32 kernel fails the bound: {e}");
    }
    let f32_ref = p.reference(&Default::default()).out;
    let mut ratios: Vec<f32> = (0..f32_ref.len())
        .map(|i| reference.tol(i) / (E::UNIT * (1.0 + f32_ref[i].abs()) + 2e-4))
        .collect();
    ratios.sort_by(f32::total_cmp);
    println!(
        "{label}: emulating bound / old bound, median {:.3}",
        ratios[ratios.len() / 2]
    );
    assert!(
        old_bound_accepts::<E>(&honest.out, &f32_ref),
        "{label}: the old bound rejects the honest emulation"
    );
    for fault in [
        Fault::SwapKeys8,
        Fault::SwapRows8,
        Fault::SwapDims8,
        Fault::DropKeyStep,
        Fault::PvOff3Percent,
    ] {
        let faulty = p.tc_emulated::<E>(walk, fault, Arith::F32);
        let caught = reference.check(&faulty.out);
        let old = old_bound_accepts::<E>(&faulty.out, &f32_ref);
        if old {
            old_accepts.push(fault);
        }
        println!(
            "{label} {fault:?}: emulating bound {}; old bound {}",
            match &caught {
                Ok(()) => "PASSES (bad)".to_string(),
                Err(e) => format!("catches it ({e})"),
            },
            if old { "would accept it" } else { "catches it" }
        );
        assert!(caught.is_err(), "{label}: {fault:?} passes the bound");
    }
    old_accepts
}

const WALK: TileWalk = TileWalk::Ascending { bk: 64 };

#[test]
fn swapped_fragments_fail_the_bf16_reference() {
    for s in [
        shape(129, 0, 64, (4, 2)),
        shape(300, 0, 128, (4, 1)),
        shape(200, 72, 64, (2, 2)),
    ] {
        check::<half::bf16>(s, WALK);
    }
    check::<half::bf16>(shape(129, 0, 256, (2, 1)), TileWalk::Ascending { bk: 32 });
    // The fast kernel's walk (FULL tiles first), with and without groups, windowed.
    for (s, bk) in [
        (shape(300, 0, 64, (2, 1)), 64),
        (shape(300, 0, 128, (2, 1)), 32),
    ] {
        check::<half::bf16>(s, TileWalk::FullFirst { bk });
        let visible = Shape {
            isolated: false,
            window: Some(100),
            ..s
        };
        check::<half::bf16>(visible, TileWalk::FullFirst { bk });
    }
    // Long rows, where every p is small.
    let old = check::<half::bf16>(shape(1000, 900, 64, (2, 1)), WALK);
    println!("faults the old bound accepts at T = 1000: {old:?}");
}

#[test]
fn swapped_fragments_fail_the_f16_reference() {
    for s in [shape(129, 0, 64, (4, 2)), shape(300, 0, 128, (4, 1))] {
        check::<half::f16>(s, WALK);
    }
}
