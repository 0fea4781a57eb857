"""Still WebP decoded at a reduced scale by libwebp itself.

Pillow decodes every WebP through libwebp's animation decoder, which keeps two full-size
canvases and hands back a third copy before Pillow makes the image: a 40 MP WebP peaked
at 614 MB. libwebp can scale while it decodes, row by row, so the full-size image never
exists; Pillow does not expose that, so this calls the libwebp Pillow itself loaded (or
the system's) through ctypes. Without it, or for animations, rendering falls back to
Pillow, and the memory estimate says what that costs (`FALLBACK_COPIES`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from pathlib import Path

import PIL
from PIL import Image

# WEBP_DECODER_ABI_VERSION of the structures below (libwebp 0.5 to 1.x); the library
# refuses an incompatible major version, and then the fallback is used.
_ABI = 0x0209
_MODE_RGB, _MODE_RGBA = 0, 1
_FORMAT_LOSSLESS = 2
# Scaling happens after these full-size buffers, in bytes a pixel (measured at 40 MP,
# `make bench`, rounded up): VP8L (lossless) decodes whole ARGB rows plus its cache; a
# lossy image's alpha plane is decoded whole too, losslessly compressed as a rule.
LOSSLESS_BYTES, LOSSY_ALPHA_BYTES = 5, 4
# Pillow's path: two canvases, the frame bytes and the image, 4 bytes a pixel each.
FALLBACK_COPIES = 4


class _Features(ctypes.Structure):
    _fields_ = [
        ("width", ctypes.c_int),
        ("height", ctypes.c_int),
        ("has_alpha", ctypes.c_int),
        ("has_animation", ctypes.c_int),
        ("format", ctypes.c_int),
        ("pad", ctypes.c_uint32 * 5),
    ]


class _RGBABuffer(ctypes.Structure):
    _fields_ = [("rgba", ctypes.c_void_p), ("stride", ctypes.c_int), ("size", ctypes.c_size_t)]


class _YUVABuffer(ctypes.Structure):
    _fields_ = [
        *((name, ctypes.c_void_p) for name in ("y", "u", "v", "a")),
        *((name, ctypes.c_int) for name in ("y_stride", "u_stride", "v_stride", "a_stride")),
        *((name, ctypes.c_size_t) for name in ("y_size", "u_size", "v_size", "a_size")),
    ]


class _Buffers(ctypes.Union):
    _fields_ = [("RGBA", _RGBABuffer), ("YUVA", _YUVABuffer)]


class _DecBuffer(ctypes.Structure):
    _fields_ = [
        ("colorspace", ctypes.c_int),
        ("width", ctypes.c_int),
        ("height", ctypes.c_int),
        ("is_external_memory", ctypes.c_int),
        ("u", _Buffers),
        ("pad", ctypes.c_uint32 * 4),
        ("private_memory", ctypes.c_void_p),
    ]


_OPTIONS = (
    "bypass_filtering",
    "no_fancy_upsampling",
    "use_cropping",
    "crop_left",
    "crop_top",
    "crop_width",
    "crop_height",
    "use_scaling",
    "scaled_width",
    "scaled_height",
    "use_threads",
    "dithering_strength",
    "flip",
    "alpha_dithering_strength",
)


class _Options(ctypes.Structure):
    _fields_ = [*((name, ctypes.c_int) for name in _OPTIONS), ("pad", ctypes.c_uint32 * 5)]


class _Config(ctypes.Structure):
    _fields_ = [("input", _Features), ("output", _DecBuffer), ("options", _Options)]


@functools.cache
def _libwebp() -> ctypes.CDLL | None:
    bundled = sorted((Path(PIL.__file__).parent.parent / "pillow.libs").glob("libwebp-*.so*"))
    system = ctypes.util.find_library("webp")
    for candidate in [*map(str, bundled), *([system] if system else [])]:
        try:
            lib = ctypes.CDLL(candidate)
            lib.WebPInitDecoderConfigInternal.argtypes = [ctypes.POINTER(_Config), ctypes.c_int]
            lib.WebPDecode.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(_Config)]
            lib.WebPGetFeaturesInternal.argtypes = [
                ctypes.c_char_p,
                ctypes.c_size_t,
                ctypes.POINTER(_Features),
                ctypes.c_int,
            ]
        except (OSError, AttributeError):
            continue
        if lib.WebPInitDecoderConfigInternal(ctypes.byref(_Config()), _ABI):
            return lib
    return None


def available() -> bool:
    return _libwebp() is not None


def is_lossless(data: bytes) -> bool:
    """Whether the (first) bitstream is VP8L; True when libwebp cannot say."""
    lib = _libwebp()
    features = _Features()
    if lib is None or lib.WebPGetFeaturesInternal(data, len(data), ctypes.byref(features), _ABI):
        return True
    return bool(features.format == _FORMAT_LOSSLESS)


def decode_scaled(data: bytes, size: tuple[int, int], alpha: bool) -> Image.Image | None:
    """A still WebP decoded straight to `size` (RGBA or RGB); None when libwebp is not
    usable here or refuses (an animation), for the caller to fall back to Pillow."""
    lib = _libwebp()
    if lib is None:
        return None
    config = _Config()
    if not lib.WebPInitDecoderConfigInternal(ctypes.byref(config), _ABI):
        return None
    mode, channels = ("RGBA", 4) if alpha else ("RGB", 3)
    width, height = size
    out = bytearray(width * height * channels)
    target = (ctypes.c_char * len(out)).from_buffer(out)
    config.options.use_scaling = 1
    config.options.scaled_width, config.options.scaled_height = width, height
    config.output.colorspace = _MODE_RGBA if alpha else _MODE_RGB
    config.output.is_external_memory = 1
    config.output.u.RGBA.rgba = ctypes.addressof(target)
    config.output.u.RGBA.stride = width * channels
    config.output.u.RGBA.size = len(out)
    status = lib.WebPDecode(data, len(data), ctypes.byref(config))
    del target  # releases the export, so the image may take over the buffer
    if status != 0:
        return None
    return Image.frombuffer(mode, size, out, "raw", mode, 0, 1)
