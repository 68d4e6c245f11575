"""The pixels of a digital straight line, exactly as OpenCV's ``cv2.line`` draws it.

ukbb_cardiac's atrial length (REFERENCES.md, "Atria") intersects the atrium with the line that
``cv2.line(image, p, q, 1)`` draws (thickness 1, 8-connected, integer end points). This module
reproduces those pixels without OpenCV:

1. end points outside the image are first clipped to it with OpenCV's ``clipLine`` rule
   (Cohen–Sutherland outcodes; each intersection truncated towards zero), and nothing is drawn
   when the line misses the image;
2. the line is walked from its left end point (``leftToRight``) with the 8-connected Bresenham
   error term ``err = dx − 2·dy`` of OpenCV's ``LineIterator``: one pixel per step along the
   major axis, one step along the minor axis whenever the error is negative. The minor offset of
   step ``k`` has the closed form ``ceil((2·dy·k − dx) / (2·dx))``, so the walk is vectorised.

Coordinates follow OpenCV: a point is ``(x, y)`` with ``x`` the column (second array axis) and
``y`` the row (first array axis); the result is in array order ``(row, col)``. The pixel lists
are pinned to OpenCV by ``tests/test_digital_line.py``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["clip_line", "line_pixels"]


def clip_line(
    p0: tuple[int, int], p1: tuple[int, int], shape: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """Clip the segment ``p0``–``p1`` (integer ``(x, y)``) to an image of ``shape`` = (rows, cols).

    Returns the clipped end points, or None when the segment lies outside the image.
    """
    (x1, y1), (x2, y2) = (int(p0[0]), int(p0[1])), (int(p1[0]), int(p1[1]))
    right, bottom = int(shape[1]) - 1, int(shape[0]) - 1
    if right < 0 or bottom < 0:
        return None

    def code(x: int, y: int) -> int:
        return (x < 0) + (x > right) * 2 + (y < 0) * 4 + (y > bottom) * 8

    c1, c2 = code(x1, y1), code(x2, y2)
    if (c1 & c2) == 0 and (c1 | c2) != 0:
        if c1 & 12:  # p0 above or below: move it onto the top or bottom row
            a = 0 if c1 < 8 else bottom
            x1 += int(float(a - y1) * (x2 - x1) / (y2 - y1))
            y1 = a
            c1 = (x1 < 0) + (x1 > right) * 2
        if c2 & 12:
            a = 0 if c2 < 8 else bottom
            x2 += int(float(a - y2) * (x2 - x1) / (y2 - y1))
            y2 = a
            c2 = (x2 < 0) + (x2 > right) * 2
        if (c1 & c2) == 0 and (c1 | c2) != 0:  # left or right of the image: onto the first or last column
            if c1:
                a = 0 if c1 == 1 else right
                y1 += int(float(a - x1) * (y2 - y1) / (x2 - x1))
                x1, c1 = a, 0
            if c2:
                a = 0 if c2 == 1 else right
                y2 += int(float(a - x2) * (y2 - y1) / (x2 - x1))
                x2, c2 = a, 0
    if c1 | c2:
        return None
    return (x1, y1), (x2, y2)


def line_pixels(p0: tuple[int, int], p1: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """Pixels of ``cv2.line(img, p0, p1, 1)`` on an image of ``shape`` = (rows, cols).

    Args:
        p0, p1: integer end points ``(x, y)`` = (column, row), possibly outside the image
            (callers truncate real coordinates with ``int()``, as ukbb_cardiac does).
        shape: (rows, cols) of the image.

    Returns:
        ``(n, 2)`` int64 array of ``(row, col)`` indices in drawing order (empty when the line
        misses the image).
    """
    (x1, y1), (x2, y2) = (int(p0[0]), int(p0[1])), (int(p1[0]), int(p1[1]))
    rows, cols = int(shape[0]), int(shape[1])
    inside = 0 <= x1 < cols and 0 <= x2 < cols and 0 <= y1 < rows and 0 <= y2 < rows
    if not inside:
        clipped = clip_line((x1, y1), (x2, y2), shape)
        if clipped is None:
            return np.zeros((0, 2), dtype=np.int64)
        (x1, y1), (x2, y2) = clipped
    if x2 < x1:  # OpenCV draws left to right
        x1, y1, x2, y2 = x2, y2, x1, y1
    dx, dy = x2 - x1, y2 - y1
    step_y = 1
    if dy < 0:
        dy, step_y = -dy, -1
    vertical = dy > dx
    major, minor = (dy, dx) if vertical else (dx, dy)
    k = np.arange(major + 1, dtype=np.int64)
    offset = -((major - 2 * minor * k) // (2 * major)) if major > 0 else np.zeros_like(k)
    if vertical:
        ys, xs = y1 + step_y * k, x1 + offset
    else:
        xs, ys = x1 + k, y1 + step_y * offset
    return np.stack([ys, xs], axis=1)
