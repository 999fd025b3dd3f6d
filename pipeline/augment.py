"""Image augmentation on whole batches of flat rows: random whole-pixel shifts and rotations in one
`affine_grid` + `grid_sample` call, drawn from a seeded generator on the CPU (so CPU and GPU runs
draw the same numbers)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_moves(
    n: int, max_shift: int, max_rotation: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(angle in radians [n], shift in whole pixels [n, 2]) for n images, drawn from `generator`
    on the CPU (so CPU and GPU runs draw the same numbers)."""
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(max_rotation)
    shift = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=generator).float()
    return angle, shift


def augment_images(
    x: torch.Tensor,
    image_shape: list[int],
    background: float,
    max_shift: int,
    max_rotation: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Randomly shift (whole pixels) and rotate each image of a batch of flat rows, in one call."""
    return move_images(x, image_shape, background, *random_moves(x.shape[0], max_shift, max_rotation, generator))


def move_images(
    x: torch.Tensor, image_shape: list[int], background: float, angle: torch.Tensor, shift: torch.Tensor
) -> torch.Tensor:
    """Rotate and shift each image of a batch of flat rows; areas moved in from outside the image
    take the background value (the value range's minimum)."""
    n, (h, w) = x.shape[0], image_shape
    cos, sin = angle.cos(), angle.sin()
    # affine_grid works in [-1, 1] coordinates: one pixel is 2 / size.
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0] * 2 / w], 1), torch.stack([sin, cos, shift[:, 1] * 2 / h], 1)], 1
    ).to(x.device, x.dtype)
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    moved = F.grid_sample((x - background).view(n, 1, h, w), grid, align_corners=False)
    return (moved + background).view(n, h * w)
