"""Draw compute_bridge/static/description/icon.png (256x256): a bridge over water, drawn here,
no borrowed artwork. Run from the repository root: .venv/bin/python tools/make_icon.py
"""

import math

from PIL import Image, ImageDraw

SIZE = 256
SUPERSAMPLE = 4  # draw 4x larger, then downsample: smooth edges without anti-aliasing support
TOP, BOTTOM = (0x71, 0x4B, 0x67), (0x01, 0x7E, 0x84)  # Odoo's purple to teal
WHITE = (255, 255, 255, 255)
SOFT_WHITE = (255, 255, 255, 150)
OUTPUT = "compute_bridge/static/description/icon.png"


def main():
    u = SUPERSAMPLE
    width = SIZE * u
    img = Image.new("RGBA", (width, width))
    draw = ImageDraw.Draw(img)
    for y in range(width):
        t = y / (width - 1)
        colour = tuple(int(TOP[i] * (1 - t) + BOTTOM[i] * t) for i in range(3)) + (255,)
        draw.line([(0, y), (width, y)], fill=colour)
    mask = Image.new("L", (width, width), 0)
    ImageDraw.Draw(mask).rounded_rectangle([0, 0, width - 1, width - 1], radius=52 * u, fill=255)
    img.putalpha(mask)
    draw = ImageDraw.Draw(img)

    deck_y = 104
    draw.rounded_rectangle([32 * u, (deck_y - 8) * u, 224 * u, (deck_y + 8) * u],
                           radius=8 * u, fill=WHITE)
    # the arch under the deck, a half ellipse from bank to bank, and the posts that carry the deck
    cx, cy, rx, ry = 128, 176, 80, 62
    draw.arc([(cx - rx) * u, (cy - ry) * u, (cx + rx) * u, (cy + ry) * u],
             start=180, end=360, fill=WHITE, width=13 * u)
    for x in (76, 102, 128, 154, 180):
        dx = (x - cx) / rx
        y = cy - ry * math.sqrt(max(1 - dx * dx, 0))
        draw.line([(x * u, (deck_y + 6) * u), (x * u, y * u)], fill=WHITE, width=6 * u)
    draw.rectangle([32 * u, (deck_y + 4) * u, 48 * u, 176 * u], fill=WHITE)
    draw.rectangle([208 * u, (deck_y + 4) * u, 224 * u, 176 * u], fill=WHITE)
    for i, y in enumerate((196, 214)):
        wave = [(x * u, (y + 4 * math.sin((x + i * 12) / 10)) * u) for x in range(44, 213, 2)]
        draw.line(wave, fill=SOFT_WHITE, width=5 * u, joint="curve")

    img.resize((SIZE, SIZE), Image.LANCZOS).save(OUTPUT, optimize=True)


if __name__ == "__main__":
    main()
