"""Patch geometry: counts of the paper's grids, a hand-checked extraction, coverage, errors."""

from __future__ import annotations

import pytest
import torch

from qlandscape.patches import PatchGrid, as_images


@pytest.mark.parametrize("n, stride", [(4, 6), (9, 3), (16, 2)])
def test_paper_grids(n: int, stride: int) -> None:
    grid = PatchGrid.from_count((14, 14), (8, 8), n)
    assert grid.stride == (stride, stride) and grid.n_patches == n and grid.n_features == 64
    starts = list(range(0, 7, stride))
    assert grid.corners == [(r, c) for r in starts for c in starts]


@pytest.mark.parametrize("n, stride", [(4, 4), (9, 2), (25, 1)])
def test_digits_grids(n: int, stride: int) -> None:
    grid = PatchGrid.from_count(8, 4, n)
    assert grid.stride == (stride, stride) and grid.n_patches == n


def test_single_patch_must_cover_image() -> None:
    grid = PatchGrid.from_count(8, 8, 1)
    assert grid.n_patches == 1 and grid.corners == [(0, 0)]
    with pytest.raises(ValueError, match="whole image"):
        PatchGrid.from_count(8, 4, 1)


def test_unachievable_count_lists_achievable() -> None:
    with pytest.raises(ValueError, match=r"achievable counts: \[4, 9, 25\]"):
        PatchGrid.from_count(8, 4, 16)
    with pytest.raises(ValueError, match="achievable"):
        PatchGrid.from_count((14, 14), (8, 8), 5)


def test_extract_hand_checked() -> None:
    img = torch.arange(16.0).reshape(1, 4, 4)
    expected = torch.tensor([[[0.0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]])
    assert torch.equal(PatchGrid((4, 4), (2, 2), (2, 2)).extract(img), expected)
    # overlapping, non-square: 3x4 image, 2x3 patches, stride (1, 1) -> 2 x 2 patches
    img = torch.arange(12.0).reshape(1, 3, 4)
    out = PatchGrid((3, 4), (2, 3), (1, 1)).extract(img)
    assert torch.equal(out[0, 0], torch.tensor([0.0, 1, 2, 4, 5, 6]))
    assert torch.equal(out[0, 3], torch.tensor([5.0, 6, 7, 9, 10, 11]))


def test_extract_matches_slicing_batch() -> None:
    grid = PatchGrid.from_count(14, 8, 9)
    imgs = torch.randn(5, 14, 14)
    out = grid.extract(imgs)
    assert out.shape == (5, 9, 64)
    for p, (r, c) in enumerate(grid.corners):
        assert torch.equal(out[:, p], imgs[:, r:r + 8, c:c + 8].reshape(5, 64))


def test_coverage() -> None:
    tiled = PatchGrid((8, 8), (4, 4), (4, 4)).coverage()
    assert torch.equal(tiled, torch.ones(8, 8, dtype=torch.int64))
    cover = PatchGrid.from_count(14, 8, 4).coverage()  # corners {0, 6}: rows/cols 6, 7 covered twice
    assert cover.min() >= 1 and cover.sum() == 4 * 64
    assert cover[7, 7] == 4 and cover[0, 7] == 2 and cover[0, 0] == 1 and cover[13, 13] == 1
    assert PatchGrid.from_count(14, 8, 16).coverage().min() >= 1


def test_bad_tiling_names_valid_strides() -> None:
    with pytest.raises(ValueError, match=r"strides that tile: \[1, 2, 3, 6\]"):
        PatchGrid((14, 14), (8, 8), (4, 4))
    with pytest.raises(ValueError, match="larger than the image"):
        PatchGrid((8, 8), (9, 4), (1, 1))
    with pytest.raises(ValueError, match="positive"):
        PatchGrid((8, 8), (4, 4), (0, 4))


def test_shape_errors() -> None:
    grid = PatchGrid((8, 8), (4, 4), (4, 4))
    with pytest.raises(ValueError, match=r"\(B, 8, 8\)"):
        grid.extract(torch.zeros(2, 7, 8))
    with pytest.raises(ValueError, match="as_images"):
        grid.extract(torch.zeros(2, 64))


def test_as_images() -> None:
    x = torch.randn(3, 8, 8)
    for view in (x, x[:, None], x.reshape(3, 64)):
        assert torch.equal(as_images(view, (8, 8)), x)
    for bad in (torch.zeros(3, 63), torch.zeros(3, 2, 8, 8), torch.zeros(3, 8, 7), torch.zeros(64)):
        with pytest.raises(ValueError, match="expected inputs of shape"):
            as_images(bad, (8, 8))
