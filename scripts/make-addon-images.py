#!/usr/bin/env python3
"""Draws addon/icon.png (128x128) and addon/logo.png (250x100): a bar chart on a rounded tile.
Pure standard library (zlib + struct), so the images can be regenerated anywhere."""
import struct, zlib, os

BLUE = (11, 92, 173, 255)
LIGHT = (125, 183, 255, 255)
WHITE = (255, 255, 255, 255)
CLEAR = (0, 0, 0, 0)

def png(path, w, h, pixel):
    raw = b"".join(b"\x00" + b"".join(bytes(pixel(x, y)) for x in range(w)) for y in range(h))
    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    with open(path, "wb") as f:
        f.write(data)

def rounded(x, y, w, h, r):
    cx = min(max(x, r), w - 1 - r)
    cy = min(max(y, r), h - 1 - r)
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r

def tile(w, h, bars, base, unit, radius):
    def pixel(x, y):
        if not rounded(x, y, w, h, radius):
            return CLEAR
        for i, (x0, x1, height) in enumerate(bars):
            if x0 <= x < x1 and base - height * unit <= y < base:
                return WHITE if i != len(bars) - 1 else LIGHT
        if base <= y < base + max(2, h // 40) and bars[0][0] - 4 <= x < bars[-1][1] + 4:
            return WHITE
        return BLUE
    return pixel

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "addon")
png(os.path.join(here, "icon.png"), 128, 128,
    tile(128, 128, [(24, 44, 3), (54, 74, 5), (84, 104, 7)], 104, 10, 24))
png(os.path.join(here, "logo.png"), 250, 100,
    tile(250, 100, [(30, 60, 2), (75, 105, 4), (120, 150, 3), (165, 195, 6), (210, 230, 5)], 84, 11, 18))
