//! Distance kernels: squared L2 and negated inner product over f32 slices.
//!
//! The best kernel set for this CPU (AVX-512F, AVX2+FMA, or portable scalar) is chosen **once**
//! at start-up and handed out as a [`Distance`]: a plain function pointer that hot loops call
//! directly, with no feature check per call. Cosine is served by normalising vectors once at
//! write time and using the inner-product kernel.
//!
//! This module never allocates and never looks at anything but the two slices it is given.

mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{prefetch, prefetch_all};

use std::sync::OnceLock;

use longbow_common::Metric;

/// Raw kernel signature. `unsafe` because SIMD kernels may only run on CPUs that have the
/// instructions; [`Kernels`] is only ever built after that check.
type KernelFn = unsafe fn(&[f32], &[f32]) -> f32;
/// Batched signature: one query against [`BATCH`] rows, bit-identical to single calls.
type KernelBatchFn = unsafe fn(&[f32], [&[f32]; BATCH]) -> [f32; BATCH];

/// Rows per batched kernel call.
pub const BATCH: usize = 8;

/// One set of kernels for one instruction set.
#[derive(Clone, Copy)]
pub struct Kernels {
    l2sq: KernelFn,
    neg_dot: KernelFn,
    l2sq_batch: KernelBatchFn,
    neg_dot_batch: KernelBatchFn,
    /// Instruction set name, for logs and metrics.
    pub isa: &'static str,
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernels").field("isa", &self.isa).finish()
    }
}

/// A distance function for one metric, ready to call in a hot loop. Smaller is nearer.
#[derive(Clone, Copy)]
pub struct Distance {
    f: KernelFn,
    batch: KernelBatchFn,
}

impl Distance {
    /// Distance between `a` and `b` (equal lengths expected; the shorter length is used).
    #[inline(always)]
    pub fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: a `Distance` is only built from a `Kernels` set whose instruction set was
        // detected on this CPU (see `detect`), so calling its kernels is sound.
        unsafe { (self.f)(a, b) }
    }

    /// Distances from `q` to [`BATCH`] rows at once, each bit-identical to [`Distance::eval`].
    /// Searches use it to keep several rows' memory loads in flight.
    #[inline(always)]
    pub fn eval_batch(&self, q: &[f32], rows: [&[f32]; BATCH]) -> [f32; BATCH] {
        // SAFETY: as for `eval`.
        unsafe { (self.batch)(q, rows) }
    }
}

impl Kernels {
    /// The portable kernels (always available).
    pub fn scalar() -> Self {
        Kernels {
            l2sq: scalar::l2sq,
            neg_dot: scalar::neg_dot,
            l2sq_batch: |q, rows| rows.map(|r| scalar::l2sq(q, r)),
            neg_dot_batch: |q, rows| rows.map(|r| scalar::neg_dot(q, r)),
            isa: "scalar",
        }
    }

    /// Every kernel set this CPU can run, best first (used by tests to compare them).
    pub fn available() -> Vec<Kernels> {
        let mut out = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                out.push(Kernels {
                    l2sq: x86::l2sq_avx512,
                    neg_dot: x86::neg_dot_avx512,
                    l2sq_batch: x86::l2sq_rows_avx512::<BATCH>,
                    neg_dot_batch: x86::neg_dot_rows_avx512::<BATCH>,
                    isa: "avx512f",
                });
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                out.push(Kernels {
                    l2sq: x86::l2sq_avx2,
                    neg_dot: x86::neg_dot_avx2,
                    l2sq_batch: x86::l2sq_rows_avx2::<BATCH>,
                    neg_dot_batch: x86::neg_dot_rows_avx2::<BATCH>,
                    isa: "avx2+fma",
                });
            }
        }
        out.push(Kernels::scalar());
        out
    }

    /// The distance function for `metric`: squared L2 for `l2`, negated inner product for
    /// `dot` and for `cosine` (whose vectors are normalised beforehand).
    pub fn distance(&self, metric: Metric) -> Distance {
        match metric {
            Metric::L2 => Distance {
                f: self.l2sq,
                batch: self.l2sq_batch,
            },
            Metric::Cosine | Metric::Dot => Distance {
                f: self.neg_dot,
                batch: self.neg_dot_batch,
            },
        }
    }
}

/// Why a kernel set could not be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelChoiceError {
    /// The name is not a kernel set Longbow has.
    #[error("simd: unknown kernel set {name:?}; choose auto, avx512f, avx2+fma or scalar")]
    Unknown {
        /// The name asked for.
        name: String,
    },
    /// This CPU lacks the instructions of the named set.
    #[error("simd: this CPU cannot run {name}; it supports {supported}")]
    Unsupported {
        /// The name asked for.
        name: String,
        /// The sets this CPU can run, best first.
        supported: String,
    },
    /// The process already runs another set (kernels are chosen once).
    #[error(
        "simd: kernels are already fixed to {chosen} in this process; cannot switch to {name}"
    )]
    AlreadyChosen {
        /// The set in use.
        chosen: &'static str,
        /// The name asked for.
        name: String,
    },
}

/// Names a `--simd` choice may take besides `auto`, best first.
pub const KERNEL_SET_NAMES: [&str; 3] = ["avx512f", "avx2+fma", "scalar"];

/// The kernel set `choice` names on this CPU: `auto` is the best available; a set's name is
/// that set, or an error when this CPU lacks its instructions.
pub fn resolve(choice: &str) -> Result<Kernels, KernelChoiceError> {
    let all = Kernels::available();
    if choice == "auto" {
        // `available` always ends with the scalar set, so it is never empty.
        return Ok(all[0]);
    }
    if !KERNEL_SET_NAMES.contains(&choice) {
        return Err(KernelChoiceError::Unknown {
            name: choice.to_string(),
        });
    }
    all.iter()
        .find(|k| k.isa == choice)
        .copied()
        .ok_or_else(|| KernelChoiceError::Unsupported {
            name: choice.to_string(),
            supported: all.iter().map(|k| k.isa).collect::<Vec<_>>().join(", "),
        })
}

static CHOSEN: OnceLock<Kernels> = OnceLock::new();

/// Fix this process's kernel set to `choice` (see [`resolve`]). Call at start-up, before any
/// segment exists; a later call succeeds only if it resolves to the set already in use.
pub fn select(choice: &str) -> Result<&'static Kernels, KernelChoiceError> {
    let wanted = resolve(choice)?;
    let chosen = CHOSEN.get_or_init(|| {
        tracing::info!(isa = wanted.isa, choice, "distance kernels selected");
        wanted
    });
    if chosen.isa == wanted.isa {
        Ok(chosen)
    } else {
        Err(KernelChoiceError::AlreadyChosen {
            chosen: chosen.isa,
            name: choice.to_string(),
        })
    }
}

/// The kernel set of this process: the one [`select`] fixed, or else the best this CPU runs
/// (fixed on first use).
pub fn kernels() -> &'static Kernels {
    CHOSEN.get_or_init(|| {
        // `available` always ends with the scalar set, so it is never empty.
        let best = Kernels::available()[0];
        tracing::info!(isa = best.isa, "distance kernels selected");
        best
    })
}

/// Scale `v` to unit length in place. Returns false (leaving `v` unchanged) for a zero vector.
pub fn normalize(v: &mut [f32]) -> bool {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm == 0.0 || !norm.is_finite() {
        return false;
    }
    let inv = 1.0 / norm;
    v.iter_mut().for_each(|x| *x *= inv);
    true
}

#[cfg(test)]
mod tests;
