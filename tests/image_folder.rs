//! Image folders (CelebA's layout) read as the DDIM code reads them: the
//! same crop and PIL's antialiased bilinear resize, checked against PIL on
//! images that tests/python/pil_crops.py writes.

mod common;

use envs::datasets::DataSet;
use envs::image_folder::Crop;
use envs::images::Split;
use tch::{Kind, Tensor};

fn differences(ours: &Tensor, pil: &Tensor) -> (f64, f64) {
    let diff = (ours.to_kind(Kind::Float) - pil.to_kind(Kind::Float)).abs();
    (
        diff.max().double_value(&[]),
        diff.mean(Kind::Float).double_value(&[]),
    )
}

#[test]
fn celeba_crops_and_resizes_match_pil() {
    let dir = common::temp_dir("image-folder-pil");
    common::run_ok(common::python().arg("tests/python/pil_crops.py").arg(&dir));
    let images = dir.join("images");
    for (crop, size, reference) in [
        (Crop::CelebA, 64, "pil_celeba64.npy"),
        (Crop::Center, 32, "pil_center32.npy"),
    ] {
        let set = DataSet::ImageFolder {
            dir: images.clone(),
            size,
            crop,
            partition: None,
        };
        assert_eq!(set.element_shape(), vec![3, size, size]);
        assert!(!set.has_test_split());
        let ours = set.load_images(Split::Train).unwrap();
        let pil = Tensor::read_npy(dir.join(reference)).unwrap();
        assert_eq!(ours.size(), pil.size());
        // The four PNGs: the same pixels up to one level (PIL rounds to
        // integers between its horizontal and vertical passes, we once at the
        // end: about one pixel in six is one level apart).
        let (max, mean) = differences(&ours.narrow(0, 0, 4), &pil.narrow(0, 0, 4));
        eprintln!("{crop:?} {size}: PNG max {max} mean {mean}");
        assert!(
            max <= 1.0 && mean < 0.25,
            "{crop:?}: PNG max {max}, mean {mean}"
        );
        // The JPEG: two decoders (libjpeg's and the image crate's) may differ slightly.
        let (max, mean) = differences(&ours.narrow(0, 4, 1), &pil.narrow(0, 4, 1));
        eprintln!("{crop:?} {size}: JPEG max {max} mean {mean}");
        assert!(
            max <= 2.0 && mean < 0.3,
            "{crop:?}: JPEG max {max}, mean {mean}"
        );
    }
}
