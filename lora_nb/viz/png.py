"""Heatmap pixels without an imaging library: colour scales and a tiny indexed-PNG encoder (zlib + numpy)."""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np

# plotly's definitions of the scales lora_nb uses: (position, (r, g, b)) stops
COLORSCALES = {
    "Viridis": [(i / 9, tuple(int(c[j:j + 2], 16) for j in (1, 3, 5))) for i, c in enumerate(
        ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b",
         "#fde725"])],
    "RdBu": [(i / 10, c) for i, c in enumerate([(103, 0, 31), (178, 24, 43), (214, 96, 77), (244, 165, 130),
                                                 (253, 219, 199), (247, 247, 247), (209, 229, 240), (146, 197, 222),
                                                 (67, 147, 195), (33, 102, 172), (5, 48, 97)])],
}
LEVELS = 255  # palette entries for values; entry 255 is the transparent "no value"


def scale_stops(colorscale) -> list[tuple[float, tuple[int, int, int]]]:
    """``(position, rgb)`` stops of a plotly colour scale given by name or as ``[[pos, "rgb(...)"], ...]``."""
    if isinstance(colorscale, str) or colorscale is None:
        return COLORSCALES.get(colorscale or "Viridis", COLORSCALES["Viridis"])
    stops = []
    for pos, color in colorscale:
        if isinstance(color, str) and color.startswith("#"):
            rgb = tuple(int(color[j:j + 2], 16) for j in (1, 3, 5))
        else:
            rgb = tuple(int(float(v)) for v in color[color.index("(") + 1:color.index(")")].split(",")[:3])
        stops.append((float(pos), rgb))
    return stops


def palette(colorscale, n: int = LEVELS, reverse: bool = False) -> np.ndarray:
    """``n`` RGB colours (uint8, n × 3) evenly sampled along a colour scale (end to start with ``reverse``)."""
    stops = scale_stops(colorscale)
    if reverse:  # plotly's reversescale
        stops = [(1.0 - pos, rgb) for pos, rgb in reversed(stops)]
    pos = np.array([p for p, _ in stops])
    rgb = np.array([c for _, c in stops], dtype=float)
    t = np.linspace(0.0, 1.0, n)
    return np.stack([np.interp(t, pos, rgb[:, k]) for k in range(3)], axis=1).round().astype(np.uint8)


def color_indices(z: np.ndarray, zmin: float, zmax: float) -> np.ndarray:
    """Palette index of every value (``LEVELS`` for NaN: transparent)."""
    span = zmax - zmin if zmax > zmin else 1.0
    idx = np.clip(np.round((z - zmin) / span * (LEVELS - 1)), 0, LEVELS - 1)
    return np.where(np.isnan(z), LEVELS, np.nan_to_num(idx)).astype(np.uint8)


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def indexed_png(indices: np.ndarray, colors: np.ndarray) -> bytes:
    """An 8-bit palette PNG of ``indices`` (H × W uint8); index ``len(colors)`` is fully transparent."""
    h, w = indices.shape
    rows = np.concatenate([np.zeros((h, 1), np.uint8), indices.astype(np.uint8)], axis=1)  # filter byte 0 per row
    plte = np.concatenate([colors.astype(np.uint8), np.zeros((1, 3), np.uint8)])
    trns = bytes([255] * len(colors) + [0])
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
            + _chunk(b"PLTE", plte.tobytes()) + _chunk(b"tRNS", trns)
            + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 9)) + _chunk(b"IEND", b""))


def heatmap_data_uri(z: np.ndarray, colorscale, zmin: float, zmax: float, reverse: bool = False) -> str:
    """A ``data:image/png;base64,...`` URI with one pixel per cell of ``z`` (row 0 at the top)."""
    png = indexed_png(color_indices(z, zmin, zmax), palette(colorscale, reverse=reverse))
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
