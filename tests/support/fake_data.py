"""Tiny CIFAR-10 and SVHN test files in the real on-disk formats, written by the project's own writers."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from evaluator.run.datasets import write_cifar10_test, write_svhn_test


def tiny_images(n: int, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """*n* random N x 32 x 32 x 3 uint8 images and labels cycling through 0..9."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8), [i % 10 for i in range(n)]


def write_tiny_cifar10(root: Path, n: int = 12, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    images, labels = tiny_images(n, seed)
    write_cifar10_test(root, images, labels)
    return images, labels


def write_tiny_svhn(root: Path, n: int = 12, seed: int = 1) -> tuple[np.ndarray, list[int]]:
    images, labels = tiny_images(n, seed)
    write_svhn_test(root, images, labels)
    return images, labels
