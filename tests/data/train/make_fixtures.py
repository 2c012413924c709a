#!/usr/bin/python3
"""Writes the small image fixtures of check_train_dataset (run with Debian's
/usr/bin/python3, Pillow 9.4, numpy) into the current folder. Deterministic."""
import numpy as np
from PIL import Image

# RGB PNG with distinct channels: r = 30x, g = 40y, b = 5(x+y) + 7 (the test recomputes the luma)
a = np.zeros((6, 8, 3), np.uint8)
for y in range(6):
    for x in range(8):
        a[y, x] = (30 * x, 40 * y, 5 * (x + y) + 7)
Image.fromarray(a, 'RGB').save('rgb.png')

# 16-bit grey PNG: v = 9000x + 3000y
g = np.zeros((4, 5), np.uint16)
for y in range(4):
    for x in range(5):
        g[y, x] = 9000 * x + 3000 * y
Image.fromarray(g).save('gray16.png')

# palette PNG: black, red, green, blue
p = Image.new('P', (4, 2))
p.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (252 * 3))
p.putdata([0, 1, 2, 3, 3, 2, 1, 0])
p.save('palette.png')

# an RGB JPEG with equal channels (as the Kermany files), a grey JPEG, and
# PIL's grey decode of each (the reference), and a truncated JPEG
rng = np.random.default_rng(1)
yy, xx = np.mgrid[0:24, 0:20]
v = (100 + 80 * np.sin(xx / 3.0) * np.cos(yy / 4.0) + rng.normal(0, 8, (24, 20))).clip(0, 255).astype(np.uint8)
Image.fromarray(np.stack([v, v, v], -1), 'RGB').save('rgb.jpg', quality=90)
open('rgb.jpg.L', 'wb').write(Image.open('rgb.jpg').convert('L').tobytes())
Image.fromarray(v, 'L').save('gray.jpg', quality=90)
open('gray.jpg.L', 'wb').write(Image.open('gray.jpg').convert('L').tobytes())
d = open('rgb.jpg', 'rb').read()
open('truncated.jpg', 'wb').write(d[:len(d) // 2])
