use proptest::prelude::*;

use super::*;

fn close(a: f32, b: f32, scale: f32) -> bool {
    (a - b).abs() <= 1e-4 * scale.max(1.0)
}

fn check_all_kernels(a: &[f32], b: &[f32]) -> Result<(), TestCaseError> {
    let reference = Kernels::scalar();
    let scale: f32 = a.iter().chain(b).map(|x| x * x).sum::<f32>();
    for k in Kernels::available() {
        for metric in [Metric::L2, Metric::Dot] {
            let want = reference.distance(metric).eval(a, b);
            let got = k.distance(metric).eval(a, b);
            prop_assert!(
                close(want, got, scale),
                "{} {metric:?} dim {}: {want} vs {got}",
                k.isa,
                a.len()
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn simd_kernels_match_scalar_for_every_small_dim(
        dim in 1usize..=300,
        seed in any::<u64>(),
    ) {
        let mut s = seed | 1;
        let mut next = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0 };
        let a: Vec<f32> = (0..dim).map(|_| next()).collect();
        let b: Vec<f32> = (0..dim).map(|_| next()).collect();
        check_all_kernels(&a, &b)?;
    }
}

#[test]
fn every_dim_from_1_to_300_and_large_ones_agree() {
    let dims = (1..=300).chain([384, 512, 768, 1024, 1536, 4096]);
    for dim in dims {
        let a: Vec<f32> = (0..dim)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let b: Vec<f32> = (0..dim)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 20.0)
            .collect();
        check_all_kernels(&a, &b).expect("kernels agree");
    }
}

#[test]
fn batched_kernels_are_bit_identical_to_single_calls() {
    let dims = (1..=300).chain([384, 512, 768, 1024, 1536]);
    for dim in dims {
        let row = |salt: usize| -> Vec<f32> {
            (0..dim)
                .map(|i| (((i + salt) * 37 % 101) as f32 - 50.0) / (17.0 + salt as f32))
                .collect()
        };
        let q = row(0);
        let rows: Vec<Vec<f32>> = (1..=BATCH).map(row).collect();
        let refs: [&[f32]; BATCH] = std::array::from_fn(|i| &rows[i][..]);
        for k in Kernels::available() {
            for metric in [Metric::L2, Metric::Dot] {
                let d = k.distance(metric);
                let single = refs.map(|r| d.eval(&q, r).to_bits());
                let batched = d.eval_batch(&q, refs).map(f32::to_bits);
                assert_eq!(single, batched, "{} {metric:?} dim {dim}", k.isa);
            }
        }
    }
}

#[test]
fn known_values() {
    for k in Kernels::available() {
        let l2 = k.distance(Metric::L2);
        let dot = k.distance(Metric::Dot);
        assert_eq!(
            l2.eval(&[0.0, 0.0, 0.0], &[1.0, 2.0, 2.0]),
            9.0,
            "{}",
            k.isa
        );
        assert_eq!(
            dot.eval(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]),
            -32.0,
            "{}",
            k.isa
        );
    }
}

#[test]
fn normalize_gives_unit_length_and_rejects_zero() {
    let mut v = vec![3.0, 4.0];
    assert!(normalize(&mut v));
    assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
    let mut z = vec![0.0; 4];
    assert!(!normalize(&mut z));
}

#[test]
fn auto_resolves_to_the_best_set_and_every_name_to_itself_or_a_precise_error() {
    let available = Kernels::available();
    assert_eq!(resolve("auto").expect("auto").isa, available[0].isa);
    assert_eq!(resolve("scalar").expect("scalar").isa, "scalar");
    for name in KERNEL_SET_NAMES {
        match resolve(name) {
            Ok(k) => assert_eq!(k.isa, name),
            Err(KernelChoiceError::Unsupported { supported, .. }) => {
                assert!(!available.iter().any(|k| k.isa == name));
                assert!(supported.ends_with("scalar"), "{supported}");
            }
            Err(e) => panic!("{name}: {e}"),
        }
    }
    let err = resolve("avx9000").expect_err("unknown name");
    assert!(matches!(err, KernelChoiceError::Unknown { .. }));
    assert!(err.to_string().contains("avx9000"), "{err}");
}

#[test]
fn kernels_are_chosen_once_per_process() {
    let chosen = kernels().isa;
    assert_eq!(select(chosen).expect("same set again").isa, chosen);
    if chosen != "scalar" {
        let err = select("scalar").expect_err("switching sets");
        assert_eq!(
            err,
            KernelChoiceError::AlreadyChosen {
                chosen,
                name: "scalar".into()
            }
        );
    }
}
