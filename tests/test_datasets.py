"""CIFAR-10 / SVHN test sets: tiny files in the real formats, read by torchvision's own parsers."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from evaluator.run.datasets import load_test_set, write_cifar10_test
from evaluator.errors import APBError
from tests.support.fake_data import write_tiny_cifar10, write_tiny_svhn


def _as_nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2)


def test_cifar10_first_n_in_file_order(tmp_path):
    images, labels = write_tiny_cifar10(tmp_path, n=12)
    test_set = load_test_set("CIFAR10", tmp_path, n=5)
    assert len(test_set) == 5 and test_set.images.dtype == torch.uint8 and test_set.images.shape == (5, 3, 32, 32)
    assert torch.equal(test_set.images, _as_nchw(images[:5]))
    assert test_set.labels.tolist() == labels[:5] and test_set.labels.dtype == torch.int64
    assert not test_set.official and test_set.source.name == "test_batch"


def test_svhn_labels_10_mean_digit_0_and_pixels_round_trip(tmp_path):
    images, labels = write_tiny_svhn(tmp_path, n=11)
    from scipy.io import loadmat

    raw = loadmat(tmp_path / "test_32x32.mat")
    assert raw["X"].shape == (32, 32, 3, 11) and raw["y"].shape == (11, 1)
    assert raw["y"][0, 0] == 10 and 0 not in raw["y"]  # the real file's convention
    test_set = load_test_set("SVHN", tmp_path)
    assert torch.equal(test_set.images, _as_nchw(images)) and test_set.labels.tolist() == labels


def test_batch_gives_float_images_in_unit_range(tmp_path):
    images, labels = write_tiny_cifar10(tmp_path, n=6)
    test_set = load_test_set("CIFAR10", tmp_path)
    x, y = test_set.batch([4, 1])
    assert x.dtype == torch.float32 and x.shape == (2, 3, 32, 32) and 0.0 <= x.min() and x.max() <= 1.0
    assert torch.allclose(x[0] * 255, _as_nchw(images[4:5])[0].float()) and y.tolist() == [labels[4], labels[1]]
    assert test_set.batch(slice(0, 3))[0].shape[0] == 3


@pytest.mark.parametrize("dataset", ["CIFAR10", "SVHN"])
def test_missing_files_name_the_data_dir_and_the_download_flag(tmp_path, dataset):
    with pytest.raises(APBError) as error:
        load_test_set(dataset, tmp_path / "nowhere")
    message = str(error.value)
    assert str(tmp_path / "nowhere") in message and "--download" in message and "--data-dir" in message


def test_asking_for_more_samples_than_the_file_holds_is_an_error(tmp_path):
    write_tiny_cifar10(tmp_path, n=4)
    with pytest.raises(APBError, match="holds only 4"):
        load_test_set("CIFAR10", tmp_path, n=10)


def test_non_official_cifar_pickle_that_would_run_code_is_refused(tmp_path):
    write_tiny_cifar10(tmp_path, n=3)

    def trap(marker):
        class Payload:
            def __reduce__(self):
                return (open, (str(marker), "w"))

        return pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": [0], "x": Payload()}, protocol=2)

    pickle.loads(trap(tmp_path / "proof"))
    assert (tmp_path / "proof").exists()  # the payload is live: plain unpickling runs it
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(trap(tmp_path / "pwned"))
    with pytest.raises(APBError, match="not a plain pickle of numpy arrays"):
        load_test_set("CIFAR10", tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_writer_validates_its_input(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_cifar10_test(tmp_path, np.zeros((2, 32, 32, 3), np.float32), [0, 1])
    with pytest.raises(ValueError, match="labels"):
        write_cifar10_test(tmp_path, np.zeros((2, 32, 32, 3), np.uint8), [0, 10])
