//! The vendored candle-core's backward pass (vendor/README.md): the first gradient a tensor
//! receives is stored as it is, later ones are added, and `a − b` sends `−grad` to `b`.
//! Each case is checked against gradients written out by hand, and every gradient must be
//! contiguous, as upstream's zero-filled sums were (vic's optimizer reads them as slices).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use candle_core::{Device, Tensor, Var};

fn var(values: &[f32], shape: &[usize]) -> Var {
    Var::from_tensor(&Tensor::from_slice(values, shape, &Device::Cpu).unwrap()).unwrap()
}

fn grad_of(g: &candle_core::backprop::GradStore, v: &Var) -> Vec<f32> {
    let t = g.get(v.as_tensor()).expect("a gradient");
    assert!(
        t.is_contiguous(),
        "gradient of shape {:?} is a view",
        t.dims()
    );
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn a_tensor_used_several_times_gets_the_sum_of_its_gradients() {
    let a = var(&[1.0, -2.0, 3.0], &[3]);
    // y = Σ (a + a + a·a) → ∂y/∂a = 2 + 2a.
    let y = ((a.as_tensor() + a.as_tensor()).unwrap() + a.as_tensor().sqr().unwrap())
        .unwrap()
        .sum_all()
        .unwrap();
    let g = y.backward().unwrap();
    assert_eq!(grad_of(&g, &a), vec![4.0, -2.0, 8.0]);
}

#[test]
fn the_right_operand_of_a_difference_gets_minus_the_gradient() {
    let a = var(&[1.0, 2.0], &[2]);
    let b = var(&[5.0, -1.0], &[2]);
    // y = Σ 3·(a − b) − Σ b² → ∂y/∂a = 3, ∂y/∂b = −3 − 2b.
    let d = (a.as_tensor() - b.as_tensor()).unwrap();
    let y = ((d * 3.0).unwrap().sum_all().unwrap()
        - b.as_tensor().sqr().unwrap().sum_all().unwrap())
    .unwrap();
    let g = y.backward().unwrap();
    assert_eq!(grad_of(&g, &a), vec![3.0, 3.0]);
    assert_eq!(grad_of(&g, &b), vec![-13.0, -1.0]);
}

#[test]
fn broadcast_narrow_and_transpose_gradients_are_contiguous_and_right() {
    let a = var(&[1.0, 2.0, 3.0], &[1, 3]);
    let c = Tensor::from_slice(&[1f32, 2.0, 3.0, 4.0, 5.0, 6.0], (2, 3), &Device::Cpu).unwrap();
    // Broadcast: y = Σ a·c over two rows → ∂y/∂a = column sums of c.
    let y = a.as_tensor().broadcast_mul(&c).unwrap().sum_all().unwrap();
    let g = y.backward().unwrap();
    assert_eq!(grad_of(&g, &a), vec![5.0, 7.0, 9.0]);

    // A scalar's gradient broadcast to a whole tensor (sum), then a narrow of it.
    let w = var(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let y = w.as_tensor().narrow(1, 1, 1).unwrap().sum_all().unwrap();
    let g = y.backward().unwrap();
    assert_eq!(grad_of(&g, &w), vec![0.0, 1.0, 0.0, 1.0]);

    // A transposed use: y = Σ wᵀ ⊙ k → ∂y/∂w = kᵀ, stored contiguous.
    let k = Tensor::from_slice(&[1f32, 2.0, 3.0, 4.0], (2, 2), &Device::Cpu).unwrap();
    let y = (w.as_tensor().t().unwrap() * &k)
        .unwrap()
        .sum_all()
        .unwrap();
    let g = y.backward().unwrap();
    assert_eq!(grad_of(&g, &w), vec![1.0, 3.0, 2.0, 4.0]);
}

#[test]
fn an_intermediate_tensor_keeps_a_view_gradient_that_flows_on() {
    // h = 2v is not a variable: its gradient (a broadcast of c's column sums, then a second
    // use added) may stay a view, and v's gradient must still come out right and contiguous.
    let v = var(&[1.0, -1.0, 0.5], &[1, 3]);
    let h = (v.as_tensor() * 2.0).unwrap();
    let c = Tensor::from_slice(&[1f32, 2.0, 3.0, 4.0, 5.0, 6.0], (2, 3), &Device::Cpu).unwrap();
    let y1 = h.broadcast_mul(&c).unwrap().sum_all().unwrap();
    let y2 = h.sqr().unwrap().sum_all().unwrap();
    let y = (y1 + y2).unwrap();
    let g = y.backward().unwrap();
    // ∂y/∂v = 2·(colsum(c) + 2h) = 2·([5, 7, 9] + [4, −4, 2]).
    assert_eq!(grad_of(&g, &v), vec![18.0, 6.0, 22.0]);
}

#[test]
fn a_matmul_chain_matches_its_closed_form() {
    // y = Σ (x·W)² → ∂y/∂W = 2 xᵀ (x W), ∂y/∂x = 2 (x W) Wᵀ.
    let x = var(&[1.0, 2.0, -1.0, 0.5], &[2, 2]);
    let w = var(&[0.5, -1.0, 2.0, 1.0], &[2, 2]);
    let xw = x.as_tensor().matmul(w.as_tensor()).unwrap();
    let y = xw.sqr().unwrap().sum_all().unwrap();
    let g = y.backward().unwrap();
    let two_xw = (&xw * 2.0).unwrap();
    let dw = x.as_tensor().t().unwrap().matmul(&two_xw).unwrap();
    let dx = two_xw.matmul(&w.as_tensor().t().unwrap()).unwrap();
    assert_eq!(
        grad_of(&g, &w),
        dw.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
    assert_eq!(
        grad_of(&g, &x),
        dx.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
}
