"""Images from ``http(s)://`` URLs: fetched once into a temporary file and decoded by
:func:`glip.images.load_image` (so the pixel limit, EXIF orientation and every image mode are handled the
same way as for local files).

Only ``http`` and ``https`` are fetched (the standard library's ``urllib``: no extra dependency); a download
larger than ``max_bytes``, a timeout, an HTTP error or a refused connection is one :class:`ImageError` naming
the URL.
"""

from __future__ import annotations

import tempfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from PIL import Image

from glip.images import MAX_PIXELS, ImageError, load_image

#: largest download accepted (bytes)
MAX_BYTES = 100 * 1024 * 1024
#: seconds to wait for the server (connection and each read)
TIMEOUT_S = 30.0
_CHUNK = 1 << 16


def is_url(source: object) -> bool:
    """``source`` is a string starting with ``http://`` or ``https://``."""
    return isinstance(source, str) and source.lower().startswith(("http://", "https://"))


def url_stem(url: str, default: str = "image") -> str:
    """The file-name stem of a URL's path (``https://x/a/cat.jpg?s=1`` -> ``cat``), or ``default``."""
    stem = PurePosixPath(unquote(urlparse(url).path)).stem
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem) or default


def fetch_image(
    url: str,
    *,
    max_pixels: int | None = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
    timeout: float = TIMEOUT_S,
) -> Image.Image:
    """Download ``url`` and decode it as :func:`glip.images.load_image` decodes a file.

    Raises:
        ImageError: not an http(s) URL, a connection / HTTP error, a timeout, more than ``max_bytes``,
            or bytes that are not a readable image (the message names the URL).
    """
    if not is_url(url):
        raise ImageError(f"{url!r} is not an http:// or https:// URL")
    request = urllib.request.Request(url, headers={"User-Agent": "glip"})
    with tempfile.TemporaryDirectory(prefix="glip-url-") as folder:
        path = Path(folder) / "image"
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response, path.open("wb") as handle:
                size = 0
                while chunk := response.read(_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise ImageError(f"{url}: larger than the download limit of {max_bytes:,} bytes")
                    handle.write(chunk)
        except urllib.error.HTTPError as exc:
            raise ImageError(f"{url}: HTTP error {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise ImageError(f"{url}: could not connect ({exc.reason})") from None
        except (TimeoutError, OSError) as exc:
            raise ImageError(f"{url}: download failed ({type(exc).__name__}: {exc})") from None
        try:
            return load_image(path, max_pixels=max_pixels)
        except ImageError as exc:
            raise ImageError(str(exc).replace(str(path), url)) from None


def load_source(
    source: str | Path, *, max_pixels: int | None = MAX_PIXELS, timeout: float = TIMEOUT_S
) -> Image.Image:
    """A local file (:func:`glip.images.load_image`) or an http(s) URL (:func:`fetch_image`)."""
    if is_url(source):
        return fetch_image(str(source), max_pixels=max_pixels, timeout=timeout)
    return load_image(source, max_pixels=max_pixels)
