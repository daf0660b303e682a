//! The sparse linear surrogate of the `ablation` method.

/// L1-regularised least squares with an intercept, by cyclic coordinate descent on
/// centred data: minimises ½n⁻¹‖y − b − Xw‖² + λ‖w‖₁ with λ = `ratio` · λ_max, where
/// λ_max = max_j |x_jᵀ(y − ȳ)| / n is the smallest λ that zeroes every coefficient.
pub fn lasso(x: &[Vec<f64>], y: &[f64], ratio: f64) -> Vec<f64> {
    let n = x.len();
    let k = x.first().map_or(0, Vec::len);
    if n == 0 || k == 0 {
        return vec![0.0; k];
    }
    let nf = n as f64;
    let ym = y.iter().sum::<f64>() / nf;
    let xm: Vec<f64> = (0..k)
        .map(|j| x.iter().map(|r| r[j]).sum::<f64>() / nf)
        .collect();
    let xc: Vec<Vec<f64>> = x
        .iter()
        .map(|r| r.iter().zip(&xm).map(|(a, m)| a - m).collect())
        .collect();
    let mut resid: Vec<f64> = y.iter().map(|v| v - ym).collect();
    let norm: Vec<f64> = (0..k)
        .map(|j| xc.iter().map(|r| r[j] * r[j]).sum::<f64>() / nf)
        .collect();
    let lambda_max = (0..k)
        .map(|j| (xc.iter().zip(&resid).map(|(r, e)| r[j] * e).sum::<f64>() / nf).abs())
        .fold(0.0, f64::max);
    let lambda = ratio.max(0.0) * lambda_max;
    let mut w = vec![0.0; k];
    for _ in 0..1000 {
        let mut max_step: f64 = 0.0;
        for j in 0..k {
            if norm[j] == 0.0 {
                continue;
            }
            // rho = x_jᵀ(resid + x_j w_j) / n
            let rho =
                xc.iter().zip(&resid).map(|(r, e)| r[j] * e).sum::<f64>() / nf + norm[j] * w[j];
            let new = soft_threshold(rho, lambda) / norm[j];
            let d = new - w[j];
            if d != 0.0 {
                for (r, e) in xc.iter().zip(resid.iter_mut()) {
                    *e -= r[j] * d;
                }
                w[j] = new;
                max_step = max_step.max(d.abs());
            }
        }
        if max_step < 1e-10 {
            break;
        }
    }
    w
}

fn soft_threshold(x: f64, l: f64) -> f64 {
    if x > l {
        x - l
    } else if x < -l {
        x + l
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lasso_matches_least_squares_without_penalty_and_zeroes_at_lambda_max() {
        // y = 1 + 2·x0 − 1·x1 on a full 2² design (twice).
        let x: Vec<Vec<f64>> = [[0., 0.], [1., 0.], [0., 1.], [1., 1.]]
            .iter()
            .cycle()
            .take(8)
            .map(|r| r.to_vec())
            .collect();
        let y: Vec<f64> = x.iter().map(|r| 1.0 + 2.0 * r[0] - r[1]).collect();
        let w = lasso(&x, &y, 0.0);
        assert!(
            (w[0] - 2.0).abs() < 1e-9 && (w[1] + 1.0).abs() < 1e-9,
            "{w:?}"
        );
        assert_eq!(lasso(&x, &y, 1.0), vec![0.0, 0.0]);
        // Orthogonal design: soft-thresholding by λ/var(x) = 0.5·λmax/0.25.
        let w = lasso(&x, &y, 0.5);
        // λmax = max|x_jᵀ(y−ȳ)|/n = 0.5 (x0: cov 0.5) → λ = 0.25 → w0 = (0.5−0.25)/0.25 = 1, w1 = −(0.25−0.25)/0.25 = 0.
        assert!((w[0] - 1.0).abs() < 1e-9 && w[1].abs() < 1e-9, "{w:?}");
    }
}
