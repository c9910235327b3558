//! The two key schemes, pair detection and axis inference.

use std::collections::BTreeMap;

use crate::NormAxis;
use crate::formats::{Result, TorchError};

/// How a checkpoint names a weight-normalized parameter's `g` and `v`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `torch.nn.utils.weight_norm`: `<name>_g`, `<name>_v`.
    Legacy,
    /// `torch.nn.utils.parametrizations.weight_norm`:
    /// `<prefix>.parametrizations.<param>.original0` (g) and `.original1` (v).
    Parametrizations,
}

impl Scheme {
    /// `"legacy"` or `"parametrizations"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Legacy => "legacy",
            Self::Parametrizations => "parametrizations",
        }
    }
}

impl core::str::FromStr for Scheme {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "legacy" => Ok(Self::Legacy),
            "parametrizations" => Ok(Self::Parametrizations),
            other => Err(format!(
                "unknown scheme `{other}`: use `legacy` or `parametrizations`"
            )),
        }
    }
}

/// A weight-norm pair found in a checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Pair {
    /// The parameter's plain name, e.g. `"conv.weight"`.
    pub name: String,
    /// The scheme its tensors are named in.
    pub scheme: Scheme,
    /// The key of `g`.
    pub g_key: String,
    /// The key of `v`.
    pub v_key: String,
    /// The kept axis (in PyTorch's layout, as stored).
    pub axis: NormAxis,
}

/// The keys `(g, v)` of parameter `name` (e.g. `"conv.weight"`) in `scheme`.
pub fn pair_keys(name: &str, scheme: Scheme) -> (String, String) {
    match scheme {
        Scheme::Legacy => (format!("{name}_g"), format!("{name}_v")),
        Scheme::Parametrizations => {
            let (prefix, param) = match name.rsplit_once('.') {
                Some((p, n)) => (format!("{p}."), n),
                None => (String::new(), name),
            };
            (
                format!("{prefix}parametrizations.{param}.original0"),
                format!("{prefix}parametrizations.{param}.original1"),
            )
        }
    }
}

/// The kept axis that `g`'s shape implies for `v`: see [`NormAxis::implied_by`].
pub fn infer_axis(g: &[usize], v: &[usize]) -> Option<NormAxis> {
    NormAxis::implied_by(g, v)
}

/// Whether a `g` of shape `g` fits `v` normalized along `axis` (PyTorch's 0-dim `g` for the
/// whole tensor, or the keep-dims shape).
fn g_fits(g: &[usize], v: &[usize], axis: NormAxis) -> bool {
    (axis == NormAxis::Whole && g.is_empty()) || g == axis.g_shape(v).as_slice()
}

/// Finds every weight-norm pair among `tensors` (name and shape), in both schemes, for any
/// parameter name, and the axis of each: inferred from `g`'s shape, or PyTorch's `dim` if given
/// (`Some(None)` for the whole tensor).
///
/// A legacy pair is any `X_g` beside an `X_v`; a lone `*weight_g`/`*weight_v`, or a lone
/// `original0`/`original1` of a parametrization, is an error.
///
/// The pairs are returned sorted by parameter name.
///
/// # Errors
///
/// [`TorchError::MissingPartner`], [`TorchError::ShapeMismatch`], [`TorchError::BothSchemes`]
/// when one parameter has a pair in each scheme, or [`TorchError::Op`] for a `dim` out of range.
pub fn detect_pairs(
    tensors: &[(String, Vec<usize>)],
    dim: Option<Option<i64>>,
) -> Result<Vec<Pair>> {
    let shapes: BTreeMap<&str, &[usize]> = tensors
        .iter()
        .map(|(n, s)| (n.as_str(), s.as_slice()))
        .collect();
    let mut pairs = Vec::new();
    for (&key, _) in shapes.iter() {
        // Parametrizations: <prefix>parametrizations.<param>.original{0,1}
        if let Some(rest) = key
            .strip_suffix(".original0")
            .or_else(|| key.strip_suffix(".original1"))
        {
            let (head, param) = match rest.rsplit_once('.') {
                Some(x) => x,
                None => continue,
            };
            let prefix = if head == "parametrizations" {
                Some("")
            } else {
                head.strip_suffix(".parametrizations")
            };
            let Some(prefix) = prefix else { continue };
            let name = if prefix.is_empty() {
                param.to_string()
            } else {
                format!("{prefix}.{param}")
            };
            let (g_key, v_key) = pair_keys(&name, Scheme::Parametrizations);
            if key == v_key && shapes.contains_key(g_key.as_str()) {
                continue; // reported from the g side
            }
            let missing = if key == g_key { &v_key } else { &g_key };
            if !shapes.contains_key(missing.as_str()) {
                return Err(TorchError::MissingPartner {
                    present: key.to_string(),
                    missing: missing.clone(),
                });
            }
            pairs.push((name, Scheme::Parametrizations, g_key, v_key));
            continue;
        }
        // Legacy: X_g beside X_v.
        if let Some(name) = key.strip_suffix("_g") {
            let v_key = format!("{name}_v");
            if shapes.contains_key(v_key.as_str()) {
                pairs.push((name.to_string(), Scheme::Legacy, key.to_string(), v_key));
            } else if name.ends_with("weight") {
                return Err(TorchError::MissingPartner {
                    present: key.to_string(),
                    missing: v_key,
                });
            }
        } else if let Some(name) = key.strip_suffix("_v") {
            let g_key = format!("{name}_g");
            if name.ends_with("weight") && !shapes.contains_key(g_key.as_str()) {
                return Err(TorchError::MissingPartner {
                    present: key.to_string(),
                    missing: g_key,
                });
            }
        }
    }
    // One parameter with a pair in each scheme: fusing would write its name twice, and
    // neither pair may silently win.
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(w) = pairs.windows(2).find(|w| w[0].0 == w[1].0) {
        let (legacy, param) = if w[0].1 == Scheme::Legacy {
            (&w[0], &w[1])
        } else {
            (&w[1], &w[0])
        };
        return Err(TorchError::BothSchemes {
            name: w[0].0.clone(),
            legacy_g: legacy.2.clone(),
            legacy_v: legacy.3.clone(),
            param_g: param.2.clone(),
            param_v: param.3.clone(),
        });
    }
    pairs
        .into_iter()
        .map(|(name, scheme, g_key, v_key)| {
            let g = shapes[g_key.as_str()];
            let v = shapes[v_key.as_str()];
            let mismatch = || TorchError::ShapeMismatch {
                name: name.clone(),
                g: g.to_vec(),
                v: v.to_vec(),
            };
            let axis = match dim {
                Some(dim) => {
                    let axis =
                        NormAxis::from_torch(dim, v.len()).map_err(|source| TorchError::Op {
                            name: name.clone(),
                            source: Box::new(source),
                        })?;
                    if !g_fits(g, v, axis) {
                        return Err(mismatch());
                    }
                    axis
                }
                None => {
                    crate::axis::check_rank(v.len()).map_err(|source| TorchError::Op {
                        name: name.clone(),
                        source: Box::new(source),
                    })?;
                    infer_axis(g, v).ok_or_else(mismatch)?
                }
            };
            Ok(Pair {
                name,
                scheme,
                g_key,
                v_key,
                axis,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, shape: &[usize]) -> (String, Vec<usize>) {
        (name.to_string(), shape.to_vec())
    }

    #[test]
    fn keys_of_both_schemes() {
        assert_eq!(
            pair_keys("a.b.weight", Scheme::Legacy),
            ("a.b.weight_g".into(), "a.b.weight_v".into())
        );
        assert_eq!(
            pair_keys("a.b.weight", Scheme::Parametrizations),
            (
                "a.b.parametrizations.weight.original0".into(),
                "a.b.parametrizations.weight.original1".into()
            )
        );
        assert_eq!(
            pair_keys("weight", Scheme::Parametrizations).0,
            "parametrizations.weight.original0"
        );
    }

    #[test]
    fn axis_inference() {
        assert_eq!(infer_axis(&[], &[5, 4]), Some(NormAxis::Whole));
        assert_eq!(infer_axis(&[5, 1], &[5, 4]), Some(NormAxis::Keep(0)));
        assert_eq!(infer_axis(&[1, 4], &[5, 4]), Some(NormAxis::Keep(1)));
        assert_eq!(infer_axis(&[1, 3, 1], &[6, 3, 5]), Some(NormAxis::Keep(1)));
        // Several axes fit only when they have size 1: the same norms either way.
        assert_eq!(infer_axis(&[1, 1, 4], &[1, 1, 4]), Some(NormAxis::Keep(2)));
        assert_eq!(infer_axis(&[1, 1], &[1, 4]), Some(NormAxis::Keep(0)));
        assert_eq!(infer_axis(&[1, 1], &[3, 4]), Some(NormAxis::Whole));
        assert_eq!(infer_axis(&[5], &[5, 4]), None);
        assert_eq!(infer_axis(&[4, 1], &[5, 4]), None);
    }

    #[test]
    fn detection_in_both_schemes_for_any_name() {
        let tensors = vec![
            t("enc.0.weight_g", &[6, 1, 1]),
            t("enc.0.weight_v", &[6, 3, 5]),
            t("enc.0.bias", &[6]),
            t("dec.parametrizations.weight.original0", &[1, 4]),
            t("dec.parametrizations.weight.original1", &[5, 4]),
            t("emb.table_g", &[]),
            t("emb.table_v", &[10, 3]),
            t("lonely_g", &[3]),
        ];
        let pairs = detect_pairs(&tensors, None).unwrap();
        let summary: Vec<_> = pairs
            .iter()
            .map(|p| (p.name.as_str(), p.scheme, p.axis))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("dec.weight", Scheme::Parametrizations, NormAxis::Keep(1)),
                ("emb.table", Scheme::Legacy, NormAxis::Whole),
                ("enc.0.weight", Scheme::Legacy, NormAxis::Keep(0)),
            ]
        );
    }

    #[test]
    fn a_parameter_with_pairs_in_both_schemes_is_refused() {
        let tensors = vec![
            t("x.weight_g", &[2, 1]),
            t("x.weight_v", &[2, 3]),
            t("x.parametrizations.weight.original0", &[2, 1]),
            t("x.parametrizations.weight.original1", &[2, 3]),
        ];
        let err = detect_pairs(&tensors, None).unwrap_err();
        assert!(matches!(err, TorchError::BothSchemes { ref name, .. } if name == "x.weight"));
        assert_eq!(
            err.to_string(),
            "`x.weight` has a weight-norm pair in both schemes (`x.weight_g`/`x.weight_v` and \
             `x.parametrizations.weight.original0`/`x.parametrizations.weight.original1`): \
             remove one of them"
        );
    }

    #[test]
    fn missing_partners_and_mismatches() {
        let err = detect_pairs(&[t("a.weight_g", &[2, 1])], None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`a.weight_g` has no partner: `a.weight_v` is missing"
        );
        let err =
            detect_pairs(&[t("a.parametrizations.weight.original1", &[2, 3])], None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`a.parametrizations.weight.original1` has no partner: \
             `a.parametrizations.weight.original0` is missing"
        );
        let err =
            detect_pairs(&[t("a.weight_g", &[3, 1]), t("a.weight_v", &[2, 3])], None).unwrap_err();
        assert!(err.to_string().contains("fits no axis"), "{err}");
        // A dim override must fit g.
        let ok = [t("a.weight_g", &[2, 1]), t("a.weight_v", &[2, 3])];
        assert!(detect_pairs(&ok, Some(Some(0))).is_ok());
        assert!(detect_pairs(&ok, Some(Some(1))).is_err());
        let err = detect_pairs(&ok, Some(Some(5))).unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
    }
}
