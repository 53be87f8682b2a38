"""Read a run directory's TensorBoard event files with the real `tensorboard`
package and print its scalars and images as JSON.

Usage: read_events.py RUN_DIR

Output: {"scalars": {tag: [[step, value], ...]},
         "images": {tag: [{"step": s, "width": w, "height": h, "png_ok": bool}]}}
png_ok is true iff the encoded bytes carry the PNG signature and their IHDR
width/height equal the summary's width/height.
"""

import json
import struct
import sys

from tensorboard.backend.event_processing import event_accumulator

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_ok(data: bytes, width: int, height: int) -> bool:
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return False
    png_width, png_height = struct.unpack(">II", data[16:24])
    return (png_width, png_height) == (width, height)


def main() -> int:
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} RUN_DIR", file=sys.stderr)
        return 2
    acc = event_accumulator.EventAccumulator(
        sys.argv[1],
        size_guidance={event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 0},
    )
    acc.Reload()
    tags = acc.Tags()
    out = {
        "scalars": {
            tag: [[ev.step, ev.value] for ev in acc.Scalars(tag)]
            for tag in sorted(tags.get(event_accumulator.SCALARS, []))
        },
        "images": {
            tag: [
                {
                    "step": ev.step,
                    "width": ev.width,
                    "height": ev.height,
                    "png_ok": png_ok(ev.encoded_image_string, ev.width, ev.height),
                }
                for ev in acc.Images(tag)
            ]
            for tag in sorted(tags.get(event_accumulator.IMAGES, []))
        },
    }
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
