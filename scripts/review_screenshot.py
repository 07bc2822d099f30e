"""Screenshot of a run's review.html in headless Chromium (for the README): ``make review-screenshot``.

    python scripts/review_screenshot.py RUN_DIR [--out docs/review-page.png] [--width 1280] [--height 1600]

Opens ``RUN_DIR/review.html`` in Debian's Chromium (``tests/browser.py``), waits for the
pictures of the first screen, and writes a PNG of the top ``--height`` pixels, scaled by ``--scale``
and saved with the strongest PNG compression so that it stays small enough to commit.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.browser import headless_chromium  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/review-page.png"))
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1600)
    parser.add_argument("--scale", type=float, default=0.75, help="resize factor of the saved picture")
    args = parser.parse_args(argv)
    page = (args.run_dir / "review.html").resolve()
    if not page.is_file():
        print(f"{page} does not exist: run an audit first (make audit)", file=sys.stderr)
        return 2
    driver = headless_chromium(args.width, args.height)
    try:
        driver.get(page.as_uri())
        deadline = time.time() + 15
        while time.time() < deadline and not driver.execute_script(
            "return Array.from(document.images).filter(i => i.getBoundingClientRect().top < innerHeight).every(i => i.complete)"
        ):
            time.sleep(0.2)
        png = driver.get_screenshot_as_png()
    finally:
        driver.quit()
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    if args.scale != 1.0:
        image = cv2.resize(image, None, fx=args.scale, fy=args.scale, interpolation=cv2.INTER_AREA)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB, {image.shape[1]} x {image.shape[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
