//! Data sets: Fashion-MNIST from gzipped IDX files, and the UCI digits compiled in.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::Failure;
use crate::text::shown;

/// SplitMix64 (Steele, Lea and Flood, 2014), the core's: the generator behind the digits split
/// (which `scripts/check_model.py` repeats) and the random verification inputs.
pub use weightnorm::weightnorm_core::rng::SplitMix64;

/// The four files of Fashion-MNIST (or any MNIST-layout data) in `dir`: training images and
/// labels, test images and labels.
pub fn fashion_files(dir: &Path) -> [PathBuf; 4] {
    FASHION_FILES.map(|f| dir.join(f))
}

const FASHION_FILES: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

/// The files a command reading the data set `name` from `dir` (as [`load`] does) reads.
pub fn input_files(name: Option<DatasetName>, dir: &Path) -> Vec<PathBuf> {
    match name {
        Some(DatasetName::FashionMnist) => fashion_files(dir).to_vec(),
        None if dir.is_dir() => fashion_files(dir).to_vec(),
        _ => Vec::new(),
    }
}

/// Where the Debian package `dataset-fashion-mnist` installs Fashion-MNIST.
pub const FASHION_DEFAULT: &str = "/usr/share/datasets/fashion-mnist";

/// A data set the commands can load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DatasetName {
    /// Fashion-MNIST: gzipped IDX files under --data.
    FashionMnist,
    /// The UCI digits, compiled in.
    Digits,
}

/// Loads a data set, standardized with its training pixels' mean and standard deviation:
/// `name`, or without one Fashion-MNIST from `dir` when it is there and else (saying so) the
/// digits.
///
/// # Errors
///
/// If Fashion-MNIST is asked for and `dir` does not hold it, or holds malformed files.
pub fn load(name: Option<DatasetName>, dir: &Path) -> Result<Dataset> {
    let ds = match name {
        Some(DatasetName::FashionMnist) => fashion_mnist(dir)?,
        Some(DatasetName::Digits) => digits(),
        None if dir.is_dir() => fashion_mnist(dir)?,
        None if dir != Path::new(FASHION_DEFAULT) => {
            return Err(Failure::input(anyhow::anyhow!(
                "--data {} is not a directory (give the directory of Fashion-MNIST's IDX files, \
                 or --dataset digits)",
                shown(dir)
            ))
            .into());
        }
        None => {
            eprintln!(
                "Fashion-MNIST is not at {}: using the UCI digits. To get Fashion-MNIST: \
                 apt-get install dataset-fashion-mnist (or pass --data DIR).",
                shown(dir)
            );
            digits()
        }
    };
    Ok(ds.standardize())
}

/// An image classification data set in memory, pixels scaled to [0, 1].
#[derive(Clone)]
pub struct Dataset {
    /// `fashion-mnist` or `digits`.
    pub name: &'static str,
    /// Image shape `[channels, height, width]`.
    pub shape: [usize; 3],
    /// Number of classes.
    pub classes: usize,
    /// Training images, row-major, `n * features`.
    pub train_x: Vec<f32>,
    /// Training labels.
    pub train_y: Vec<u8>,
    /// Test images.
    pub test_x: Vec<f32>,
    /// Test labels.
    pub test_y: Vec<u8>,
    /// The training pixels' mean and standard deviation, subtracted and divided out of
    /// every image by [`Dataset::standardize`] (0 and 1 before).
    pub norm: (f32, f32),
}

/// The seed of [`Dataset::subset`]'s choice: fixed, so that every run and seed trains on the
/// same subset.
const SUBSET_SEED: u64 = 0x5AB5_E700;
/// The seed of [`Dataset::add_label_noise`]: fixed, so that every run sees the same labels.
const NOISE_SEED: u64 = 0x0015_E000;

/// A seeded permutation of `0..n` (Fisher-Yates with SplitMix64).
fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64(seed);
    for i in (1..n).rev() {
        order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    order
}

impl Dataset {
    /// Keeps `n` of the training examples, chosen by a fixed seeded permutation (the same
    /// subset for every run and seed), in their original order. The inputs keep the
    /// standardization of the whole training split.
    ///
    /// # Errors
    ///
    /// A [`Failure`] when `n` is 0 or more than there are training examples.
    pub fn subset(&mut self, n: usize) -> Result<()> {
        let total = self.train_y.len();
        if n == 0 || n > total {
            return Err(Failure::input(anyhow::anyhow!(
                "--train-subset {n}: {} has {total} training images; give 1 to {total}",
                self.name
            ))
            .into());
        }
        let mut keep = permutation(total, SUBSET_SEED);
        keep.truncate(n);
        keep.sort_unstable();
        let f = self.features();
        self.train_x = keep
            .iter()
            .flat_map(|&i| self.train_x[i * f..(i + 1) * f].iter().copied())
            .collect();
        self.train_y = keep.iter().map(|&i| self.train_y[i]).collect();
        Ok(())
    }

    /// Replaces the labels of `round(p * n)` training examples, chosen by a fixed seeded
    /// permutation, each by another class drawn uniformly (so every chosen label is wrong).
    /// Returns how many were replaced.
    ///
    /// # Errors
    ///
    /// A [`Failure`] when `p` is not in `[0, 1]` or there is a single class.
    pub fn add_label_noise(&mut self, p: f64) -> Result<usize> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Failure::input(anyhow::anyhow!(
                "--label-noise {p}: give a fraction from 0 to 1"
            ))
            .into());
        }
        let n = self.train_y.len();
        let k = (p * n as f64).round() as usize;
        if k == 0 {
            return Ok(0);
        }
        if self.classes < 2 {
            return Err(Failure::input(anyhow::anyhow!(
                "--label-noise needs at least two classes"
            ))
            .into());
        }
        let mut rng = SplitMix64(NOISE_SEED ^ 0x9E37_79B9);
        for &i in permutation(n, NOISE_SEED).iter().take(k) {
            let shift = 1 + (rng.next_u64() % (self.classes as u64 - 1)) as usize;
            self.train_y[i] = ((self.train_y[i] as usize + shift) % self.classes) as u8;
        }
        Ok(k)
    }

    /// Checks that the data set can be trained and tested on: images of at least one pixel,
    /// at least one training and one test image, as many labels as images, every label a class.
    ///
    /// # Errors
    ///
    /// A [`Failure`] saying what is wrong, on one line.
    pub fn validate(&self) -> Result<()> {
        let f = self.features();
        let name = self.name;
        if f == 0 {
            bail!(bad(anyhow::anyhow!(
                "{name}: its images are {}x{} pixels: they need at least one",
                self.shape[1],
                self.shape[2]
            )));
        }
        for (split, x, y) in [
            ("training", &self.train_x, &self.train_y),
            ("test", &self.test_x, &self.test_y),
        ] {
            if y.is_empty() {
                bail!(bad(anyhow::anyhow!(
                    "{name}: the {split} split has no images: a data set needs at least one training and one test image"
                )));
            }
            if x.len() != y.len() * f {
                bail!(bad(anyhow::anyhow!(
                    "{name}: the {split} split has {} pixels for {} labels of {f}-pixel images",
                    x.len(),
                    y.len()
                )));
            }
            if let Some(l) = y.iter().find(|&&l| usize::from(l) >= self.classes) {
                bail!(bad(anyhow::anyhow!(
                    "{name}: the {split} split has label {l}, not a class 0..{}",
                    self.classes - 1
                )));
            }
        }
        Ok(())
    }

    /// Standardizes the pixels with the training set's mean and standard deviation (a
    /// constant training set is only centred).
    pub fn standardize(mut self) -> Self {
        let n = self.train_x.len() as f64;
        let mean = self.train_x.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = self
            .train_x
            .iter()
            .map(|&x| (x as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        let (m, s) = (mean as f32, var.sqrt() as f32);
        let s = if s > 0.0 && s.is_finite() { s } else { 1.0 };
        for x in self.train_x.iter_mut().chain(self.test_x.iter_mut()) {
            *x = (*x - m) / s;
        }
        self.norm = (m, s);
        self
    }

    /// Pixels per image.
    pub fn features(&self) -> usize {
        self.shape.iter().product()
    }
}

fn bad(e: impl Into<anyhow::Error>) -> anyhow::Error {
    Failure::input(e).into()
}

/// Reads one gzipped IDX file: unsigned bytes with `dims` dimensions, as the MNIST files are.
pub fn read_idx(path: &Path, dims: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    // Opened only as a regular file: a FIFO would block the open, a device never end.
    let file = weightnorm::torch::open_regular(path)
        .map_err(|e| bad(anyhow::anyhow!("cannot open {}: {e}", shown(path))))?;
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut raw)
        .map_err(|e| {
            bad(anyhow::anyhow!(
                "{} is not a readable gzip file: {e}",
                shown(path)
            ))
        })?;
    let header = 4 + 4 * dims;
    if raw.len() < header {
        bail!(bad(anyhow::anyhow!(
            "{} is truncated: {} bytes, shorter than its {header}-byte IDX header",
            shown(path),
            raw.len()
        )));
    }
    if raw[0] != 0 || raw[1] != 0 || raw[2] != 0x08 || raw[3] as usize != dims {
        bail!(bad(anyhow::anyhow!(
            "{} is not an IDX file of unsigned bytes with {dims} dimensions (magic {:02x}{:02x}{:02x}{:02x})",
            shown(path),
            raw[0],
            raw[1],
            raw[2],
            raw[3]
        )));
    }
    let sizes: Vec<usize> = (0..dims)
        .map(|i| u32::from_be_bytes(raw[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let n = sizes
        .iter()
        .try_fold(1usize, |a, &s| a.checked_mul(s))
        .filter(|&n| n <= 1 << 32)
        .ok_or_else(|| bad(anyhow::anyhow!("{}: absurd sizes {sizes:?}", shown(path))))?;
    if raw.len() != header + n {
        bail!(bad(anyhow::anyhow!(
            "{} is truncated or padded: its header says {sizes:?} ({n} bytes of data), it holds {}",
            shown(path),
            raw.len() - header
        )));
    }
    raw.drain(..header);
    Ok((sizes, raw))
}

/// Loads Fashion-MNIST (or any MNIST-layout data) from `dir`.
pub fn fashion_mnist(dir: &Path) -> Result<Dataset> {
    let file = |name: &str| -> PathBuf { dir.join(name) };
    if !dir.is_dir() {
        bail!(bad(anyhow::anyhow!(
            "{} is not a directory with Fashion-MNIST (install the Debian package dataset-fashion-mnist, or pass --data DIR)",
            shown(dir)
        )));
    }
    let images = |name: &str| -> Result<(usize, Vec<f32>, [usize; 2])> {
        let (sizes, data) = read_idx(&file(name), 3)?;
        Ok((
            sizes[0],
            data.iter().map(|&p| p as f32 / 255.0).collect(),
            [sizes[1], sizes[2]],
        ))
    };
    let labels = |name: &str| -> Result<Vec<u8>> {
        let (_, data) = read_idx(&file(name), 1)?;
        if let Some(l) = data.iter().find(|&&l| l > 9) {
            bail!(bad(anyhow::anyhow!(
                "{name}: label {l} is not a class 0..9"
            )));
        }
        Ok(data)
    };
    let [train_images, train_labels, test_images, test_labels] = FASHION_FILES;
    let (n_train, train_x, hw) = images(train_images)?;
    let train_y = labels(train_labels)?;
    let (n_test, test_x, hw_test) = images(test_images)?;
    let test_y = labels(test_labels)?;
    if hw != hw_test {
        bail!(bad(anyhow::anyhow!(
            "{}: the training images are {}x{} pixels, the test images {}x{}",
            shown(dir),
            hw[0],
            hw[1],
            hw_test[0],
            hw_test[1]
        )));
    }
    if n_train != train_y.len() || n_test != test_y.len() {
        bail!(bad(anyhow::anyhow!(
            "{}: images and labels disagree ({n_train} train images, {} labels; {n_test} test images, {} labels)",
            shown(dir),
            train_y.len(),
            test_y.len()
        )));
    }
    let ds = Dataset {
        name: "fashion-mnist",
        shape: [1, hw[0], hw[1]],
        classes: 10,
        train_x,
        train_y,
        test_x,
        test_y,
        norm: (0.0, 1.0),
    };
    ds.validate()?;
    Ok(ds)
}

/// The UCI digits compiled into the binary: 8x8 images, 1437 for training and 360 for
/// testing (a fixed shuffle of the 1797).
pub fn digits() -> Dataset {
    static GZ: &[u8] = include_bytes!("../data/uci-digits.csv.gz");
    let mut csv = String::new();
    flate2::read::GzDecoder::new(GZ)
        .read_to_string(&mut csv)
        .expect("the vendored digits are valid gzip");
    let rows: Vec<Vec<u8>> = csv
        .lines()
        .map(|l| {
            l.split(',')
                .map(|x| x.trim().parse().expect("an integer"))
                .collect()
        })
        .collect();
    // A fixed permutation (SplitMix64), so the split is the same everywhere.
    let mut order: Vec<usize> = (0..rows.len()).collect();
    let mut rng = SplitMix64(0x5EED);
    for i in (1..order.len()).rev() {
        order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    let n_test = 360;
    let mut ds = Dataset {
        name: "digits",
        shape: [1, 8, 8],
        classes: 10,
        train_x: Vec::new(),
        train_y: Vec::new(),
        test_x: Vec::new(),
        test_y: Vec::new(),
        norm: (0.0, 1.0),
    };
    for (k, &i) in order.iter().enumerate() {
        let row = &rows[i];
        let (x, y) = if k < n_test {
            (&mut ds.test_x, &mut ds.test_y)
        } else {
            (&mut ds.train_x, &mut ds.train_y)
        };
        x.extend(row[..64].iter().map(|&p| p as f32 / 16.0));
        y.push(row[64]);
    }
    ds
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_subset_is_fixed_in_order_and_checked() {
        let full = digits();
        let mut a = full.clone();
        a.subset(100).unwrap();
        let mut b = full.clone();
        b.subset(100).unwrap();
        assert_eq!(a.train_y.len(), 100);
        assert_eq!(a.train_x, b.train_x, "the same subset every time");
        // Each kept image is one of the full set's, in the original order.
        let f = full.features();
        let rows: Vec<&[f32]> = full.train_x.chunks(f).collect();
        let mut at = 0;
        for img in a.train_x.chunks(f) {
            at += rows[at..].iter().position(|r| *r == img).expect("in order") + 1;
        }
        assert!(a.clone().subset(0).is_err());
        assert!(a.subset(101).is_err());
    }

    #[test]
    fn label_noise_replaces_the_fraction_asked_with_wrong_classes() {
        let full = digits();
        let mut d = full.clone();
        let k = d.add_label_noise(0.2).unwrap();
        let n = full.train_y.len();
        assert_eq!(k, (0.2 * n as f64).round() as usize);
        let changed = d
            .train_y
            .iter()
            .zip(&full.train_y)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(changed, k, "every chosen label becomes another class");
        assert!(d.train_y.iter().all(|&y| (y as usize) < d.classes));
        let mut again = full.clone();
        again.add_label_noise(0.2).unwrap();
        assert_eq!(again.train_y, d.train_y, "the same labels every time");
        assert_eq!(full.clone().add_label_noise(0.0).unwrap(), 0);
        assert!(full.clone().add_label_noise(1.5).is_err());
    }

    use super::*;
    use std::io::Write;

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn digits_are_complete_and_balanced() {
        let d = digits();
        assert_eq!(d.train_y.len(), 1437);
        assert_eq!(d.test_y.len(), 360);
        assert_eq!(d.train_x.len(), 1437 * 64);
        assert!(d.train_x.iter().all(|&p| (0.0..=1.0).contains(&p)));
        for c in 0..10u8 {
            assert!(d.test_y.iter().filter(|&&y| y == c).count() > 20);
        }
    }

    #[test]
    fn idx_headers_and_sizes_are_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("x.gz");
        let mut good = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2];
        good.extend([1, 2, 3, 4, 5, 6, 7, 8]);
        std::fs::write(&p, gz(&good)).unwrap();
        let (sizes, data) = read_idx(&p, 3).unwrap();
        assert_eq!((sizes, data.len()), (vec![2, 2, 2], 8));
        std::fs::write(&p, gz(&good[..20])).unwrap();
        let e = read_idx(&p, 3).unwrap_err().to_string();
        assert!(e.contains("truncated or padded"), "{e}");
        let mut bad_magic = good.clone();
        bad_magic[2] = 0x0d;
        std::fs::write(&p, gz(&bad_magic)).unwrap();
        let e = read_idx(&p, 3).unwrap_err().to_string();
        assert!(e.contains("not an IDX file"), "{e}");
        std::fs::write(&p, b"not gzip").unwrap();
        let e = read_idx(&p, 3).unwrap_err().to_string();
        assert!(e.contains("not a readable gzip file"), "{e}");
        std::fs::write(&p, gz(&good[..6])).unwrap();
        let e = read_idx(&p, 3).unwrap_err().to_string();
        assert!(e.contains("shorter than its 16-byte IDX header"), "{e}");
    }
}
