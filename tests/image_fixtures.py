"""Image files of every awkward kind, written by the tests themselves (no downloads).

Each class gets its own dominant colour so a test can check, from the pixels alone, that labels stayed attached to
the right images through splitting, subsampling and filtering.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

# Class -> RGB colour. Distinct in the red and blue channels, and in luma (for 1-channel models).
CLASS_COLOURS = {"cat": (220, 40, 40), "dog": (40, 40, 220), "fox": (40, 200, 40)}


def photo(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30), seed: int = 0) -> Image.Image:
    """A noisy image of roughly one colour (JPEG-friendly, not a flat block)."""
    rng = np.random.default_rng(seed)
    width, height = size
    base = np.array(colour, dtype=np.int16).reshape(1, 1, 3)
    noise = rng.integers(-15, 16, size=(height, width, 3), dtype=np.int16)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


def write_class_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 6, start_seed: int = 0) -> list[Path]:
    """root/<class>/<i>.png|jpg, alternating PNG and JPEG."""
    paths = []
    for class_index, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            path = root / name / (f"{i}.png" if i % 2 == 0 else f"{i}.jpg")
            photo(CLASS_COLOURS[name], seed=start_seed + 100 * class_index + i).save(path)
            paths.append(path)
    return paths


def exif_rotated_jpeg(path: Path, size: tuple[int, int] = (60, 20)) -> None:
    """A JPEG (60x20, landscape, by default) whose EXIF says "rotate 90 degrees clockwise to display" (orientation
    6). Displayed upright it is 20x60 (portrait); its stored left third is white, so upright the *top* third is
    white."""
    width, height = size
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[:, :width // 3] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(array).save(path, "JPEG", exif=exif.tobytes(), quality=95)


def cmyk_jpeg(path: Path, colour: tuple[int, int, int]) -> None:
    photo(colour).convert("CMYK").save(path, "JPEG", quality=95)


def sixteen_bit_png(path: Path, level: int = 40000) -> None:
    """A 16-bit grayscale PNG at `level` of 65535 (PIL's naive convert would clip it to pure white)."""
    Image.fromarray(np.full((30, 40), level, dtype=np.uint16)).save(path)


def palette_with_transparency(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> None:
    """A palette PNG: left half `colour`, right half transparent (palette index 1, black underneath)."""
    image = Image.new("P", size, 0)
    image.putpalette([*colour, 0, 0, 0] + [0, 0, 0] * 254)
    image.paste(1, (size[0] // 2, 0, *size))
    image.save(path, transparency=1)


def rgba_png(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> None:
    image = Image.new("RGBA", size, (*colour, 255))
    image.paste((0, 0, 0, 0), (size[0] // 2, 0, *size))
    image.save(path)


def la_png(path: Path, level: int = 60, size: tuple[int, int] = (40, 30)) -> None:
    image = Image.new("LA", size, (level, 255))
    image.paste((0, 0), (size[0] // 2, 0, *size))
    image.save(path)


def one_bit_png(path: Path, size: tuple[int, int] = (40, 30)) -> None:
    image = Image.new("1", size, 0)
    image.paste(1, (0, 0, size[0] // 2, size[1]))
    image.save(path)


def truncated_jpeg(path: Path, colour: tuple[int, int, int] = (200, 50, 50)) -> None:
    buffer = io.BytesIO()
    photo(colour, size=(64, 64)).save(buffer, "JPEG", quality=95)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def text_named_jpg(path: Path) -> None:
    path.write_text("this is not an image\n")


def zero_byte(path: Path) -> None:
    path.write_bytes(b"")


def add_bad_files(folder: Path) -> dict[str, str]:
    """Write one unreadable file of each kind into `folder`; returns {path: expected reason prefix}."""
    folder.mkdir(parents=True, exist_ok=True)
    truncated_jpeg(folder / "truncated.jpg")
    text_named_jpg(folder / "notes.jpg")
    zero_byte(folder / "empty.png")
    return {
        os.fspath(folder / "truncated.jpg"): "corrupt or truncated",
        os.fspath(folder / "notes.jpg"): "not an image",
        os.fspath(folder / "empty.png"): "empty file",
    }


def write_awkward_images(root: Path, side: int) -> dict[str, Path]:
    """One side x side image of every awkward kind, each in a class folder of its own (root/<kind>/<kind>.<ext>),
    so a prepared row's label says which file it came from. Returns {kind: path}."""
    ramp = np.add.outer(np.arange(side), np.arange(side)) / (2 * side - 2)  # 0..1, top left to bottom right
    colour = photo((200, 120, 40), size=(side, side), seed=7)
    writers = {
        "png_16bit.png": lambda path: Image.fromarray(np.rint(ramp * 65535).astype(np.uint16)).save(path),
        # "I" (32-bit integer) TIFFs: 8-bit values in a wide container, and 16-bit values in one.
        "int_8bit_values.tif": lambda path: Image.fromarray(np.rint(ramp * 255).astype(np.int32)).save(path),
        "int_16bit_values.tif": lambda path: Image.fromarray(np.rint(ramp * 60000).astype(np.int32)).save(path),
        "float_0_to_1.tif": lambda path: Image.fromarray(ramp.astype(np.float32)).save(path),
        "float_0_to_200.tif": lambda path: Image.fromarray((ramp * 200).astype(np.float32)).save(path),
        "cmyk.jpg": lambda path: colour.convert("CMYK").save(path, "JPEG", quality=95),
        "palette_transparent.png": lambda path: palette_with_transparency(path, (30, 90, 200), size=(side, side)),
        "rgba.png": lambda path: rgba_png(path, (0, 160, 60), size=(side, side)),
        "exif_rotated.jpg": lambda path: exif_rotated_jpeg(path, size=(side, side)),
        "grayscale.png": lambda path: colour.convert("L").save(path),
        "la.png": lambda path: la_png(path, size=(side, side)),
        "one_bit.png": lambda path: one_bit_png(path, size=(side, side)),
        "animated.gif": lambda path: colour.save(
            path, save_all=True, append_images=[photo((20, 20, 220), size=(side, side))], duration=100),
    }
    paths = {}
    for filename, write in writers.items():
        kind = filename.split(".")[0]
        (root / kind).mkdir(parents=True, exist_ok=True)
        paths[kind] = root / kind / filename
        write(paths[kind])
    return paths


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of unsigned bytes, gzipped, as Fashion-MNIST ships them."""
    import gzip

    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())
